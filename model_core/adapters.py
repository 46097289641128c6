"""Public engagement logs → the `raw_actions` contract (DESIGN §4), with item metadata.

Each reader returns a `RawLog`: the actions in the contract (sorted by user, then time), one row of
metadata per item, and the action-type / surface vocabulary and positive rule that fit the source,
so that a pipeline can be configured from the log alone::

    log = read_source("movielens", "/data/ml-latest-small")
    features = log.feature_config(content_dim=32)
    timelines, drops = Timelines.from_actions(log.actions, catalog, features, log.rule)

Sources (docs/REAL_DATA.md has the details and the measured counts):

- MovieLens (`read_movielens`): ml-100k, ml-1m and ml-latest(-small) layouts, detected from the
  files present. A rating becomes an action type: rating >= `positive_min_rating` → "rate_high"
  (the positive), 3.0 <= rating < `positive_min_rating` → "rate_mid", lower → "rate_low".
- Taobao UserBehavior (`read_taobao`): behaviour types pv / cart / fav / buy kept as they are;
  cart, fav and buy are positive. Rows outside the documented period are dropped and counted.
- Any table (`read_table`): CSV or Parquet with user / item / time columns named by the caller.

Ids: integer id columns are kept as they are (cast to Int64). String ids are hashed with BLAKE2b
(8-byte digest of the UTF-8 string, top bit cleared so the id is non-negative): the same string maps
to the same id in every run, on every machine and for every polars version, so daily files read
separately agree. A hash collision among the ids of one read is detected and raises.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import zoneinfo
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import polars as pl

from model_core.contract import conform
from model_core.features import FeatureConfig
from model_core.timelines import PositiveRule

ITEM_SCHEMA: dict[str, Any] = {"pin_id": pl.Int64, "topic": pl.Int32, "text": pl.Utf8}

MOVIELENS_ACTION_TYPES = ("rate_low", "rate_mid", "rate_high")
TAOBAO_ACTION_TYPES = ("pv", "cart", "fav", "buy")
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")
# ml-100k's u.item carries one 0/1 flag per genre, in this order (its u.genre file).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRE = frozenset({"unknown", "(no genres listed)", ""})
# Numeric times below this are seconds, below the next are milliseconds (time_unit="auto").
# 1e11 s is the year 5138 while 1e11 ms is 1973, so real logs never sit on the wrong side.
_MAX_SECONDS = 1e11
_MAX_MILLISECONDS = 1e14


@dataclass(frozen=True)
class RawLog:
    """One source's actions in the `raw_actions` contract, plus what is needed to model them.

    actions:      event_date Date, ts Datetime(us, UTC), user_id Int64, pin_id Int64,
                  action_type Utf8, surface Utf8, duration_s Float64 >= 0; sorted by (user_id, ts)
    items:        pin_id Int64 (unique, sorted), topic Int32 (nullable), text Utf8 (nullable)
    action_types: the vocabulary for `FeatureConfig.action_types`
    surfaces:     the vocabulary for `FeatureConfig.surfaces`
    rule:         which actions are positive engagement for this source
    notes:        counts of rows handled explicitly (dropped, repaired), by reason
    """

    name: str
    actions: pl.DataFrame
    items: pl.DataFrame
    action_types: tuple[str, ...]
    surfaces: tuple[str, ...]
    rule: PositiveRule
    notes: dict[str, int] = field(default_factory=dict)

    def feature_config(self, **overrides: Any) -> FeatureConfig:
        """A FeatureConfig whose vocabularies are this source's (other fields from `overrides`)."""
        return FeatureConfig(action_types=self.action_types, surfaces=self.surfaces, **overrides)

    @property
    def days(self) -> list[datetime.date]:
        """The distinct event dates (UTC), ascending."""
        return self.actions["event_date"].unique().sort().to_list()


# --------------------------------------------------------------------------------------------
# Shared helpers


def stable_id(values: pl.Series) -> pl.Series:
    """String ids → Int64 ids: BLAKE2b-64 of the UTF-8 bytes with the top bit cleared (>= 0).

    Stable across runs, machines and library versions. Raises if two distinct strings collide.
    """
    strings = values.cast(pl.Utf8)
    uniques = strings.drop_nulls().unique()
    hashed = [
        int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "big")
        & 0x7FFF_FFFF_FFFF_FFFF
        for s in uniques.to_list()
    ]
    if len(set(hashed)) != len(hashed):
        raise ValueError(f"64-bit hash collision among the {len(hashed)} ids of {values.name!r}")
    mapping = dict(zip(uniques.to_list(), hashed, strict=True))
    return strings.replace_strict(mapping, default=None, return_dtype=pl.Int64).alias(values.name)


def _as_int_ids(values: pl.Series) -> pl.Series:
    """An id column → Int64: integers cast, integral floats cast, strings hashed (`stable_id`)."""
    dtype = values.dtype
    if dtype.is_integer():
        return values.cast(pl.Int64, strict=True)
    if dtype.is_float():
        finite = values.drop_nulls()
        if (finite != finite.round(0)).any():
            raise ValueError(f"id column {values.name!r} has non-integral numbers")
        return values.cast(pl.Int64, strict=True)
    if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        return stable_id(values)
    raise ValueError(f"id column {values.name!r} has dtype {dtype}; expected integers or strings")


def _finish(
    actions: pl.DataFrame,
    items: pl.DataFrame,
    name: str,
    action_types: tuple[str, ...],
    surfaces: tuple[str, ...],
    rule: PositiveRule,
    notes: Mapping[str, int],
) -> RawLog:
    """Derive event_date, conform to the contract, sort, and add items seen only in actions."""
    actions = actions.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    ).with_columns(event_date=pl.col("ts").dt.date())
    actions = conform(actions).sort(["user_id", "ts"], maintain_order=True)
    items = items.select(
        pl.col(c).cast(t, strict=True) if c in items.columns else pl.lit(None, t).alias(c)
        for c, t in ITEM_SCHEMA.items()
    )
    unseen = actions.select("pin_id").unique().join(items, on="pin_id", how="anti")
    items = pl.concat([items, unseen], how="diagonal_relaxed")
    items = items.unique("pin_id", keep="first", maintain_order=True).sort("pin_id")
    items = items.select(pl.col(c).cast(t) for c, t in ITEM_SCHEMA.items())
    no_metadata = items.filter(pl.col("topic").is_null() & pl.col("text").is_null()).height
    return RawLog(
        name,
        actions,
        items,
        action_types,
        surfaces,
        rule,
        {**notes, "items_without_metadata": no_metadata},
    )


def _read_text(path: Path, encoding: str) -> str:
    """A whole text file, decoded, with CRLF / CR line endings normalised to LF."""
    text = path.read_bytes().decode(encoding)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_separated(
    path: Path, separator: str, columns: Iterable[str], encoding: str = "latin-1"
) -> pl.DataFrame:
    """A header-less file whose fields are split by `separator` (may be multi-character, `::`).

    Quotes are not special (MovieLens titles contain unbalanced `"`); every column is read as text.
    """
    names = list(columns)
    text = _read_text(path, encoding)
    if len(separator) > 1:
        text = text.replace(separator, "\x1f")
        separator = "\x1f"
    return pl.read_csv(
        io.BytesIO(text.encode("utf-8")),
        has_header=False,
        separator=separator,
        quote_char=None,
        new_columns=names,
        schema_overrides={c: pl.Utf8 for c in names},
        truncate_ragged_lines=True,
    ).select(names)


# --------------------------------------------------------------------------------------------
# MovieLens


def _movielens_items(movies: pl.DataFrame) -> pl.DataFrame:
    """movies (movie_id Int64, title Utf8, genres Utf8 `A|B|C`) → the items frame.

    topic = id of the movie's FIRST listed genre among the release's genre names sorted
    alphabetically ("unknown" / "(no genres listed)" → null); text = "title | genres".
    """
    movies = movies.with_columns(pl.col("genres").fill_null(""))
    first = pl.col("genres").str.split("|").list.first()
    names = sorted(set(movies["genres"].str.split("|").explode().drop_nulls().to_list()) - NO_GENRE)
    genre_id = {g: i for i, g in enumerate(names)}
    return movies.select(
        pin_id=pl.col("movie_id").cast(pl.Int64),
        topic=first.replace_strict(genre_id, default=None, return_dtype=pl.Int32),
        text=pl.concat_str([pl.col("title").str.strip_chars(), pl.col("genres")], separator=" | "),
    )


def _ml100k(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    ratings = _read_separated(root / "u.data", "\t", ["user", "item", "rating", "ts"])
    item_cols = ["movie_id", "title", "release", "video_release", "url", *ML100K_GENRES]
    raw = _read_separated(root / "u.item", "|", item_cols)
    flags = [pl.when(pl.col(g) == "1").then(pl.lit(g)) for g in ML100K_GENRES]
    movies = raw.select(
        pl.col("movie_id").cast(pl.Int64),
        "title",
        genres=pl.concat_list(flags).list.drop_nulls().list.join("|"),
    )
    return ratings, movies


def _ml1m(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    ratings = _read_separated(root / "ratings.dat", "::", ["user", "item", "rating", "ts"])
    movies = _read_separated(root / "movies.dat", "::", ["movie_id", "title", "genres"])
    return ratings, movies.with_columns(pl.col("movie_id").cast(pl.Int64))


def _mllatest(root: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    ratings = pl.read_csv(
        root / "ratings.csv",
        schema_overrides={"userId": pl.Int64, "movieId": pl.Int64, "rating": pl.Float64},
    ).select(user="userId", item="movieId", rating="rating", ts="timestamp")
    movies = pl.read_csv(root / "movies.csv", schema_overrides={"movieId": pl.Int64}).select(
        movie_id="movieId", title="title", genres=pl.col("genres").str.strip_chars()
    )
    return ratings, movies


def read_movielens(path: str | Path, positive_min_rating: float = 4.0) -> RawLog:
    """A MovieLens release directory → RawLog. The layout is detected from the files present:

    - ml-100k: `u.data` (tab-separated user, item, rating, unix ts) and `u.item` (`|`-separated,
      19 genre flags), latin-1;
    - ml-1m: `ratings.dat` and `movies.dat` (`::`-separated), latin-1;
    - ml-latest / ml-latest-small: `ratings.csv` and `movies.csv` (header, possibly CRLF).

    Mapping (every rating is one action on surface "web", duration 0.0 — MovieLens has no dwell):
    rating >= positive_min_rating → "rate_high" (the only positive type); 3.0 <= rating <
    positive_min_rating → "rate_mid"; rating < min(3.0, positive_min_rating) → "rate_low". With the
    default 4.0: 4–5 high, 3–3.5 mid, 0.5–2.5 low. Timestamps are unix seconds, UTC.

    Items: every movie in the movie file (also those never rated); topic = first genre's id in the
    alphabetically sorted genre names of the release; text = "title | genres".
    """
    root = Path(path)
    readers = {"u.data": _ml100k, "ratings.dat": _ml1m, "ratings.csv": _mllatest}
    marker = next((f for f in readers if (root / f).is_file()), None)
    if marker is None:
        present = sorted(p.name for p in root.iterdir()) if root.is_dir() else []
        raise ValueError(
            f"{root} is not a MovieLens release: expected one of {list(readers)} "
            f"(ml-100k, ml-1m, ml-latest); found {present}"
        )
    ratings, movies = readers[marker](root)
    threshold = float(positive_min_rating)
    rating = pl.col("rating").cast(pl.Float64)
    actions = ratings.select(
        ts=pl.from_epoch(pl.col("ts").cast(pl.Int64), time_unit="s").dt.replace_time_zone("UTC"),
        user_id=pl.col("user").cast(pl.Int64),
        pin_id=pl.col("item").cast(pl.Int64),
        action_type=pl.when(rating >= threshold)
        .then(pl.lit("rate_high"))
        .when(rating >= 3.0)
        .then(pl.lit("rate_mid"))
        .otherwise(pl.lit("rate_low")),
        surface=pl.lit("web"),
        duration_s=pl.lit(0.0),
    )
    stem = root.resolve().name
    release = stem.removeprefix("ml-").removeprefix("movielens-")
    layout = {"u.data": "100k", "ratings.dat": "1m", "ratings.csv": "latest"}[marker]
    name = f"movielens-{release if release != stem else layout}"
    items = _movielens_items(movies)
    notes = {
        "input_rows": ratings.height,
        "movies_never_rated": items.join(actions, on="pin_id", how="anti").height,
    }
    rule = PositiveRule(surfaces=("web",), always=("rate_high",), min_duration_s={})
    return _finish(actions, items, name, MOVIELENS_ACTION_TYPES, ("web",), rule, notes)


# --------------------------------------------------------------------------------------------
# Taobao UserBehavior


def read_taobao(
    path: str | Path,
    period: tuple[datetime.date, datetime.date] = (
        datetime.date(2017, 11, 25),
        datetime.date(2017, 12, 3),
    ),
    tz: str = "Asia/Shanghai",
    positive_types: tuple[str, ...] = ("cart", "fav", "buy"),
) -> RawLog:
    """Taobao UserBehavior CSV (no header: user_id, item_id, category_id, behavior_type, unix ts).

    `path` is the CSV itself or a directory holding one `*.csv`. Behaviour types pv / cart / fav /
    buy are kept as action types; surface "app", duration 0.0. Positive: `positive_types`, by
    default cart, fav and buy (an explicit intent signal, like the paper's repin); pv (a page
    view) is input only unless listed.

    The dataset's documented period is `period` (inclusive) in local time `tz`. Rows whose
    timestamp lies outside it (35 in the public sample) are known-bad clock values: they are
    DROPPED from `actions` and counted in notes["out_of_period_rows"], so no daily partition ever
    sees a timestamp outside its day. Their items still get metadata. event_date is the UTC date.

    Items: every item in the file; topic = its category_id (an item's most frequent category,
    ties → the smallest id); text = null.
    """
    file = Path(path)
    if file.is_dir():
        csvs = sorted(file.glob("*.csv"))
        if len(csvs) != 1:
            raise ValueError(f"expected one *.csv in {file}, found {[p.name for p in csvs]}")
        file = csvs[0]
    raw = pl.read_csv(
        file,
        has_header=False,
        new_columns=list(TAOBAO_COLUMNS),
        schema_overrides={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "category_id": pl.Int64,
            "behavior_type": pl.Utf8,
            "timestamp": pl.Int64,
        },
    )
    zone = zoneinfo.ZoneInfo(tz)
    start = datetime.datetime.combine(period[0], datetime.time(), tzinfo=zone)
    end = datetime.datetime.combine(period[1] + datetime.timedelta(days=1), datetime.time(), zone)
    ts = pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC")
    inside = (pl.col("timestamp") >= int(start.timestamp())) & (
        pl.col("timestamp") < int(end.timestamp())
    )
    kept = raw.filter(inside)
    actions = kept.select(
        ts=ts,
        user_id="user_id",
        pin_id="item_id",
        action_type=pl.col("behavior_type").str.strip_chars(),
        surface=pl.lit("app"),
        duration_s=pl.lit(0.0),
    )
    items = (
        raw.group_by("item_id", "category_id")
        .len()
        .sort(["item_id", "len", "category_id"], descending=[False, True, False])
        .unique("item_id", keep="first", maintain_order=True)
        .select(pin_id="item_id", topic=pl.col("category_id").cast(pl.Int32), text=pl.lit(None))
    )
    notes = {
        "input_rows": raw.height,
        "out_of_period_rows": raw.height - kept.height,
        "unknown_action_type_rows": int(
            (~actions["action_type"].is_in(list(TAOBAO_ACTION_TYPES))).sum()
        ),
    }
    unknown = set(positive_types) - set(TAOBAO_ACTION_TYPES)
    if unknown:
        raise ValueError(
            f"positive_types {sorted(unknown)} are not Taobao behaviours {TAOBAO_ACTION_TYPES}"
        )
    rule = PositiveRule(surfaces=("app",), always=tuple(positive_types), min_duration_s={})
    return _finish(actions, items, "taobao", TAOBAO_ACTION_TYPES, ("app",), rule, notes)


# --------------------------------------------------------------------------------------------
# Any CSV / Parquet table


def _to_utc(values: pl.Series, time_unit: Literal["s", "ms", "iso", "auto"]) -> pl.Series:
    """A time column → Datetime(us, UTC). Naive datetimes and ISO strings without offset are UTC."""
    dtype = values.dtype
    name = values.name
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        if time_unit not in ("auto", "iso"):
            raise ValueError(f"time column {name!r} is {dtype}, not numbers in {time_unit!r}")
        out = values.cast(pl.Datetime("us", getattr(dtype, "time_zone", None)))
    elif dtype == pl.Utf8:
        if time_unit not in ("auto", "iso"):
            raise ValueError(f"time column {name!r} holds strings, not numbers in {time_unit!r}")
        try:
            out = values.str.strip_chars().str.to_datetime(time_unit="us", strict=True)
        except pl.exceptions.PolarsError as err:
            raise ValueError(f"time column {name!r}: cannot parse as ISO 8601: {err}") from err
    elif dtype.is_numeric():
        if time_unit == "iso":
            raise ValueError(f"time column {name!r} holds numbers ({dtype}), not ISO strings")
        unit = time_unit
        if unit == "auto":
            median = values.drop_nulls().abs().median()
            magnitude = float(median) if isinstance(median, int | float) else 0.0
            if magnitude >= _MAX_MILLISECONDS:
                raise ValueError(
                    f"time column {name!r}: median {magnitude:.3g} looks like micro- or "
                    "nanoseconds; convert to seconds or milliseconds, or pass time_unit"
                )
            unit = "s" if magnitude < _MAX_SECONDS else "ms"
        scale = 1_000_000 if unit == "s" else 1_000
        micros = (values.cast(pl.Float64) * scale).round(0).cast(pl.Int64)
        out = pl.from_epoch(micros, time_unit="us")
    else:
        raise ValueError(f"time column {name!r} has dtype {dtype}; expected numbers or strings")
    tz = getattr(out.dtype, "time_zone", None)
    out = out.dt.replace_time_zone("UTC") if tz is None else out.dt.convert_time_zone("UTC")
    return out.alias(name)


def _read_frame(path: Path, fmt: Literal["csv", "parquet"]) -> pl.DataFrame:
    """One file, or every file of the format in a directory (sorted by name, concatenated)."""
    files = sorted(path.glob(f"*.{fmt}")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no *.{fmt} files in {path}")
    if fmt == "parquet":
        return pl.concat([pl.read_parquet(f) for f in files], how="diagonal_relaxed")
    return pl.concat(
        [pl.read_csv(f, infer_schema_length=10_000) for f in files], how="diagonal_relaxed"
    )


def read_table(
    path: str | Path,
    user: str,
    item: str,
    time: str,
    action_type: str | None = None,
    surface: str | None = None,
    duration: str | None = None,
    time_unit: Literal["s", "ms", "iso", "auto"] = "auto",
    positive_types: tuple[str, ...] | None = None,
    fmt: Literal["csv", "parquet"] | None = None,
) -> RawLog:
    """A CSV or Parquet engagement table (or a directory of them) → RawLog.

    The format comes from `fmt`, else the file suffix (a directory: the suffix of its files).
    `user`, `item`, `time` name the required columns; `action_type`, `surface`, `duration` the
    optional ones (defaults "interaction", "default", 0.0). Integer ids are kept; string ids are
    hashed with `stable_id`. Time: "s" / "ms" unix numbers, "iso" ISO-8601 strings (an offset is
    honoured, none means UTC), or "auto": datetime columns as they are, strings as ISO, numbers as
    seconds when the median is below 1e11 else milliseconds.

    Rows with a null user, item, time, action type or surface are dropped (notes["null_rows"]);
    null, NaN, infinite or negative durations become 0.0 (notes["invalid_duration_rows"]).
    Vocabularies are the distinct values present, sorted. Positive: the `positive_types` on any
    surface; when None, every action is positive.
    """
    file = Path(path)
    if fmt is None:
        suffixes = {p.suffix for p in file.iterdir()} if file.is_dir() else {file.suffix}
        fmt = "parquet" if ".parquet" in suffixes else "csv" if ".csv" in suffixes else None
        if fmt is None:
            raise ValueError(f"cannot tell the format of {file}: expected .csv or .parquet")
    raw = _read_frame(file, fmt)
    wanted = {"user": user, "item": item, "time": time}
    wanted |= {
        k: v
        for k, v in (("action_type", action_type), ("surface", surface), ("duration", duration))
        if v is not None
    }
    for role, column in wanted.items():
        if column not in raw.columns:
            raise ValueError(
                f"{role} column {column!r} is not in {file.name}; available columns: {raw.columns}"
            )

    def optional(column: str | None, dtype: Any, default: str | float) -> pl.Series:
        if column is None:
            return pl.repeat(default, raw.height, dtype=dtype, eager=True)
        return raw[column].cast(dtype)

    frame = pl.DataFrame(
        {
            "user_id": _as_int_ids(raw[user]),
            "pin_id": _as_int_ids(raw[item]),
            "ts": _to_utc(raw[time], time_unit),
            "action_type": optional(action_type, pl.Utf8, "interaction"),
            "surface": optional(surface, pl.Utf8, "default"),
            "duration_s": optional(duration, pl.Float64, 0.0),
        }
    )
    complete = frame.drop_nulls(["user_id", "pin_id", "ts", "action_type", "surface"])
    bad_duration = (
        pl.col("duration_s").is_null()
        | ~pl.col("duration_s").is_finite()
        | (pl.col("duration_s") < 0)
    )
    n_bad_duration = complete.filter(bad_duration).height
    complete = complete.with_columns(
        duration_s=pl.when(bad_duration).then(0.0).otherwise(pl.col("duration_s"))
    )
    types = tuple(sorted(complete["action_type"].unique().to_list()))
    surfaces = tuple(sorted(complete["surface"].unique().to_list()))
    if positive_types is not None:
        unknown = [t for t in positive_types if t not in types]
        if unknown:
            raise ValueError(f"positive_types {unknown} never occur; action types present: {types}")
    rule = PositiveRule(
        surfaces=surfaces,
        always=tuple(positive_types) if positive_types is not None else types,
        min_duration_s={},
    )
    notes = {
        "input_rows": raw.height,
        "null_rows": frame.height - complete.height,
        "invalid_duration_rows": n_bad_duration,
    }
    items = complete.select("pin_id").unique()
    return _finish(complete, items, f"{fmt}:{file.name}", types, surfaces, rule, notes)


def read_source(kind: str, path: str | Path, **kwargs: Any) -> RawLog:
    """Dispatch on `kind`: "movielens", "taobao", "amazon", "csv" or "parquet" (kwargs go to the
    reader)."""
    kind = kind.lower()
    if kind == "amazon":
        from model_core.amazon import read_amazon  # imports this module's helpers

        return read_amazon(path, **kwargs)
    if kind == "movielens":
        return read_movielens(path, **kwargs)
    if kind == "taobao":
        return read_taobao(path, **kwargs)
    if kind == "csv":
        return read_table(path, fmt="csv", **kwargs)
    if kind == "parquet":
        return read_table(path, fmt="parquet", **kwargs)
    raise ValueError(
        f"unknown source kind {kind!r}; expected movielens, taobao, amazon, csv or parquet"
    )


__all__ = [
    "ITEM_SCHEMA",
    "MOVIELENS_ACTION_TYPES",
    "TAOBAO_ACTION_TYPES",
    "RawLog",
    "read_movielens",
    "read_source",
    "read_table",
    "read_taobao",
    "stable_id",
]

"""Any CSV / Parquet engagement table (`read_table`): user / item / time columns named by the
caller, optional action type, surface and duration."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import polars as pl

from model_core.data.raw_log import RawLog, _as_int_ids, _finish
from model_core.data.timelines import PositiveRule

# Numeric times below this are seconds, below the next are milliseconds (time_unit="auto").
# 1e11 s is the year 5138 while 1e11 ms is 1973, so real logs never sit on the wrong side.
_MAX_SECONDS = 1e11
_MAX_MILLISECONDS = 1e14


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
    fmt = fmt or _format_of(file)
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
    complete, n_bad_duration = _clean(frame)
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


def _format_of(file: Path) -> Literal["csv", "parquet"]:
    """The table format from the file's suffix (a directory: its files' suffixes)."""
    suffixes = {p.suffix for p in file.iterdir()} if file.is_dir() else {file.suffix}
    if ".parquet" in suffixes:
        return "parquet"
    if ".csv" in suffixes:
        return "csv"
    raise ValueError(f"cannot tell the format of {file}: expected .csv or .parquet")


def _clean(frame: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    """Rows without a null id, time, action type or surface; null, NaN, infinite or negative
    durations set to 0.0 (and how many were)."""
    complete = frame.drop_nulls(["user_id", "pin_id", "ts", "action_type", "surface"])
    bad = (
        pl.col("duration_s").is_null()
        | ~pl.col("duration_s").is_finite()
        | (pl.col("duration_s") < 0)
    )
    n_bad = complete.filter(bad).height
    return complete.with_columns(
        duration_s=pl.when(bad).then(0.0).otherwise(pl.col("duration_s"))
    ), n_bad

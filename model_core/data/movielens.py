"""MovieLens (`read_movielens`): ml-100k, ml-1m and ml-latest(-small) layouts, detected from the
files present. A rating becomes an action type: rating >= `positive_min_rating` → "rate_high" (the
positive), 3.0 <= rating < `positive_min_rating` → "rate_mid", lower → "rate_low"."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from model_core.data.raw_log import RawLog, _finish, _read_separated
from model_core.data.timelines import PositiveRule

MOVIELENS_ACTION_TYPES = ("rate_low", "rate_mid", "rate_high")
# ml-100k's u.item carries one 0/1 flag per genre, in this order (its u.genre file).
ML100K_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary",
    "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi",
    "Thriller", "War", "Western",
)  # fmt: skip
NO_GENRE = frozenset({"unknown", "(no genres listed)", ""})


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

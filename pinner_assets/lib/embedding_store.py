"""User and pin embeddings in the warehouse: one day's inference, its checks, the partition
write, and the publication of the vectors (paper §3.6)."""

import datetime

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from model_core.data.timelines import PinCatalog, PositiveRule
from model_core.inference.embed import INFERENCE_BATCH_SIZE
from model_core.inference.sharded import embed_users_sharded, shared_pool
from model_core.model.pinnerformer import PinnerFormer
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import PinnerStorage
from pinner_assets.lib.timelines import query_last_actions, to_timelines
from pinner_assets.lib.vectors import publish_vectors, vector_column

# Inference reads no labels: every action is input, none is positive.
NO_LABELS = PositiveRule(surfaces=(), always=(), min_duration_s={})


def embedding_check(emb: np.ndarray) -> dg.AssetCheckResult:
    norms = np.linalg.norm(emb, axis=1) if len(emb) else np.ones(0)
    finite = bool(np.isfinite(emb).all())
    unit = bool(np.allclose(norms, 1.0, atol=1e-3))
    return dg.AssetCheckResult(
        check_name="embeddings_valid",
        passed=finite and unit,
        metadata={
            "finite": finite,
            "min_norm": float(norms.min()) if len(norms) else 1.0,
            "max_norm": float(norms.max()) if len(norms) else 1.0,
        },
    )


def infer_day(
    con: duckdb.DuckDBPyConnection,
    model: PinnerFormer,
    version: str,
    catalog: PinCatalog,
    day: datetime.date,
    device: str,
    shards: int = 1,
    batch_size: int = INFERENCE_BATCH_SIZE,
) -> tuple[pl.DataFrame, dict[str, object]]:
    """New embeddings for the day's active users merged over the previous day's (paper Fig. 3).

    A previous partition made by another model version is not comparable: re-infer every known
    user from their last M actions (whole history), and never carry a row of another version
    over. A missing previous partition (not the first) is an error.

    Vocabulary ids come from the model's own FeatureConfig (the source's vocabulary it was
    trained on, saved in the checkpoint), so ids always index the model's embedding tables.
    """
    vocab = model.config.features
    prev_day = day - datetime.timedelta(days=1)
    prev = con.execute(
        "SELECT model_version FROM user_embedding_partitions WHERE as_of = ?", [prev_day]
    ).fetchone()
    if prev is None and day.isoformat() != daily_partitions.get_first_partition_key():
        raise dg.Failure(
            f"user_embeddings[{prev_day}] is missing, so user_embeddings[{day}] cannot merge over "
            f"it. Materialise {prev_day} first (or backfill the range up to {day} in one run).",
            allow_retries=False,
        )
    built = con.execute("SELECT 1 FROM user_timeline_partitions WHERE as_of = ?", [day]).fetchone()
    if built is None:  # never built, or held back by a hole in raw_actions
        raise dg.Failure(
            f"user_timelines[{day}] is not built, so user_embeddings[{day}] would merge over a "
            f"hole. Materialise user_timelines[{day}] first (it waits for every raw_actions day "
            "it reads).",
            allow_retries=False,
        )
    full = prev is not None and prev[0] != version
    if full:
        users = (
            # $day is a bound parameter of query_last_actions: no value is spliced into SQL
            "SELECT user_id FROM user_embeddings WHERE as_of = $day - 1 UNION "
            "SELECT user_id FROM user_timelines WHERE as_of = $day"
        )
        # the whole history, not the lookback: every known user must get a new-version row
        rows = query_last_actions(con, day, users, vocab, lookback=100_000)
    else:
        rows = con.execute(
            "SELECT * FROM user_timelines WHERE as_of = ? ORDER BY user_id", [day]
        ).pl()
    timelines = to_timelines(rows, catalog, vocab, NO_LABELS)
    # S shards by a stable user hash, in parallel worker processes; bit-identical for every S
    emb = embed_users_sharded(
        model, timelines, catalog, shards, batch_size, device, pool=shared_pool(shards)
    )
    new = pl.DataFrame(
        {
            "as_of": [day] * timelines.n_users,
            "user_id": timelines.user_ids,
            "embedding": list(emb),
            "model_version": [version] * timelines.n_users,
            "updated_on": [day] * timelines.n_users,
        },
        schema={
            "as_of": pl.Date,
            "user_id": pl.Int64,
            "embedding": pl.List(pl.Float32),
            "model_version": pl.Utf8,
            "updated_on": pl.Date,
        },
    )
    stats = {
        "n_inferred": new.height,
        "full_reinference": full,
        "has_previous": prev is not None,
        "inference_shards": shards,
    }
    return new, stats


def write_partition(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    new: pl.DataFrame,
    version: str,
    stats: dict[str, object],
) -> int:
    """In one transaction: the day's new rows, plus yesterday's rows of every other user carried
    over inside DuckDB (no round trip through Python). Returns the partition's user count."""
    prev_day = day - datetime.timedelta(days=1)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM user_embeddings WHERE as_of = ?", [day])
        con.execute("DELETE FROM user_embedding_partitions WHERE as_of = ?", [day])
        con.register("_new", new.to_arrow())
        con.execute("INSERT INTO user_embeddings SELECT * FROM _new")
        if stats["has_previous"]:
            con.execute(
                "INSERT INTO user_embeddings SELECT ?::DATE, user_id, embedding, model_version, "
                "updated_on FROM user_embeddings WHERE as_of = ? AND model_version = ? "
                "AND user_id NOT IN (SELECT user_id FROM _new)",
                [day, prev_day, version],
            )
        con.unregister("_new")
        row = con.execute("SELECT count(*) FROM user_embeddings WHERE as_of = ?", [day]).fetchone()
        n_users = int(row[0]) if row else 0
        con.execute(
            "INSERT INTO user_embedding_partitions VALUES (?, ?, ?, ?, ?)",
            [day, version, n_users, stats["n_inferred"], stats["full_reinference"]],
        )
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return n_users


def embedding_matrix(df: pl.DataFrame) -> np.ndarray:
    """A list-of-floats `embedding` column → [N, D] float32."""
    if df.height == 0:
        return np.zeros((0, 1), dtype=np.float32)
    return np.asarray(df["embedding"].to_list(), dtype=np.float32).reshape(df.height, -1)


def require_valid(result: dg.AssetCheckResult, what: str, ids: np.ndarray) -> None:
    """Raise before anything is written when the in-memory embeddings fail their check."""
    dup = len(ids) - len(np.unique(ids))
    if result.passed and dup == 0:
        return
    raise dg.Failure(
        f"{what} not written: embeddings_valid failed on the computed rows "
        f"({dict(result.metadata)}, duplicate ids: {dup}); the stored and published data are "
        "unchanged.",
        allow_retries=False,
    )


def publish_users(
    storage: PinnerStorage, merged: pl.DataFrame, version: str, day: datetime.date
) -> dict | None:
    """The latest merged partition → LanceDB `users__<version>`, published together with the
    pins of the same version (vectors.publish_vectors). Returns the pointer in force."""
    emb = embedding_matrix(merged)
    return publish_vectors(
        storage.lancedb_uri,
        "users",
        version,
        {
            "user_id": pa.array(merged["user_id"].to_numpy(), pa.int64()),
            "vector": vector_column(emb),
            "model_version": pa.array(merged["model_version"].to_list(), pa.string()),
            "as_of": pa.array(merged["as_of"].to_list(), pa.date32()),
            "updated_on": pa.array(merged["updated_on"].to_list(), pa.date32()),
        },
        index=False,
        as_of=day.isoformat(),
    )


def load_pin_embeddings(con: duckdb.DuckDBPyConnection, version: str) -> pl.DataFrame:
    """The pin tower's vectors of model `version` (empty if that version was never embedded)."""
    return con.execute(
        "SELECT pin_id, embedding, topic, model_version FROM pin_embeddings "
        "WHERE model_version = ? ORDER BY pin_id",
        [version],
    ).pl()


def require_pin_embeddings(
    con: duckdb.DuckDBPyConnection, version: str, needed_for: str
) -> pl.DataFrame:
    """`load_pin_embeddings`, failing (no retry) when model `version` was never embedded."""
    df = load_pin_embeddings(con, version)
    if df.height == 0:
        raise dg.Failure(
            f"pin_embeddings has no vectors of model {version}, which {needed_for}: materialise "
            "pin_embeddings with that model first",
            allow_retries=False,
        )
    return df

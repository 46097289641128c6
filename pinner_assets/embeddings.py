"""user_embeddings (daily, merged over the previous day), pin_embeddings and pin_index."""

import datetime

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from model_core.embed import embed_pins
from model_core.model import PinnerFormer
from model_core.sharded_inference import embed_users_sharded, shared_pool
from model_core.timelines import PinCatalog, PositiveRule
from pinner_assets.automation import EMBEDDINGS_EAGER, PIN_EAGER
from pinner_assets.partitions import daily_partitions
from pinner_assets.resources import ComputeResource, PinnerStorage
from pinner_assets.timelines import load_catalog, query_last_actions, to_timelines
from pinner_assets.training import load_serving_model
from pinner_assets.vectors import build_hnsw, hnsw_recall, publish_vectors, vector_column
from pinner_assets.warehouse import LOCK_RETRY, ensure_tables

PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)
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
    batch_size: int = 1024,
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


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[
        "user_timelines",
        "trained_model",
        "pin_features",
        dg.AssetDep("user_embeddings", partition_mapping=PREVIOUS_DAY),
    ],
    pool="duckdb",
    group_name="serving",
    kinds={"duckdb", "lancedb", "pytorch"},
    owners=["team:ml-platform"],
    code_version="user_embeddings-2",
    metadata={
        "partition_expr": "as_of",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("as_of", "DATE", description="partition"),
                dg.TableColumn("user_id", "BIGINT"),
                dg.TableColumn("embedding", "FLOAT[]", description="unit norm, D wide"),
                dg.TableColumn("model_version", "VARCHAR", description="one per partition"),
                dg.TableColumn("updated_on", "DATE", description="day last re-inferred"),
            ]
        ),
    },
    retry_policy=LOCK_RETRY,
    automation_condition=EMBEDDINGS_EAGER,
)
def user_embeddings(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    """Every known user's embedding as of the day: the day's active users re-inferred, everyone
    else carried over from the previous day. Ranges run in order in one run."""
    from model_core.trainer import resolve_device

    model, version = load_serving_model(storage)
    device = str(resolve_device(compute.device))
    per_day = []
    with duckdb.get_connection() as con:
        ensure_tables(con)
        catalog = load_catalog(con)
        for key in context.partition_keys:
            day = datetime.date.fromisoformat(key)
            new, stats = infer_day(
                con,
                model,
                version,
                catalog,
                day,
                device,
                compute.inference_shards,
                compute.inference_batch_size,
            )
            # the check runs on the in-memory result: a bad day is never written or published
            require_valid(
                embedding_check(embedding_matrix(new)),
                f"user_embeddings[{key}]",
                new["user_id"].to_numpy(),
            )
            stats = {"n_users": write_partition(con, day, new, version, stats), **stats}
            per_day.append({"day": key, **stats})
            context.add_asset_metadata(
                {
                    "dagster/row_count": stats["n_users"],
                    "users_inferred": stats["n_inferred"],
                    "full_reinference": bool(stats["full_reinference"]),
                    "model_version": version,
                },
                partition_key=key,
            )
            context.log.info(f"user_embeddings[{key}]: {stats}")
        latest = con.execute("SELECT max(as_of) FROM user_embedding_partitions").fetchone()
        if latest is not None and latest[0] == day:
            merged = con.execute(
                "SELECT * FROM user_embeddings WHERE as_of = ? ORDER BY user_id", [day]
            ).pl()
            pointer = publish_users(storage, merged, version, day)
            context.log.info(f"LanceDB published pair: {pointer}")
    return dg.MaterializeResult()


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


@dg.asset(
    deps=["trained_model", "pin_features"],
    pool="duckdb",
    group_name="serving",
    kinds={"duckdb", "pytorch"},
    owners=["team:ml-platform"],
    code_version="pin_embeddings-2",
    metadata={
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("pin_id", "BIGINT"),
                dg.TableColumn("embedding", "FLOAT[]", description="unit norm"),
                dg.TableColumn("topic", "INTEGER"),
                dg.TableColumn("model_version", "VARCHAR", description="every version is kept"),
                dg.TableColumn("as_of", "DATE"),
            ]
        )
    },
    retry_policy=LOCK_RETRY,
    automation_condition=PIN_EAGER,
    check_specs=[
        dg.AssetCheckSpec(
            "embeddings_valid",
            asset="pin_embeddings",
            blocking=True,
            description="Every pin vector is finite and unit-norm and every pin id appears once; "
            "evaluated on the computed vectors BEFORE they are written (a failure writes nothing).",
        )
    ],
)
def pin_embeddings(
    duckdb: DuckDBResource, storage: PinnerStorage, compute: ComputeResource
) -> dg.MaterializeResult:
    """The pin tower over every pin, recomputed from scratch (cheap MLP)."""
    from model_core.trainer import resolve_device

    model, version = load_serving_model(storage)
    with duckdb.get_connection() as con:
        catalog = load_catalog(con)
        emb = embed_pins(
            model, catalog.embeddings, catalog.pin_ids, device=str(resolve_device(compute.device))
        )
        check = embedding_check(emb)
        require_valid(check, f"pin_embeddings of {version}", catalog.pin_ids)
        today = datetime.datetime.now(datetime.timezone.utc).date()
        df = pl.DataFrame(
            {
                "pin_id": catalog.pin_ids,
                "embedding": list(emb),
                "topic": catalog.topics,
                "model_version": [version] * len(emb),
                "as_of": [today] * len(emb),
            }
        )
        # one row set per model version: a report of an old day scores with its own model's pins
        ensure_tables(con)
        con.execute("BEGIN TRANSACTION")
        try:
            con.execute("DELETE FROM pin_embeddings WHERE model_version = ?", [version])
            con.register("_pins", df.to_arrow())
            con.execute(
                "INSERT INTO pin_embeddings SELECT pin_id, embedding::FLOAT[], topic, "
                "model_version, as_of FROM _pins"
            )
            con.unregister("_pins")
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise
    return dg.MaterializeResult(
        metadata={"dagster/row_count": len(emb), "model_version": version},
        check_results=[check],
        data_version=dg.DataVersion(version),
    )


def load_pin_embeddings(con: duckdb.DuckDBPyConnection, version: str) -> pl.DataFrame:
    """The pin tower's vectors of model `version` (empty if that version was never embedded)."""
    return con.execute(
        "SELECT pin_id, embedding, topic, model_version FROM pin_embeddings "
        "WHERE model_version = ? ORDER BY pin_id",
        [version],
    ).pl()


@dg.asset(
    deps=["pin_embeddings", "trained_model"],
    group_name="serving",
    kinds={"lancedb"},
    owners=["team:ml-platform"],
    code_version="pin_index-2",
    pool="duckdb",
    retry_policy=LOCK_RETRY,
    automation_condition=PIN_EAGER,
)
def pin_index(duckdb: DuckDBResource, storage: PinnerStorage) -> dg.MaterializeResult:
    """hnswlib HNSW graph file + LanceDB `pins__<version>` table with its own ANN index, published
    together with the users of the same model version (vectors.publish_vectors)."""
    _, serving = load_serving_model(storage)
    with duckdb.get_connection() as con:
        df = load_pin_embeddings(con, serving)
    if df.height == 0:
        raise dg.Failure(
            f"pin_embeddings has no vectors of the serving model {serving}: materialise "
            "pin_embeddings first",
            allow_retries=False,
        )
    emb = np.asarray(df["embedding"].to_list(), dtype=np.float32)
    ids = df["pin_id"].to_numpy().astype(np.int64)
    version = df["model_version"][0]
    path = storage.path("index", f"pins_{version}.hnsw")
    index = build_hnsw(emb, ids, path)
    rng = np.random.default_rng(0)
    queries = emb[rng.choice(len(emb), size=min(200, len(emb)), replace=False)]
    recall = hnsw_recall(index, emb, ids, queries)
    pointer = publish_vectors(
        storage.lancedb_uri,
        "pins",
        version,
        {
            "pin_id": pa.array(ids, pa.int64()),
            "vector": vector_column(emb),
            "topic": pa.array(df["topic"].to_numpy(), pa.int32()),
            "model_version": pa.array(df["model_version"].to_list(), pa.string()),
        },
        index=True,
    )
    return dg.MaterializeResult(
        metadata={
            "pins": len(emb),
            "hnsw_path": dg.MetadataValue.path(str(path)),
            "hnsw_recall_at_10_vs_exact": recall,
            "lancedb_uri": storage.lancedb_uri,
            "lancedb_published": dg.MetadataValue.json(pointer or {}),
            "model_version": version,
        }
    )

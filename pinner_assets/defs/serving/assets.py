"""user_embeddings (daily, merged over the previous day), pin_embeddings and pin_index."""

import datetime

import dagster as dg
import numpy as np
import polars as pl
import pyarrow as pa
from dagster_duckdb import DuckDBResource

from model_core.inference.embed import embed_pins
from pinner_assets.defs.automation.freshness import USER_EMBEDDINGS_FRESHNESS
from pinner_assets.lib.automation import PIN_EAGER, SERVING_EAGER
from pinner_assets.lib.embedding_store import (
    embedding_check,
    embedding_matrix,
    infer_day,
    publish_users,
    require_pin_embeddings,
    require_valid,
    write_partition,
)
from pinner_assets.lib.models import load_serving_model
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import ComputeResource, PinnerStorage
from pinner_assets.lib.timelines import load_catalog
from pinner_assets.lib.vectors import build_hnsw, hnsw_recall, publish_vectors, vector_column
from pinner_assets.lib.warehouse import LOCK_RETRY, ensure_tables

PREVIOUS_DAY = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=-1, allow_nonexistent_upstream_partitions=True
)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=USER_EMBEDDINGS_FRESHNESS,
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
    automation_condition=SERVING_EAGER,
)
def user_embeddings(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
    compute: ComputeResource,
) -> dg.MaterializeResult:
    """Every known user's embedding as of the day: the day's active users re-inferred, everyone
    else carried over from the previous day. Ranges run in order in one run."""
    from model_core.training.config import resolve_device

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
                compute.shards(device),
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
    from model_core.training.config import resolve_device

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
    """hnswlib HNSW graph file + LanceDB `pins__<version>` table (with an ANN index from
    vectors.ANN_MIN_ROWS pins), published together with the users of the same model version
    (vectors.publish_vectors)."""
    _, serving = load_serving_model(storage)
    with duckdb.get_connection() as con:
        df = require_pin_embeddings(con, serving, "is served")
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

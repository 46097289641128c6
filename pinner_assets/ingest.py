"""raw_actions (daily) and pin_features: the pipeline's inputs, validated before they are stored."""

import datetime

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from model_core.contract import ContractError, conform, validate_actions
from pinner_assets.partitions import daily_partitions
from pinner_assets.resources import ActionSource, EvaluationSplit, PinnerStorage, item_cutoff
from pinner_assets.warehouse import ensure_tables, replace_day, to_naive_utc

RAW_CHECKS = ("contract", "ids_not_null", "duration_valid", "ts_inside_partition", "oov_rate")


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    group_name="ingest",
    check_specs=[dg.AssetCheckSpec(name, asset="raw_actions", blocking=True) for name in RAW_CHECKS]
    + [dg.AssetCheckSpec("no_duplicates", asset="raw_actions", blocking=False)],
    metadata={"partition_expr": "event_date"},
)
def raw_actions(
    context: dg.AssetExecutionContext,
    source: ActionSource,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
) -> dg.MaterializeResult:
    """One day of engagement (DESIGN §4 contract) from the configured source.

    Every day is validated BEFORE it is written, against the source's own vocabulary (action
    types, surfaces). A day that breaks a blocking rule is not written (the stored day, if any,
    stays as it was), is quarantined as Parquet for inspection, and its blocking checks fail,
    which stops everything downstream of it.
    """
    vocab = source.feature_config()
    span = source.date_span()
    failures: dict[str, list[str]] = {}
    warnings: dict[str, list[str]] = {}
    rows = 0
    for key in context.partition_keys:
        day = datetime.date.fromisoformat(key)
        raw = source.load_day(day)
        if span is not None and not span[0] <= day <= span[1]:
            context.log.warning(
                f"raw_actions[{key}]: the {source.kind} log spans {span[0]} .. {span[1]}, not "
                "this day; set PINNER_START_DATE / PINNER_END_DATE to its dates (docs/REAL_DATA.md)"
            )
        try:
            df = conform(raw)
        except ContractError as err:
            failures.setdefault("contract", []).append(f"{key}: {err}")
            _quarantine(storage, key, raw)
            continue
        results = validate_actions(df, day, vocab.action_types, vocab.surfaces)
        bad = [r for r in results if r.blocking and not r.passed]
        for r in results:
            if not r.passed:
                (failures if r.blocking else warnings).setdefault(r.name, []).append(
                    f"{key}: {r.message()}"
                )
        if bad:
            path = _quarantine(storage, key, df)
            context.log.error(
                f"raw_actions[{key}] rejected, stored day left untouched, rows quarantined at "
                f"{path}: " + "; ".join(r.message() for r in bad)
            )
            continue
        df = df.unique(maintain_order=True).sort("user_id", "ts", "pin_id", maintain_order=True)
        with duckdb.get_connection() as con:
            replace_day(con, "raw_actions", "event_date", day, to_naive_utc(df))
        rows += df.height
    checks = [
        dg.AssetCheckResult(
            check_name=name,
            passed=name not in failures,
            metadata={"failures": dg.MetadataValue.md("\n".join(failures.get(name, ["none"])))},
        )
        for name in RAW_CHECKS
    ] + [
        dg.AssetCheckResult(
            check_name="no_duplicates",
            passed="no_duplicates" not in warnings,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"details": "\n".join(warnings.get("no_duplicates", ["none"]))},
        )
    ]
    return dg.MaterializeResult(
        metadata={
            "source": source.kind,
            "rows": rows,
            "days": len(context.partition_keys),
            "rejected_days": len({m.split(":")[0] for msgs in failures.values() for m in msgs}),
        },
        check_results=checks,
    )


def _quarantine(storage: PinnerStorage, key: str, df: pl.DataFrame) -> str:
    path = storage.path("quarantine", "raw_actions", f"{key}.parquet")
    df.write_parquet(path)
    return str(path)


@dg.asset(
    pool="duckdb",
    group_name="ingest",
    check_specs=[dg.AssetCheckSpec("embeddings_finite", asset="pin_features", blocking=True)],
)
def pin_features(
    source: ActionSource, split: EvaluationSplit, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """Item content embeddings (the PinSage stand-in): pin_id, embedding FLOAT[d], topic.

    For a real log they are built from its metadata and co-engagement strictly before 00:00 UTC
    of the day after split.train_end_date (the last training day), so nothing from the
    evaluation period leaks into an item vector (ActionSource.load_pins).
    """
    df = source.load_pins(split.train_end).select(
        pl.col("pin_id").cast(pl.Int64),
        pl.col("embedding").cast(pl.List(pl.Float32)),
        pl.col("topic").cast(pl.Int32),
    )
    emb = np.asarray(df["embedding"].to_list(), dtype=np.float32)
    finite = bool(np.isfinite(emb).all()) and emb.ndim == 2
    dim = int(emb.shape[1]) if emb.ndim == 2 else -1
    if finite and df["pin_id"].n_unique() == df.height:
        with duckdb.get_connection() as con:
            ensure_tables(con)
            con.execute("BEGIN TRANSACTION")
            con.execute("DROP TABLE IF EXISTS pin_features")
            con.register("_pins", df.to_arrow())
            con.execute(
                f"CREATE TABLE pin_features AS SELECT pin_id, "
                f"embedding::FLOAT[{dim}] AS embedding, topic FROM _pins"
            )
            con.execute("COMMIT")
    return dg.MaterializeResult(
        metadata={
            "pins": df.height,
            "dim": dim,
            "source": source.kind,
            "cutoff": str(item_cutoff(split.train_end)) if source.is_log else "none",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="embeddings_finite",
                passed=finite and df["pin_id"].n_unique() == df.height,
                metadata={"unique_ids": df["pin_id"].n_unique() == df.height, "finite": finite},
            )
        ],
    )

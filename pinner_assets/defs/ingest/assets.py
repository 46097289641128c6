"""raw_actions (daily) and pin_features: the pipeline's inputs, validated before they are stored.

A day that breaks a blocking rule is never written: its rows go to
`quarantine/raw_actions/<day>/`, every rule's result is recorded as a check on THAT partition, and
the materialisation fails with the rule, the column, an example row and the quarantine path. The
partition therefore stays missing (or keeps its previous, good rows), and nothing downstream of it
is built until it is repaired (docs/DESIGN.md §7: returning a result would mark it materialised).
"""

import datetime

import dagster as dg
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from pinner_assets.lib.day_checks import (
    RAW_RULES,
    WARN_RULES,
    DayVerdict,
    RawActionsConfig,
    check_evaluations,
    content_hash,
    day_metadata,
    judge_day,
    recent_volume,
    rejection_message,
)
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import ActionSource, EvaluationSplit, PinnerStorage, item_cutoff
from pinner_assets.lib.warehouse import (
    LOCK_RETRY,
    ensure_tables,
    replace_day,
    to_naive_utc,
    utc_now,
)


# A multi_asset with can_subset: its check outputs are optional, so each rule is reported on each
# day's own partition (AssetCheckEvaluation) instead of once for the whole range of a run.
@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_actions",
            description="One day of engagement (docs/DESIGN.md §4 contract), checked before it is "
            "stored.",
            group_name="ingest",
            kinds={"duckdb", "polars"},
            owners=["team:data-platform"],
            code_version="raw_actions-2",
            partitions_def=daily_partitions,
            metadata={
                "partition_expr": "event_date",
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn("event_date", "DATE", description="partition (UTC day)"),
                        dg.TableColumn("ts", "TIMESTAMP", description="UTC, inside the day"),
                        dg.TableColumn("user_id", "BIGINT"),
                        dg.TableColumn("pin_id", "BIGINT"),
                        dg.TableColumn("action_type", "VARCHAR", description="source vocabulary"),
                        dg.TableColumn("surface", "VARCHAR", description="source vocabulary"),
                        dg.TableColumn("duration_s", "DOUBLE", description=">= 0, finite"),
                    ]
                ),
            },
            skippable=True,
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="raw_actions",
            blocking=True,
            description=description,
            partitions_def=daily_partitions,
        )
        for name, description in RAW_RULES.items()
    ]
    + [
        dg.AssetCheckSpec(name, asset="raw_actions", description=d, partitions_def=daily_partitions)
        for name, d in WARN_RULES.items()
    ],
    can_subset=True,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    retry_policy=LOCK_RETRY,
)
def raw_actions(
    context: dg.AssetExecutionContext,
    config: RawActionsConfig,
    source: ActionSource,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
):
    """One day of engagement (docs/DESIGN.md §4 contract) from the configured source.

    Every day is checked BEFORE it is written, against the source's own vocabulary (action types,
    surfaces), its recent volume and the clock. A day that breaks a blocking rule is quarantined,
    its stored rows (if any) stay as they were, and the materialisation fails naming the rule, an
    example row and the quarantine path; the other days of a range are still stored.
    """
    vocab = source.feature_config()
    span = source.date_span()
    verdicts: list[DayVerdict] = []
    stored_before: dict[str, tuple | None] = {}
    with duckdb.get_connection() as con:
        ensure_tables(con)
        for key in context.partition_keys:
            day = datetime.date.fromisoformat(key)
            if span is not None and not span[0] <= day <= span[1]:
                context.log.warning(
                    f"raw_actions[{key}]: the {source.kind} log spans {span[0]} .. {span[1]}, not "
                    "this day; set PINNER_START_DATE / PINNER_END_DATE to its dates "
                    "(docs/REAL_DATA.md)"
                )
            stored_before[key] = con.execute(
                "SELECT n_rows, ingested_at FROM raw_action_partitions WHERE event_date = ?",
                [day],
            ).fetchone()
            verdict = judge_day(source, storage, day, vocab, config, recent_volume(con, day))
            if verdict.accepted:
                assert verdict.rows is not None
                n, digest = verdict.rows.height, content_hash(verdict.rows)
                replace_day(
                    con,
                    "raw_actions",
                    "event_date",
                    day,
                    to_naive_utc(verdict.rows),
                    ledger=("raw_action_partitions", [day, n, digest, utc_now()]),
                )
            else:
                context.log.error(rejection_message(verdict, stored_before[key]))
            yield from check_evaluations(verdict)
            verdicts.append(verdict)

    rejected = [v for v in verdicts if not v.accepted]
    for v in verdicts:
        if v.accepted:
            meta = {**day_metadata(v), "source": source.kind}
            if rejected:  # the step fails below: record the days that were stored all the same
                yield dg.AssetMaterialization("raw_actions", partition=v.key, metadata=meta)
            else:
                context.add_asset_metadata(meta, partition_key=v.key)
    if rejected:
        raise dg.Failure(
            description="\n".join(rejection_message(v, stored_before[v.key]) for v in rejected),
            metadata={
                "rejected_days": [v.key for v in rejected],
                "rules": sorted({r.name for v in rejected for r in v.failed}),
                "quarantine": [v.quarantine or "" for v in rejected],
            },
            allow_retries=False,
        )
    yield dg.MaterializeResult(asset_key="raw_actions")


@dg.asset(
    pool="duckdb",
    group_name="ingest",
    kinds={"duckdb"},
    owners=["team:data-platform"],
    retry_policy=LOCK_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            "embeddings_finite",
            asset="pin_features",
            blocking=True,
            description="Every content embedding is finite and every pin_id appears once; "
            "checked before the table is replaced (a failure leaves the stored table as it was).",
        )
    ],
)
def pin_features(
    source: ActionSource, split: EvaluationSplit, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """Item content embeddings (the PinSage stand-in): pin_id, embedding FLOAT[d], topic, and the
    item's metadata tokens VARCHAR[] (empty without metadata), which the model may learn vectors
    for (`model_core.features.item_ids`).

    For a real log they are built from its metadata and co-engagement strictly before 00:00 UTC
    of the day after split.train_end_date (the last training day), so nothing from the
    evaluation period leaks into an item vector (ActionSource.load_pins).
    """
    pins = source.load_pins(split.train_end)
    no_tokens = pl.lit([], dtype=pl.List(pl.Utf8))  # sources without metadata (synthetic)
    df = pins.select(
        pl.col("pin_id").cast(pl.Int64),
        pl.col("embedding").cast(pl.List(pl.Float32)),
        pl.col("topic").cast(pl.Int32),
        (pl.col("tokens") if "tokens" in pins.columns else no_tokens).alias("tokens"),
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
                f"embedding::FLOAT[{dim}] AS embedding, topic, tokens FROM _pins"
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

"""evaluation_report (daily): the paper's metrics on held-out users with the SERVED embeddings.

For partition D the split time is the end of D: held-out users (disjoint from training, §4.1)
are represented by their user_embeddings[D] row — exactly what the daily batch published — and
their positives are their positive engagements in (D, D + 14 days]. The report therefore depends
on raw_actions (D, D + 14] (a forward time window, declared) and is materialised by automation
once those days are stored, never at 01:30 of D + 1 when none of them exist. It scores with the
pin vectors of the model that made the users' rows (pin_embeddings keeps every version), so a
retrain never changes a past report, and it records that version. The last 14 days of a finished
log have a shorter horizon (`horizon_days_available`).

Drift of the user embeddings is its own daily asset, embedding_drift (it needs only D - 1 and D).
"""

import datetime
from typing import cast

import dagster as dg
import duckdb
from dagster_duckdb import DuckDBResource

from pinner_assets.defs.automation.freshness import EVALUATION_REPORT_FRESHNESS
from pinner_assets.lib.automation import EMBEDDINGS_EAGER, REPORT_EAGER
from pinner_assets.lib.day_scoring import day_embeddings, score_day
from pinner_assets.lib.embedding_store import embedding_matrix
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.promotion import serving_version
from pinner_assets.lib.report import write_drift_report, write_evaluation_report
from pinner_assets.lib.resources import ActionSource, EvaluationSplit, PinnerStorage
from pinner_assets.lib.timelines import (
    LOOKBACK_DAYS,
    MAX_LEN,
)
from pinner_assets.lib.warehouse import LOCK_RETRY, stored_days

DAY_AND_PREVIOUS = dg.TimeWindowPartitionMapping(
    start_offset=-1, end_offset=0, allow_nonexistent_upstream_partitions=True
)
HORIZON_DAYS = 14  # the paper's evaluation window; EvaluationSplit.horizon_days must not exceed it
# raw_actions read by evaluation_report[D]: the lookback of the users' history and the popularity
# baseline (D - 55 .. D) and the labels (D + 1 .. D + 14).
REPORT_READS = dg.TimeWindowPartitionMapping(
    start_offset=-(LOOKBACK_DAYS - 1),
    end_offset=HORIZON_DAYS,
    allow_nonexistent_upstream_partitions=True,
)


def users_version(con: duckdb.DuckDBPyConnection, day: datetime.date) -> str:
    """The model version of user_embeddings[day] (one per partition by construction)."""
    row = con.execute(
        "SELECT model_version FROM user_embedding_partitions WHERE as_of = ?", [day]
    ).fetchone()
    if row is None:
        raise dg.Failure(f"user_embeddings[{day}] is not built", allow_retries=False)
    return str(row[0])


def label_days(con: duckdb.DuckDBPyConnection, day: datetime.date, horizon: int) -> list[str]:
    """Days of (day, day + horizon] that are not stored yet. Only a FIXED end of the partition
    range (a finished log) excuses a day; in an open-ended range a future day is simply missing."""
    end = daily_partitions.end.date() if daily_partitions.end is not None else None
    window = [day + datetime.timedelta(days=i) for i in range(1, horizon + 1)]
    have = stored_days(con, "raw_action_partitions", "event_date", window[0], window[-1])
    return [d.isoformat() for d in window if (end is None or d < end) and d not in have]


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    freshness_policy=EVALUATION_REPORT_FRESHNESS,
    deps=[
        "user_embeddings",
        dg.AssetDep("raw_actions", partition_mapping=REPORT_READS),
        "pin_embeddings",
        "pin_features",
        "trained_model",
    ],
    pool="duckdb",
    retry_policy=LOCK_RETRY,
    group_name="evaluation",
    kinds={"duckdb", "evidently"},
    owners=["team:ml-platform"],
    code_version="evaluation_report-2",
    automation_condition=REPORT_EAGER,
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
    split: EvaluationSplit,
    source: ActionSource,
) -> dg.MaterializeResult:
    """Recall@10, P90 coverage@10, interest entropy@50 for PinnerFormer and the baselines, the
    metric table as an Evidently HTML page: reports/<day>/metrics.json and report.html.

    Scores user_embeddings[D] with the pins of the SAME model version and records it. Refuses to
    run while a label day (D, D + 14] inside the partition range is not stored."""
    vocab, rule = source.feature_config(), source.rule()
    serving = serving_version(storage)
    for key in context.partition_keys:
        day = datetime.date.fromisoformat(key)
        with duckdb.get_connection() as con:
            missing = label_days(con, day, split.horizon_days)
            if missing:
                raise dg.Failure(
                    f"evaluation_report[{key}] needs the labels of raw_actions ({key}, "
                    f"{day + datetime.timedelta(days=split.horizon_days)}]; not stored yet: "
                    f"{missing}. Automation materialises the report once they are.",
                    allow_retries=False,
                )
            version = users_version(con, day)
            metrics = score_day(con, day, split, MAX_LEN, vocab, rule, version)
            today = embedding_matrix(day_embeddings(con, day))
        payload = {
            "as_of": key,
            "model_version": version,
            "users_model_version": version,
            "pins_model_version": version,
            "serving_model_version_at_report": serving,
            **metrics,
        }
        paths = write_evaluation_report(
            storage.path("reports", key, "metrics.json").parent,
            payload,
            today,
            None,
            no_reference_note="drift is the embedding_drift asset (reports/<day>/drift.html)",
        )
        pf = metrics.get("pinnerformer") or {}
        base = metrics.get("baselines") or {}
        recall_at_k = cast(dict[str, float], metrics.get("pinnerformer_recall_at_k") or {})
        meta: dict[str, object] = {
            "model_version": version,
            "eval_users": metrics.get("eval_users", 0),
            "horizon_days_available": metrics.get("horizon_days_available", 0),
            "report": dg.MetadataValue.path(str(paths.html)),
            "recall_at_10_table": dg.MetadataValue.md(_recall_table(pf, base)),
            "recall_vs_k": dg.MetadataValue.md(
                "| k | recall@k |\n|---|---|\n"
                + "\n".join(f"| {k} | {v:.4f} |" for k, v in recall_at_k.items())
            ),
        }
        if isinstance(pf, dict):
            meta.update({f"pinnerformer/{k}": v for k, v in pf.items()})
        if isinstance(base, dict):
            for name, vals in base.items():
                meta.update({f"{name}/{k}": v for k, v in vals.items()})
        context.add_asset_metadata(meta, partition_key=key)
        context.log.info(f"evaluation_report[{key}]: {metrics}")
    return dg.MaterializeResult()


def _recall_table(pf: object, base: object) -> str:
    rows = {"pinnerformer": pf, **(base if isinstance(base, dict) else {})}
    lines = ["| scorer | recall@10 | P90 coverage@10 | entropy@50 |", "|---|---|---|---|"]
    for name, m in rows.items():
        if isinstance(m, dict) and m:
            lines.append(
                f"| {name} | {m['recall_at_10']:.4f} | {m['p90_coverage_at_10']:.4f} "
                f"| {m['interest_entropy_at_50']:.3f} |"
            )
    return "\n".join(lines)


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[dg.AssetDep("user_embeddings", partition_mapping=DAY_AND_PREVIOUS)],
    pool="duckdb",
    retry_policy=LOCK_RETRY,
    group_name="evaluation",
    kinds={"evidently"},
    owners=["team:ml-platform"],
    code_version="embedding_drift-1",
    automation_condition=EMBEDDINGS_EAGER,
)
def embedding_drift(
    context: dg.AssetExecutionContext, duckdb: DuckDBResource, storage: PinnerStorage
) -> dg.MaterializeResult:
    """Drift of user_embeddings[D] against user_embeddings[D - 1] (Evidently, domain-classifier
    ROC AUC): reports/<day>/drift.json and drift.html. Across a model change the two days are not
    comparable, and the report says so instead of scoring."""
    for key in context.partition_keys:
        day = datetime.date.fromisoformat(key)
        prev = day - datetime.timedelta(days=1)
        with duckdb.get_connection() as con:
            today = embedding_matrix(day_embeddings(con, day))
            version = users_version(con, day)
            row = con.execute(
                "SELECT model_version FROM user_embedding_partitions WHERE as_of = ?", [prev]
            ).fetchone()
            yesterday = embedding_matrix(day_embeddings(con, prev)) if row else None
        note = None
        if row is not None and row[0] != version:
            yesterday, note = None, f"model changed from {row[0]} to {version}"
        drift = write_drift_report(
            storage.path("reports", key, "drift.json").parent, today, yesterday, note
        )
        context.add_asset_metadata(
            {
                "model_version": version,
                "drift_score": drift.drift_score if drift.drift_score is not None else "n/a",
                "drift_detected": bool(drift.drift_detected),
                "report": dg.MetadataValue.path(str(drift.html)),
            },
            partition_key=key,
        )
    return dg.MaterializeResult()

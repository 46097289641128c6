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
import numpy as np
import polars as pl
import scipy.sparse as sp
from dagster_duckdb import DuckDBResource

from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.evaluation.history_scorers import (
    history_scores,
    item_knn_scores,
    item_similarity,
)
from model_core.evaluation.index import index_positions, random_index
from model_core.evaluation.metrics import (
    evaluate_retrieval,
    exact_topk,
    positive_scores,
    recall_at_k,
)
from model_core.evaluation.paper_protocol import baseline_metrics, is_eval_user, recent_mean
from model_core.evaluation.score_rows import evaluate_score_rows
from model_core.features.actions import FeatureConfig
from pinner_assets.defs.automation.freshness import EVALUATION_REPORT_FRESHNESS
from pinner_assets.lib.automation import EMBEDDINGS_EAGER, REPORT_EAGER
from pinner_assets.lib.embedding_store import embedding_matrix, load_pin_embeddings
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.promotion import serving_version
from pinner_assets.lib.report import write_drift_report, write_evaluation_report
from pinner_assets.lib.report_metrics import METRIC_NAMES
from pinner_assets.lib.resources import ActionSource, EvaluationSplit, PinnerStorage
from pinner_assets.lib.timelines import (
    LOOKBACK_DAYS,
    MAX_LEN,
    load_catalog,
    query_last_actions,
    to_timelines,
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


def _embeddings(con: duckdb.DuckDBPyConnection, day: datetime.date) -> pl.DataFrame:
    return con.execute(
        "SELECT user_id, embedding FROM user_embeddings WHERE as_of = ? ORDER BY user_id", [day]
    ).pl()


def future_positives(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    horizon: int,
    users: np.ndarray,
    rule: PositiveRule,
) -> tuple[pl.DataFrame, int]:
    """Positive engagements (by the source's `rule`) of `users` in (day, day + horizon]; and how
    many days are stored."""
    end = day + datetime.timedelta(days=horizon)
    con.register("_eval_users", pl.DataFrame({"user_id": users}).to_arrow())
    rows = con.execute(
        "SELECT user_id, pin_id, action_type, surface, duration_s FROM raw_actions "
        "WHERE event_date > ? AND event_date <= ? "
        "AND user_id IN (SELECT user_id FROM _eval_users)",
        [day, end],
    ).pl()
    con.unregister("_eval_users")
    n_days = con.execute(
        "SELECT count(DISTINCT event_date) FROM raw_actions "
        "WHERE event_date > ? AND event_date <= ?",
        [day, end],
    ).fetchone()
    return rows.filter(pl.Series(rule.frame_mask(rows))), int(n_days[0]) if n_days else 0


def _popularity(
    con: duckdb.DuckDBPyConnection, day: datetime.date, rule: PositiveRule, catalog: PinCatalog
) -> np.ndarray:
    """[catalogue rows] each pin's positives in the lookback up to `day` (the popularity
    baseline)."""
    counts = con.execute(
        f"SELECT pin_id, count(*) AS n FROM raw_actions WHERE event_date <= ? "
        f"AND event_date > ? AND {rule.sql()} GROUP BY pin_id",
        [day, day - datetime.timedelta(days=LOOKBACK_DAYS)],
    ).pl()
    popularity = np.zeros(len(catalog), dtype=np.float64)
    known = catalog.rows(counts["pin_id"].to_numpy())
    popularity[known[known >= 0]] = counts["n"].to_numpy()[known >= 0]
    return popularity


def _metric_values(m: object) -> dict[str, float]:
    """The report's metrics of a RetrievalMetrics."""
    d = m.as_dict()  # type: ignore[attr-defined]
    return {k: float(d[k]) for k in METRIC_NAMES}


def score_day(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    split: EvaluationSplit,
    max_len: int,
    vocab: FeatureConfig,
    rule: PositiveRule,
    version: str,
) -> dict[str, object]:
    """The metrics of one day; `vocab` and `rule` are the source's (what is input, what is a
    positive: labels, popularity and the recent-positives baseline)."""
    users = _embeddings(con, day)
    held = users.filter(pl.Series(is_eval_user(users["user_id"].to_numpy(), split.eval_fraction)))
    positives, n_days = future_positives(
        con, day, split.horizon_days, held["user_id"].to_numpy(), rule
    )
    pins = load_pin_embeddings(con, version)
    if pins.height == 0:
        raise dg.Failure(
            f"no pin vectors of model {version} (the model of user_embeddings[{day}]); "
            "materialise pin_embeddings with that model",
            allow_retries=False,
        )
    catalog: PinCatalog = load_catalog(con)
    out: dict[str, object] = {"horizon_days_available": n_days}
    rows = catalog.rows(positives["pin_id"].to_numpy())
    positives = positives.filter(pl.Series(rows >= 0))
    rows = rows[rows >= 0]
    if positives.height == 0:
        return {**out, "eval_users": 0, "index_size": 0, "pinnerformer": None, "baselines": None}
    rng = np.random.default_rng([0, day.toordinal()])
    index = random_index(len(catalog), split.index_size, rng)
    topics = catalog.topics[index]
    # Only users with at least one positive count (§4.1): map positives onto user rows.
    eval_ids = np.unique(positives["user_id"].to_numpy())
    held = held.filter(pl.col("user_id").is_in(eval_ids))
    pos_user = np.searchsorted(held["user_id"].to_numpy(), positives["user_id"].to_numpy())
    pin_emb = embedding_matrix(pins)
    in_index = index_positions(index, rows)  # a positive never counts against itself
    pf = evaluate_retrieval(
        embedding_matrix(held), pos_user, pin_emb[rows], pin_emb[index], topics, in_index
    )
    curve = recall_curve(embedding_matrix(held), pos_user, pin_emb[rows], pin_emb[index], in_index)

    popularity = _popularity(con, day, rule, catalog)
    con.register("_held", held.select("user_id").to_arrow())
    history = to_timelines(
        query_last_actions(con, day, "SELECT user_id FROM _held", vocab), catalog, vocab, rule
    )
    con.unregister("_held")
    # history may lack a user with no usable action in the lookback: align by id, zeros otherwise.
    recent = np.zeros((held.height, catalog.embeddings.shape[1]), dtype=np.float32)
    recent[np.searchsorted(held["user_id"].to_numpy(), history.user_ids)] = recent_mean(
        history, catalog, max_len
    )
    baselines = baseline_metrics(recent, pos_user, rows, index, catalog, popularity)
    for name, scores in history_baselines(con, history, held, catalog, vocab, rule).items():
        baselines[name] = evaluate_score_rows(scores, pos_user, rows, index, topics, in_index)

    return {
        **out,
        "eval_users": pf.n_users,
        "eval_positives": pf.n_positives,
        "index_size": pf.index_size,
        "pinnerformer": _metric_values(pf),
        "pinnerformer_recall_at_k": curve,
        "baselines": {name: _metric_values(m) for name, m in baselines.items()},
    }


# The history scorers' settings in the daily report (the experiments choose them on a validation
# split; a daily report has none): the user's own items by frequency, and co-occurrence
# neighbours of their last 5 distinct items.
KNN_NEIGHBORS, KNN_RECENT = 100, 5


def history_baselines(
    con: duckdb.DuckDBPyConnection,
    history: Timelines,
    held: pl.DataFrame,
    catalog: PinCatalog,
    vocab: FeatureConfig,
    rule: PositiveRule,
) -> dict[str, sp.csr_matrix]:
    """`history` and `item_knn` scores ([held users, N]) from the users' last actions; item
    co-occurrence from the training timelines, exactly what the model trained on."""
    training = to_timelines(
        con.execute("SELECT * FROM training_timelines ORDER BY user_id").pl(), catalog, vocab, rule
    )
    similarity = item_similarity(training, len(catalog), KNN_NEIGHBORS)
    # history may lack a held user: rows in held's order, empty for the missing ones
    place = sp.csr_matrix(
        (
            np.ones(history.n_users, np.float32),
            (
                np.searchsorted(held["user_id"].to_numpy(), history.user_ids),
                np.arange(history.n_users),
            ),
        ),
        shape=(held.height, history.n_users),
    )
    return {
        "history": (place @ history_scores(history, len(catalog))).tocsr(),
        "item_knn": (place @ item_knn_scores(history, similarity, KNN_RECENT)).tocsr(),
    }


RECALL_KS = (1, 5, 10, 20, 50, 100)


def recall_curve(
    user_vecs: np.ndarray,
    pos_user: np.ndarray,
    pos_vecs: np.ndarray,
    index_vecs: np.ndarray,
    in_index: np.ndarray,
) -> dict[str, float]:
    """Recall@k for every k in RECALL_KS from ONE exact top-(max k + 1) retrieval."""
    scores, ids = exact_topk(user_vecs, index_vecs, max(RECALL_KS) + 1)
    pos = positive_scores(user_vecs, pos_user, pos_vecs)
    return {
        str(k): float(np.nanmean(recall_at_k(pos_user, pos, scores, k, ids, in_index)))
        for k in RECALL_KS
    }


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
            today = embedding_matrix(_embeddings(con, day))
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
            today = embedding_matrix(_embeddings(con, day))
            version = users_version(con, day)
            row = con.execute(
                "SELECT model_version FROM user_embedding_partitions WHERE as_of = ?", [prev]
            ).fetchone()
            yesterday = embedding_matrix(_embeddings(con, prev)) if row else None
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

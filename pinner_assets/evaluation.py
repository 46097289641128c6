"""evaluation_report (daily): the paper's metrics on held-out users with the SERVED embeddings.

For partition D the split time is the end of D: held-out users (disjoint from training, §4.1)
are represented by their user_embeddings[D] row — exactly what the daily batch published — and
their positives are their positive engagements in (D, D + 14 days]. Days whose future is not in
the warehouse yet report what is there (`horizon_days_available`), or nulls when nothing is.
"""

import datetime

import dagster as dg
import duckdb
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from model_core.evaluation import baseline_metrics, is_eval_user, recent_mean
from model_core.features import FeatureConfig
from model_core.metrics import evaluate_retrieval
from model_core.timelines import PinCatalog, PositiveRule
from pinner_assets.automation import EMBEDDINGS_EAGER
from pinner_assets.embeddings import embedding_matrix, load_pin_embeddings
from pinner_assets.partitions import daily_partitions
from pinner_assets.report import write_evaluation_report
from pinner_assets.resources import ActionSource, EvaluationSplit, PinnerStorage
from pinner_assets.timelines import load_catalog, query_last_actions, to_timelines
from pinner_assets.training import load_latest_model

METRIC_KEYS = ("recall_at_10", "p90_coverage_at_10", "interest_entropy_at_50")


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


def score_day(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    split: EvaluationSplit,
    max_len: int,
    vocab: FeatureConfig,
    rule: PositiveRule,
) -> dict[str, object]:
    """The metrics of one day; `vocab` and `rule` are the source's (what is input, what is a
    positive: labels, popularity and the recent-positives baseline)."""
    users = _embeddings(con, day)
    held = users.filter(pl.Series(is_eval_user(users["user_id"].to_numpy(), split.eval_fraction)))
    positives, n_days = future_positives(
        con, day, split.horizon_days, held["user_id"].to_numpy(), rule
    )
    pins = load_pin_embeddings(con)
    catalog: PinCatalog = load_catalog(con)
    out: dict[str, object] = {"horizon_days_available": n_days}
    rows = catalog.rows(positives["pin_id"].to_numpy())
    positives = positives.filter(pl.Series(rows >= 0))
    rows = rows[rows >= 0]
    if positives.height == 0:
        return {**out, "eval_users": 0, "index_size": 0, "pinnerformer": None, "baselines": None}
    rng = np.random.default_rng([0, day.toordinal()])
    index = np.sort(rng.choice(len(catalog), min(split.index_size, len(catalog)), replace=False))
    topics = catalog.topics[index]
    # Only users with at least one positive count (§4.1): map positives onto user rows.
    eval_ids = np.unique(positives["user_id"].to_numpy())
    held = held.filter(pl.col("user_id").is_in(eval_ids))
    pos_user = np.searchsorted(held["user_id"].to_numpy(), positives["user_id"].to_numpy())
    pin_emb = embedding_matrix(pins)
    pf = evaluate_retrieval(embedding_matrix(held), pos_user, pin_emb[rows], pin_emb[index], topics)

    pop_counts = con.execute(
        f"SELECT pin_id, count(*) AS n FROM raw_actions WHERE event_date <= ? "
        f"AND {rule.sql()} GROUP BY pin_id",
        [day],
    ).pl()
    popularity = np.zeros(len(catalog), dtype=np.float64)
    known = catalog.rows(pop_counts["pin_id"].to_numpy())
    popularity[known[known >= 0]] = pop_counts["n"].to_numpy()[known >= 0]

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

    def keys(m: object) -> dict[str, float]:
        d = m.as_dict()  # type: ignore[attr-defined]
        return {k: float(d[k]) for k in METRIC_KEYS}

    return {
        **out,
        "eval_users": pf.n_users,
        "eval_positives": pf.n_positives,
        "index_size": pf.index_size,
        "pinnerformer": keys(pf),
        "baselines": {name: keys(m) for name, m in baselines.items()},
    }


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=["user_embeddings", "pin_embeddings", "trained_model"],
    group_name="evaluation",
    automation_condition=EMBEDDINGS_EAGER,
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
    split: EvaluationSplit,
    source: ActionSource,
) -> dg.MaterializeResult:
    """Recall@10, P90 coverage@10, interest entropy@50 for PinnerFormer and the baselines, an
    Evidently HTML report (today's vs yesterday's user-embedding drift, the metric table, the
    training curve): reports/<day>/metrics.json and report.html. Positives follow the source's
    rule."""
    model, version = load_latest_model(storage)
    vocab, rule = source.feature_config(), source.rule()
    headline: dict[str, object] = {}
    for key in context.partition_keys:
        day = datetime.date.fromisoformat(key)
        with duckdb.get_connection() as con:
            metrics = score_day(con, day, split, model.config.max_len, vocab, rule)
            today = embedding_matrix(_embeddings(con, day))
            yesterday_df = _embeddings(con, day - datetime.timedelta(days=1))
        payload = {"as_of": key, "model_version": version, **metrics}
        paths = write_evaluation_report(
            storage.path("reports", key, "metrics.json").parent,
            payload,
            today,
            embedding_matrix(yesterday_df) if yesterday_df.height else None,
        )
        headline = {"as_of": key, **metrics, "report": str(paths.html)}
        context.log.info(f"evaluation_report[{key}]: {metrics}")
    pf = headline.get("pinnerformer") or {}
    base = headline.get("baselines") or {}
    meta: dict[str, object] = {
        "eval_users": headline.get("eval_users", 0),
        "horizon_days_available": headline.get("horizon_days_available", 0),
        "report": dg.MetadataValue.path(str(headline.get("report", ""))),
    }
    if isinstance(pf, dict):
        meta.update({f"pinnerformer/{k}": v for k, v in pf.items()})
    if isinstance(base, dict):
        for name, vals in base.items():
            meta.update({f"{name}/{k}": v for k, v in vals.items()})
    return dg.MaterializeResult(metadata=meta)  # type: ignore[arg-type]

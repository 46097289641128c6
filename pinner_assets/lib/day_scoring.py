"""One day's metrics on the held-out users, the paper's protocol (§4.1) over what the daily
batch served: PinnerFormer's user_embeddings[D] against the pins of the same model version, and
every baseline beside it (popularity, recent_mean, the user's own items, item-to-item kNN).
`evaluation_report` is its thin wrapper."""

import datetime

import duckdb
import numpy as np
import polars as pl
import scipy.sparse as sp

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
from pinner_assets.lib.embedding_store import embedding_matrix, require_pin_embeddings
from pinner_assets.lib.report_metrics import METRIC_NAMES
from pinner_assets.lib.resources import EvaluationSplit
from pinner_assets.lib.timelines import (
    LOOKBACK_DAYS,
    load_catalog,
    query_last_actions,
    to_timelines,
)


def day_embeddings(con: duckdb.DuckDBPyConnection, day: datetime.date) -> pl.DataFrame:
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
    users = day_embeddings(con, day)
    held = users.filter(pl.Series(is_eval_user(users["user_id"].to_numpy(), split.eval_fraction)))
    positives, n_days = future_positives(
        con, day, split.horizon_days, held["user_id"].to_numpy(), rule
    )
    pins = require_pin_embeddings(con, version, f"made user_embeddings[{day}]")
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

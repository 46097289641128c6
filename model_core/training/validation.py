"""Held-out validation for early stopping: a metric of the model on data it does not train on.

- leave-one-out: each user's LAST positive of the training histories (the second-to-last of the
  whole log) is the validation target; training uses what comes before it, as in SASRec. The
  metric is NDCG@10 under full ranking with seen items removed
  (`model_core.evaluation.leave_one_out`).
- paper protocol: a share of the training users is held out of training; their positives in the
  last `horizon_days` before the split time are the validation labels, embedded from what they did
  before that; the metric is Recall@10 (§4.1).

Both score a fixed subset of about `max_users` users so that a validation pass costs a fraction of
an epoch. Leave-one-out's subset is a stable hash of the user id (`validation_users`), chosen before
the item vectors are built, so that the vectors can leave exactly those users' validation targets
out (`model_core.experiments.data`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.index import index_positions
from model_core.evaluation.leave_one_out import (
    full_ranks,
    last_positive,
    leave_one_out,
    score_ranks,
)
from model_core.evaluation.metrics import evaluate_retrieval, hit_and_ndcg_per_user
from model_core.evaluation.paper_protocol import EvalConfig, is_eval_user, pooled_eval_set
from model_core.evaluation.score_rows import ScoreRows, evaluate_score_rows
from model_core.evaluation.seen import Seen
from model_core.inference.embed import user_item_vectors

Validate = Callable[[Any], float]
# A scorer that is not a model: the validation users' timelines → their [U, N] scores over the
# catalogue (`model_core.evaluation.score_rows`; sparse for `history_scorers`).
ScoreFactory = Callable[[Timelines], sp.csr_matrix | ScoreRows]


@dataclass(frozen=True)
class Split:
    """train: what the model may train on; validate: model → metric (higher is better);
    validate_scores: the same metric on the same users for a non-learned scorer, so that the
    baselines' settings are chosen like a model's."""

    train: Timelines
    validate: Validate
    n_users: int
    validate_scores: Callable[[ScoreFactory], float]


VALIDATION_USERS = 5000
PAPER_HELD_OUT = 0.1  # the paper protocol's share of training users held out to validate on
PAPER_HORIZON_DAYS = 14.0  # ... on their positives in the last this many days before t


def validation_users(user_ids: np.ndarray, max_users: int = VALIDATION_USERS) -> np.ndarray:
    """[U] user ids → the ids of about `max_users` of them (all when fewer): leave-one-out's
    validation users, a stable hash of the id so that a log's item vectors and its split agree."""
    fraction = min(1.0, max_users / max(1, len(user_ids)))
    return np.sort(user_ids[is_eval_user(user_ids, fraction, seed=7)])


def paper_validation_users(
    user_ids: np.ndarray, fraction: float = PAPER_HELD_OUT, seed: int = 0
) -> np.ndarray:
    """[U] user ids → [U] bool: the paper protocol's held-out validation users (a stable hash)."""
    return is_eval_user(user_ids, fraction, seed + 101)


def _subset(n: int, max_users: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng([seed, 7])
    return np.sort(rng.choice(n, size=min(n, max_users), replace=False))


def leave_one_out_split(history: Timelines, catalog: PinCatalog, users: np.ndarray) -> Split:
    """Validation target = each user's last positive of `history`, for the `users`
    (`validation_users`) that have one; NDCG@10, seen removed."""
    val = leave_one_out(history)
    chosen = np.isin(val.history.user_ids, users)
    inputs = val.history.select_users(chosen)
    targets = val.target_pin_row[chosen]
    seen = Seen.of(inputs)

    def validate(model: Any) -> float:
        user_vecs, items = user_item_vectors(model, inputs, catalog)
        _, ndcg = hit_and_ndcg_per_user(full_ranks(user_vecs, items, targets, seen))
        return float(ndcg.mean())

    def validate_scores(scorer: ScoreFactory) -> float:
        _, ndcg = hit_and_ndcg_per_user(score_ranks(scorer(inputs), targets, seen))
        return float(ndcg.mean())

    # Train on everything but each validated user's target and what follows it; users with too
    # few positives to validate on keep their whole history.
    owner = np.repeat(np.arange(history.n_users), history.lengths)
    cut = np.full(history.n_users, np.iinfo(np.int64).max)
    validated = np.isin(history.user_ids, val.history.user_ids)
    cut[validated] = last_positive(history)[validated]
    train = history.select_rows(np.arange(len(owner)) < cut[owner])
    return Split(train, validate, int(chosen.sum()), validate_scores)


def paper_split(
    train_tl: Timelines,
    catalog: PinCatalog,
    split_ts: int,
    horizon_days: float = PAPER_HORIZON_DAYS,
    fraction: float = PAPER_HELD_OUT,
    max_users: int = VALIDATION_USERS,
    seed: int = 0,
    windows: int = 1,
) -> Split:
    """Hold out `fraction` of the training users; Recall@10 on their positives in
    (split_ts - horizon, split_ts], embedded from their actions before that — or, with
    `windows` > 1, in each of the `windows` consecutive windows before split_ts, pooled as the
    evaluation pools its windows after it (`pooled_eval_set`): more validation users, so early
    stopping and every validated choice read less noise. A log too short for the horizon
    (Taobao's sample spans 9 days) halves it until some held-out user has history before and
    positives inside the window (down to one day)."""
    held = paper_validation_users(train_tl.user_ids, fraction, seed)
    held_tl = train_tl.select_users(held).before(split_ts)
    while True:
        val_ts = split_ts - int(windows * horizon_days * 86_400)
        cfg = EvalConfig(eval_fraction=1.0, horizon_days=horizon_days, seed=seed)
        es = pooled_eval_set(held_tl, catalog, val_ts, cfg, windows)
        if es.history.n_users or horizon_days <= 1.0:
            break
        horizon_days = max(1.0, horizon_days / 2)
    if es.history.n_users == 0:
        raise ValueError(
            "no held-out training user has history before and positives within the last day "
            "before the split: the log is too short or too sparse for a validation split"
        )
    keep_users = _subset(es.history.n_users, max_users, seed)
    chosen = np.isin(es.positive_user, keep_users)
    new_row = np.full(es.history.n_users, -1)
    new_row[keep_users] = np.arange(len(keep_users))
    inputs = es.history.select_users(np.isin(np.arange(es.history.n_users), keep_users))
    pos_user, pos_row = new_row[es.positive_user[chosen]], es.positive_pin_row[chosen]
    in_index = index_positions(es.index_rows, pos_row)

    def validate(model: Any) -> float:
        users, items = user_item_vectors(model, inputs, catalog)
        m = evaluate_retrieval(
            users, pos_user, items[pos_row], items[es.index_rows], None, in_index
        )
        return m.recall_at_k

    def validate_scores(scorer: ScoreFactory) -> float:
        m = evaluate_score_rows(scorer(inputs), pos_user, pos_row, es.index_rows, None, in_index)
        return m.recall_at_k

    return Split(train_tl.select_users(~held), validate, len(keep_users), validate_scores)

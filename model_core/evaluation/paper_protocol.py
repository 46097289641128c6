"""The paper's offline evaluation protocol (§4.1) and its baselines.

Training ends at a split time t. Evaluation users are DISJOINT from training users (a stable hash
of the user id decides). Each evaluation user is embedded from their history up to t; their
positives are their positive engagements in (t, t + 14 days]; the index is N random pins (the whole
catalogue when it is smaller). Every scorer — PinnerFormer and the baselines — is ranked against
the same index with the same metrics (`model_core.evaluation.metrics`).

Baselines: popularity (count of positive engagements in the training period, identical for every
user) and recent_mean (the mean content embedding of the user's last M positive engagements,
falling back to their last M actions when they have none).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.index import index_positions, random_index
from model_core.evaluation.metrics import RetrievalMetrics, evaluate_retrieval
from model_core.evaluation.seen import Seen
from model_core.inference.embed import user_item_vectors
from model_core.model.pinnerformer import PinnerFormer

K = TypeVar("K")

DAY_S = 86_400


@dataclass(frozen=True)
class EvalConfig:
    eval_fraction: float = 0.2  # share of users held out of training entirely
    horizon_days: float = 14.0  # §4.1: positives in the 14 days after the split
    index_size: int = 1_000_000  # §4.1: 1M random pins; the whole catalogue when smaller
    seed: int = 0
    # Leave the pins a user engaged with up to t out of their ranking (never a positive from its
    # own count). Off by default: re-engaging a pin is a legitimate Pinterest outcome; on for
    # logs where repeating an item is not the task (re-rating a film).
    remove_seen: bool = False


def is_eval_user(user_ids: np.ndarray, fraction: float, seed: int = 0) -> np.ndarray:
    """[U] int64 → [U] bool; a stable hash (splitmix64) so the split never depends on row order."""
    offset = np.uint64((0x9E3779B97F4A7C15 * (seed + 1)) % 2**64)
    with np.errstate(over="ignore"):  # modular uint64 arithmetic is the point
        z = user_ids.astype(np.uint64) + offset
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53) < fraction


@dataclass(frozen=True)
class EvalSet:
    """history: evaluation users' actions <= t (only users with >= 1 future positive).

    positive_user:    [P] int64  row into history.user_ids
    positive_pin_row: [P] int64  catalogue row of each positive
    positive_ts:      [P] int64  Unix second of each positive (in (t, t + horizon])
    positive_action:  [P] int64  action-type vocabulary index of each positive
    origin_ts:        [P] int64  the split time t of each positive's window (one value, unless
                                 several windows are pooled: `pooled_eval_set`)
    index_rows:       [N] int64  catalogue rows of the retrieval index
    timelines: the same users' WHOLE timelines, both sides of t. Only for studies that update the
    embedding inside the horizon (Table 2, `model_core.evaluation.inference_frequency`); everything
    else must read `history`.
    seen: index positions each history user engaged with up to t, when `EvalConfig.remove_seen`
    (left out of their rankings); None otherwise.
    """

    history: Timelines
    positive_user: np.ndarray
    positive_pin_row: np.ndarray
    positive_ts: np.ndarray
    positive_action: np.ndarray
    origin_ts: np.ndarray
    index_rows: np.ndarray
    split_ts: int
    timelines: Timelines
    seen: Seen | None = None

    @property
    def repeat(self) -> np.ndarray:
        """[P] bool: the positive is an item its user had acted on up to t (re-engagement)."""
        h = self.history
        owner = np.repeat(np.arange(h.n_users), h.lengths).astype(np.int64)
        width = np.int64(
            max(int(h.pin_row.max(initial=0)), int(self.positive_pin_row.max(initial=0))) + 1
        )
        acted = np.unique(owner * width + h.pin_row)
        return np.isin(self.positive_user * width + self.positive_pin_row, acted)


def build_eval_set(
    timelines: Timelines, catalog: PinCatalog, split_ts: int, cfg: EvalConfig
) -> EvalSet:
    """Hold out `cfg.eval_fraction` of users; positives in (split_ts, split_ts + horizon]."""
    held_out = timelines.select_users(is_eval_user(timelines.user_ids, cfg.eval_fraction, cfg.seed))
    horizon = split_ts + int(cfg.horizon_days * DAY_S)
    owner = np.repeat(np.arange(held_out.n_users), held_out.lengths)
    future = held_out.positive & (held_out.ts > split_ts) & (held_out.ts <= horizon)
    past = held_out.ts <= split_ts
    has_past = np.bincount(owner[past], minlength=held_out.n_users) > 0
    has_future = np.bincount(owner[future], minlength=held_out.n_users) > 0
    users = has_past & has_future
    history = held_out.select_rows(past & users[owner])
    row_of_user = np.cumsum(users) - 1  # old user index → new row (valid where users)
    keep = future & users[owner]
    rng = np.random.default_rng([cfg.seed, 3])
    index_rows = random_index(len(catalog), cfg.index_size, rng)
    return EvalSet(
        history=history,
        positive_user=row_of_user[owner[keep]],
        positive_pin_row=held_out.pin_row[keep],
        positive_ts=held_out.ts[keep],
        positive_action=held_out.action[keep],
        origin_ts=np.full(int(keep.sum()), split_ts, dtype=np.int64),
        index_rows=index_rows,
        split_ts=split_ts,
        timelines=held_out.select_users(users),
        seen=Seen.of(history).in_index(index_rows) if cfg.remove_seen else None,
    )


def pooled_eval_set(
    timelines: Timelines, catalog: PinCatalog, split_ts: int, cfg: EvalConfig, windows: int
) -> EvalSet:
    """`windows` consecutive evaluation windows after ONE training cut: window k has split time
    t_k = split_ts + k * horizon and its positives in (t_k, t_k + horizon], each user embedded
    from their history up to t_k. Every model and baseline still learns only from the training
    users' data up to `split_ts`, so nothing after the cut leaks; later windows simply ask more
    of a model that is not retrained (as between the pipeline's retrains). A user active in
    several windows is one evaluation unit per window. Windows without any positive (past the
    log's end) are left out; `split_ts` stays the training cut."""
    horizon = int(cfg.horizon_days * DAY_S)
    parts = [
        build_eval_set(timelines, catalog, split_ts + k * horizon, cfg) for k in range(windows)
    ]
    parts = [p for p in parts if p.history.n_users] or parts[:1]
    if len(parts) == 1:
        return parts[0]
    first_user = np.cumsum([0] + [p.history.n_users for p in parts[:-1]])
    seen = None
    if cfg.remove_seen:
        seen = Seen.of(Timelines.concat([p.history for p in parts])).in_index(parts[0].index_rows)
    return EvalSet(
        history=Timelines.concat([p.history for p in parts]),
        positive_user=np.concatenate(
            [p.positive_user + first for p, first in zip(parts, first_user, strict=True)]
        ),
        **{
            f: np.concatenate([getattr(p, f) for p in parts])
            for f in ("positive_pin_row", "positive_ts", "positive_action", "origin_ts")
        },
        index_rows=parts[0].index_rows,
        split_ts=split_ts,
        timelines=Timelines.concat([p.timelines for p in parts]),
        seen=seen,
    )


def popularity_counts(train: Timelines, n_pins: int) -> np.ndarray:
    """[n_pins] float64: positive engagements per catalogue row in the training data."""
    return np.bincount(train.pin_row[train.positive], minlength=n_pins).astype(np.float64)


def recent_mean(history: Timelines, catalog: PinCatalog, max_len: int) -> np.ndarray:
    """[U, C] float32: unit-norm mean content of each user's last `max_len` positives.

    Users with no positive fall back to their last `max_len` actions.
    """
    owner = np.repeat(np.arange(history.n_users), history.lengths)
    has_pos = np.bincount(owner[history.positive], minlength=history.n_users) > 0
    use = history.positive | ~has_pos[owner]  # positives, or every action for users without any
    rows = np.flatnonzero(use)
    rank_from_end = np.empty(len(rows), dtype=np.int64)
    own = owner[rows]
    last_of_user = np.searchsorted(own, own, side="right") - 1
    rank_from_end[:] = last_of_user - np.arange(len(rows))
    rows, own = rows[rank_from_end < max_len], own[rank_from_end < max_len]
    sums = np.zeros((history.n_users, catalog.embeddings.shape[1]), dtype=np.float64)
    np.add.at(sums, own, catalog.embeddings[history.pin_row[rows]])
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return (sums / np.maximum(norms, 1e-12)).astype(np.float32)


def evaluate(
    model: PinnerFormer,
    eval_set: EvalSet,
    catalog: PinCatalog,
    popularity: np.ndarray,
    device: torch.device | str = "cpu",
) -> dict[str, RetrievalMetrics]:
    """Recall@10, P90 coverage@10, interest entropy@50 for PinnerFormer and the baselines."""
    es = eval_set
    results = {"pinnerformer": model_metrics(model, es, catalog, device=device)}
    results.update(
        baseline_metrics(
            recent_mean(es.history, catalog, model.config.max_len),
            es.positive_user,
            es.positive_pin_row,
            es.index_rows,
            catalog,
            popularity,
            es.seen,
        )
    )
    return results


def model_metrics(
    model: PinnerFormer,
    eval_set: EvalSet,
    catalog: PinCatalog,
    device: torch.device | str = "cpu",
) -> RetrievalMetrics:
    """The model's §4.1 metrics with embeddings at t, on every positive."""
    return model_metrics_by(model, eval_set, catalog, {None: None}, device)[None]


def model_metrics_by(
    model: torch.nn.Module,
    eval_set: EvalSet,
    catalog: PinCatalog,
    subsets: dict[K, np.ndarray | None],
    device: torch.device | str = "cpu",
) -> dict[K, RetrievalMetrics]:
    """`model_metrics` per subset of the positives ([P] bool, None = all; e.g. one action type
    for Table 5), embedding users and pins once. Any dot-product scorer (`user_item_vectors`)."""
    es = eval_set
    user_emb, pin_emb = user_item_vectors(model, es.history, catalog, device)
    out = {}
    for key, keep in subsets.items():
        keep = np.ones(len(es.positive_user), dtype=bool) if keep is None else keep
        out[key] = evaluate_retrieval(
            user_emb,
            es.positive_user[keep],
            pin_emb[es.positive_pin_row[keep]],
            pin_emb[es.index_rows],
            catalog.topics[es.index_rows],
            index_positions(es.index_rows, es.positive_pin_row[keep]),
            seen=es.seen,
        )
    return out


def baseline_metrics(
    recent: np.ndarray,
    positive_user: np.ndarray,
    positive_pin_row: np.ndarray,
    index_rows: np.ndarray,
    catalog: PinCatalog,
    popularity: np.ndarray,
    seen: Seen | None = None,
) -> dict[str, RetrievalMetrics]:
    """The two baselines on one evaluation set.

    recent:     [U, C] float32  each evaluated user's recent-content vector (`recent_mean`)
    popularity: [N] float       positive engagements per catalogue row, known at the split
    positive_user / positive_pin_row / index_rows / seen as in EvalSet.
    """
    topics = catalog.topics[index_rows]
    pop = np.log1p(popularity).astype(np.float32)[:, None]  # (N, 1): one score per pin
    ones = np.ones((len(recent), 1), dtype=np.float32)
    content = catalog.embeddings / np.maximum(
        np.linalg.norm(catalog.embeddings, axis=1, keepdims=True), 1e-12
    )
    in_index = index_positions(index_rows, positive_pin_row)
    return {
        "popularity": evaluate_retrieval(
            ones,
            positive_user,
            pop[positive_pin_row],
            pop[index_rows],
            topics,
            in_index,
            seen=seen,
        ),
        "recent_mean": evaluate_retrieval(
            recent,
            positive_user,
            content[positive_pin_row],
            content[index_rows],
            topics,
            in_index,
            seen=seen,
        ),
    }

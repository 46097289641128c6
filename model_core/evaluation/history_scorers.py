"""Scorers that read only the user's own history: the baselines that win on repeats and on
co-occurrence, which every learned model must be checked against.

- `history`: the user's own items, most frequent first, ties by recency; every other item scores
  0. On a log where users come back to what they saw (Taobao: view, then buy) this alone is
  strong; with seen items removed it can only hit a target the user had seen before.
- `item_knn`: item-to-item co-occurrence kNN (Sarwar et al., WWW 2001; Linden et al., 2003):
  cosine similarity of the items' user sets in the TRAINING timelines, each item keeping its
  `neighbors` strongest; a user's score for an item is the similarity-weighted sum over their
  `recent` last distinct items.

Both return a sparse [U, N] score matrix (scipy CSR; an absent entry scores 0), ranked by
`model_core.evaluation.leave_one_out.score_ranks` and scored by
`model_core.evaluation.score_rows.evaluate_score_rows`. Their settings are chosen on the validation
split like every model's (`choose`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from model_core.data.timelines import Timelines

# Frequency counts in whole units; recency breaks ties inside (0, 1).
_RECENCY_SHARE = 0.5


def history_scores(history: Timelines, n_items: int, by: str = "frequency") -> sp.csr_matrix:
    """[U, N] score of each user's own items: "frequency" = how often, ties broken by how
    recently; "recency" = how recently only (the latest item highest)."""
    owner = np.repeat(np.arange(history.n_users), history.lengths)
    position = np.arange(len(owner)) - history.offsets[owner]  # 0 = oldest action
    recency = (position + 1) / (history.lengths[owner] + 1)  # in (0, 1), latest highest
    counts = sp.csr_matrix(
        (np.ones(len(owner)), (owner, history.pin_row)), shape=(history.n_users, n_items)
    )
    latest = sp.csr_matrix((recency, (owner, history.pin_row)), shape=counts.shape)
    latest.sum_duplicates()  # summed duplicates break ties within a user all the same
    latest.data = np.minimum(latest.data, 1.0)
    if by == "recency":
        return latest.astype(np.float32)
    if by != "frequency":
        raise ValueError(f"history order must be frequency or recency, got {by!r}")
    counts.sum_duplicates()
    return (counts + _RECENCY_SHARE * latest).astype(np.float32)


def _user_items(timelines: Timelines, n_items: int) -> sp.csr_matrix:
    """[U, N] 1 where the user acted on the item in `timelines`."""
    owner = np.repeat(np.arange(timelines.n_users), timelines.lengths)
    m = sp.csr_matrix(
        (np.ones(len(owner), np.float32), (owner, timelines.pin_row)),
        shape=(timelines.n_users, n_items),
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    return m


def item_similarity(
    train: Timelines, n_items: int, neighbors: int, chunk: int = 2048
) -> sp.csr_matrix:
    """[N, N] cosine similarity of the items' user sets in `train`, each row keeping its
    `neighbors` largest entries (an item is not its own neighbour)."""
    x = _user_items(train, n_items).tocsc()
    norms = np.sqrt(np.asarray(x.sum(axis=0)).ravel())
    norms[norms == 0] = 1.0
    xt = x.T.tocsr()
    rows, cols, vals = [], [], []
    for start in range(0, n_items, chunk):
        block = (xt[start : start + chunk] @ x).toarray()  # (c, N) co-occurrence counts
        idx = np.arange(block.shape[0])
        block[idx, start + idx] = 0.0
        block /= norms[start : start + chunk, None] * norms[None, :]
        k = min(neighbors, n_items - 1)
        top = (
            np.argpartition(-block, k - 1, axis=1)[:, :k] if k > 0 else np.empty((len(idx), 0), int)
        )
        top_vals = np.take_along_axis(block, top, axis=1)
        keep = top_vals > 0
        rows.append(np.repeat(start + idx, keep.sum(axis=1)))
        cols.append(top[keep])
        vals.append(top_vals[keep])
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=(n_items, n_items),
        dtype=np.float32,
    )


def recent_profile(history: Timelines, n_items: int, recent: int) -> sp.csr_matrix:
    """[U, N] weight 1 on each of the user's last `recent` distinct items."""
    owner = np.repeat(np.arange(history.n_users), history.lengths)
    order = np.lexsort((-np.arange(len(owner)), owner))  # per user, latest first
    pairs = owner[order] * n_items + history.pin_row[order]
    _, first = np.unique(pairs, return_index=True)  # each (user, item)'s latest occurrence
    kept = order[np.sort(first)]  # still grouped by user, latest first
    users = owner[kept]
    start = np.searchsorted(users, users)  # where each user's kept items begin
    take = kept[np.arange(len(kept)) - start < recent]
    return sp.csr_matrix(
        (np.ones(len(take), np.float32), (owner[take], history.pin_row[take])),
        shape=(history.n_users, n_items),
    )


def item_knn_scores(history: Timelines, similarity: sp.csr_matrix, recent: int) -> sp.csr_matrix:
    """[U, N] similarity-weighted sum over each user's last `recent` distinct items."""
    return (recent_profile(history, similarity.shape[0], recent) @ similarity).tocsr()


@dataclass(frozen=True)
class Choice:
    """A scorer's setting chosen on the validation split, and the validation score of each."""

    setting: dict[str, Any]
    validation: dict[str, float]


def choose(settings: Iterable[dict[str, Any]], score: Callable[[dict[str, Any]], float]) -> Choice:
    """The setting with the highest validation score (the first on a tie)."""
    scored = {repr(s): (s, score(s)) for s in settings}
    best = max(scored.values(), key=lambda pair: pair[1])
    return Choice(best[0], {k: v for k, (_, v) in scored.items()})

"""The standard sequential-recommendation protocol, for comparison with published SASRec numbers.

Split: for every user with at least `min_positives` positive actions, the LAST positive action is
held out (the target); the user's history is every action strictly before it (by row order, i.e.
time, ties broken by the log's order). Training uses the same histories, so no target reaches
training. The validation split for early stopping is the same split applied to the histories (each
user's second-to-last positive), as in SASRec.

Ranking: FULL ranking over the whole catalogue (no sampled negatives). By default the items the
user already interacted with (any action in their history) are removed from the competitors, as in
RecBole and the SASRec / BERT4Rec line — re-rating a film is not the task; the target itself is
never removed, so a target the user had viewed before (Taobao: view, then buy) still counts.
`seen=None` gives the unfiltered ranking. Ties are pessimistic: the rank is the number of OTHER
competing items scoring >= the target. Metrics: HR@10 and NDCG@10
(`model_core.evaluation.metrics.hit_rate_and_ndcg_at_k`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from model_core.data.timelines import Timelines
from model_core.evaluation.metrics import require_finite
from model_core.evaluation.score_rows import ScoreRows, as_rows
from model_core.evaluation.seen import Seen


@dataclass(frozen=True)
class LeaveOneOut:
    """history: every user's actions before their target (train on these, embed from these).

    target_pin_row: [U] int64 catalogue row of each user's held-out positive, aligned with
    history.user_ids.
    """

    history: Timelines
    target_pin_row: np.ndarray

    @property
    def repeat(self) -> np.ndarray:
        """[U] bool: the target is an item the user had acted on before (re-engagement)."""
        owner = np.repeat(np.arange(self.history.n_users), self.history.lengths)
        hit = self.history.pin_row == self.target_pin_row[owner]
        return np.bincount(owner[hit], minlength=self.history.n_users) > 0


def last_positive(timelines: Timelines) -> np.ndarray:
    """[U] int64: the row of each user's last positive action, -1 for a user without one."""
    owner = np.repeat(np.arange(timelines.n_users), timelines.lengths)
    pos_rows = np.flatnonzero(timelines.positive)
    last_pos = np.full(timelines.n_users, -1, dtype=np.int64)
    np.maximum.at(last_pos, owner[pos_rows], pos_rows)
    return last_pos


def leave_one_out(timelines: Timelines, min_positives: int = 2) -> LeaveOneOut:
    owner = np.repeat(np.arange(timelines.n_users), timelines.lengths)
    n_pos = np.bincount(owner[timelines.positive], minlength=timelines.n_users)
    last_pos = last_positive(timelines)
    users = (n_pos >= min_positives) & (last_pos > timelines.offsets[:-1])  # needs a history
    keep = users[owner] & (np.arange(len(owner)) < last_pos[owner])
    history = timelines.select_rows(keep)
    return LeaveOneOut(history=history, target_pin_row=timelines.pin_row[last_pos[users]])


def full_ranks(
    user_vecs: np.ndarray,
    item_vecs: np.ndarray,
    target_rows: np.ndarray,
    seen: Seen | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """[U] int64: for each user, how many OTHER competing catalogue items score >= their target.

    user_vecs: [U, D] float32; item_vecs: [N, D] float32; target_rows: [U] int64 rows of item_vecs;
    seen: items removed from each user's competitors (never the target itself); None keeps all.
    """
    require_finite("user_vecs", user_vecs)
    require_finite("item_vecs", item_vecs)
    items = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
    out = np.empty(len(user_vecs), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(user_vecs), chunk):
            u = torch.from_numpy(np.ascontiguousarray(user_vecs[i : i + chunk], dtype=np.float32))
            out[i : i + chunk] = _ranks(u @ items.T, target_rows, seen, i)
    return out


def score_ranks(
    scores: sp.csr_matrix | ScoreRows,
    target_rows: np.ndarray,
    seen: Seen | None = None,
    chunk: int = 512,
) -> np.ndarray:
    """`full_ranks` for a scorer given as [U, N] score rows (a sparse matrix: an absent entry
    scores 0; `model_core.evaluation.score_rows`)."""
    rows = as_rows(scores)
    n_users = rows.shape[0]
    out = np.empty(n_users, dtype=np.int64)
    for i in range(0, n_users, chunk):
        users = np.arange(i, min(i + chunk, n_users))
        out[i : i + chunk] = _ranks(rows.dense(users), target_rows, seen, i)
    return out


def _ranks(scores: torch.Tensor, target_rows: np.ndarray, seen: Seen | None, i: int) -> np.ndarray:
    """[u] ranks of the targets of users i .. i + u from their [u, N] scores (modified)."""
    rows = torch.from_numpy(target_rows[i : i + len(scores)])
    target = scores.gather(1, rows.unsqueeze(1))  # (u, 1)
    if seen is not None:
        lo, hi = seen.offsets[i], seen.offsets[i + len(scores)]
        local = np.repeat(np.arange(len(scores)), np.diff(seen.offsets[i : i + len(scores) + 1]))
        scores[local, seen.rows[lo:hi]] = -torch.inf
        scores.scatter_(1, rows.unsqueeze(1), target)
    return ((scores >= target).sum(dim=1) - 1).numpy()

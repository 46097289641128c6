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
import torch

from model_core.data.timelines import Timelines
from model_core.evaluation.seen import Seen


@dataclass(frozen=True)
class LeaveOneOut:
    """history: every user's actions before their target (train on these, embed from these).

    target_pin_row: [U] int64 catalogue row of each user's held-out positive, aligned with
    history.user_ids.
    """

    history: Timelines
    target_pin_row: np.ndarray


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
    items = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
    out = np.empty(len(user_vecs), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(user_vecs), chunk):
            u = torch.from_numpy(np.ascontiguousarray(user_vecs[i : i + chunk], dtype=np.float32))
            scores = u @ items.T  # (u, N)
            rows = torch.from_numpy(target_rows[i : i + chunk])
            target = scores.gather(1, rows.unsqueeze(1))  # (u, 1)
            if seen is not None:
                lo, hi = seen.offsets[i], seen.offsets[min(i + chunk, len(user_vecs))]
                local = np.repeat(np.arange(len(u)), np.diff(seen.offsets[i : i + len(u) + 1]))
                scores[local, seen.rows[lo:hi]] = -torch.inf
                scores.scatter_(1, rows.unsqueeze(1), target)
            out[i : i + chunk] = ((scores >= target).sum(dim=1) - 1).numpy()
    return out

"""The standard sequential-recommendation protocol, for comparison with published SASRec numbers.

Split: for every user with at least `min_positives` positive actions, the LAST positive action is
held out (the target); the user's history is every action strictly before it (by row order, i.e.
time, ties broken by the log's order). Training uses the same histories, so no target reaches
training. Ranking: FULL ranking over the whole catalogue (no sampled negatives); items the user
already engaged with are NOT removed. Ties are pessimistic: the rank is the number of OTHER items
scoring >= the target. Metrics: HR@10 and NDCG@10 (`model_core.metrics.hit_rate_and_ndcg_at_k`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from model_core.timelines import Timelines


@dataclass(frozen=True)
class LeaveOneOut:
    """history: every user's actions before their target (train on these, embed from these).

    target_pin_row: [U] int64 catalogue row of each user's held-out positive, aligned with
    history.user_ids.
    """

    history: Timelines
    target_pin_row: np.ndarray


def leave_one_out(timelines: Timelines, min_positives: int = 2) -> LeaveOneOut:
    owner = np.repeat(np.arange(timelines.n_users), timelines.lengths)
    pos_rows = np.flatnonzero(timelines.positive)
    n_pos = np.bincount(owner[pos_rows], minlength=timelines.n_users)
    last_pos = np.full(timelines.n_users, -1, dtype=np.int64)
    np.maximum.at(last_pos, owner[pos_rows], pos_rows)
    users = (n_pos >= min_positives) & (last_pos > timelines.offsets[:-1])  # needs a history
    keep = users[owner] & (np.arange(len(owner)) < last_pos[owner])
    history = timelines.select_rows(keep)
    return LeaveOneOut(history=history, target_pin_row=timelines.pin_row[last_pos[users]])


def full_ranks(
    user_vecs: np.ndarray, item_vecs: np.ndarray, target_rows: np.ndarray, chunk: int = 512
) -> np.ndarray:
    """[U] int64: for each user, how many OTHER catalogue items score >= their target.

    user_vecs: [U, D] float32; item_vecs: [N, D] float32; target_rows: [U] int64 rows of item_vecs.
    """
    items = torch.from_numpy(np.ascontiguousarray(item_vecs, dtype=np.float32))
    out = np.empty(len(user_vecs), dtype=np.int64)
    with torch.no_grad():
        for i in range(0, len(user_vecs), chunk):
            u = torch.from_numpy(np.ascontiguousarray(user_vecs[i : i + chunk], dtype=np.float32))
            scores = u @ items.T  # (u, N)
            rows = torch.from_numpy(target_rows[i : i + chunk])
            target = scores.gather(1, rows.unsqueeze(1))  # (u, 1)
            out[i : i + chunk] = ((scores >= target).sum(dim=1) - 1).numpy()
    return out

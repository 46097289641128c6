"""Which items each user already interacted with, for rankings that leave them out.

Full-ranking protocols for next-item recommendation (RecBole, the SASRec / BERT4Rec line) rank
only items the user has not interacted with: re-rating a film is not the task. The evaluated item
itself is never removed (`model_core.evaluation.leave_one_out.full_ranks`,
`model_core.evaluation.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from model_core.data.timelines import Timelines
from model_core.evaluation.index import index_positions


@dataclass(frozen=True)
class Seen:
    """Each user's distinct items, CSR: user u saw rows[offsets[u]:offsets[u+1]] (sorted)."""

    offsets: np.ndarray  # [U+1] int64
    rows: np.ndarray  # [S] int64

    @classmethod
    def of(cls, history: Timelines) -> Seen:
        """Catalogue rows of every action in each user's history."""
        owner = np.repeat(np.arange(history.n_users), history.lengths)
        pairs = np.unique(np.stack([owner, history.pin_row], axis=1), axis=0)  # sorted by owner
        return cls.from_pairs(pairs[:, 0], pairs[:, 1], history.n_users)

    @classmethod
    def from_pairs(cls, owner: np.ndarray, rows: np.ndarray, n_users: int) -> Seen:
        """From (owner, row) pairs ([S] each) sorted by owner, rows distinct per owner."""
        counts = np.bincount(owner, minlength=n_users)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return cls(offsets, rows.astype(np.int64))

    @property
    def owner(self) -> np.ndarray:
        """[S] int64: the user of each entry."""
        return np.repeat(np.arange(len(self.offsets) - 1), np.diff(self.offsets))

    def in_index(self, index_rows: np.ndarray) -> Seen:
        """The same sets as positions in the sorted `index_rows` ([N] catalogue rows); items
        outside the index are dropped."""
        pos = index_positions(index_rows, self.rows)
        keep = pos >= 0
        return Seen.from_pairs(self.owner[keep], pos[keep], len(self.offsets) - 1)

    def take(self, users: np.ndarray) -> Seen:
        """The sets of `users` ([Q] int64 user rows), in that order."""
        counts = np.diff(self.offsets)[users]
        starts = np.repeat(self.offsets[users], counts)
        within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return Seen(offsets, self.rows[starts + within])

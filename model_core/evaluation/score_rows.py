"""Scorers given as a row of scores over the catalogue per user, rather than as two towers of
vectors: the history baselines (a sparse matrix, `model_core.evaluation.history_scorers`) and an
embedding blended with the user's own history (`EmbeddingWithHistory`).

The remedy a serving system ships where users come back to what they engaged with: the ANN index
retrieves by the embedding, a second source supplies the user's own recent items, and a blender
merges the two. `EmbeddingWithHistory` is that blend as one score, u·v + weight · h(u, v) /
max_v h(u, v), with h a history scorer's score (0 off the user's history) and `weight` chosen on
the validation split (0 = the embedding alone). It is always reported apart from the embedding, so
what one vector does and what the blend adds both stay visible.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import scipy.sparse as sp
import torch

from model_core.evaluation.metrics import RetrievalMetrics, from_top, positive_hits, require_finite
from model_core.evaluation.seen import Seen


class ScoreRows(Protocol):
    """[U, N] scores of U users over a catalogue of N items, computed a block of users at a
    time."""

    @property
    def shape(self) -> tuple[int, int]: ...

    def dense(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        """[len(users), len(items) or N] float32 scores (items: catalogue rows; None = all)."""
        ...

    def at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """[P] float32 score of each (user, item) pair."""
        ...


@dataclass(frozen=True)
class SparseRows:
    """A sparse [U, N] matrix (scipy CSR) as ScoreRows; an absent entry scores 0."""

    scores: sp.csr_matrix

    def __post_init__(self) -> None:
        require_finite("scores", self.scores.data[:, None])

    @property
    def shape(self) -> tuple[int, int]:
        return self.scores.shape

    def dense(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        block = self.scores[users]
        if items is not None:
            block = block[:, items]
        return torch.from_numpy(block.toarray().astype(np.float32))

    def at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.asarray(self.scores[users, items], dtype=np.float32).ravel()


@dataclass(frozen=True)
class EmbeddingWithHistory:
    """u·v + weight · h(u, v) / max_v h(u, v).

    user_vecs: [U, D] float32; item_vecs: [N, D] float32; history: [U, N] CSR, a history
    scorer's non-negative scores (`history_scorers.history_scores`)."""

    user_vecs: np.ndarray
    item_vecs: np.ndarray
    history: sp.csr_matrix
    weight: float

    def __post_init__(self) -> None:
        require_finite("user_vecs", self.user_vecs)
        require_finite("item_vecs", self.item_vecs)
        if self.weight < 0:
            raise ValueError(f"the history weight must be >= 0, got {self.weight}")
        h = self.history.tocsr(copy=True).astype(np.float32)
        top = np.asarray(h.max(axis=1).todense()).ravel()
        h.data /= np.repeat(np.maximum(top, 1e-12), np.diff(h.indptr))
        object.__setattr__(self, "history", h)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.user_vecs), len(self.item_vecs))

    def dense(self, users: np.ndarray, items: np.ndarray | None = None) -> torch.Tensor:
        u = torch.from_numpy(np.ascontiguousarray(self.user_vecs[users], dtype=np.float32))
        v = self.item_vecs if items is None else self.item_vecs[items]
        out = u @ torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)).T
        if self.weight:
            out += self.weight * SparseRows(self.history).dense(users, items)
        return out

    def at(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        dot = np.einsum("pd,pd->p", self.user_vecs[users], self.item_vecs[items])
        boost = np.asarray(self.history[users, items], dtype=np.float32).ravel()
        return (dot + self.weight * boost).astype(np.float32)


def as_rows(scores: sp.csr_matrix | ScoreRows) -> ScoreRows:
    """A sparse matrix wrapped as ScoreRows; ScoreRows unchanged."""
    return SparseRows(scores) if sp.issparse(scores) else scores


def evaluate_score_rows(
    scores: sp.csr_matrix | ScoreRows,
    positive_user: np.ndarray,
    positive_pin_row: np.ndarray,
    index_rows: np.ndarray,
    index_topics: np.ndarray | None = None,
    positive_index_pos: np.ndarray | None = None,
    k: int = 10,
    coverage_k: int = 10,
    entropy_k: int = 50,
    seen: Seen | None = None,
    user_chunk: int = 256,
) -> RetrievalMetrics:
    """`model_core.evaluation.metrics.evaluate_retrieval` for a scorer given as [U, N] score rows
    over the catalogue (a sparse matrix: an absent entry scores 0).

    positive_pin_row: [P] int64 catalogue row of each positive; index_rows: [N_index] sorted
    catalogue rows; the other arguments as `evaluate_retrieval`'s. Ties count against the
    positive, so a positive the scorer gives 0 is a hit only in an index of fewer than k pins."""
    positive_user = np.asarray(positive_user, dtype=np.int64)
    rows = as_rows(scores)
    users, local_user = np.unique(positive_user, return_inverse=True)
    n_index = len(index_rows)
    if users.size == 0 or n_index == 0:
        raise ValueError(f"need >= 1 positive and >= 1 index pin, got {users.size}, {n_index}")
    top_k = min(n_index, max(k + 1, coverage_k, entropy_k if index_topics is not None else 0))
    exclude = None if seen is None else seen.take(users)
    exclude_owner = np.empty(0, np.int64) if exclude is None else exclude.owner
    top_s = np.empty((len(users), top_k), dtype=np.float32)
    top_i = np.empty((len(users), top_k), dtype=np.int64)
    for q0 in range(0, len(users), user_chunk):
        dense = rows.dense(users[q0 : q0 + user_chunk], index_rows)
        if exclude is not None:
            span = slice(exclude.offsets[q0], exclude.offsets[q0 + len(dense)])
            dense[exclude_owner[span] - q0, exclude.rows[span]] = -torch.inf
        s, i = torch.topk(dense, top_k, dim=1)
        top_s[q0 : q0 + len(dense)], top_i[q0 : q0 + len(dense)] = s.numpy(), i.numpy()
    pos_s = rows.at(positive_user, positive_pin_row)
    local_user = local_user.reshape(-1)
    hit = positive_hits(local_user, pos_s, top_s, k, top_i, positive_index_pos)
    return from_top(local_user, hit, top_i, n_index, index_topics, k, coverage_k, entropy_k)

"""Offline retrieval metrics of PinnerFormer §4.1, by exact (ANN-free) chunked search.

For a user ``U`` with positives ``P_U`` (their positive engagements in the 14 days after the split)
and an index of ``N`` random pins, the paper defines

    Recall@k(U) = 1/|P_U| * sum_{P in P_U} 1{ |{N in index : d(U, P) >= d(U, N)}| < k }

averaged over users with equal weight. With a score ``s`` (dot product; higher = closer) a positive
is a hit when FEWER than ``k`` index pins score ``>= s(U, P)``: ties count against the positive, and
the positive need not be in the index. That count is ``< k`` exactly when the ``k``-th largest
index score is ``< s(U, P)`` (or the index has fewer than ``k`` pins), so one exact top-k search
per user gives every user's recall, coverage and entropy.

- P90 coverage@k: the fraction of the index that accounts for 90% of all users' top-k slots.
- Interest entropy@k: Shannon entropy (nats) of the topic distribution of a user's top-k pins,
  averaged over users; pins with a null/negative topic are left out of the distribution.

Nothing assumes unit-norm vectors: baselines use the same API (e.g. popularity is
``user_vecs = ones [U, 1]`` and ``index_vecs = log1p(count) [N, 1]``). Search is chunked over users
AND index, merging the running top-k with ``torch.topk``, so a ``[U, N]`` score matrix never exists.
Scores are float32; ties are exact when scores are exactly representable, otherwise near-ties
within float32 rounding may fall either way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from model_core.evaluation.seen import Seen


@dataclass(frozen=True, eq=False)  # eq=False: the array field makes generated __eq__ ambiguous
class RetrievalMetrics:
    """The paper's headline offline metrics for one model on one evaluation set."""

    recall_at_k: float
    p90_coverage_at_k: float
    interest_entropy_at_k: float  # nan when no topics were given
    per_user_recall: np.ndarray  # [U] float64, one per user with >= 1 positive (for bootstrap CIs)
    n_users: int  # users with >= 1 positive: the evaluated population
    n_positives: int
    index_size: int
    k: int = 10
    coverage_k: int = 10
    entropy_k: int = 50
    # [P] bool, whether each positive (in the order given) is a hit: recall on a subset of the
    # positives, e.g. repeats and new items apart (`recall_on`)
    positive_hit: np.ndarray | None = None
    positive_local_user: np.ndarray | None = None  # [P] int64 row into per_user_recall

    def recall_on(self, subset: np.ndarray) -> np.ndarray:
        """[U'] float64 Recall@k of each user with >= 1 positive in `subset` ([P] bool, the
        positives in the order given), on those positives only."""
        assert self.positive_hit is not None, "these metrics kept no per-positive hits"
        assert self.positive_local_user is not None
        users = self.positive_local_user[subset]
        recall = per_user_recall(users, self.positive_hit[subset], self.n_users)
        return recall[~np.isnan(recall)]

    def as_dict(self) -> dict[str, float | int]:
        """Flat metric names keyed by their ``k`` (``recall_at_10``, ...), e.g. for metadata."""
        return {
            f"recall_at_{self.k}": self.recall_at_k,
            f"p90_coverage_at_{self.coverage_k}": self.p90_coverage_at_k,
            f"interest_entropy_at_{self.entropy_k}": self.interest_entropy_at_k,
            "n_users": self.n_users,
            "n_positives": self.n_positives,
            "index_size": self.index_size,
        }


def _resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def exact_topk(
    query_vecs: np.ndarray,
    index_vecs: np.ndarray,
    k: int,
    query_chunk: int = 1024,
    index_chunk: int = 262_144,
    device: str | torch.device | None = None,
    exclude: Seen | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k by dot product, chunked over queries and index.

    query_vecs: [Q, D] float32; index_vecs: [N, D] float32; exclude: index positions left out
    of each query's ranking (CSR over the Q queries; their score becomes -inf).
    Returns ``(scores [Q, K] float32, ids [Q, K] int64)`` sorted by descending score, with
    ``K = min(k, N)``. Peak memory is one ``[query_chunk, index_chunk]`` score block.
    """
    if query_vecs.ndim != 2 or index_vecs.ndim != 2 or query_vecs.shape[1] != index_vecs.shape[1]:
        raise ValueError(
            f"need query_vecs [Q, D] and index_vecs [N, D], got {query_vecs.shape}, "
            f"{index_vecs.shape}"
        )
    if k < 1 or query_chunk < 1 or index_chunk < 1:
        raise ValueError(
            f"k, query_chunk, index_chunk must be >= 1, got {k}, {query_chunk}, {index_chunk}"
        )
    dev = _resolve_device(device)
    n_q, n_idx = query_vecs.shape[0], index_vecs.shape[0]
    kk = min(k, n_idx)
    out_scores = np.empty((n_q, kk), dtype=np.float32)
    out_ids = np.empty((n_q, kk), dtype=np.int64)
    index_t = torch.from_numpy(np.ascontiguousarray(index_vecs, dtype=np.float32))  # no copy
    # [S] the query of each exclusion, computed once for every query chunk
    exclude_owner = exclude.owner if exclude is not None else np.empty(0, dtype=np.int64)
    with torch.no_grad():
        for q0 in range(0, n_q, query_chunk):
            q = torch.from_numpy(
                np.ascontiguousarray(query_vecs[q0 : q0 + query_chunk], dtype=np.float32)
            ).to(dev)  # (Qc, D)
            best_s = torch.empty((q.shape[0], 0), dtype=torch.float32, device=dev)  # (Qc, <=K)
            best_i = torch.empty((q.shape[0], 0), dtype=torch.int64, device=dev)
            if exclude is not None:
                span = slice(exclude.offsets[q0], exclude.offsets[q0 + q.shape[0]])
                ex_q = torch.from_numpy(exclude_owner[span] - q0).to(dev)
                ex_i = torch.from_numpy(exclude.rows[span]).to(dev)
            for i0 in range(0, n_idx, index_chunk):
                block = index_t[i0 : i0 + index_chunk].to(dev)  # (Nc, D)
                s = q @ block.T  # (Qc, Nc)
                if exclude is not None:
                    here = (ex_i >= i0) & (ex_i < i0 + s.shape[1])
                    s[ex_q[here], ex_i[here] - i0] = -torch.inf
                blk_s, blk_i = torch.topk(s, min(kk, s.shape[1]), dim=1)  # (Qc, <=K)
                cand_s = torch.cat([best_s, blk_s], dim=1)  # (Qc, <=2K)
                cand_i = torch.cat([best_i, blk_i + i0], dim=1)
                best_s, pos = torch.topk(cand_s, min(kk, cand_s.shape[1]), dim=1)
                best_i = torch.gather(cand_i, 1, pos)
            out_scores[q0 : q0 + q.shape[0]] = best_s.cpu().numpy()
            out_ids[q0 : q0 + q.shape[0]] = best_i.cpu().numpy()
    return out_scores, out_ids


def positive_scores(
    user_vecs: np.ndarray,
    positive_user: np.ndarray,
    positive_vecs: np.ndarray,
    chunk: int = 262_144,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """``s(U, P)`` for every positive. user_vecs: [U, D]; positive_user: [P] int64 row into
    user_vecs; positive_vecs: [P, D] -> [P] float32."""
    dev = _resolve_device(device)
    out = np.empty(positive_user.shape[0], dtype=np.float32)
    with torch.no_grad():
        for p0 in range(0, positive_user.shape[0], chunk):
            u = torch.from_numpy(
                np.ascontiguousarray(user_vecs[positive_user[p0 : p0 + chunk]], dtype=np.float32)
            ).to(dev)  # (Pc, D)
            v = torch.from_numpy(
                np.ascontiguousarray(positive_vecs[p0 : p0 + chunk], dtype=np.float32)
            ).to(dev)  # (Pc, D)
            out[p0 : p0 + u.shape[0]] = (u * v).sum(dim=1).cpu().numpy()
    return out


def positive_hits(
    positive_user: np.ndarray,
    pos_scores: np.ndarray,
    topk_scores: np.ndarray,
    k: int = 10,
    topk_ids: np.ndarray | None = None,
    positive_index_pos: np.ndarray | None = None,
) -> np.ndarray:
    """[P] bool: whether each positive is a hit at k, from each user's top index scores.

    positive_user: [P] int64 row of each positive's user; pos_scores: [P] s(U, P);
    topk_scores: [U, K] descending top index scores per user, ``K >= min(k, N)`` (a row shorter
    than ``k`` means the index has fewer than ``k`` pins, so every positive is a hit).
    topk_ids: [U, K] index positions of those scores and positive_index_pos: [P] int64 position
    of each positive in the index (-1 when it is not in the index): with both, a positive never
    counts against itself, and ``K >= k + 1`` is needed so that a positive in the top k still
    sees k OTHER pins. A positive is a hit iff fewer than k OTHER index pins score >= it (ties
    count against the positive).
    """
    width = min(topk_scores.shape[1], k + 1)
    top = topk_scores[positive_user, :width].astype(np.float64)  # (P, <=k+1)
    at_least = top >= pos_scores.astype(np.float64)[:, None]  # (P, <=k+1)
    if positive_index_pos is not None:
        assert topk_ids is not None, "positive_index_pos needs topk_ids"
        assert topk_scores.shape[1] >= min(k + 1, topk_ids.shape[1]), "need the top k+1 scores"
        is_self = topk_ids[positive_user, :width] == np.asarray(positive_index_pos)[:, None]
        at_least &= ~is_self
    return np.asarray(at_least.sum(axis=1) < k)


def per_user_recall(positive_user: np.ndarray, hit: np.ndarray, n_users: int) -> np.ndarray:
    """[n_users] float64 share of each user's positives that are hits ([P] rows, [P] bool);
    NaN for a user with no positive."""
    n_pos = np.bincount(positive_user, minlength=n_users).astype(np.float64)
    n_hit = np.bincount(positive_user, weights=hit.astype(np.float64), minlength=n_users)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n_pos > 0, n_hit / n_pos, np.nan)


def recall_at_k(
    positive_user: np.ndarray,
    pos_scores: np.ndarray,
    topk_scores: np.ndarray,
    k: int = 10,
    topk_ids: np.ndarray | None = None,
    positive_index_pos: np.ndarray | None = None,
) -> np.ndarray:
    """Per-user Recall@k ([U] float64, NaN for users with no positives) from each user's top
    index scores; the arguments as `positive_hits`'."""
    hit = positive_hits(positive_user, pos_scores, topk_scores, k, topk_ids, positive_index_pos)
    return per_user_recall(positive_user, hit, topk_scores.shape[0])


def p90_coverage(topk_ids: np.ndarray, index_size: int, quantile: float = 0.9) -> float:
    """Fraction of the index that accounts for ``quantile`` of all top-k slots.

    topk_ids: [U, k] int64 index rows. Pins are sorted by how often they appear; the answer is the
    size of the smallest such prefix covering ``>= quantile * U * k`` slots, over ``index_size``.
    """
    if index_size < 1:
        raise ValueError(f"index_size must be >= 1, got {index_size}")
    ids = np.asarray(topk_ids).reshape(-1)
    if ids.size == 0:
        return math.nan
    if ids.min() < 0 or ids.max() >= index_size:
        raise ValueError(f"topk_ids must be in [0, {index_size}), got [{ids.min()}, {ids.max()}]")
    freq = np.sort(np.bincount(ids, minlength=index_size))[::-1]  # (N,) descending
    needed = math.ceil(quantile * ids.size - 1e-9)  # tolerance: 0.9 * 10 must mean 9 slots
    n_pins = int(np.searchsorted(np.cumsum(freq), needed, side="left")) + 1
    return n_pins / index_size


def interest_entropy(topk_ids: np.ndarray, index_topics: np.ndarray) -> float:
    """Mean over users of the entropy (nats) of the topics of their top-k pins.

    topk_ids: [U, k] int64 index rows; index_topics: [N] int64, negative = unknown (excluded).
    Users whose top-k has no known topic are left out of the mean; NaN if no user has one.
    """
    topics = np.asarray(index_topics, dtype=np.int64)[topk_ids]  # (U, k)
    topics = np.sort(topics, axis=1)  # runs of equal topics are contiguous within a row
    n_users, kk = topics.shape
    rows = np.repeat(np.arange(n_users), kk)
    flat = topics.reshape(-1)
    valid = flat >= 0
    rows, flat = rows[valid], flat[valid]  # sorted by (row, topic)
    if flat.size == 0:
        return math.nan
    new_run = np.ones(flat.size, dtype=bool)
    new_run[1:] = (rows[1:] != rows[:-1]) | (flat[1:] != flat[:-1])
    starts = np.flatnonzero(new_run)
    run_len = np.diff(np.append(starts, flat.size)).astype(np.float64)
    run_row = rows[starts]
    n_known = np.bincount(rows, minlength=n_users).astype(np.float64)
    p = run_len / n_known[run_row]
    entropy = np.bincount(run_row, weights=-p * np.log(p), minlength=n_users)
    return float(entropy[n_known > 0].mean())


def bootstrap_ci(
    per_user: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap ``(lo, hi)`` for the mean of ``per_user: [U]`` (users resampled with
    replacement, NaNs dropped). Resamples are drawn in blocks to bound memory."""
    x = np.asarray(per_user, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return math.nan, math.nan
    means = resampled_means(x[:, None], n_boot, seed)[:, 0]
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def resampled_means(x: np.ndarray, n_boot: int = 1000, seed: int = 0) -> np.ndarray:
    """[U, C] per-user columns → [n_boot, C] column means over users resampled with replacement
    (the same users for every column: a paired bootstrap). Drawn in blocks to bound memory."""
    rng = np.random.default_rng(seed)
    n = len(x)
    block = max(1, 4_000_000 // n)
    means = np.empty((n_boot, x.shape[1]), dtype=np.float64)
    for b0 in range(0, n_boot, block):
        nb = min(block, n_boot - b0)
        means[b0 : b0 + nb] = x[rng.integers(0, n, size=(nb, n))].mean(axis=1)
    return means


def hit_and_ndcg_per_user(ranks: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-out per-user 1{rank < k} and 1{rank < k} / log2(rank + 2), both [U] float64
    (for bootstrap intervals). ranks: [U] int64 0-based rank of the held-out item."""
    r = np.asarray(ranks, dtype=np.float64)
    hit = r < k
    return hit.astype(np.float64), np.where(hit, 1.0 / np.log2(r + 2.0), 0.0)


def hit_rate_and_ndcg_at_k(ranks: np.ndarray, k: int = 10) -> tuple[float, float]:
    """Leave-one-out HR@k and NDCG@k. ranks: [U] int64, 0-based rank of the held-out item under
    full ranking. HR = mean 1{rank < k}; NDCG = mean 1{rank < k} / log2(rank + 2)."""
    if np.asarray(ranks).size == 0:
        return math.nan, math.nan
    hit, ndcg = hit_and_ndcg_per_user(ranks, k)
    return float(hit.mean()), float(ndcg.mean())


def from_top(
    local_user: np.ndarray,
    hit: np.ndarray,
    top_i: np.ndarray,
    n_index: int,
    index_topics: np.ndarray | None,
    k: int,
    coverage_k: int,
    entropy_k: int,
) -> RetrievalMetrics:
    """The metrics from each positive's user ([P] int64 row of top_i) and hit ([P] bool,
    `positive_hits`), and each evaluated user's top index positions ([U, K])."""
    per_user = per_user_recall(local_user, hit, len(top_i))
    entropy = math.nan
    if index_topics is not None:
        entropy = interest_entropy(top_i[:, :entropy_k], index_topics)
    return RetrievalMetrics(
        recall_at_k=float(per_user.mean()),
        p90_coverage_at_k=p90_coverage(top_i[:, :coverage_k], n_index),
        interest_entropy_at_k=entropy,
        per_user_recall=per_user,
        n_users=len(per_user),
        n_positives=len(hit),
        index_size=int(n_index),
        k=k,
        coverage_k=coverage_k,
        entropy_k=entropy_k,
        positive_hit=hit,
        positive_local_user=local_user,
    )


def require_finite(name: str, vectors: np.ndarray) -> None:
    """Raise when `vectors` ([R, D]) hold a NaN or an infinity: a non-finite score compares
    false with everything, so its item would rank first and count as a hit."""
    values = np.asarray(vectors)
    if values.size == 0:
        return
    bad = ~np.isfinite(values).reshape(len(values), -1).all(axis=1)
    if bad.any():
        rows = np.flatnonzero(bad)
        raise ValueError(
            f"{name} has non-finite values in {len(rows)} of {len(vectors)} rows "
            f"(first: row {int(rows[0])}); a model that emits NaN or inf cannot be scored"
        )


def evaluate_retrieval(
    user_vecs: np.ndarray,
    positive_user: np.ndarray,
    positive_vecs: np.ndarray,
    index_vecs: np.ndarray,
    index_topics: np.ndarray | None = None,
    positive_index_pos: np.ndarray | None = None,
    k: int = 10,
    coverage_k: int = 10,
    entropy_k: int = 50,
    user_chunk: int = 1024,
    index_chunk: int = 262_144,
    device: str | torch.device | None = None,
    seen: Seen | None = None,
) -> RetrievalMetrics:
    """Recall@k, P90 coverage@coverage_k and interest entropy@entropy_k (§4.1).

    user_vecs: [U, D] float32; positive_user: [P] int64 row into user_vecs for each positive;
    positive_vecs: [P, D] float32; index_vecs: [N, D] float32; index_topics: [N] int64 (-1 =
    unknown) or None (entropy is then NaN); positive_index_pos: [P] int64 position of each
    positive in the index, -1 when absent (None: no positive is in the index), so that a positive
    is never counted against itself. seen: index positions each user (a row of user_vecs)
    already interacted with, removed from that user's ranking — never a positive from its own
    count, as the positive's score is compared with the OTHER pins. Only users with >= 1
    positive are evaluated, for all three metrics, so they describe one population. ``device``
    defaults to CUDA when available.
    """
    for name, vectors in (("user_vecs", user_vecs), ("positive_vecs", positive_vecs)):
        require_finite(name, vectors)
    require_finite("index_vecs", index_vecs)
    positive_user = np.asarray(positive_user, dtype=np.int64)
    if positive_user.ndim != 1 or positive_vecs.shape[0] != positive_user.shape[0]:
        raise ValueError(
            f"positive_user [P] and positive_vecs [P, D] disagree: {positive_user.shape}, "
            f"{positive_vecs.shape}"
        )
    if positive_user.size and (positive_user.min() < 0 or positive_user.max() >= len(user_vecs)):
        raise ValueError(f"positive_user must index rows of user_vecs [0, {len(user_vecs)})")
    if index_topics is not None and index_topics.shape != (index_vecs.shape[0],):
        raise ValueError(
            f"index_topics must be [N]={index_vecs.shape[0]}, got {index_topics.shape}"
        )
    n_index = index_vecs.shape[0]
    users, local_user = np.unique(positive_user, return_inverse=True)  # evaluated users
    if users.size == 0 or n_index == 0:
        raise ValueError(f"need >= 1 positive and >= 1 index pin, got {users.size}, {n_index}")
    local_user = local_user.reshape(-1)

    top_k = max(k + 1, coverage_k, entropy_k if index_topics is not None else 0)
    exclude = None if seen is None else seen.take(users)
    top_s, top_i = exact_topk(
        user_vecs[users], index_vecs, top_k, user_chunk, index_chunk, device, exclude
    )
    pos_s = positive_scores(user_vecs, positive_user, positive_vecs, device=device)
    hit = positive_hits(local_user, pos_s, top_s, k, top_i, positive_index_pos)
    return from_top(local_user, hit, top_i, n_index, index_topics, k, coverage_k, entropy_k)

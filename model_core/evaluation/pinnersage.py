"""PinnerSage: a multi-embedding user baseline, scored as PinnerFormer §4.2.1 does.

PinnerSage (Pal et al., "PinnerSage: Multi-Modal User Embedding Framework for Recommendations at
Pinterest", KDD 2020) represents a user by SEVERAL embeddings, one per interest:

1. **Actions.** The user's last ``max_actions`` positive engagements (users with no positive fall
   back to their last ``max_actions`` actions, as
   ``model_core.evaluation.paper_protocol.recent_mean`` does), each represented by its item's
   catalogue content vector, L2-normalised. Every action is a point, so a pin engaged twice counts
   twice.
2. **Ward clustering.** Agglomerative clustering with Ward's criterion, merging the pair of
   clusters whose merge least increases the within-cluster sum of squares, and stopping at the
   first merge whose Ward height exceeds ``distance_threshold``. The height is SciPy's
   (``scipy.cluster.hierarchy.linkage(method="ward")``):
   ``d(A, B) = sqrt(2 |A| |B| / (|A| + |B|)) * ||mean(A) - mean(B)||``, i.e.
   ``sqrt(2 * ΔSSE)``; for two single actions it is their Euclidean distance, ``sqrt(2 - 2 cos)``
   on unit vectors. Ward heights never decrease, so the cut equals
   ``fcluster(Z, distance_threshold, criterion="distance")``. It is implemented here, batched over
   users with the Lance-Williams update, so the module needs only numpy and torch.
3. **Medoids.** Each cluster is represented by its medoid: the member action whose item minimises
   the summed squared distance to the other members (a real pin, never an average of interests).
4. **Importance.** A cluster's importance is its time-decayed action count
   ``sum_i exp(-λ (t_ref - t_i))`` with ``λ = ln 2 / half_life`` and ``t_ref`` the user's last
   action; the ``clusters`` most important clusters are kept, in descending importance.

Retrieval with several embeddings (PinnerFormer, Pancha et al. KDD 2022, §4.2.1): each kept medoid
ranks the index by dot product with the (unit-norm) item content vectors, and the per-cluster
rankings are combined in one of two ways.

- **oracle**: a positive counts as retrieved when it is in the top-k of ANY kept medoid. The
  evaluator picks the right interest after the fact, so this is an UPPER BOUND on what any
  blending of the same per-cluster lists could reach.
- **round_robin**: the per-cluster rankings are blended in importance order. Turns cycle over
  the kept clusters (most important first); on its turn a cluster appends its best-ranked item
  not already in the blend (items already in it are skipped, so every turn adds exactly one new
  item), until k items are blended.

The retrieval rule for a positive ``P`` is ``model_core.evaluation.metrics``' (the paper's
Recall@k): P competes against every index item, ITSELF INCLUDED when P is in the index, and ties
count against it. Under medoid c, P's rank is ``r_c = |{n in index : s_c(n) >= s_c(P)}|``.

- oracle: P is retrieved iff ``min_c r_c < k``.
- round robin: P is inserted into each cluster's ranking right after those ``r_c`` items and the
  rankings are blended as above; P is retrieved iff fewer than k items precede it in the blend.
  Concretely, let ``emit(n)`` be the turn at which index item n enters the blend of the index
  alone and ``T_c = 1 + max{emit(n) : s_c(n) >= s_c(P)}`` (0 when there is none). Cluster c can
  place P on its first turn ``t >= T_c``; P's blended position is the smallest such turn over the
  clusters, and P is retrieved iff it is ``< k``. Everything before P is blended exactly as
  without it, and every turn adds one item, so the position is also the number of index items
  ahead of P. With one cluster this is exactly single-embedding Recall@k with the medoid, and a
  positive retrieved by the round robin is always retrieved by the oracle (its position is at
  least ``r_c`` for the cluster that places it).

P90 coverage@10 and interest entropy@50 (§4.1) describe the lists a user would be shown, so both
modes report them from the round-robin blends (the union of per-cluster top-10s is not a top-10).

Leave-one-out (``model_core.evaluation.leave_one_out``): full ranking over the whole catalogue, rank
= number of OTHER items scoring >= the target (pessimistic ties); the oracle uses the best rank over
clusters, the round robin the target's position in the blend of the other items (same rule as
above), and both report HR@k and NDCG@k.

Shapes: U users, C = ``clusters``, D content dims, M = ``max_actions``, N index items, P positives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from model_core.data.timelines import PinCatalog, Timelines

DAY_S = 86_400


@dataclass(frozen=True)
class PinnerSageConfig:
    """PinnerSage's knobs.

    distance_threshold: Ward height (SciPy's convention, see the module docstring) above which
    clusters are not merged. On unit vectors two single actions merge when their cosine is
    at least ``1 - t^2 / 2`` (0.5 at the default 1.0), and two groups of n actions each merge when
    their mean vectors are at most ``t / sqrt(n)`` apart, so groups grow only while they stay
    tight, as PinnerSage asks. On the default synthetic world (32-d content) 1.0 gives
    topic-pure clusters (100% of actions share their cluster's majority topic; 1.5: 95%, 2.0:
    90%) and Recall@10 is flat from 0.8 to 1.5.
    half_life_days: the importance decay; λ = ln 2 / (half_life_days * 86,400) per second.
    """

    max_actions: int = 64
    clusters: int = 5  # c: the most important clusters kept; the paper compares c = 5 and 20
    distance_threshold: float = 1.0
    half_life_days: float = 14.0

    def __post_init__(self) -> None:
        if self.max_actions < 1 or self.clusters < 1:
            raise ValueError(
                f"max_actions and clusters must be >= 1, got {self.max_actions}, {self.clusters}"
            )
        if not self.distance_threshold >= 0:
            raise ValueError(f"distance_threshold must be >= 0, got {self.distance_threshold}")
        if not self.half_life_days > 0:
            raise ValueError(f"half_life_days must be > 0, got {self.half_life_days}")


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero), in x's dtype."""
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.maximum(norms, 1e-12).astype(x.dtype)


def ward_labels(points: np.ndarray, n_points: np.ndarray, threshold: float) -> np.ndarray:
    """Ward clustering of B small point sets at once, cut at Ward height ``threshold``.

    points: [B, M, D] float; set b is ``points[b, :n_points[b]]`` (the rest is padding).
    n_points: [B] int64.
    Returns labels [B, M] int64: the smallest position among each point's cluster members, -1 on
    padding. Equal to ``fcluster(linkage(points[b, :n], "ward"), threshold, "distance")`` up to
    relabelling (and the order of exact ties). Cost: M - 1 rounds of an argmin over [B, M * M].
    """
    x = np.asarray(points, dtype=np.float64)
    n_sets, m = x.shape[0], x.shape[1]
    alive = np.arange(m)[None, :] < np.asarray(n_points)[:, None]  # (B, M)
    sq = np.einsum("bmd,bmd->bm", x, x)
    d2 = sq[:, :, None] + sq[:, None, :] - 2.0 * np.einsum("bid,bjd->bij", x, x)
    np.maximum(d2, 0.0, out=d2)  # squared Euclidean distances, (B, M, M)
    d2[~(alive[:, :, None] & alive[:, None, :])] = np.inf
    d2[:, np.arange(m), np.arange(m)] = np.inf
    size = alive.astype(np.float64)  # cluster sizes, by representative position
    labels = np.where(alive, np.arange(m)[None, :], -1)
    t2 = float(threshold) ** 2
    for _ in range(m - 1):
        flat = d2.reshape(n_sets, m * m)
        best = flat.argmin(axis=1)  # first in row-major order, so i < j
        height2 = flat[np.arange(n_sets), best]
        b = np.flatnonzero(height2 <= t2)  # inf (nothing left to merge) is never <= t2
        if b.size == 0:
            break
        i, j = best[b] // m, best[b] % m
        rows = np.arange(b.size)
        ni, nj, nw = size[b, i][:, None], size[b, j][:, None], size[b]  # (nb, 1), (nb, M)
        # Lance-Williams for Ward on squared distances; dead clusters stay at inf.
        merged = ((ni + nw) * d2[b, i] + (nj + nw) * d2[b, j] - nw * height2[b][:, None]) / (
            ni + nj + nw
        )
        merged[rows, i] = np.inf
        merged[rows, j] = np.inf
        d2[b, i] = merged
        d2[b, :, i] = merged
        d2[b, j] = np.inf
        d2[b, :, j] = np.inf
        size[b, i] += size[b, j]
        size[b, j] = 0.0
        lab = labels[b]
        labels[b] = np.where(lab == j[:, None], i[:, None], lab)
    return labels


def _recent_actions(history: Timelines, max_actions: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of each user's last `max_actions` positives (all actions when a user has none).

    Returns (rows [R] int64 into history's flat arrays, in user-then-time order; owner [R]).
    """
    owner = np.repeat(np.arange(history.n_users), history.lengths)
    has_pos = np.bincount(owner[history.positive], minlength=history.n_users) > 0
    rows = np.flatnonzero(history.positive | ~has_pos[owner])
    own = owner[rows]
    rank_from_end = np.searchsorted(own, own, side="right") - 1 - np.arange(len(rows))
    keep = rank_from_end < max_actions
    return rows[keep], own[keep]


def user_clusters(
    history: Timelines,
    catalog: PinCatalog,
    cfg: PinnerSageConfig | None = None,
    user_chunk: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Each user's most important PinnerSage clusters, as medoid content vectors.

    Returns (vectors [U, C, D] float32, unit-norm medoid content; valid [U, C] bool). Slots are in
    descending importance (ties: the cluster with the earliest member first); users with fewer
    than C clusters (or no actions) have their trailing slots invalid and zero.
    """
    cfg = cfg or PinnerSageConfig()
    n_users, dim, c = history.n_users, catalog.embeddings.shape[1], cfg.clusters
    vectors = np.zeros((n_users, c, dim), dtype=np.float32)
    valid = np.zeros((n_users, c), dtype=bool)
    rows, own = _recent_actions(history, cfg.max_actions)
    if rows.size == 0:
        return vectors, valid
    n_act = np.bincount(own, minlength=n_users)
    start = np.concatenate([[0], np.cumsum(n_act)])
    slot = np.arange(len(rows)) - start[own]  # position within the user's kept actions
    t_ref = history.ts[np.maximum(history.offsets[1:] - 1, 0)]  # (U,) last action, any kind
    lam = math.log(2.0) / (cfg.half_life_days * DAY_S)
    weight = np.exp(-lam * (t_ref[own] - history.ts[rows]).astype(np.float64))  # (R,)
    unit = unit_rows(catalog.embeddings[history.pin_row[rows]].astype(np.float64))  # (R, D)

    for u0 in range(0, n_users, user_chunk):
        u1 = min(u0 + user_chunk, n_users)
        m = int(n_act[u0:u1].max(initial=0))
        if m == 0:
            continue
        r0, r1 = start[u0], start[u1]
        b_of = own[r0:r1] - u0
        x = np.zeros((u1 - u0, m, dim), dtype=np.float64)  # (B, M, D) padded actions
        w = np.zeros((u1 - u0, m), dtype=np.float64)
        x[b_of, slot[r0:r1]] = unit[r0:r1]
        w[b_of, slot[r0:r1]] = weight[r0:r1]
        labels = ward_labels(x, n_act[u0:u1], cfg.distance_threshold)  # (B, M)
        member = labels[:, None, :] == np.arange(m)[None, :, None]  # (B, cluster g, point i)
        size = member.sum(axis=2)  # (B, G); G indexes clusters by representative position
        sums = np.einsum("bgi,bid->bgd", member.astype(np.float64), x)  # (B, G, D)
        # Summed squared distance from i to its cluster, minus terms not depending on i:
        # sum_j ||x_i - x_j||^2 = |g| ||x_i||^2 - 2 x_i . sum_g + const.
        own_sum = np.take_along_axis(sums, np.maximum(labels, 0)[:, :, None], axis=1)
        cost = size[np.arange(u1 - u0)[:, None], np.maximum(labels, 0)] * np.einsum(
            "bid,bid->bi", x, x
        ) - 2.0 * np.einsum("bid,bid->bi", x, own_sum)  # (B, M)
        medoid = np.where(member, cost[:, None, :], np.inf).argmin(axis=2)  # (B, G)
        importance = np.where(
            size > 0, np.einsum("bgi,bi->bg", member.astype(np.float64), w), -np.inf
        )
        order = np.argsort(-importance, axis=1, kind="stable")[:, :c]  # (B, <=C)
        kept = np.take_along_axis(importance, order, axis=1) > -np.inf
        pick = np.take_along_axis(medoid, order, axis=1)  # (B, <=C) point positions
        med_vec = np.take_along_axis(x, pick[:, :, None], axis=1)  # (B, <=C, D)
        nc = order.shape[1]
        vectors[u0:u1, :nc] = np.where(kept[:, :, None], unit_rows(med_vec), 0.0)
        valid[u0:u1, :nc] = kept
    return vectors, valid


def round_robin(
    lists: np.ndarray, n_valid: np.ndarray, length: int
) -> tuple[np.ndarray, np.ndarray]:
    """Blend per-cluster rankings in turn, skipping items already blended.

    lists: [U, C, K] int64 item ids, each row a ranking of K DISTINCT items; user u's clusters in
    blending order are its first ``n_valid[u]`` rows (the rest are ignored).
    n_valid: [U] int64, each >= 1.
    Turn t belongs to cluster ``t mod n_valid[u]``, which appends its best item not yet blended.
    Returns (blended [U, L] int64 with L = min(length, K); emit_time [U, C, K] int64: the turn at
    which each list entry entered the blend, L when it did not).
    """
    n_users, _, k_list = lists.shape
    n_valid = np.asarray(n_valid, dtype=np.int64)
    if n_users and n_valid.min() < 1:
        raise ValueError("every user needs at least one valid cluster to blend")
    n_turns = min(length, k_list)
    users = np.arange(n_users)
    emitted = np.zeros(lists.shape, dtype=bool)
    emit_time = np.full(lists.shape, n_turns, dtype=np.int64)
    blended = np.empty((n_users, n_turns), dtype=np.int64)
    for t in range(n_turns):
        c = t % n_valid  # (U,)
        # Fewer than K items are blended and each list holds K distinct ones: one is left.
        first_new = np.argmin(emitted[users, c], axis=1)  # (U,)
        item = lists[users, c, first_new]
        blended[:, t] = item
        new = (lists == item[:, None, None]) & ~emitted
        emitted |= new
        emit_time[new] = t
    return blended, emit_time

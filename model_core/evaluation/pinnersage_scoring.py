"""PinnerSage scored: Recall@10 under the paper's protocol (oracle and round robin over the
user's clusters, `model_core.evaluation.pinnersage`) and leave-one-out ranks."""

from __future__ import annotations

import math

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.index import index_positions
from model_core.evaluation.metrics import (
    RetrievalMetrics,
    exact_topk,
    hit_rate_and_ndcg_at_k,
    interest_entropy,
    p90_coverage,
    per_user_recall,
    positive_scores,
)
from model_core.evaluation.pinnersage import PinnerSageConfig, round_robin, unit_rows, user_clusters
from model_core.evaluation.seen import Seen


def _blended_position(
    contenders: np.ndarray,
    at_or_above: np.ndarray,
    emit_time: np.ndarray,
    n_valid: np.ndarray,
    n_items: int,
) -> np.ndarray:
    """Position of an item inserted after its ``at_or_above`` entries in each cluster's list.

    contenders: [Q, C] bool, clusters whose top-K holds ALL items scoring >= the item (others
    cannot place it in time); at_or_above: [Q, C, K] bool; emit_time: [Q, C, K] from
    `round_robin` for the item's user; n_valid: [Q]; n_items: items blended without it.
    Returns [Q] int64: the number of blended items ahead of it (large when not placed).
    """
    c = at_or_above.shape[1]
    ready = np.where(at_or_above, emit_time + 1, 0).max(axis=2)  # (Q, C) T_c
    slot = np.arange(c)[None, :]
    nv = n_valid[:, None]
    turn = ready + np.mod(slot - ready, nv)  # first turn >= T_c that belongs to cluster c
    turn = np.where(contenders & (slot < nv), turn, np.iinfo(np.int64).max // 2)
    return np.minimum(turn.min(axis=1), n_items)  # once the rest is blended it comes next


def pinnersage_metrics(
    history: Timelines,
    catalog: PinCatalog,
    positive_user: np.ndarray,
    positive_pin_row: np.ndarray,
    index_rows: np.ndarray,
    cfg: PinnerSageConfig | None = None,
    k: int = 10,
    coverage_k: int = 10,
    entropy_k: int = 50,
    device: str | torch.device | None = None,
    seen: Seen | None = None,
) -> dict[str, RetrievalMetrics]:
    """Recall@k, P90 coverage@coverage_k, interest entropy@entropy_k of PinnerSage (§4.1).

    Arguments as `model_core.evaluation.paper_protocol.EvalSet`: positive_user [P] int64 rows into
    history.user_ids; positive_pin_row [P] int64 and index_rows [N] int64 catalogue rows; seen:
    index positions left out of each user's rankings. A positive in the index never counts
    against itself (as `model_core.evaluation.metrics.recall_at_k`). Items
    are scored by their unit-norm catalogue content (as the recent_mean baseline). Only users
    with >= 1 positive are evaluated. Returns {"pinnersage_oracle", "pinnersage_round_robin"};
    the retrieval rules are in the module docstring; both report coverage and entropy of the
    round-robin blends.
    """
    cfg = cfg or PinnerSageConfig()
    positive_user = np.asarray(positive_user, dtype=np.int64)
    positive_pin_row = np.asarray(positive_pin_row, dtype=np.int64)
    users, local = _evaluated_users(history, positive_user, positive_pin_row, index_rows)
    n_index = len(index_rows)
    vectors, valid = user_clusters(history, catalog, cfg)
    vectors, valid = vectors[users], valid[users]  # (Ue, C, D), (Ue, C)
    n_valid = valid.sum(axis=1)
    if n_valid.min() < 1:
        raise ValueError("every evaluated user needs at least one action in history")
    n_eval, c, dim = vectors.shape
    content = unit_rows(catalog.embeddings.astype(np.float32))
    top_k = min(max(k + 1, coverage_k, entropy_k), n_index)
    exclude = None if seen is None else seen.take(np.repeat(users, c))  # per (user, cluster)
    top_s, top_i = exact_topk(
        vectors.reshape(-1, dim), content[index_rows], top_k, device=device, exclude=exclude
    )  # (Ue * C, K)
    top_s, top_i = top_s.reshape(n_eval, c, top_k), top_i.reshape(n_eval, c, top_k)
    pos_s = positive_scores(
        vectors.reshape(-1, dim),
        (local[:, None] * c + np.arange(c)[None, :]).reshape(-1),
        np.repeat(content[positive_pin_row], c, axis=0),
        device=device,
    ).reshape(-1, c)  # (P, C) s_c(P)

    u_valid = valid[local]  # (P, C)
    # (P, C, K): the index pins other than P itself that score >= s_c(P) in cluster c's list
    at_or_above = (top_s[local] >= pos_s[:, :, None]) & (
        top_i[local] != index_positions(index_rows, positive_pin_row)[:, None, None]
    )
    cluster_hit = u_valid & (at_or_above[:, :, : k + 1].sum(axis=2) < k)  # r_c < k
    oracle_hit = cluster_hit.any(axis=1)

    blended, emit_time = round_robin(top_i, n_valid, top_k)  # (Ue, K), (Ue, C, K)
    position = _blended_position(
        cluster_hit,
        at_or_above,
        emit_time[local],
        n_valid[local],
        n_index,
    )
    rr_hit = position < k

    topics = catalog.topics[index_rows]
    coverage = p90_coverage(blended[:, :coverage_k], n_index)
    entropy = interest_entropy(blended[:, :entropy_k], topics)
    out: dict[str, RetrievalMetrics] = {}
    for name, hit in (("pinnersage_oracle", oracle_hit), ("pinnersage_round_robin", rr_hit)):
        per_user = per_user_recall(local, hit, n_eval)
        out[name] = RetrievalMetrics(
            float(per_user.mean()), coverage, entropy, per_user, int(n_eval),
            int(positive_user.size), int(n_index), k, coverage_k, entropy_k,
            positive_hit=hit, positive_local_user=local,
        )  # fmt: skip
    return out


def _evaluated_users(
    history: Timelines, positive_user: np.ndarray, positive_pin_row: np.ndarray, index: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The users with a positive ([Ue] rows of history) and each positive's local user [P]."""
    if positive_user.shape != positive_pin_row.shape or positive_user.ndim != 1:
        raise ValueError(
            f"positive_user and positive_pin_row must both be [P], got {positive_user.shape}, "
            f"{positive_pin_row.shape}"
        )
    users, local = np.unique(positive_user, return_inverse=True)
    if users.size == 0 or len(index) == 0:
        raise ValueError(f"need >= 1 positive and >= 1 index pin, got {users.size}, {len(index)}")
    if users[0] < 0 or users[-1] >= history.n_users:
        raise ValueError(f"positive_user must index history's users [0, {history.n_users})")
    return users, local.reshape(-1)


def pinnersage_loo(
    history: Timelines,
    catalog: PinCatalog,
    target_pin_row: np.ndarray,
    cfg: PinnerSageConfig | None = None,
    k: int = 10,
    chunk_elems: int = 1 << 25,
) -> dict[str, tuple[float, float]]:
    """{"pinnersage_oracle": (HR@k, NDCG@k), "pinnersage_round_robin": (HR@k, NDCG@k)} from
    `pinnersage_loo_ranks`."""
    ranks = pinnersage_loo_ranks(history, catalog, target_pin_row, cfg, k, chunk_elems)
    return {name: hit_rate_and_ndcg_at_k(r, k) for name, r in ranks.items()}


def pinnersage_loo_ranks(
    history: Timelines,
    catalog: PinCatalog,
    target_pin_row: np.ndarray,
    cfg: PinnerSageConfig | None = None,
    k: int = 10,
    chunk_elems: int = 1 << 25,
    seen: Seen | None = None,
) -> dict[str, np.ndarray]:
    """Leave-one-out ranks ([U] int64) of PinnerSage, full ranking over the whole catalogue
    (without each user's `seen` items, the target excepted, when given).

    target_pin_row: [U] int64 catalogue row of each user's held-out item, aligned with
    history.user_ids (`model_core.evaluation.leave_one_out.LeaveOneOut`). Under medoid c the
    target's rank is the number of OTHER catalogue items scoring >= it (pessimistic ties, as
    `full_ranks`). oracle: the best rank over the user's clusters (an upper bound); round_robin: the
    target's position in the blend of the other items (module docstring); a rank >= k is a miss,
    beyond that its value only orders misses. Peak memory is one score block of about
    ``chunk_elems`` float32.
    """
    cfg = cfg or PinnerSageConfig()
    target = np.asarray(target_pin_row, dtype=np.int64)
    if target.shape != (history.n_users,):
        raise ValueError(f"target_pin_row must be [U]={history.n_users}, got {target.shape}")
    vectors, valid = user_clusters(history, catalog, cfg)
    n_valid = valid.sum(axis=1)
    if history.n_users and n_valid.min() < 1:
        raise ValueError("every user needs at least one action in history")
    n_users, c, dim = vectors.shape
    n_items = len(catalog)
    content = torch.from_numpy(unit_rows(catalog.embeddings.astype(np.float32)))
    kk = min(k, n_items - 1)  # the target is not in its own ranking
    rank = np.empty((n_users, c), dtype=np.int64)  # other items scoring >= the target
    tgt_s = np.empty((n_users, c), dtype=np.float32)
    top_s = np.empty((n_users, c, kk), dtype=np.float32)
    top_i = np.empty((n_users, c, kk), dtype=np.int64)
    step = max(1, chunk_elems // max(1, n_items * c))
    with torch.no_grad():
        for u0 in range(0, n_users, step):
            u1 = min(u0 + step, n_users)
            q = torch.from_numpy(np.ascontiguousarray(vectors[u0:u1].reshape(-1, dim)))
            scores = q @ content.T  # (b * C, N)
            rows = torch.from_numpy(np.repeat(target[u0:u1], c)).unsqueeze(1)  # (b * C, 1)
            t = scores.gather(1, rows)
            if seen is not None:  # every cluster row of user u loses u's seen items
                per_user = np.diff(seen.offsets[u0 : u1 + 1])
                q_row = (np.repeat(np.arange(u1 - u0), per_user) * c)[:, None] + np.arange(c)
                cols = np.repeat(seen.rows[seen.offsets[u0] : seen.offsets[u1]], c)
                scores[q_row.reshape(-1), cols] = -math.inf
                scores.scatter_(1, rows, t)
            rank[u0:u1] = ((scores >= t).sum(dim=1) - 1).numpy().reshape(-1, c)
            tgt_s[u0:u1] = t.numpy().reshape(-1, c)
            scores.scatter_(1, rows, -math.inf)  # rank the other items only
            s, i = torch.topk(scores, kk, dim=1)
            top_s[u0:u1] = s.numpy().reshape(-1, c, kk)
            top_i[u0:u1] = i.numpy().reshape(-1, c, kk)

    big = np.iinfo(np.int64).max // 2
    oracle_rank = np.where(valid, rank, big).min(axis=1)
    if kk > 0:
        _, emit_time = round_robin(top_i, n_valid, kk)
        rr_rank = _blended_position(
            valid & (rank < k),
            top_s >= tgt_s[:, :, None],
            emit_time,
            n_valid,
            n_items - 1,
        )
    else:  # a one-item catalogue: the target is alone
        rr_rank = np.zeros(n_users, dtype=np.int64)
    return {"pinnersage_oracle": oracle_rank, "pinnersage_round_robin": rr_rank}

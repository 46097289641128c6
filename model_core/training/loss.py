"""Sampled softmax with logQ correction (paper §3.3, appendix A.3).

For every (user embedding u, positive p) pair — one row per positive — the loss is

    logit(v) = s(u,v) - log Q(v)                      (the logQ correction, on every logit)
    loss     = -log( exp(logit(p)) / (exp(logit(p)) + Σ_{n ∈ negatives} exp(logit(n))) )

with s(u,v) = <u,v>/τ, τ learnable and clamped at >= 0.01. Negatives come from

- "in_batch": every positive in the batch (all-gathered across ranks when torch.distributed is
  initialised — the paper's "negatives from all GPUs"), capped at `in_batch_cap`; Q(v) estimated
  from a count-min sketch of positive frequency (`model_core.training.sketch`);
- "random": items drawn uniformly from the corpus; Q(v) = the uniform inclusion probability;
- "mixed": both, merged into one pool;
- "catalog" (beyond the paper): every item of the catalogue, i.e. the exact softmax, so Q(v) = 1
  and there is nothing to correct. The paper samples because Pinterest has billions of pins; a
  catalogue of up to ~1e5 items costs one [N, K] matmul per step on a CPU, and the exact softmax is
  the strongest public next-item recipe (SASRec with full cross-entropy, Klenitskiy & Vasilev 2023).

Masking: a candidate is removed from a pair's negatives when it is a positive of the same user
(the paper), or the very same item as the pair's positive (an "accidental hit"). With the
catalogue as the pool, that is every item the pair's user has as a positive in the batch.

Weighting (A.3, Fig. 5): each user embedding in the device's batch gets equal weight — a pair's loss
is divided by the number of positives of its embedding, and by the number of embeddings.

`binary_cross_entropy_loss` is the ORIGINAL SASRec loss (Kang & McAuley 2018), kept for the paper's
Table 10: every pair has ONE uniformly sampled negative and the loss is
-log σ(s(u,p)) - log(1 - σ(s(u,n))), with the same weighting and accidental-hit masking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
import torch.distributed as dist
import torch.distributed.nn.functional as dist_fn
import torch.nn.functional as F

from model_core.model.cpu_bf16 import bucket_rows, cpu_bf16

Negatives = Literal["in_batch", "random", "mixed", "catalog"]
LossKind = Literal["sampled_softmax", "bce"]


@dataclass(frozen=True)
class LossConfig:
    kind: LossKind = "sampled_softmax"  # Table 10: "bce" = SASRec's BCE with one random negative
    negatives: Negatives = "mixed"  # Table 4: mixed is best in the paper; "catalog" = exact
    logq: bool = True  # Table 4: logQ correction matters most for in-batch negatives
    n_random: int = 2048  # random negatives per step; the paper uses 8192 on GPUs
    in_batch_cap: int = 5000  # A.3: cap on the all-gathered in-batch pool
    min_temperature: float = 0.01  # A.3: τ >= 0.01


@dataclass
class Candidates:
    """A pool of candidate items.

    emb:   [K, D] float   item embeddings
    ids:   [K] int64      item ids (accidental-hit masking)
    users: [K] int64      owning user of an in-batch positive, -1 for random negatives
    log_q: [K] float32    log Q(v), the sampling (inclusion) log-probability
    """

    emb: torch.Tensor
    ids: torch.Tensor
    users: torch.Tensor
    log_q: torch.Tensor

    def head(self, n: int) -> Candidates:
        return Candidates(self.emb[:n], self.ids[:n], self.users[:n], self.log_q[:n])


def _gather_variable(t: torch.Tensor, sizes: list[int], with_grad: bool) -> torch.Tensor:
    """Concatenate a [n_r, ...] tensor from every rank (n_r may differ) in rank order."""
    pad = max(sizes) - t.shape[0]
    padded = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
    if with_grad:
        parts = list(dist_fn.all_gather(padded))
    else:
        parts = [torch.empty_like(padded) for _ in sizes]
        dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes, strict=True)])


def gather_candidates(local: Candidates) -> Candidates:
    """All-gather the in-batch pool across ranks (gradients flow back to the owning rank)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return local
    n = torch.tensor([local.ids.shape[0]], device=local.ids.device)
    sizes_t = [torch.zeros_like(n) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes_t, n)
    sizes = [int(s.item()) for s in sizes_t]
    return Candidates(
        emb=_gather_variable(local.emb, sizes, with_grad=True),
        ids=_gather_variable(local.ids, sizes, with_grad=False),
        users=_gather_variable(local.users, sizes, with_grad=False),
        log_q=_gather_variable(local.log_q, sizes, with_grad=False),
    )


def embedding_weights(emb_key: torch.Tensor) -> torch.Tensor:
    """[N] weights summing to 1 so that every distinct embedding (key) weighs the same."""
    _, inverse, counts = torch.unique(emb_key, return_inverse=True, return_counts=True)
    return 1.0 / (counts[inverse].to(torch.float32) * counts.numel())


@dataclass(frozen=True)
class Excluded:
    """The (row, candidate) pairs that leave the negatives, sorted by row: sparse, so that no
    [N, K] mask is ever built (a row excludes tens of candidates out of thousands).

    row: [E] int64 ascending; col: [E] int64 candidate index.
    """

    row: torch.Tensor
    col: torch.Tensor

    @staticmethod
    def matching(q_keys: torch.Tensor, pool_keys: torch.Tensor) -> Excluded:
        """Every (n, k) with q_keys[n] == pool_keys[k] (negative pool keys never match)."""
        order = torch.argsort(pool_keys)
        sorted_keys = pool_keys[order]
        lo = torch.searchsorted(sorted_keys, q_keys)
        counts = torch.searchsorted(sorted_keys, q_keys, right=True) - lo
        counts = counts.masked_fill(q_keys < 0, 0)
        row = torch.repeat_interleave(torch.arange(len(q_keys), device=q_keys.device), counts)
        first = torch.cumsum(counts, 0) - counts  # where each row's run starts in `row`
        rank = torch.arange(len(row), device=row.device) - first[row]
        return Excluded(row, order[lo[row] + rank])

    @staticmethod
    def union(*parts: Excluded) -> Excluded:
        row = torch.cat([p.row for p in parts])
        row, order = torch.sort(row, stable=True)
        return Excluded(row, torch.cat([p.col for p in parts])[order])

    def starts(self, n_rows: int, block: int) -> list[int]:
        """Where rows 0, block, 2·block, ... (and n_rows) start among the pairs."""
        edges = torch.arange(0, n_rows + block, block, device=self.row.device).clamp_max(n_rows)
        return torch.searchsorted(self.row, edges).tolist()

    def apply(self, logits: torch.Tensor, start: int, lo: int, hi: int) -> torch.Tensor:
        """Set the excluded logits of the block of rows from `start` (pairs lo:hi) to the most
        negative finite float, in place (not -inf: a row with no negatives left keeps finite
        gradients)."""
        value = logits.new_tensor(torch.finfo(logits.dtype).min)
        return logits.index_put_((self.row[lo:hi] - start, self.col[lo:hi]), value)


LOG2E = 1.0 / math.log(2.0)


def _exp_rows(block: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, K] fp32 logits → (top, total) with top the row maxima [R, 1]: overwrites `block` with
    exp(block - top), whose row sums are `total` [R] (so log Σ_k exp = top + log total). Through
    exp2: on an AVX512 CPU torch's exp2 runs ~3x faster than its exp, and this is 2.2x faster
    than torch.logsumexp on a [64, 7000] block (the loss's blocks), equal to it in fp32."""
    top = block.amax(1, keepdim=True)
    return top, block.sub_(top).mul_(LOG2E).exp2_().sum(1)


class NegativeLogSumExp(torch.autograd.Function):
    """[N] log Σ_{k not excluded} exp(<q_n, e_k> - log Q_k): the negatives' log-partition per row.

    q: [N, D] (already / τ); emb: [K, D]; log_q: [K]; excluded: the pairs left out (`Excluded`).
    Exact, but computed in row blocks of about `BLOCK_ELEMS` logits, so the fp32 [N, K] matrix
    (SASRec: ~8k pairs x ~7k candidates) never exists whole and its elementwise passes run in
    cache: ~1.7x faster forward + backward on a CPU than autograd over the whole matrix. The
    forward keeps the softmax P in the matmul dtype while it fits `SAVED_BYTES` (bf16: 2 bytes a
    logit), and the backward is then two matmuls, grad_q = g·(P @ emb) and grad_emb = Pᵀ @ (g·q);
    a larger P is recomputed block by block (one more matmul and an exp pass). Excluded logits get
    the most negative finite float, not -inf, so a row whose negatives are all excluded still has
    finite gradients.
    """

    BLOCK_ELEMS = 2**18
    # ... but at least this many rows: a block of a few rows against a large catalogue makes
    # matmuls too thin to run fast (Taobao, 55k items: 4 rows a block took 3x longer than 64).
    MIN_ROWS = 64
    SAVED_BYTES = 2**28  # P kept for the backward up to 256 MB (dense all action: ~60 MB)

    @staticmethod
    def _logits(
        q: torch.Tensor,
        emb: torch.Tensor,
        log_q: torch.Tensor,
        excluded: Excluded,
        at: tuple[int, int, int],
    ) -> torch.Tensor:
        """One block's fp32 logits; q and emb may be bf16 (the matmul's inputs only)."""
        if q.dtype == torch.float32:
            logits = torch.addmm(-log_q.unsqueeze(0), q, emb.T)  # (rows, K): the logQ step
        else:
            logits = (q @ emb.T).float().sub_(log_q)
        return excluded.apply(logits, *at)

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        emb: torch.Tensor,
        log_q: torch.Tensor,
        excluded: Excluded,
        matmul_dtype: torch.dtype = torch.float32,
    ) -> torch.Tensor:
        N, K = q.shape[0], emb.shape[0]
        q_mm, emb_mm = q.to(matmul_dtype), emb.to(matmul_dtype)
        padded = cpu_bf16(emb_mm)
        if padded:
            # Shapes that recur from step to step (`model_core.model.cpu_bf16`): zero candidates
            # whose log Q is the largest float (their logits vanish), whole blocks of zero rows.
            emb_mm = F.pad(emb_mm, (0, 0, 0, bucket_rows(K) - K))
            log_q = F.pad(log_q, (0, emb_mm.shape[0] - K), value=torch.finfo(torch.float32).max)
        rows = max(
            NegativeLogSumExp.MIN_ROWS, NegativeLogSumExp.BLOCK_ELEMS // max(1, emb_mm.shape[0])
        )
        if padded:
            q_mm = F.pad(q_mm, (0, 0, 0, -N % rows))
        lse = q.new_empty(q_mm.shape[0], dtype=torch.float32)
        probs_bytes = q_mm.shape[0] * emb_mm.shape[0] * q_mm.element_size()
        probs = (
            q_mm.new_empty(q_mm.shape[0], emb_mm.shape[0])
            if probs_bytes <= NegativeLogSumExp.SAVED_BYTES
            else None
        )
        starts = excluded.starts(q_mm.shape[0], rows)
        for i, a in enumerate(range(0, q_mm.shape[0], rows)):
            at = (a, starts[i], starts[i + 1])
            block = NegativeLogSumExp._logits(q_mm[a : a + rows], emb_mm, log_q, excluded, at)
            top, total = _exp_rows(block)
            lse[a : a + rows] = top.squeeze(1) + total.log()
            if probs is not None:
                probs[a : a + rows] = block.div_(total.unsqueeze(1))
        ctx.save_for_backward(q_mm, emb_mm, log_q, lse, probs)
        ctx.rows, ctx.excluded, ctx.starts, ctx.shape = rows, excluded, starts, (N, K)
        return lse[:N].clone()

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, emb, log_q, lse, probs = ctx.saved_tensors
        (N, K) = ctx.shape
        grad = F.pad(grad, (0, q.shape[0] - N)).unsqueeze(1)  # the padding rows pass none
        if probs is not None:
            grad_q = (probs @ emb).float().mul_(grad)
            grad_emb = (probs.T @ (grad * q.float()).to(q.dtype)).float()
            return grad_q[:N], grad_emb[:K], None, None, None
        grad_q = torch.empty(q.shape, dtype=torch.float32, device=q.device)
        grad_emb = torch.zeros(emb.shape, dtype=torch.float32, device=emb.device)
        for i, a in enumerate(range(0, q.shape[0], ctx.rows)):
            b = slice(a, a + ctx.rows)
            at = (a, ctx.starts[i], ctx.starts[i + 1])
            p = NegativeLogSumExp._logits(q[b], emb, log_q, ctx.excluded, at)
            p.sub_(lse[b].unsqueeze(1)).mul_(LOG2E).exp2_().mul_(grad[b])  # softmax x upstream
            p_mm = p.to(q.dtype)
            grad_q[b] = p_mm @ emb
            grad_emb += p_mm.T @ q[b]
        return grad_q[:N], grad_emb[:K], None, None, None


def same_user_or_item(
    q_users: torch.Tensor, pool_users: torch.Tensor, q_ids: torch.Tensor, pool_ids: torch.Tensor
) -> Excluded:
    """Sampled pools: a candidate owned by the row's user (pool_users -1: a random negative,
    owned by nobody), or the row's own positive item."""
    return Excluded.union(
        Excluded.matching(q_users, pool_users), Excluded.matching(q_ids, pool_ids)
    )


def user_positives(positives: Candidates, catalog_ids: torch.Tensor) -> Excluded:
    """The catalogue as the pool: every catalogue item that is a positive of the row's user in
    the batch (the row's own positive included). `catalog_ids`: the pool's item ids, in order."""
    order = torch.argsort(catalog_ids)
    col = order[torch.searchsorted(catalog_ids[order], positives.ids)]
    assert bool((catalog_ids[col] == positives.ids).all()), "a positive is not in the catalogue"
    same_user = Excluded.matching(positives.users, positives.users)
    return Excluded(same_user.row, col[same_user.col])


def sampled_softmax_loss(
    user_emb: torch.Tensor,
    positives: Candidates,
    emb_key: torch.Tensor,
    temperature: torch.Tensor,
    config: LossConfig,
    random_negatives: Candidates | None = None,
    matmul_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The A.3 loss for one device's batch.

    user_emb:  [N, D] float   the user embedding of each (embedding, positive) pair
    positives: N rows         the pair's positive; `users` is the pair's user (for masking)
    emb_key:   [N] int64      identifies the embedding a pair belongs to (for the weighting)
    temperature: scalar tensor, already clamped
    random_negatives: K rows  uniformly sampled items (users = -1); needed unless in_batch only;
                              with negatives="catalog", the whole catalogue (log_q ignored)
    matmul_dtype: the negatives' logit matmuls run in it (bf16 under autocast: 2-4x faster on
                  CPUs with bf16 units); the softmax arithmetic and the gradients stay fp32.
    Returns a scalar: Σ_pairs weight · (-log softmax of the positive).
    """
    N = user_emb.shape[0]
    assert positives.emb.shape == user_emb.shape, "one positive row per user-embedding row"
    assert emb_key.shape == (N,), f"emb_key must be [{N}]"
    pools: list[Candidates] = []
    if config.negatives in ("in_batch", "mixed"):
        pools.append(gather_candidates(positives).head(config.in_batch_cap))
    if config.negatives in ("random", "mixed", "catalog"):
        assert random_negatives is not None, (
            f"negatives={config.negatives!r} needs random negatives"
        )
        pools.append(random_negatives)
    pool = Candidates(
        *(torch.cat([getattr(p, f) for p in pools]) for f in Candidates.__dataclass_fields__)
    )

    # 1/τ is folded into the user side and the positive joins through logaddexp instead of a
    # concatenated copy; the [N, K] negative logits never exist whole (`NegativeLogSumExp`).
    scaled = user_emb / temperature  # (N, D)
    pos_logit = (scaled * positives.emb).sum(-1)  # (N,)
    catalog = config.negatives == "catalog"
    logq = config.logq and not catalog  # the exact softmax samples nothing: Q(v) = 1
    neg_log_q = pool.log_q if logq else torch.zeros_like(pool.log_q)
    if logq:
        pos_logit = pos_logit - positives.log_q  # the logQ correction, on the positive too
    excluded = (
        user_positives(positives, pool.ids)
        if catalog
        else same_user_or_item(positives.users, pool.users, positives.ids, pool.ids)
    )
    neg_lse = NegativeLogSumExp.apply(scaled, pool.emb, neg_log_q, excluded, matmul_dtype)
    per_pair = torch.logaddexp(pos_logit, neg_lse) - pos_logit  # (N,)
    return (per_pair * embedding_weights(emb_key)).sum()


def binary_cross_entropy_loss(
    user_emb: torch.Tensor,
    positives: Candidates,
    negatives: Candidates,
    emb_key: torch.Tensor,
    temperature: torch.Tensor,
) -> torch.Tensor:
    """SASRec's loss: each pair's positive against its OWN single random negative.

    user_emb: [N, D]; positives, negatives: N rows each (negative n belongs to pair n);
    emb_key: [N] as in `sampled_softmax_loss`. A negative that is the pair's positive item is
    dropped (its term is zero). Returns Σ_pairs weight · (-log σ(pos) - log σ(-neg)).
    """
    N = user_emb.shape[0]
    assert negatives.emb.shape == user_emb.shape, "one negative row per user-embedding row"
    assert emb_key.shape == (N,), f"emb_key must be [{N}]"
    pos_logit = (user_emb * positives.emb).sum(-1) / temperature  # (N,)
    neg_logit = (user_emb * negatives.emb).sum(-1) / temperature  # (N,)
    neg_term = torch.nn.functional.softplus(neg_logit) * (negatives.ids != positives.ids)
    per_pair = torch.nn.functional.softplus(-pos_logit) + neg_term  # -log σ(x) = softplus(-x)
    return (per_pair * embedding_weights(emb_key)).sum()

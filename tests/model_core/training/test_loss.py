"""The sampled-softmax loss against a naive per-pair full-softmax reference (paper A.3)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from model_core.training.loss import (
    Candidates,
    LossConfig,
    binary_cross_entropy_loss,
    embedding_weights,
    sampled_softmax_loss,
)


def naive_loss(
    u: np.ndarray,
    pos: np.ndarray,
    pos_ids: np.ndarray,
    pos_users: np.ndarray,
    pos_logq: np.ndarray,
    emb_key: np.ndarray,
    rnd: np.ndarray,
    rnd_ids: np.ndarray,
    rnd_logq: np.ndarray,
    tau: float,
    negatives: str,
    logq: bool,
) -> float:
    """Loop over pairs; build each pair's candidate list by hand; float64 softmax."""
    total_w = 0.0
    loss = 0.0
    keys, counts = np.unique(emb_key, return_counts=True)
    count_of = dict(zip(keys.tolist(), counts.tolist(), strict=True))
    for n in range(len(u)):
        logits = [u[n] @ pos[n] / tau - (pos_logq[n] if logq else 0.0)]
        if negatives in ("in_batch", "mixed"):
            for j in range(len(pos)):
                if pos_users[j] == pos_users[n] or pos_ids[j] == pos_ids[n]:
                    continue
                logits.append(u[n] @ pos[j] / tau - (pos_logq[j] if logq else 0.0))
        if negatives in ("random", "mixed"):
            for j in range(len(rnd)):
                if rnd_ids[j] == pos_ids[n]:
                    continue
                logits.append(u[n] @ rnd[j] / tau - (rnd_logq[j] if logq else 0.0))
        arr = np.array(logits, dtype=np.float64)
        lse = arr.max() + math.log(np.exp(arr - arr.max()).sum())
        w = 1.0 / (count_of[int(emb_key[n])] * len(keys))
        loss += w * (lse - arr[0])
        total_w += w
    assert abs(total_w - 1.0) < 1e-9
    return loss


def make_case(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    N, R, D = 9, 6, 5

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return {
        "u": unit(rng.normal(size=(N, D))),
        "pos": unit(rng.normal(size=(N, D))),
        # item 7 appears twice (accidental hit across users), users 0 and 1 own several pairs
        "pos_ids": np.array([7, 3, 7, 9, 10, 11, 12, 13, 14]),
        "pos_users": np.array([0, 0, 1, 1, 1, 2, 3, 3, 4]),
        "pos_logq": np.log(rng.uniform(0.01, 0.5, size=N)),
        "emb_key": np.array([0, 0, 1, 2, 2, 3, 4, 5, 6]),
        "rnd": unit(rng.normal(size=(R, D))),
        "rnd_ids": np.array([3, 20, 21, 22, 7, 23]),  # two hit pairs' positives
        "rnd_logq": np.full(R, math.log(R / 1000)),
    }


def run_loss(c: dict[str, np.ndarray], tau: float, negatives: str, logq: bool) -> torch.Tensor:
    t = {k: torch.from_numpy(v) for k, v in c.items()}
    positives = Candidates(t["pos"].float(), t["pos_ids"], t["pos_users"], t["pos_logq"].float())
    rnd = Candidates(
        t["rnd"].float(), t["rnd_ids"], torch.full((len(c["rnd"]),), -1), t["rnd_logq"].float()
    )
    cfg = LossConfig(negatives=negatives, logq=logq)  # type: ignore[arg-type]
    return sampled_softmax_loss(
        t["u"].float(), positives, t["emb_key"], torch.tensor(tau), cfg, rnd
    )


@pytest.mark.parametrize("negatives", ["in_batch", "random", "mixed"])
@pytest.mark.parametrize("logq", [True, False])
def test_loss_matches_naive_full_softmax(negatives: str, logq: bool) -> None:
    c = make_case()
    got = run_loss(c, tau=0.2, negatives=negatives, logq=logq)
    want = naive_loss(**c, tau=0.2, negatives=negatives, logq=logq)
    assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-5)


def test_logq_changes_the_loss() -> None:
    c = make_case(1)
    assert abs(run_loss(c, 0.2, "mixed", True) - run_loss(c, 0.2, "mixed", False)) > 1e-3


def test_in_batch_cap_truncates_the_pool() -> None:
    c = make_case(2)
    t = {k: torch.from_numpy(v) for k, v in c.items()}
    positives = Candidates(t["pos"].float(), t["pos_ids"], t["pos_users"], t["pos_logq"].float())
    capped = sampled_softmax_loss(
        t["u"].float(),
        positives,
        t["emb_key"],
        torch.tensor(0.2),
        LossConfig(negatives="in_batch", in_batch_cap=3),
    )
    # Reference: pool = first 3 positives only (the positive logit itself is always kept).
    u, pos = c["u"], c["pos"]
    loss = 0.0
    weights = embedding_weights(t["emb_key"]).numpy()
    for n in range(len(u)):
        logits = [u[n] @ pos[n] / 0.2 - c["pos_logq"][n]]
        for j in range(3):
            if c["pos_users"][j] != c["pos_users"][n] and c["pos_ids"][j] != c["pos_ids"][n]:
                logits.append(u[n] @ pos[j] / 0.2 - c["pos_logq"][j])
        arr = np.array(logits)
        loss += weights[n] * (np.log(np.exp(arr).sum()) - arr[0])
    assert_close(capped, torch.tensor(loss, dtype=torch.float32), rtol=1e-5, atol=1e-5)


def test_every_embedding_weighs_the_same() -> None:
    w = embedding_weights(torch.tensor([5, 5, 5, 9, 2, 2]))
    assert_close(w, torch.tensor([1 / 9, 1 / 9, 1 / 9, 1 / 3, 1 / 6, 1 / 6]))


def test_gradient_flows_to_both_towers_and_temperature() -> None:
    c = make_case(3)
    u = torch.from_numpy(c["u"]).float().requires_grad_()
    p = torch.from_numpy(c["pos"]).float().requires_grad_()
    tau = torch.tensor(0.2, requires_grad=True)
    positives = Candidates(
        p,
        torch.from_numpy(c["pos_ids"]),
        torch.from_numpy(c["pos_users"]),
        torch.from_numpy(c["pos_logq"]).float(),
    )
    loss = sampled_softmax_loss(
        u, positives, torch.from_numpy(c["emb_key"]), tau, LossConfig(negatives="in_batch")
    )
    loss.backward()
    assert u.grad is not None
    assert p.grad is not None
    assert tau.grad is not None
    assert float(u.grad.abs().sum()) > 0
    assert float(p.grad.abs().sum()) > 0


def test_bce_matches_per_pair_reference() -> None:
    """SASRec's loss: one negative per pair; a negative equal to the positive adds nothing."""
    c = make_case(4)
    n = len(c["u"])
    rng = np.random.default_rng(4)
    neg = rng.normal(size=c["pos"].shape)
    neg /= np.linalg.norm(neg, axis=1, keepdims=True)
    neg_ids = np.arange(100, 100 + n)
    neg_ids[2] = c["pos_ids"][2]  # an accidental hit
    t = {k: torch.from_numpy(v) for k, v in c.items()}
    positives = Candidates(t["pos"].float(), t["pos_ids"], t["pos_users"], t["pos_logq"].float())
    negatives = Candidates(
        torch.from_numpy(neg).float(),
        torch.from_numpy(neg_ids),
        torch.full((n,), -1),
        torch.zeros(n),
    )
    got = binary_cross_entropy_loss(
        t["u"].float(), positives, negatives, t["emb_key"], torch.tensor(0.5)
    )
    weights = embedding_weights(t["emb_key"]).numpy()
    want = 0.0
    for i in range(n):
        s_pos = c["u"][i] @ c["pos"][i] / 0.5
        s_neg = c["u"][i] @ neg[i] / 0.5
        term = -math.log(1 / (1 + math.exp(-s_pos)))
        if neg_ids[i] != c["pos_ids"][i]:
            term += -math.log(1 - 1 / (1 + math.exp(-s_neg)))
        want += weights[i] * term
    assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-5)


def test_a_row_with_every_negative_masked_has_finite_gradients() -> None:
    """One user owns every in-batch positive: all its negatives are masked, its loss is zero and
    nothing turns into NaN (masked logits are the most negative finite float, not -inf)."""
    u = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_()
    p = F.normalize(torch.randn(3, 4), dim=-1).requires_grad_()
    same = torch.zeros(3, dtype=torch.int64)
    positives = Candidates(p, torch.arange(3), same, torch.zeros(3))
    loss = sampled_softmax_loss(
        u, positives, torch.arange(3), torch.tensor(0.1), LossConfig(negatives="in_batch")
    )
    loss.backward()
    assert loss.item() == 0.0
    assert u.grad is not None
    assert torch.isfinite(u.grad).all()
    assert p.grad is not None
    assert torch.isfinite(p.grad).all()


def test_logq_by_expected_count_makes_duplicate_negatives_neutral() -> None:
    """Regression: every COPY of an item in the in-batch pool got log Q(v), an inclusion
    probability, so an item with c copies weighed ~c times too much (≈ ln c nats). Corrected by
    the expected count log(B p̂) per copy, a pool v, v, v, w weighs like the distinct pool v, w."""
    from model_core.training.sketch import CountMinSketch

    torch.manual_seed(0)
    u = F.normalize(torch.randn(1, 8), dim=-1)
    v, w, x = F.normalize(torch.randn(3, 8), dim=-1)
    sketch = CountMinSketch(width=1024, depth=4)
    sketch.add(np.array([1, 1, 1, 2]))  # what the sampler drew: v three times, w once
    pool_ids = np.array([1, 1, 1, 2])
    log_q = torch.from_numpy(sketch.expected_count_log(pool_ids, pool_size=4))
    assert_close(log_q, torch.log(torch.tensor([3.0, 3.0, 3.0, 1.0])))
    tau = torch.tensor(0.1)
    cfg = LossConfig(negatives="random", logq=True)
    positive = Candidates(x[None], torch.tensor([9]), torch.tensor([0]), torch.zeros(1))
    duplicated = Candidates(
        torch.stack([v, v, v, w]), torch.from_numpy(pool_ids), torch.full((4,), -1), log_q
    )
    distinct = Candidates(
        torch.stack([v, w]), torch.tensor([1, 2]), torch.full((2,), -1), torch.zeros(2)
    )
    key = torch.zeros(1, dtype=torch.int64)
    assert_close(
        sampled_softmax_loss(u, positive, key, tau, cfg, duplicated),
        sampled_softmax_loss(u, positive, key, tau, cfg, distinct),
    )


@pytest.mark.parametrize("saved_bytes", [2**28, 0], ids=["softmax-saved", "recomputed"])
def test_blocked_negative_logsumexp_matches_autograd_values_and_gradients(
    monkeypatch: pytest.MonkeyPatch, saved_bytes: int
) -> None:
    """The negatives' log-partition is computed in row blocks with a hand-written backward; it
    must equal plain autograd over the whole masked [N, K] matrix, across several blocks, with
    the softmax kept from the forward or recomputed in the backward."""
    from model_core.training.loss import NegativeLogSumExp, same_user_or_item

    monkeypatch.setattr(NegativeLogSumExp, "BLOCK_ELEMS", 3 * 11)  # 3 rows per block
    monkeypatch.setattr(NegativeLogSumExp, "MIN_ROWS", 1)
    monkeypatch.setattr(NegativeLogSumExp, "SAVED_BYTES", saved_bytes)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(10, 4, generator=g, requires_grad=True)
    emb = torch.randn(11, 4, generator=g, requires_grad=True)
    log_q = torch.randn(11, generator=g)
    q_users, pool_users = torch.arange(10) % 3, torch.arange(11) % 4
    q_ids, pool_ids = torch.arange(10) % 5, torch.arange(11) % 6
    weights = torch.rand(10, generator=g)

    exclusion = same_user_or_item(q_users, pool_users, q_ids, pool_ids)
    got = NegativeLogSumExp.apply(q, emb, log_q, exclusion)
    (got * weights).sum().backward()
    grads = q.grad.clone(), emb.grad.clone()
    q.grad, emb.grad = None, None

    logits = q @ emb.T - log_q
    masked = (q_users[:, None] == pool_users[None]) | (q_ids[:, None] == pool_ids[None])
    want = torch.logsumexp(logits.masked_fill(masked, torch.finfo(logits.dtype).min), dim=1)
    (want * weights).sum().backward()
    assert_close(got, want)
    assert_close(grads[0], q.grad)
    assert_close(grads[1], emb.grad)


def test_catalog_negatives_are_the_exact_softmax_without_the_users_other_positives() -> None:
    """negatives="catalog": each pair's softmax runs over the whole catalogue, minus the items
    that are positives of the same user in the batch (the paper's mask), with no logQ."""
    c = make_case(3)
    rng = np.random.default_rng(3)
    catalog_ids = np.array([12, 3, 7, 9, 10, 11, 13, 14, 20, 21])  # holds every positive
    catalog = rng.normal(size=(len(catalog_ids), 5))
    catalog /= np.linalg.norm(catalog, axis=1, keepdims=True)
    row = {int(i): k for k, i in enumerate(catalog_ids)}
    pos = catalog[[row[int(i)] for i in c["pos_ids"]]]
    t = {k: torch.from_numpy(v) for k, v in c.items()}
    positives = Candidates(
        torch.from_numpy(pos).float(), t["pos_ids"], t["pos_users"], t["pos_logq"].float()
    )
    pool = Candidates(
        torch.from_numpy(catalog).float(),
        torch.from_numpy(catalog_ids),
        torch.full((len(catalog_ids),), -1),
        torch.full((len(catalog_ids),), 5.0),  # ignored: the exact softmax has Q = 1
    )
    tau = 0.2
    got = sampled_softmax_loss(
        t["u"].float(), positives, t["emb_key"], torch.tensor(tau),
        LossConfig(negatives="catalog", logq=True), pool,
    )  # fmt: skip

    weights = embedding_weights(t["emb_key"]).numpy()
    want = 0.0
    for n in range(len(pos)):
        own = {int(i) for i, u in zip(c["pos_ids"], c["pos_users"], strict=True)
               if u == c["pos_users"][n]}  # fmt: skip
        logits = [c["u"][n] @ pos[n] / tau] + [
            c["u"][n] @ catalog[k] / tau for k, i in enumerate(catalog_ids) if int(i) not in own
        ]
        arr = np.array(logits)
        want += weights[n] * (np.log(np.exp(arr - arr.max()).sum()) + arr.max() - arr[0])
    assert_close(got, torch.tensor(want, dtype=torch.float32), rtol=1e-5, atol=1e-5)


def test_bf16_negative_matmuls_stay_close_to_fp32() -> None:
    """Under autocast the negatives' logit matmuls run in bf16 while the softmax stays fp32: the
    loss and its gradients must stay within bf16 rounding of the fp32 ones."""
    g = torch.Generator().manual_seed(1)
    u = torch.nn.functional.normalize(torch.randn(64, 16, generator=g), dim=1)
    items = torch.nn.functional.normalize(torch.randn(300, 16, generator=g), dim=1)
    ids = torch.randint(0, 300, (64,), generator=g)
    users = torch.arange(64) // 8
    cfg = LossConfig(negatives="catalog")
    grads = []
    for dtype in (torch.float32, torch.bfloat16):
        q, e = u.clone().requires_grad_(), items.clone().requires_grad_()
        positives = Candidates(e[ids], ids, users, torch.zeros(64))
        pool = Candidates(e, torch.arange(300), torch.full((300,), -1), torch.zeros(300))
        loss = sampled_softmax_loss(
            q, positives, torch.arange(64), torch.tensor(0.05), cfg, pool, dtype
        )
        loss.backward()
        grads.append((loss.detach(), q.grad, e.grad))
    (l32, gq32, ge32), (l16, gq16, ge16) = grads
    assert gq16.dtype == torch.float32
    assert ge16.dtype == torch.float32
    assert_close(l16, l32, rtol=1e-2, atol=0)
    for got, want in ((gq16, gq32), (ge16, ge32)):
        assert (got - want).norm() < 0.05 * want.norm()

"""Row counts are padded to a few sizes under CPU autocast (`model_core.model.cpu_bf16`), and the
padding changes no result: the user tower and the loss's blocked softmax give
what they give unpadded, values and gradients."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from model_core.model import cpu_bf16 as buckets
from model_core.model.cpu_bf16 import bucket_rows, row_bucketed
from model_core.training.loss import NegativeLogSumExp, same_user_or_item
from tests.model_core.model.test_packing import LENGTHS, tower
from tests.model_core.model.test_pinnerformer import random_batch


def test_bucket_rows_rounds_up_by_at_most_a_sixteenth_to_few_sizes() -> None:
    for n in range(1, 10_000):
        b = bucket_rows(n)
        assert 0 <= b - n < max(8, n / 16), n
    assert len({bucket_rows(n) for n in range(3000, 4500)}) <= 24
    assert bucket_rows(4096) == 4096


def test_row_bucketed_pads_only_under_cpu_autocast() -> None:
    seen: list[int] = []

    def fn(x: torch.Tensor) -> torch.Tensor:
        seen.append(x.shape[0])
        return 2 * x

    x = torch.randn(100, 3)
    assert_close(row_bucketed(fn, x), 2 * x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert_close(row_bucketed(fn, x), 2 * x)
    assert seen == [100, bucket_rows(100)]


def no_buckets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(buckets, "bucket_rows", lambda n: n)
    for module in ("model_core.model.pinnerformer", "model_core.training.loss"):
        monkeypatch.setattr(f"{module}.bucket_rows", lambda n: n)


def test_the_bf16_user_tower_is_unchanged_by_the_padding(monkeypatch: pytest.MonkeyPatch) -> None:
    t = tower()
    lengths = [*LENGTHS, 5]
    batch = random_batch(len(lengths), 64, lengths, seed=13)
    assert bucket_rows(sum(lengths)) > sum(lengths), "the case must pad"
    runs = []
    for pad in (True, False):
        if not pad:
            no_buckets(monkeypatch)
        t.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = t(batch)
        out[batch.valid].float().square().sum().backward()
        runs.append((out[batch.valid], {n: p.grad.clone() for n, p in t.named_parameters()}))
    (got, got_grads), (want, want_grads) = runs
    assert_close(got, want, atol=2e-2, rtol=2e-2)
    for name, g in want_grads.items():
        assert (got_grads[name] - g).norm() <= 0.02 * g.norm() + 1e-6, name


@pytest.mark.parametrize("saved_bytes", [2**28, 0], ids=["softmax-saved", "recomputed"])
def test_the_bf16_blocked_softmax_is_unchanged_by_the_padding(
    monkeypatch: pytest.MonkeyPatch, saved_bytes: int
) -> None:
    """Padded candidates (log Q = the largest float) and padded row blocks contribute nothing,
    whether the backward reads the forward's softmax or recomputes it: equal to a plain autograd
    computation over the same bf16 logits."""
    monkeypatch.setattr(NegativeLogSumExp, "BLOCK_ELEMS", 4 * 104)  # 4 rows per block
    monkeypatch.setattr(NegativeLogSumExp, "MIN_ROWS", 1)
    monkeypatch.setattr(NegativeLogSumExp, "SAVED_BYTES", saved_bytes)
    g = torch.Generator().manual_seed(0)
    q = torch.randn(10, 8, generator=g, requires_grad=True)
    emb = torch.randn(101, 8, generator=g, requires_grad=True)  # pads to 104
    log_q = torch.randn(101, generator=g)
    q_users, pool_users = torch.arange(10) % 3, torch.arange(101) % 4
    q_ids, pool_ids = torch.arange(10) % 5, torch.arange(101) % 6
    weights = torch.rand(10, generator=g)
    excluded = same_user_or_item(q_users, pool_users, q_ids, pool_ids)
    got = NegativeLogSumExp.apply(q, emb, log_q, excluded, torch.bfloat16)
    assert got.shape == (10,)
    (got * weights).sum().backward()
    grads = q.grad.clone(), emb.grad.clone()
    q.grad, emb.grad = None, None

    logits = (q.bfloat16() @ emb.bfloat16().T).float() - log_q
    masked = (q_users[:, None] == pool_users[None]) | (q_ids[:, None] == pool_ids[None])
    want = torch.logsumexp(logits.masked_fill(masked, torch.finfo(logits.dtype).min), dim=1)
    (want * weights).sum().backward()
    assert_close(got, want, atol=1e-4, rtol=1e-4)
    assert_close(grads[0], q.grad, atol=1e-2, rtol=1e-2)
    assert_close(grads[1], emb.grad, atol=1e-2, rtol=1e-2)

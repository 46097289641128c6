"""The user tower runs on the real actions packed, with attention in length groups
(`model_core.model.packing`): exactly the padded computation, outputs and gradients alike."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.testing import assert_close

from model_core.features.actions import FeatureConfig, SeqBatch
from model_core.model.packing import Packing
from model_core.model.pinnerformer import ModelConfig, PinnerFormer, UserTower
from tests.model_core.model.test_pinnerformer import C, random_batch

# Lengths that fall in every attention group of a 64-wide batch (8, 16, 32, 64) and on its edges.
LENGTHS = [1, 8, 9, 3, 16, 17, 33, 64, 31, 2]


def padded_reference(tower: UserTower, batch: SeqBatch) -> torch.Tensor:
    """[B, M, D]: the user tower as a plain padded transformer (what it computed before packing)."""
    B, M = batch.ts.shape
    x = tower.in_proj(tower.encoder(batch)) + tower.pos[:M]
    for block in tower.blocks:
        h = block.ln1(x)
        heads = block.attn.n_heads
        q, k, v = block.attn.qkv(h).view(B, M, 3, heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + block.attn.proj(y.transpose(1, 2).reshape(B, M, -1))
        x = x + block.ffn(block.ln2(x))
    return tower.head(x)


def tower() -> UserTower:
    torch.manual_seed(0)
    cfg = ModelConfig(features=FeatureConfig(content_dim=C), max_len=64, hidden=32, n_heads=4)
    return PinnerFormer(cfg).user_tower.eval()


def test_packed_tower_equals_the_padded_computation() -> None:
    t = tower()
    batch = random_batch(len(LENGTHS), 64, LENGTHS, seed=11)
    valid = batch.valid
    packed, padded = t(batch), padded_reference(t, batch)
    assert_close(packed[valid], padded[valid], atol=1e-5, rtol=1e-4)
    # ... and so are the gradients of every parameter.
    weights = torch.randn(packed[valid].shape, generator=torch.Generator().manual_seed(1))
    grads = []
    for out in (packed, padded_reference(t, batch)):
        t.zero_grad()
        (out[valid] * weights).sum().backward()
        grads.append({n: p.grad.clone() for n, p in t.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        assert_close(grads[0][name], grads[1][name], atol=1e-5, rtol=1e-4, msg=name)


def test_at_reads_the_packed_rows_of_the_asked_positions() -> None:
    t = tower()
    batch = random_batch(len(LENGTHS), 64, LENGTHS, seed=12)
    b = torch.tensor([0, 3, 7, 7, 6, 9])
    pos = torch.tensor([0, 2, 63, 10, 32, 1])
    with torch.no_grad():
        assert_close(t.at(batch, b, pos), padded_reference(t, batch)[b, pos], atol=1e-5, rtol=1e-4)


def test_groups_hold_every_action_once_at_the_narrowest_width() -> None:
    batch = random_batch(len(LENGTHS), 64, LENGTHS)
    packing = Packing.of(batch)
    T = sum(LENGTHS)
    assert packing.tokens.tolist() == [b * 64 + i for b, n in enumerate(LENGTHS) for i in range(n)]
    rows = torch.cat([g.rows for g in packing.groups])
    assert sorted(rows.tolist()) == list(range(T))
    assert [g.width for g in packing.groups] == [8, 16, 32, 64]
    for g in packing.groups:
        assert g.slots.max() < g.n * g.width
    # A batch narrower than the smallest group is one group of its own width.
    narrow = Packing.of(random_batch(2, 5, [5, 2]))
    assert [(g.n, g.width) for g in narrow.groups] == [(2, 5)]

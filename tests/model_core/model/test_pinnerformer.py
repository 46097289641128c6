"""The user tower's invariants (paper A.2) and the feature encoding (A.1)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from model_core.features.actions import (
    ABSOLUTE_PERIODS_S,
    ActionEncoder,
    FeatureConfig,
    SeqBatch,
    Time2Vec,
    relative_periods,
)
from model_core.model.pinnerformer import ModelConfig, PinnerFormer

C = 6
FEATURES = FeatureConfig(content_dim=C)


def random_batch(B: int, M: int, lengths: list[int], seed: int = 0) -> SeqBatch:
    g = torch.Generator().manual_seed(seed)
    gaps = torch.randint(1, 5000, (B, M), generator=g)
    return SeqBatch(
        content=torch.randn(B, M, C, generator=g),
        action=torch.randint(1, 5, (B, M), generator=g),
        surface=torch.randint(1, 4, (B, M), generator=g),
        duration=torch.rand(B, M, generator=g) * 60,
        ts=1_760_000_000 + gaps.cumsum(1),
        lengths=torch.tensor(lengths),
    )


def model(features: FeatureConfig = FEATURES, max_len: int = 16) -> PinnerFormer:
    torch.manual_seed(0)
    cfg = ModelConfig(features=features, max_len=max_len, hidden=32, n_heads=4, out_dim=16)
    return PinnerFormer(cfg).eval()


def test_absolute_and_relative_periods_follow_the_paper() -> None:
    hours = [p / 3600 for p in ABSOLUTE_PERIODS_S]
    assert hours == [0.25, 0.5, 0.75, 1, 2, 4, 8, 16, 24, 168, 672, 8760]
    rel = relative_periods()
    assert len(rel) == 32
    assert rel[0] == pytest.approx(1.0)
    assert rel[-1] == pytest.approx(28 * 86400)
    ratios = np.diff(np.log(rel))
    assert np.allclose(ratios, ratios[0])  # evenly spaced on a log scale


def test_time2vec_matches_the_formula_with_learned_phase() -> None:
    enc = Time2Vec((900.0, 86400.0))
    with torch.no_grad():
        enc.phase.copy_(torch.tensor([0.3, -1.0]))
    t = torch.tensor([1_760_000_123, 0, 450])
    out = enc(t)
    assert out.shape == (3, 5)  # 2P + 1
    for i, ti in enumerate(t.tolist()):
        want = [math.cos(2 * math.pi * ti / 900 + 0.3), math.cos(2 * math.pi * ti / 86400 - 1.0)]
        want += [math.sin(2 * math.pi * ti / 900 + 0.3), math.sin(2 * math.pi * ti / 86400 - 1.0)]
        want += [math.log1p(ti) / math.log1p(86400)]  # log t over log(longest period)
        assert_close(out[i], torch.tensor(want, dtype=torch.float32), atol=1e-5, rtol=1e-5)


def test_input_width_matches_config() -> None:
    batch = random_batch(2, 5, [5, 3])
    a = ActionEncoder(FEATURES)(batch)
    assert a.shape == (2, 5, FEATURES.input_dim())
    assert FEATURES.input_dim() == C + 8 + 8 + 1 + 25 + 2 * 65
    assert torch.all(a[1, 3:] == 0)  # padding encodes to zeros


def test_gap_feature_is_time_since_previous_action() -> None:
    """Regression: the gap used to be the time to the NEXT action (0 at the newest), so training
    positions read future timing and the serving position always read 0."""
    plain = dataclasses.replace(FEATURES, normalise_groups=False)
    batch = random_batch(1, 4, [4])
    batch.ts[0] = torch.tensor([1_000, 1_100, 1_400, 2_400])
    enc = ActionEncoder(plain)
    gap = enc(batch)[0, :, -plain.relative_time_dim :]  # (M, 2P+1)
    for i, want in enumerate([0, 100, 300, 1_000]):
        assert_close(gap[i], enc.gap_prev(torch.tensor([want]))[0])
    # Appending a later action changes nothing in the earlier positions' gaps.
    longer = random_batch(1, 5, [5])
    longer.ts[0] = torch.tensor([1_000, 1_100, 1_400, 2_400, 9_999])
    for f in ("content", "action", "surface", "duration"):
        getattr(longer, f)[0, :4] = getattr(batch, f)[0]
    assert_close(enc(longer)[0, :4, -plain.relative_time_dim :], gap)


def test_feature_groups_are_normalised_to_comparable_scale() -> None:
    """Regression: log(Unix time) carried ~400x the energy of the content vector."""
    batch = random_batch(64, 8, [8] * 64)
    batch.ts[:] = 1_700_000_000 + torch.arange(8) * 3_600
    with torch.no_grad():
        a = ActionEncoder(FEATURES)(batch)
    dims = FEATURES.group_dims()
    energy, at = {}, 0
    for group, d in dims.items():
        energy[group] = float(a[..., at : at + d].pow(2).mean())  # per dimension
        at += d
    assert energy["absolute_time"] / energy["content"] < 2, energy
    assert energy["since_latest"] / energy["content"] < 2, energy


@settings(max_examples=15, deadline=None)
@given(length=st.integers(1, 12), cut=st.integers(0, 11))
@example(length=1, cut=0)  # one action
@example(length=12, cut=11)  # full window
def test_causality_later_actions_do_not_change_earlier_outputs(length: int, cut: int) -> None:
    """With relative time off, every feature of action i depends on action i alone."""
    cut = min(cut, length - 1)
    m = model(dataclasses.replace(FEATURES, use_relative_time=False))
    a = random_batch(1, 12, [length], seed=1)
    b = random_batch(1, 12, [length], seed=2)
    later_gaps = (b.ts - b.ts[:, :1])[:, cut + 1 :]
    mixed = SeqBatch(
        **{
            f: torch.cat([getattr(a, f)[:, : cut + 1], getattr(b, f)[:, cut + 1 :]], dim=1)
            for f in ("content", "action", "surface", "duration")
        },
        ts=torch.cat([a.ts[:, : cut + 1], a.ts[:, cut : cut + 1] + later_gaps], 1),
        lengths=a.lengths,
    )
    with torch.no_grad():
        out_a, out_m = m.user_tower(a), m.user_tower(mixed)
    assert_close(out_a[:, : cut + 1], out_m[:, : cut + 1])


def test_causality_with_relative_time_for_non_time_fields() -> None:
    """With the paper's relative time features, later timestamps are (by definition) visible,
    but later content/type/surface/duration never are."""
    m = model()
    a = random_batch(2, 10, [10, 7], seed=3)
    b = random_batch(2, 10, [10, 7], seed=4)
    mixed = dataclasses.replace(
        a,
        content=torch.cat([a.content[:, :4], b.content[:, 4:]], 1),
        action=torch.cat([a.action[:, :4], b.action[:, 4:]], 1),
        surface=torch.cat([a.surface[:, :4], b.surface[:, 4:]], 1),
        duration=torch.cat([a.duration[:, :4], b.duration[:, 4:]], 1),
    )
    with torch.no_grad():
        assert_close(m.user_tower(a)[:, :4], m.user_tower(mixed)[:, :4])


def test_padding_invariance() -> None:
    """Extra padding (and garbage in padded slots) leaves every valid output unchanged."""
    m = model()
    short = random_batch(2, 6, [6, 4], seed=5)
    g = torch.Generator().manual_seed(9)
    long = SeqBatch(
        content=torch.cat([short.content, torch.randn(2, 5, C, generator=g)], 1),
        action=torch.cat([short.action, torch.randint(1, 5, (2, 5), generator=g)], 1),
        surface=torch.cat([short.surface, torch.randint(1, 4, (2, 5), generator=g)], 1),
        duration=torch.cat([short.duration, torch.rand(2, 5, generator=g)], 1),
        ts=torch.cat([short.ts, short.ts[:, -1:] + torch.arange(1, 6)], 1),
        lengths=short.lengths,
    )
    long.content[1, 4:6] = 7.0  # garbage beyond length 4 of the second row
    with torch.no_grad():
        a, b = m.user_tower(short), m.user_tower(long)
        assert_close(a[0, :6], b[0, :6])
        assert_close(a[1, :4], b[1, :4])
        assert_close(m.user_embedding(short), m.user_embedding(long))


def test_batch_composition_does_not_change_a_users_embedding() -> None:
    m = model()
    batch = random_batch(3, 8, [8, 2, 5], seed=6)
    with torch.no_grad():
        together = m.user_embedding(batch)
        alone = m.user_embedding(
            SeqBatch(
                **{
                    f: getattr(batch, f)[1:2, :2]
                    for f in ("content", "action", "surface", "duration", "ts")
                },
                lengths=batch.lengths[1:2],
            )
        )
    assert_close(together[1:2], alone)


def test_the_latest_embedding_is_the_towers_output_at_the_last_action() -> None:
    # user_embedding runs the last block for the last actions only (UserTower.latest): the
    # same vectors as the full tower read at each window's last position, for every width group
    m = model(max_len=40)
    batch = random_batch(6, 40, [40, 1, 9, 3, 17, 33], seed=8)
    with torch.no_grad():
        full = m.user_tower(batch)[torch.arange(6), batch.lengths - 1]
        assert_close(m.user_tower.latest(batch), full)
        assert_close(m.user_embedding(batch), full)


def test_every_output_has_unit_norm() -> None:
    m = model()
    batch = random_batch(4, 16, [16, 1, 9, 3], seed=7)
    with torch.no_grad():
        out = m.user_tower(batch)
        pins = m.pin_tower(torch.randn(10, C))
    assert_close(out.norm(dim=-1), torch.ones(4, 16))
    assert_close(pins.norm(dim=-1), torch.ones(10))


def test_forward_rejects_bad_shapes() -> None:
    m = model()
    batch = random_batch(1, 4, [4])
    bad = dataclasses.replace(batch, content=torch.randn(1, 4, C + 1))
    with pytest.raises(AssertionError, match="content must be"):
        m.user_tower(bad)
    with pytest.raises(AssertionError, match="max_len"):
        m.user_tower(random_batch(1, 17, [17]))


def test_latest_pin_adds_its_share_of_the_latest_pins_embedding() -> None:
    """`latest_pin`: u = normalise(user tower + w · pin(latest)); off, the paper's tower alone
    (and no extra parameter)."""
    torch.manual_seed(0)
    base = ModelConfig(features=FEATURES, max_len=16, hidden=32, n_heads=4, out_dim=16)
    plain = PinnerFormer(base).eval()
    assert not any("latest_pin" in name for name, _ in plain.named_parameters())
    torch.manual_seed(0)
    m = PinnerFormer(dataclasses.replace(base, latest_pin=True)).eval()
    batch = random_batch(3, 8, [8, 2, 5], seed=4)
    last = batch.lengths - 1
    rows = torch.arange(3)
    with torch.no_grad():
        m.latest_pin_weight.fill_(0.7)
        tower = m.user_tower.at(batch, rows, last)
        latest = m.pin_tower(batch.content[rows, last])
        assert_close(m.user_embedding(batch), F.normalize(tower + 0.7 * latest, dim=-1))
        assert_close(plain.user_embedding(batch), tower)  # same init: the towers agree
        # With a large share the user embedding points at the latest pin: its nearest pin among
        # the window's pins is the one acted on last.
        m.latest_pin_weight.fill_(100.0)
        pins = m.pin_tower(batch.content.flatten(0, 1)).view(3, 8, -1)
        nearest = torch.einsum("bd,bmd->bm", m.user_embedding(batch), pins).argmax(1)
    assert nearest.tolist() == last.tolist()


def test_latest_pin_share_is_learned() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(
        features=FEATURES, max_len=16, hidden=32, n_heads=4, out_dim=16, latest_pin=True
    )
    m = PinnerFormer(cfg)
    batch = random_batch(2, 8, [8, 3], seed=5)
    user = m.user_embedding(batch)
    (user @ torch.randn(16)).sum().backward()
    assert m.latest_pin_weight.grad is not None
    assert m.latest_pin_weight.grad.abs() > 0


def test_latest_pin_is_on_only_where_ids_are_learned() -> None:
    from model_core.model.pinnerformer import latest_pin_on

    assert latest_pin_on("auto", "auto")
    assert latest_pin_on("auto", "hashed")
    assert not latest_pin_on("auto", "none")  # the paper's content-only variant
    assert not latest_pin_on("none", "auto")
    with pytest.raises(ValueError, match="latest pin"):
        latest_pin_on("on", "auto")


def test_item_id_dropout_leaves_some_items_their_content_alone_in_training_only() -> None:
    """In training each item's id vector is dropped with probability p, its embedding then the
    content path alone (what an item new since training has); in eval nothing is dropped."""
    torch.manual_seed(0)
    cfg = ModelConfig(
        features=FEATURES, max_len=16, hidden=32, n_heads=4, out_dim=16, item_id_vocab=50,
        item_id_dropout=0.5,
    )  # fmt: skip
    m = PinnerFormer(cfg, item_vocab=np.arange(100, 150))
    with torch.no_grad():
        m.pin_tower.item_ids.table.weight.normal_(0, 1.0)  # type: ignore[union-attr]
    content, ids = torch.randn(400, C), torch.arange(100, 150).repeat(8)
    with torch.no_grad():
        content_alone = F.normalize(m.pin_tower.mlp(content), dim=-1)
        m.eval()
        full = m.pin_tower(content, ids)
        assert_close(m.pin_tower(content, ids), full)
        m.train()
        dropped = (m.pin_tower(content, ids) - content_alone).norm(dim=1) < 1e-5
    assert 0.35 < dropped.float().mean() < 0.65
    assert not (full - content_alone).norm(dim=1).lt(1e-5).any()
    with pytest.raises(AssertionError, match="id_dropout"):
        PinnerFormer(dataclasses.replace(cfg, item_id_dropout=1.0))

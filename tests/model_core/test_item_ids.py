"""Learned item ids: a full table keyed by id (unknown → zero), hashing, shared by both towers."""

from __future__ import annotations

import numpy as np
import torch
from torch.testing import assert_close

from model_core.features import FeatureConfig
from model_core.item_ids import MAX_TABLE_ITEMS, ItemIds, id_fields
from model_core.model import ModelConfig, PinnerFormer


def test_full_table_is_keyed_by_id_and_unknown_ids_read_zero() -> None:
    table = ItemIds(dim=4, vocab_size=3)
    table.set_vocab(np.array([70, 10, 40]))
    rows = table.rows(torch.tensor([10, 40, 70, 55, -1]))
    assert rows.tolist() == [1, 2, 3, 0, 0]
    out = table(torch.tensor([55]))
    assert torch.all(out == 0)  # an item unseen in training: content alone represents it
    out.sum().backward()
    assert table.table.weight.grad is not None
    assert torch.all(table.table.weight.grad[0] == 0)  # the unknown row never learns


def test_hashed_ids_sum_several_hashes() -> None:
    torch.manual_seed(0)
    hashed = ItemIds(dim=4, buckets=97, n_hashes=2)
    ids = torch.arange(1000)
    assert hashed(ids).shape == (1000, 4)
    # Two ids colliding under one hash rarely collide under both.
    from model_core.item_ids import hash_bucket

    h0, h1 = hash_bucket(ids, 97, 0), hash_bucket(ids, 97, 1)
    pairs = {(int(a), int(b)) for a, b in zip(h0, h1, strict=True)}
    assert len(set(h0.tolist())) <= 97 < len(pairs)


def test_id_fields_choose_a_table_then_hashing() -> None:
    assert id_fields(5_000) == {"item_id_vocab": 5_000, "pin_id_buckets": 0}
    assert id_fields(MAX_TABLE_ITEMS + 1)["pin_id_buckets"] > 0
    assert id_fields(5_000, "none") == {"item_id_vocab": 0, "pin_id_buckets": 0}


def test_both_towers_share_one_table_and_it_survives_a_checkpoint() -> None:
    features = FeatureConfig(content_dim=4)
    cfg = ModelConfig(features=features, max_len=8, hidden=16, out_dim=8, item_id_vocab=3)
    torch.manual_seed(0)
    model = PinnerFormer(cfg, np.array([5, 6, 7]))
    assert model.user_tower.item_ids is model.pin_tower.item_ids
    n_params = sum(p.numel() for p in model.parameters())  # shared: counted once
    again = PinnerFormer(cfg)  # ids travel in the state dict
    again.load_state_dict(model.state_dict())
    assert sum(p.numel() for p in again.parameters()) == n_params
    content = torch.randn(3, 4)
    ids = torch.tensor([5, 6, 7])
    assert_close(model.pin_tower(content, ids), again.pin_tower(content, ids))
    with torch.no_grad():
        model.pin_tower.item_ids.table.weight[2] += 1.0  # id 6's vector
    moved = model.pin_tower(content, ids)
    assert not torch.allclose(moved[1], again.pin_tower(content, ids)[1])
    assert_close(moved[[0, 2]], again.pin_tower(content, ids)[[0, 2]])

"""Learned item ids: a full table keyed by id (unknown → zero), hashing, shared by both towers."""

from __future__ import annotations

import numpy as np
import torch
from torch.testing import assert_close

from model_core.features.actions import FeatureConfig
from model_core.features.item_ids import (
    GRAPH_HOPS,
    MAX_TABLE_ITEMS,
    ItemIds,
    id_fields,
    shared_tokens,
)
from model_core.model.pinnerformer import ModelConfig, PinnerFormer


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
    from model_core.features.item_ids import hash_bucket

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


def test_shared_tokens_keep_tokens_two_items_carry_recoded_and_packed() -> None:
    tokens = np.array([[7, 3, 9], [3, 0, 0], [9, 5, 0], [5, 0, 0]])
    # 3, 9 and 5 are shared (codes 1, 3, 2 by value order); 7 is one item's only: dropped
    assert shared_tokens(tokens).tolist() == [[1, 3], [1, 0], [3, 2], [2, 0]]
    assert shared_tokens(np.array([[4], [6]])).tolist() == [[0], [0]]  # nothing shared


def test_an_item_vector_is_its_id_plus_the_mean_of_its_tokens() -> None:
    torch.manual_seed(0)
    table = ItemIds(dim=4, vocab_size=3, token_vocab=2, tokens_per_item=2)
    table.set_vocab(np.array([70, 10, 40]), tokens=np.array([[1, 2], [1, 0], [0, 0]]))
    ids = torch.tensor([10, 40, 70, 55])
    out = table(ids)
    e, t = table.table.weight, table.tokens.weight  # type: ignore[union-attr]
    assert_close(out[0], e[1] + t[1])  # id 10 (row 1) carries token 1
    assert_close(out[1], e[2])  # id 40 carries none
    assert_close(out[2], e[3] + (t[1] + t[2]) / 2)  # id 70 carries both
    assert torch.all(out[3] == 0)  # unknown: nothing, not even tokens
    # What id 10 learns about token 1 reaches id 70, which shares it; id 40 shares nothing.
    out[0].sum().backward()
    assert t.grad is not None
    assert torch.all(t.grad[1] != 0)
    assert torch.all(t.grad[2] == 0)
    assert torch.all(table.table.weight.grad[0] == 0)  # type: ignore[index]


def test_token_vectors_travel_in_the_checkpoint() -> None:
    cfg = ModelConfig(
        features=FeatureConfig(content_dim=4), max_len=8, hidden=16, out_dim=8,
        item_id_vocab=3, item_token_vocab=2, item_tokens_per_item=2,
    )  # fmt: skip
    torch.manual_seed(0)
    model = PinnerFormer(cfg, np.array([5, 6, 7]), np.array([[1, 2], [2, 0], [0, 0]]))
    again = PinnerFormer(cfg)  # ids and their tokens travel in the state dict
    again.load_state_dict(model.state_dict())
    content, ids = torch.randn(3, 4), torch.tensor([5, 6, 7])
    assert_close(model.pin_tower(content, ids), again.pin_tower(content, ids))
    with torch.no_grad():
        model.pin_tower.item_ids.tokens.weight[2] += 1.0  # type: ignore[union-attr]
    moved = model.pin_tower(content, ids)  # token 2 is carried by ids 5 and 6, not 7
    assert not torch.allclose(moved[:2], again.pin_tower(content, ids)[:2])
    assert_close(moved[2], again.pin_tower(content, ids)[2])


def test_token_vectors_train_under_bf16_autocast() -> None:
    """The pipeline trains under bf16 autocast on CUDA (and on CPUs when asked): the token mean
    must stay fp32 so that its backward does not mix bf16 gradients with the fp32 matrix."""
    torch.manual_seed(0)
    table = ItemIds(dim=4, vocab_size=3, token_vocab=2, tokens_per_item=2)
    table.set_vocab(np.array([70, 10, 40]), tokens=np.array([[1, 2], [1, 0], [0, 0]]))
    head = torch.nn.Linear(4, 4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = head(table(torch.tensor([10, 40, 70]))).float().square().sum()
    loss.backward()
    assert table.tokens is not None
    assert table.tokens.weight.grad is not None
    assert torch.all(table.tokens.weight.grad[1] != 0)


def test_an_item_vector_averages_in_its_neighbours_and_they_learn_from_it() -> None:
    torch.manual_seed(0)
    table = ItemIds(dim=4, vocab_size=3, token_vocab=1, tokens_per_item=1, neighbors_per_item=2)
    # neighbour codes are 1 + position in the ids as passed: 70 → 10 and 40; 10 → 70; 40 → none
    table.set_vocab(
        np.array([70, 10, 40]),
        tokens=np.array([[1], [1], [0]]),
        neighbors=np.array([[2, 3], [1, 0], [0, 0]]),
    )
    out = table(torch.tensor([10, 40, 70, 55]))
    e, t = table.table.weight, table.tokens.weight  # type: ignore[union-attr]
    assert GRAPH_HOPS == 2
    base = {10: e[1] + t[1], 40: e[2], 70: e[3] + t[1]}  # sorted rows: 10, 40, 70
    hop1 = {10: base[70], 40: 0 * base[40], 70: (base[10] + base[40]) / 2}
    hop2 = {10: hop1[70], 40: 0 * base[40], 70: (hop1[10] + hop1[40]) / 2}
    for i, item in enumerate((10, 40, 70)):
        assert_close(out[i], base[item] + hop1[item] + hop2[item])
    assert torch.all(out[3] == 0)  # unknown ids read nothing
    # id 40 has no neighbours (though it is id 70's): only its own row learns from it
    out[1].sum().backward(retain_graph=True)
    assert e.grad is not None
    assert torch.all(e.grad[2] != 0)
    assert torch.all(e.grad[[0, 1, 3]] == 0)
    e.grad = None
    out[2].sum().backward()  # what id 70 learns reaches its neighbours' rows
    assert torch.all(e.grad[[1, 2, 3]] != 0)


def test_neighbours_travel_in_the_checkpoint_and_train_under_bf16() -> None:
    cfg = ModelConfig(
        features=FeatureConfig(content_dim=4), max_len=8, hidden=16, out_dim=8,
        item_id_vocab=3, item_neighbors=1,
    )  # fmt: skip
    torch.manual_seed(0)
    model = PinnerFormer(cfg, np.array([5, 6, 7]), item_neighbors=np.array([[2], [1], [0]]))
    again = PinnerFormer(cfg)
    again.load_state_dict(model.state_dict())
    content, ids = torch.randn(3, 4), torch.tensor([5, 6, 7])
    assert_close(model.pin_tower(content, ids), again.pin_tower(content, ids))
    table = model.pin_tower.item_ids
    assert table is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (model.pin_tower(content, ids).float() * torch.randn(3, 8)).sum()  # not a norm
    loss.backward()
    assert table.table.weight.grad is not None
    assert torch.all(table.table.weight.grad[1:] != 0)


def test_the_sparse_products_and_one_shared_table_give_dense_gradients() -> None:
    """The CSR products (with their transposes as the backward) and one `vectors()` a step
    must give the gradients of the dense computation, after a state dict replaces the codes."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    table = ItemIds(dim=3, vocab_size=6, token_vocab=4, tokens_per_item=2, neighbors_per_item=3)
    table.set_vocab(
        np.arange(6) + 10, rng.integers(0, 5, size=(6, 2)), rng.integers(0, 7, size=(6, 3))
    )
    table(torch.tensor([10]))  # builds and caches the matrices of these codes
    other = ItemIds(dim=3, vocab_size=6, token_vocab=4, tokens_per_item=2, neighbors_per_item=3)
    other.set_vocab(
        np.arange(6) + 10, rng.integers(0, 5, size=(6, 2)), rng.integers(0, 7, size=(6, 3))
    )
    table.load_state_dict(other.state_dict())  # new codes: the cache must notice
    ids = torch.tensor([10, 12, 15, 15, 99])
    with table.shared():
        out = (table(ids) * torch.arange(15.0).view(5, 3)).sum() + table(ids[:2]).sum()
    out.backward()

    def dense_mean(codes: torch.Tensor, n_cols: int) -> torch.Tensor:
        m = torch.zeros(codes.shape[0], n_cols)
        for r, row in enumerate(codes.tolist()):
            for c in row:
                if c:
                    m[r, c] += 1.0 / sum(1 for x in row if x)
        return m

    e = table.table.weight.detach().clone().requires_grad_()
    t = table.tokens.weight.detach().clone().requires_grad_()  # type: ignore[union-attr]
    vec = e + dense_mean(table.item_tokens, 5) @ t
    a, hop = dense_mean(table.item_neighbors, 7), vec
    for _ in range(GRAPH_HOPS):
        hop = a @ hop
        vec = vec + hop
    vec = torch.cat([vec[:1] * 0, vec[1:]])  # row 0: unknown ids, zero and never trained
    rows = table.rows(ids)
    ((vec[rows] * torch.arange(15.0).view(5, 3)).sum() + vec[rows[:2]].sum()).backward()
    assert_close(table.table.weight.grad, e.grad)
    assert_close(table.tokens.weight.grad, t.grad)  # type: ignore[union-attr]


def test_inference_reuses_the_table_until_a_weight_changes() -> None:
    table = ItemIds(dim=3, vocab_size=3, neighbors_per_item=1)
    table.set_vocab(np.array([1, 2, 3]), neighbors=np.array([[2], [1], [0]]))
    table.eval()
    with torch.no_grad():
        first = table.vectors()
        assert table.vectors() is first  # chunks of one pass share it
        table.eval()  # embed_windows calls eval() for every chunk of users
        assert table.vectors() is first
        table.table.weight[2] += 1.0  # an optimizer step changes the weights in place
        moved = table.vectors()
    assert moved is not first
    assert not torch.allclose(moved[1], first[1])  # id 1's neighbour is id 2
    assert table.vectors().requires_grad  # training never reads the kept copy


def test_a_fused_optimizer_step_between_validations_is_seen() -> None:
    """fused AdamW (the trainer's) changes weights without bumping their `_version`: the table
    kept for inference must not outlive a return to training (validation read a stale table)."""
    table = ItemIds(dim=3, vocab_size=3, neighbors_per_item=1)
    table.set_vocab(np.array([1, 2, 3]), neighbors=np.array([[2], [1], [0]]))
    opt = torch.optim.AdamW(table.parameters(), lr=0.1, fused=True)
    table.eval()
    with torch.no_grad():
        before = table.vectors().clone()
    table.train()
    table(torch.tensor([1, 2, 3])).sum().backward()
    opt.step()
    table.eval()
    with torch.no_grad():
        after = table.vectors()
        assert not torch.allclose(after, before)
        assert_close(after, table._compute_vectors())
    with torch.no_grad():  # in training mode nothing is kept
        table.train()
        assert table.vectors() is not table.vectors()

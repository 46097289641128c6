"""Sharded daily inference: any shard count S gives bit-identical embeddings to S = 1."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.data.shards import user_shard
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig
from model_core.inference.embed import embed_users
from model_core.inference.sharded import (
    embed_users_sharded,
    n_buckets,
    shard_pool,
    shard_users,
    subset,
)
from model_core.model.pinnerformer import ModelConfig, PinnerFormer


@pytest.fixture(scope="module")
def model(tiny_catalog: PinCatalog) -> PinnerFormer:
    torch.manual_seed(0)
    features = FeatureConfig(content_dim=tiny_catalog.embeddings.shape[1])
    return PinnerFormer(ModelConfig(features=features, hidden=32, n_heads=4, out_dim=16)).eval()


def test_user_shard_is_stable_and_balanced() -> None:
    ids = np.arange(100_000, dtype=np.int64)
    shards = user_shard(ids, 4)
    np.testing.assert_array_equal(shards, user_shard(ids.copy(), 4))
    assert np.all(np.abs(np.bincount(shards, minlength=4) - 25_000) < 600)
    # fixed values: a change of hash would silently move users between shards and buckets
    assert user_shard(np.array([0, 1, 2, 123456789]), 1000).tolist() == [535, 465, 110, 897]


def test_shards_partition_the_users(tiny_timelines: Timelines) -> None:
    plan = shard_users(tiny_timelines, 4, batch_size=8, max_len=16)
    every = np.sort(np.concatenate(plan))
    np.testing.assert_array_equal(every, np.arange(tiny_timelines.n_users))
    assert all(len(p) > 0 for p in plan)
    assert n_buckets(tiny_timelines.n_users, 8) > 4
    # within a shard: bucket by bucket, longest window first
    window = np.minimum(tiny_timelines.lengths, 16)
    buckets = user_shard(tiny_timelines.user_ids, n_buckets(tiny_timelines.n_users, 8))
    for users in plan:
        key = buckets[users] * 100 - window[users]
        assert np.all(np.diff(key) >= 0)


def test_subset_keeps_each_users_timeline(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    users = np.array([5, 0, 17], dtype=np.int64)
    sub, cat = subset(tiny_timelines, tiny_catalog, users)
    for i, u in enumerate(users):
        lo, hi = tiny_timelines.offsets[u], tiny_timelines.offsets[u + 1]
        np.testing.assert_array_equal(
            sub.ts[sub.offsets[i] : sub.offsets[i + 1]], tiny_timelines.ts[lo:hi]
        )
        np.testing.assert_array_equal(
            cat.embeddings[sub.pin_row[sub.offsets[i] : sub.offsets[i + 1]]],
            tiny_catalog.embeddings[tiny_timelines.pin_row[lo:hi]],
        )


def test_four_shards_in_parallel_are_bit_identical_to_one(
    model: PinnerFormer, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    one = embed_users_sharded(model, tiny_timelines, tiny_catalog, shards=1, batch_size=16)
    with shard_pool(4) as pool:
        four = embed_users_sharded(
            model, tiny_timelines, tiny_catalog, shards=4, batch_size=16, pool=pool
        )
    np.testing.assert_array_equal(four, one)  # bit for bit, not approximately
    three = embed_users_sharded(model, tiny_timelines, tiny_catalog, shards=3, batch_size=16)
    np.testing.assert_array_equal(three, one)
    # and the same embeddings as unsharded inference, up to float32 batching noise
    np.testing.assert_allclose(one, embed_users(model, tiny_timelines, tiny_catalog), atol=1e-5)

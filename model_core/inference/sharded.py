"""Daily user inference split into S shards by a stable user hash, computed in parallel workers.

Bit-identical for every S by construction: the day's users fall into `n_buckets` hash buckets
(a function of the day's user count and the batch size, never of S); inside a bucket users are
ordered by window length (longest first, then id) and cut into batches, so a batch never crosses
a bucket and pads to little more than its own longest window; shard s computes the buckets b with
b % S == s. Every S therefore runs exactly the same batches, only on different workers, each
with the same number of intra-op threads.

On one machine the shards run in a process pool (`shared_pool`); on a cluster each shard is the
same call in its own pod (docs/SCALING.md).
"""

from __future__ import annotations

import atexit
import math
import multiprocessing
import os
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager

import numpy as np
import torch

from model_core.data.shards import user_shard
from model_core.data.timelines import PinCatalog, Timelines
from model_core.inference.embed import INFERENCE_BATCH_SIZE, embed_windows
from model_core.model.pinnerformer import PinnerFormer

BATCHES_PER_BUCKET = 8  # enough batches per bucket for length-sorting to cut the padding


def n_buckets(n_users: int, batch_size: int) -> int:
    """About BATCHES_PER_BUCKET batches per bucket; depends on the day, not on S."""
    return max(1, math.ceil(n_users / (batch_size * BATCHES_PER_BUCKET)))


def shard_users(
    timelines: Timelines, shards: int, batch_size: int, max_len: int
) -> list[np.ndarray]:
    """For each shard, the user indices it computes, in the order its batches are cut:
    by bucket, then window length (longest first), then user id."""
    buckets = user_shard(timelines.user_ids, n_buckets(timelines.n_users, batch_size))
    window = np.minimum(timelines.lengths, max_len)
    order = np.lexsort((timelines.user_ids, -window, buckets))
    return [order[buckets[order] % shards == s] for s in range(shards)]


def _batches(buckets: np.ndarray, batch_size: int) -> Iterator[slice]:
    """Slices of at most batch_size consecutive rows that never cross a bucket boundary."""
    if len(buckets) == 0:
        return
    starts = np.flatnonzero(np.r_[True, buckets[1:] != buckets[:-1]])
    bounds = [*starts.tolist(), len(buckets)]
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        for i in range(int(lo), int(hi), batch_size):
            yield slice(i, min(i + batch_size, int(hi)))


def subset(
    timelines: Timelines, catalog: PinCatalog, users: np.ndarray
) -> tuple[Timelines, PinCatalog]:
    """The timelines of `users` (indices) and only the catalogue rows they read: what one shard
    worker needs. Users keep the given order."""
    lengths = timelines.lengths[users]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    # flat rows of the chosen users, user after user: start_u + (0 .. length_u - 1)
    rows = np.arange(offsets[-1]) + np.repeat(timelines.offsets[users] - offsets[:-1], lengths)
    used = np.unique(timelines.pin_row[rows])
    sub_catalog = PinCatalog(catalog.pin_ids[used], catalog.embeddings[used], catalog.topics[used])
    sub = Timelines(
        user_ids=timelines.user_ids[users],
        offsets=offsets,
        ts=timelines.ts[rows],
        pin_row=np.searchsorted(used, timelines.pin_row[rows]).astype(np.int64),
        pin_id=timelines.pin_id[rows],
        action=timelines.action[rows],
        surface=timelines.surface[rows],
        duration=timelines.duration[rows],
        positive=timelines.positive[rows],
    )
    return sub, sub_catalog


def embed_shard(
    model: PinnerFormer,
    timelines: Timelines,
    catalog: PinCatalog,
    n_bucket: int,
    batch_size: int,
    device: str = "cpu",
    threads: int = 1,
) -> np.ndarray:
    """[U, D] float32 for a shard's timelines (users in `shard_users` order): batches of at
    most `batch_size` that never cross a bucket, with `threads` intra-op threads."""
    torch.set_num_threads(threads)
    buckets = user_shard(timelines.user_ids, n_bucket)
    ends = timelines.offsets[1:] - 1
    out = np.empty((timelines.n_users, model.config.out_dim), dtype=np.float32)
    for sl in _batches(buckets, batch_size):
        out[sl] = embed_windows(model, timelines, catalog, ends[sl], batch_size, device)
    return out


@contextmanager
def shard_pool(shards: int) -> Iterator[Executor | None]:
    """A process pool for S > 1 (spawned: safe next to torch and DuckDB threads), else None."""
    if shards <= 1:
        yield None
        return
    workers = min(shards, os.cpu_count() or 1)
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        yield pool


def embed_users_sharded(
    model: PinnerFormer,
    timelines: Timelines,
    catalog: PinCatalog,
    shards: int = 1,
    batch_size: int = INFERENCE_BATCH_SIZE,
    device: str = "cpu",
    pool: Executor | None = None,
    threads: int = 1,
) -> np.ndarray:
    """[U, D] float32 aligned with `timelines.user_ids`: every user's embedding at their latest
    action, computed as S shards (in `pool` when given, else one after the other here).

    Each shard runs with `threads` intra-op threads whatever S is: some CPU kernels sum in a
    thread-count-dependent order, so parallelism comes from the shards, not from threads.
    """
    assert shards >= 1, f"shards must be >= 1, got {shards}"
    nb = n_buckets(timelines.n_users, batch_size)
    plan = shard_users(timelines, shards, batch_size, model.config.max_len)
    out = np.empty((timelines.n_users, model.config.out_dim), dtype=np.float32)
    model = model.cpu().eval() if pool is not None else model
    before = torch.get_num_threads()
    jobs = []
    try:
        for users in plan:
            if len(users) == 0:
                continue
            sub, sub_catalog = subset(timelines, catalog, users)
            args = (model, sub, sub_catalog, nb, batch_size, device, threads)
            jobs.append((users, pool.submit(embed_shard, *args) if pool else embed_shard(*args)))
        for users, result in jobs:
            out[users] = result if isinstance(result, np.ndarray) else result.result()
    finally:
        torch.set_num_threads(before)
    return out


_POOLS: dict[int, ProcessPoolExecutor] = {}


def shared_pool(shards: int) -> Executor | None:
    """A warm process pool for S > 1, kept for the life of this process (a backfill's many
    partitions reuse it instead of spawning workers per day); None for S = 1."""
    if shards <= 1:
        return None
    workers = min(shards, os.cpu_count() or 1)
    if workers not in _POOLS:
        ctx = multiprocessing.get_context("spawn")
        _POOLS[workers] = ProcessPoolExecutor(max_workers=workers, mp_context=ctx)
        atexit.register(_POOLS[workers].shutdown)
    return _POOLS[workers]

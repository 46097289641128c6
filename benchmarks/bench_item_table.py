"""The item table's per-step cost (token means and the co-engagement graph), before and after.

    .venv/bin/python benchmarks/bench_item_table.py [--threads N] [--repeat R]

A training step reads the item vectors twice (the user tower's inputs, the pin tower's whole
catalogue) and back-propagates through both. "before" computes every row's vector per lookup
with `torch.sparse.mm` over COO matrices rebuilt from the code buffers (the code before the graph
layer's speed-up); "after" is `ItemIds` as it is: CSR matrices built once, a CSR product with the
transpose as the backward, and one computation a step (`ItemIds.shared`). Sizes are Amazon
Sports' (18,357 items, 2,277 shared tokens of ~6 per item, 10 neighbours, 64 dims). The machine
is shared: read the ratios, measured in the same run.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from model_core.features.item_ids import GRAPH_HOPS, ItemIds

ITEMS, DIM, TOKENS, PER_ITEM, NEIGHBORS, LOOKUPS = 18_357, 64, 2_277, 6, 10, 4_000


def coo_mean(codes: torch.Tensor, n_cols: int) -> torch.Tensor:
    """The averaging matrix as the code before built it, per call."""
    keep = codes > 0
    row = torch.arange(codes.shape[0]).unsqueeze(1).expand_as(codes)[keep]
    values = 1.0 / keep.sum(1).clamp_min(1)[row].to(torch.float32)
    idx = torch.stack([row, codes[keep]])
    return torch.sparse_coo_tensor(idx, values, (codes.shape[0], n_cols), check_invariants=False)


def before(table: ItemIds, ids: torch.Tensor) -> torch.Tensor:
    assert table.tokens is not None
    out = table.table.weight
    out = out + torch.sparse.mm(coo_mean(table.item_tokens, TOKENS + 1), table.tokens.weight)
    if table.has_neighbors:
        hop = out
        for _ in range(GRAPH_HOPS):
            hop = torch.sparse.mm(coo_mean(table.item_neighbors, ITEMS + 1), hop)
            out = out + hop
    return F.embedding(table.rows(ids), out, padding_idx=0)


def ms_per_step(step: Callable[[], None], repeat: int) -> float:
    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(repeat):
        step()
    return (time.perf_counter() - t0) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    ids = np.arange(1, ITEMS + 1)
    tokens = rng.integers(1, TOKENS + 1, size=(ITEMS, PER_ITEM))
    neighbors = rng.integers(1, ITEMS + 1, size=(ITEMS, NEIGHBORS))
    lookups = torch.from_numpy(rng.integers(1, ITEMS + 1, size=LOOKUPS))
    print(f"# {args.threads} thread(s); {ITEMS} items, two lookups of {LOOKUPS} ids a step")
    print(f"{'table':<16}{'before ms':>11}{'after ms':>10}{'x faster':>10}")
    for name, n_neighbors in (("tokens", 0), ("tokens + graph", NEIGHBORS)):
        table = ItemIds(DIM, ITEMS, 0, 2, TOKENS, PER_ITEM, n_neighbors)
        table.set_vocab(ids, tokens, neighbors if n_neighbors else None)

        def old(table: ItemIds = table) -> None:
            (before(table, lookups).sum() + before(table, lookups).sum()).backward()

        def new(table: ItemIds = table) -> None:
            with table.shared():
                (table(lookups).sum() + table(lookups).sum()).backward()

        t_old, t_new = ms_per_step(old, args.repeat), ms_per_step(new, args.repeat)
        print(f"{name:<16}{t_old:>11.1f}{t_new:>10.1f}{t_old / t_new:>10.2f}")


if __name__ == "__main__":
    main()

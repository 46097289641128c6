"""Two gloo processes with all-gathered in-batch negatives == one process on the global batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.testing import assert_close

from model_core.training.loss import Candidates, LossConfig, sampled_softmax_loss
from tests.model_core.distributed import spawn_gloo

WORLD = 2
PAIRS_PER_RANK = 6
CONFIG = LossConfig(negatives="in_batch", logq=True, in_batch_cap=5000)


def global_batch() -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    n = WORLD * PAIRS_PER_RANK
    u = rng.normal(size=(n, 4))
    p = rng.normal(size=(n, 4))
    return {
        "u": torch.tensor(u / np.linalg.norm(u, axis=1, keepdims=True), dtype=torch.float32),
        "p": torch.tensor(p / np.linalg.norm(p, axis=1, keepdims=True), dtype=torch.float32),
        "ids": torch.tensor(rng.integers(0, 8, size=n)),  # collisions across ranks on purpose
        "users": torch.arange(n) // 2,  # each user owns two pairs
        "emb": torch.arange(n) // 2,  # each embedding has two positives
        "logq": torch.tensor(np.log(rng.uniform(0.05, 0.5, size=n)), dtype=torch.float32),
    }


def loss_and_grads(b: dict[str, torch.Tensor], sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    u = b["u"][sl].clone().requires_grad_()
    p = b["p"][sl].clone().requires_grad_()
    positives = Candidates(p, b["ids"][sl], b["users"][sl], b["logq"][sl])
    loss = sampled_softmax_loss(u, positives, b["emb"][sl], torch.tensor(0.1), CONFIG)
    loss.backward()
    assert u.grad is not None
    assert p.grad is not None
    return loss.detach(), torch.cat([u.grad, p.grad], dim=1)


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        sl = slice(rank * PAIRS_PER_RANK, (rank + 1) * PAIRS_PER_RANK)
        loss, grads = loss_and_grads(global_batch(), sl)
        torch.save({"loss": loss, "grads": grads}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_gloo_all_gather_equals_single_process(tmp_path: Path) -> None:
    spawn_gloo(worker, tmp_path, nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    single_loss, single_grads = loss_and_grads(global_batch(), slice(None))
    # Equal embeddings per rank: the global per-embedding mean is the mean of the rank losses.
    assert_close(torch.stack([r["loss"] for r in ranks]).mean(), single_loss)
    # all_gather's backward sums every rank's loss into the owner's gradient, so a rank holds
    # d(sum of rank losses)/dx = WORLD * d(global loss)/dx; DDP then divides by WORLD.
    assert_close(torch.cat([r["grads"] for r in ranks]) / WORLD, single_grads)

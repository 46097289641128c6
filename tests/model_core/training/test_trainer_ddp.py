"""DDP training on CPU: two gloo ranks stay in sync and only rank 0 writes the checkpoint."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import polars as pl
import torch
import torch.distributed as dist

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.config import TrainConfig
from model_core.training.loss import LossConfig
from model_core.training.recipe import RecipeConfig, label_sketch
from model_core.training.sampler import SamplerConfig, SequenceSampler
from model_core.training.trainer import train
from tests.model_core.distributed import spawn_gloo


def worker(rank: int, init_file: str, out_dir: str, capped: bool = False) -> None:
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=2,
        timeout=datetime.timedelta(seconds=60),  # a rank left waiting fails the test, not hangs
    )
    try:
        torch.set_num_threads(1)
        world = synthetic.WorldConfig.tiny()
        actions = pl.concat(list(synthetic.generate_range(world, world.dates[0], world.dates[9])))
        catalog = PinCatalog.from_frame(synthetic.pin_features(world))
        features = FeatureConfig(content_dim=world.content_dim)
        timelines, _ = Timelines.from_actions(actions, catalog, features)
        cfg = RecipeConfig(
            model=ModelConfig(features=features, max_len=16, hidden=32, n_heads=4, out_dim=16),
            sampler=SamplerConfig(max_len=16),
            loss=LossConfig(n_random=64),
            train=TrainConfig(batch_size=16, steps=6, warmup_fraction=0.3, log_every=3),
        )
        if capped:  # clocks that disagree: rank 1 alone would run on for minutes
            train_cfg = TrainConfig(
                batch_size=16, steps=100_000, log_every=2, max_minutes=0.05 if rank == 0 else 10
            )
            cfg = dataclasses.replace(cfg, train=train_cfg)
        torch.manual_seed(0)  # DDP broadcasts rank 0's init anyway
        model = PinnerFormer(cfg.model)
        sampler = SequenceSampler(timelines, catalog, cfg.sampler, seed=0)
        ckpt = Path(out_dir) / "model.pt"
        result = train(model, sampler, label_sketch(sampler, cfg), cfg.loss, cfg.train, ckpt)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save(
            {"params": flat, "history": result.history, "steps": result.steps},
            Path(out_dir) / f"rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_stay_in_sync(tmp_path: Path) -> None:
    spawn_gloo(worker, tmp_path, nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    torch.testing.assert_close(r0["params"], r1["params"])  # gradients were all-reduced
    assert [row["step"] for row in r0["history"]] == [3.0, 6.0]
    assert r1["history"] == []  # only rank 0 logs
    assert torch.load(tmp_path / "model.pt", weights_only=False)["step"] == 6


def capped_worker(rank: int, init_file: str, out_dir: str) -> None:
    worker(rank, init_file, out_dir, capped=True)


def test_ddp_ranks_stop_together_at_rank0s_deadline(tmp_path: Path) -> None:
    """Under max_minutes rank 0's clock decides the stop and the fitted schedule for every rank;
    a rank that stopped alone left the others waiting in the next gradient all-reduce."""
    spawn_gloo(capped_worker, tmp_path, nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["steps"] == r1["steps"] < 100_000
    torch.testing.assert_close(r0["params"], r1["params"])  # same schedule, same updates

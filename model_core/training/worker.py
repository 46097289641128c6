"""The training worker: `torchrun --nproc-per-node N -m model_core.training.worker --job URL`.

Reads a job (JSON at `URL`: where the Parquet training data is, the RecipeConfig, the checkpoint
and the output paths), trains with `model_core.training.recipe.fit` (DDP when torchrun starts
more than one rank: gloo on CPU, nccl on CUDA) and writes the model artefact plus a result
summary. Rank 0 is the only rank that logs and writes files (the trainer's rule too).

Started by hand it only logs. The pipeline starts `pinner_assets.lib.pipes_worker` instead, which
wraps `run` in a Dagster Pipes session (log lines and the summary go back to the Dagster run):
this module knows nothing of Dagster.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
import torch
import torch.distributed as dist

from model_core.data.shards import read_training_data
from model_core.data.timelines import PinCatalog, Timelines
from model_core.training.checkpoint import save_checkpoint
from model_core.training.config import TrainResult, config_from_dict
from model_core.training.recipe import Fitted, RecipeConfig, fit
from model_core.training.validation import Validate, paper_split

log = logging.getLogger("model_core.training.worker")


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What one training run reads and writes. Paths are local to the worker (a shared volume on
    a cluster); `data_url` may be any fsspec URL."""

    data_url: str  # Parquet shards written by model_core.data.shards.write_training_data
    recipe: dict[str, Any]  # dataclasses.asdict(RecipeConfig)
    checkpoint: str  # resumed from when it exists, rewritten every checkpoint_every steps
    output: str  # directory for model.pt and result.json

    def save(self, url: str) -> None:
        with fsspec.open(url, "w") as f:
            f.write(json.dumps(dataclasses.asdict(self), indent=2))

    @classmethod
    def load(cls, url: str) -> TrainJob:
        with fsspec.open(url, "r") as f:
            return cls(**json.loads(f.read()))


def _init_distributed(device: str) -> tuple[int, int, str]:
    """(rank, world size, backend) from torchrun's environment; no process group when alone."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, "none"
    backend = "nccl" if device.startswith("cuda") and torch.cuda.is_available() else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size(), backend


# Fewer held-out users than this measure Recall@10 too coarsely to choose an epoch by (its
# standard error at recall 0.1 is ~0.013 at 500 users, ~0.04 at 60): train on everyone instead.
MIN_VALIDATION_USERS = 500


def held_out(
    timelines: Timelines,
    catalog: PinCatalog,
    cfg: RecipeConfig,
    min_users: int = MIN_VALIDATION_USERS,
) -> tuple[Timelines, Validate | None]:
    """The training users and the early-stopping metric (`cfg.validation_fraction` of the users
    held out, scored on their last 14 days); every user and no metric when the fraction is 0 or
    fewer than `min_users` held-out users have positives to score."""
    if cfg.validation_fraction <= 0:
        return timelines, None
    end = int(timelines.ts.max()) + 1
    try:
        split = paper_split(timelines, catalog, end, fraction=cfg.validation_fraction)
    except ValueError as exc:
        log.warning("training without early stopping: %s", exc)
        return timelines, None
    if split.n_users < min_users:
        log.warning(
            "training without early stopping: %d held-out users with positives to score, "
            "fewer than %d",
            split.n_users,
            min_users,
        )
        return timelines, None
    log.info("early stopping on Recall@10 of %d held-out users", split.n_users)
    return split.train, split.validate


def run(job: TrainJob) -> Fitted | None:
    """Train one job; returns the fit on rank 0 (None on other ranks), whose summary is in
    `job.output`/result.json (`load_result`)."""
    cfg = RecipeConfig.from_dict(job.recipe)
    rank, world, backend = _init_distributed(cfg.train.device)
    try:
        t0 = time.perf_counter()
        data = read_training_data(job.data_url)
        t_read = time.perf_counter() - t0
        ckpt = Path(job.checkpoint)
        resumed = 0
        if ckpt.exists():
            resumed = int(torch.load(ckpt, map_location="cpu", weights_only=True)["step"])
        log.info(
            "rank %d/%d (%s): %d users read from %s in %.1fs%s",
            *(rank, world, backend, data.timelines.n_users, job.data_url, t_read),
            f", resuming at step {resumed}" if resumed else "",
        )
        train_tl, validate = held_out(data.timelines, data.catalog, cfg)
        fitted = fit(train_tl, data.catalog, cfg, ckpt, sketch=data.sketch, validate=validate)
        if rank != 0:
            return None
        out = Path(job.output)
        out.mkdir(parents=True, exist_ok=True)
        model = fitted.model.cpu()
        opt = torch.optim.AdamW(model.parameters())  # the checkpoint format carries one
        save_checkpoint(out / "model.pt", model, opt, fitted.result.steps, fitted.result.history)
        summary = {
            "result": dataclasses.asdict(fitted.result),
            "n_train_users": fitted.n_train_users,
            "n_sequences_per_epoch": fitted.n_sequences_per_epoch,
            "world_size": world,
            "backend": backend,
            "resumed_from_step": resumed,
        }
        (out / "result.json").write_text(json.dumps(summary, indent=2))
        return fitted
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def load_result(output: str | Path) -> tuple[dict[str, Any], TrainResult]:
    """The summary a finished job wrote, with its TrainResult rebuilt."""
    summary = json.loads((Path(output) / "result.json").read_text())
    return summary, config_from_dict(TrainResult, summary["result"])


def main(argv: list[str] | None = None, runner: Callable[[TrainJob], Any] = run) -> None:
    """The command line; `runner` trains the job (`run`, or a wrapper that reports)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--job", required=True, help="URL of the TrainJob JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr
    )
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    runner(TrainJob.load(args.job))


if __name__ == "__main__":
    main()

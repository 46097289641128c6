"""The training loop: small and separate from the model (minGPT's trainer knows nothing of GPT).

CPU or CUDA (bf16 autocast on CUDA), warmup + cosine learning rate as a pure function of the step,
gradient clipping, deterministic seeding, checkpoint + resume, a periodic log line with loss and
throughput. Under `torchrun` it trains with DDP: every rank draws its own batches (seeded by rank),
in-batch negatives are all-gathered in the loss, only rank 0 logs and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from model_core.loss import (
    Candidates,
    LossConfig,
    binary_cross_entropy_loss,
    sampled_softmax_loss,
)
from model_core.model import PinnerFormer
from model_core.sampler import SequenceSampler
from model_core.sketch import CountMinSketch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # sequences per step per device
    steps: int = 1500  # optimizer steps
    lr: float = 2e-3  # peak; small transformers tolerate a high rate with warmup + clipping
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of the peak
    warmup_steps: int = 100  # linear warmup keeps early attention logits from blowing up
    weight_decay: float = 0.01  # AdamW default regularisation
    grad_clip: float = 1.0  # max global grad norm
    seed: int = 0
    device: str = "auto"  # "auto" → cuda when available, else cpu
    log_every: int = 100
    checkpoint_every: int = 500


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warmup to cfg.lr, then cosine decay to cfg.lr * cfg.min_lr_ratio at cfg.steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    sequences_per_s: float = 0.0
    device: str = "cpu"


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def uniform_log_q(n_random: int, corpus_size: int) -> float:
    """log P(item in a sample of n_random uniform draws with replacement) = log(1-(1-1/N)^R)."""
    return math.log(-math.expm1(n_random * math.log1p(-1.0 / corpus_size)))


def train(
    model: PinnerFormer,
    sampler: SequenceSampler,
    sketch: CountMinSketch,
    loss_cfg: LossConfig,
    cfg: TrainConfig,
    checkpoint_path: Path | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train in place; resumes from `checkpoint_path` when it exists. Returns the curves.

    `stop_after` ends the run early at that step (with a checkpoint), as a preemption would; the
    schedule still follows `cfg.steps`, so a resumed run continues exactly where it stopped.
    """
    rank, world = _world()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    seed_everything(cfg.seed + rank)
    raw_model = model.to(device)
    opt = torch.optim.AdamW(raw_model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    result = TrainResult(device=str(device))
    start = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=False)
        raw_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
        result.history = list(state["history"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", checkpoint_path, start)
    ddp_model: torch.nn.Module = raw_model
    if world > 1:
        ddp_model = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp = (
        torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else nullcontext()
    )
    catalog_emb = torch.from_numpy(sampler.catalog.embeddings).to(device)
    catalog_ids = torch.from_numpy(sampler.catalog.pin_ids).to(device)
    n_corpus = len(sampler.catalog)
    bce = loss_cfg.kind == "bce"
    n_random = loss_cfg.n_random if loss_cfg.negatives != "in_batch" else 0
    rand_log_q = uniform_log_q(max(1, n_random), n_corpus)
    # Rank r draws the batches of "virtual step" step*world + r, so ranks never share a batch.
    ddp_model.train()
    t0, seqs = time.perf_counter(), 0
    last = cfg.steps if stop_after is None else min(cfg.steps, stop_after)
    for step in range(start, last):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        batch = sampler.batch(step * world + rank, cfg.batch_size)
        seq = batch.seq.to(device)
        g = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * world + rank)
        pin_row = batch.pin_row.to(device)
        n_pos = len(pin_row)
        n_draw = n_pos if bce else n_random  # BCE: one negative per pair
        rand_rows = torch.randint(n_corpus, (n_draw,), generator=g).to(device)
        item_rows = torch.cat([pin_row, rand_rows])
        in_batch_size = min(loss_cfg.in_batch_cap, n_pos * world)
        pos_log_q = torch.from_numpy(
            sketch.inclusion_log_prob(batch.pin_id.numpy(), max(1, in_batch_size))
        ).to(device)
        with amp:
            user_emb, item_emb = ddp_model(
                seq,
                batch.pair_b.to(device),
                batch.pair_pos.to(device),
                catalog_emb[item_rows],
                catalog_ids[item_rows],
            )
        temperature = raw_model.temperature(loss_cfg.min_temperature)
        positives = Candidates(
            item_emb[:n_pos], batch.pin_id.to(device), batch.user_id.to(device), pos_log_q
        )
        random_negs = Candidates(
            item_emb[n_pos:],
            catalog_ids[rand_rows],
            torch.full((n_draw,), -1, dtype=torch.int64, device=device),
            torch.full((n_draw,), rand_log_q, device=device),
        )
        emb_key = (batch.pair_b * seq.ts.shape[1] + batch.pair_pos).to(device)
        if bce:
            loss = binary_cross_entropy_loss(
                user_emb.float(), positives, random_negs, emb_key, temperature
            )
        else:
            loss = sampled_softmax_loss(
                user_emb.float(),
                positives,
                emb_key,
                temperature,
                loss_cfg,
                random_negs if n_random else None,
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        opt.step()
        seqs += len(batch.seq.lengths) * world
        done = step + 1
        if _is_rank0() and (done % cfg.log_every == 0 or done == cfg.steps):
            elapsed = time.perf_counter() - t0
            row = {
                "step": float(done),
                "loss": float(loss.item()),
                "lr": lr_at(step, cfg),
                "temperature": float(temperature.item()),
                "grad_norm": float(grad_norm.item()),
                "sequences_per_s": seqs / elapsed,
            }
            result.history.append(row)
            log.info(
                "step %d/%d loss %.4f lr %.2e tau %.3f %.0f seq/s",
                done,
                cfg.steps,
                row["loss"],
                row["lr"],
                row["temperature"],
                row["sequences_per_s"],
            )
        if (
            checkpoint_path is not None
            and _is_rank0()
            and (done % cfg.checkpoint_every == 0 or done == cfg.steps)
        ):
            save_checkpoint(checkpoint_path, raw_model, opt, done, result.history)
    result.steps = last
    elapsed = time.perf_counter() - t0
    result.sequences_per_s = seqs / elapsed if elapsed > 0 and seqs else 0.0
    raw_model.eval()
    return result


def save_checkpoint(
    path: Path,
    model: PinnerFormer,
    opt: torch.optim.Optimizer,
    step: int,
    history: list[dict[str, float]],
    extra: dict[str, Any] | None = None,
) -> None:
    """Atomic write (temp file + rename) so a crash never leaves a truncated checkpoint."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "step": step,
            "history": history,
            "model_config": model.config.to_dict(),
            "torch_rng": torch.get_rng_state(),
            **(extra or {}),
        },
        tmp,
    )
    os.replace(tmp, path)

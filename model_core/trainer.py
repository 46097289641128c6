"""The training loop: small and separate from the model (minGPT's trainer knows nothing of GPT).

CPU or CUDA (bf16 autocast on CUDA, optionally on CPUs with bf16 matrix units), warmup + cosine
learning rate as a pure function of the step, AdamW without weight decay on norms, biases,
embeddings and τ, gradient clipping, deterministic seeding, checkpoint + resume, a periodic log
line with loss and throughput.

Training to convergence: the run is `epochs` passes over the sampler's sequences (or `steps`),
and when a `validate` callable is given (a metric on held-out data, higher is better) it is scored
every `eval_every` steps (default: once per epoch); after `patience` scores without improvement
the run stops and the best weights are restored. What validation scores, and what the run
returns, is an exponential moving average of the weights over about `ema_epochs` epochs (beyond
the paper; 0 scores the raw weights). `max_minutes` caps the wall time, and the
learning-rate schedule then fits the cap: at every validation the schedule's length becomes the
steps projected to fit before the deadline at the pace so far (never more than `epochs`), and
likewise at every log line, so the first epoch of a long-epoch run already follows the capped
schedule (it used to warm up over 2% of the uncapped one); a capped run warms up, decays and ends
at its floor instead of stopping at the peak rate. Under DDP rank 0's clock decides the schedule
and the stop for every rank.

Under `torchrun` it trains with DDP: every rank draws its own batches (seeded by rank), in-batch
negatives are all-gathered in the loss, only rank 0 logs and writes checkpoints; every rank scores
the (identical) model on validation, so every rank takes the same early-stopping decision.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

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
from model_core.schedule import fitted_schedule, lr_at
from model_core.sketch import CountMinSketch
from model_core.weight_average import averaged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 128  # sequences per step per device
    steps: int = 1500  # optimizer steps when `epochs` is None; the schedule's length
    epochs: float | None = None  # passes over the sampler's sequences; overrides `steps`
    lr: float = 2e-3  # peak; small transformers tolerate a high rate with warmup + clipping
    min_lr_ratio: float = 0.05  # cosine floor as a fraction of the peak
    warmup_fraction: float = 0.02  # linear warmup over this share of the run (~1 of 50 epochs)
    weight_decay: float = 0.01  # AdamW, on matrices only (not norms, biases, embeddings, τ)
    betas: tuple[float, float] = (0.9, 0.98)  # β2 0.98: the transformer / SASRec setting
    grad_clip: float = 1.0  # max global grad norm
    # Beyond the paper: validation, early stopping and the returned model use an exponential
    # moving average of the weights whose memory is this many epochs (decay per step
    # 1 - 1 / (ema_epochs · steps per epoch); on Amazon 0.998). 0 = the raw weights.
    ema_epochs: float = 1.8
    seed: int = 0
    device: str = "auto"  # "auto" → cuda when available, else cpu
    # bf16 autocast: "auto" = on CUDA only; "on" also on CPU (fast where the CPU has bf16 matrix
    # units, e.g. AMX / AVX512-BF16); "off" = fp32 everywhere.
    amp: Literal["auto", "on", "off"] = "auto"
    eval_every: int = 0  # steps between validation scores; 0 = once per epoch
    patience: int = 3  # validation scores without improvement before stopping
    max_minutes: float | None = None  # wall-clock cap on the training loop
    log_every: int = 100
    checkpoint_every: int = 500


def total_steps(cfg: TrainConfig, sampler: SequenceSampler, world: int = 1) -> int:
    """The run's length in optimizer steps: `epochs` passes over the sequences, else `steps`."""
    if cfg.epochs is None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * sampler.steps_per_epoch(cfg.batch_size) / world))


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices of linear layers only; none on norms, biases,
    embedding tables, positional encodings, Time2vec phases or the temperature."""
    embeddings = {id(m.weight) for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in model.named_parameters():  # shared (tied) parameters are listed once
        matrix = p.dim() >= 2 and id(p) not in embeddings and not name.endswith(".pos")
        (decay if matrix else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def amp_dtype(device: torch.device, amp: str) -> torch.dtype:
    """The matmul dtype per `TrainConfig.amp`: bf16 when autocast is on, else fp32."""
    off = amp == "off" or (amp == "auto" and device.type != "cuda")
    return torch.float32 if off else torch.bfloat16


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    """bf16 autocast per `TrainConfig.amp`, or a no-op."""
    if amp_dtype(device, amp) == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


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
    validation: list[dict[str, float]] = field(default_factory=list)
    steps: int = 0
    best_step: int | None = None  # the restored weights' step when validating
    best_score: float | None = None
    stop_reason: str = "schedule"  # schedule | early_stopping | max_minutes
    seconds: float = 0.0
    sequences_per_s: float = 0.0
    device: str = "cpu"


def _is_rank0() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _from_rank0(value: int, device: torch.device) -> int:
    """`value` as rank 0 has it (every rank calls this at the same step); itself without DDP.
    `device`: the rank's training device (NCCL broadcasts CUDA tensors only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())


def uniform_log_count(n_random: int, corpus_size: int) -> float:
    """log E[copies of an item among n_random uniform draws with replacement] = log(R / N)."""
    return math.log(n_random / corpus_size)


def train(
    model: PinnerFormer,
    sampler: SequenceSampler,
    sketch: CountMinSketch,
    loss_cfg: LossConfig,
    cfg: TrainConfig,
    checkpoint_path: Path | None = None,
    stop_after: int | None = None,
    validate: Callable[[PinnerFormer], float] | None = None,
) -> TrainResult:
    """Train in place; resumes from `checkpoint_path` when it exists. Returns the curves.

    sketch: frequency of each item among the labels the sampler draws (feeds logQ).
    validate: model → a held-out metric (higher is better) for early stopping; the best
    weights are restored at the end.
    `stop_after` ends the run early at that step (with a checkpoint), as a preemption would; the
    schedule still follows the full run, so a resumed run continues exactly where it stopped.
    """
    rank, world = _world()
    device = resolve_device(cfg.device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    seed_everything(cfg.seed + rank)
    raw_model = model.to(device)
    # fused: one kernel over every parameter (CPU and CUDA). The default on a CPU steps one
    # tensor at a time: 23 ms against 2.7 ms a step for a 50k-row id table and a small tower.
    opt = torch.optim.AdamW(
        param_groups(raw_model, cfg.weight_decay), lr=cfg.lr, betas=cfg.betas, fused=True
    )
    result = TrainResult(device=str(device))
    n_steps = total_steps(cfg, sampler, world)
    spe = max(1, sampler.steps_per_epoch(cfg.batch_size) // world)
    ema = averaged(raw_model, cfg.ema_epochs * spe, n_steps)
    # what validation scores and the run returns: the weight average, else the raw weights
    served = raw_model if ema is None else cast(PinnerFormer, ema.module)
    eval_every = cfg.eval_every or spe
    start = 0
    best: tuple[float, int, dict[str, torch.Tensor] | None] = (-math.inf, 0, None)
    if checkpoint_path is not None and checkpoint_path.exists():
        state = torch.load(checkpoint_path, map_location=device, weights_only=True)
        raw_model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if ema is not None and state.get("ema") is not None:  # else it starts at the resume
            ema.load_state_dict(state["ema"])
        start = int(state["step"])
        result.history = list(state["history"])
        result.validation = list(state.get("validation", []))
        if state.get("best") is not None:
            best = (state["best"]["score"], state["best"]["step"], state["best"]["model"])
        torch.set_rng_state(state["torch_rng"])
        log.info("resumed from %s at step %d", checkpoint_path, start)
    ddp_model: torch.nn.Module = raw_model
    if world > 1:
        ddp_model = DistributedDataParallel(
            raw_model, device_ids=[device.index] if device.type == "cuda" else None
        )
    amp = autocast(device, cfg.amp)
    catalog_emb = torch.from_numpy(sampler.catalog.embeddings).to(device)
    catalog_ids = torch.from_numpy(sampler.catalog.pin_ids).to(device)
    n_corpus = len(sampler.catalog)
    bce = loss_cfg.kind == "bce"
    catalog = not bce and loss_cfg.negatives == "catalog"  # the pool is every item, every step
    n_random = loss_cfg.n_random if loss_cfg.negatives != "in_batch" else 0
    n_random = n_corpus if catalog else n_random
    rand_log_q = uniform_log_count(max(1, n_random), n_corpus)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    # Rank r draws the batches of "virtual step" step*world + r, so ranks never share a batch.
    ddp_model.train()
    t0, seqs = time.perf_counter(), 0
    last = n_steps if stop_after is None else min(n_steps, stop_after)
    step = start
    stop_reason = "schedule"
    schedule = n_steps  # shortened to fit `max_minutes` (`fitted_schedule`)
    while step < last:
        lr = lr_at(step, cfg, schedule)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = sampler.batch(step * world + rank, cfg.batch_size)
        seq = batch.seq.to(device)
        g = torch.Generator(device="cpu").manual_seed(cfg.seed * 1_000_003 + step * world + rank)
        pin_row = batch.pin_row.to(device)
        n_pos = len(pin_row)
        n_draw = n_pos if bce else n_random  # BCE: one negative per pair
        if catalog:  # embed the catalogue once; the positives are rows of it
            item_content, item_ids, rand_ids = catalog_emb, catalog_ids, catalog_ids
        else:
            rand_rows = torch.randint(n_corpus, (n_draw,), generator=g).to(device)
            item_rows = torch.cat([pin_row, rand_rows])
            item_content, item_ids = catalog_emb[item_rows], catalog_ids[item_rows]
            rand_ids = catalog_ids[rand_rows]
        in_batch_size = min(loss_cfg.in_batch_cap, n_pos * world)
        pos_log_q = torch.from_numpy(
            sketch.expected_count_log(batch.pin_id.numpy(), max(1, in_batch_size))
        ).to(device)
        with amp:
            user_emb, item_emb = ddp_model(
                seq,
                batch.pair_b.to(device),
                batch.pair_pos.to(device),
                item_content,
                item_ids,
            )
        temperature = raw_model.temperature(loss_cfg.min_temperature)
        pos_emb, rand_emb = (
            (item_emb[pin_row], item_emb) if catalog else item_emb.split([n_pos, n_draw])
        )
        positives = Candidates(
            pos_emb.float(), batch.pin_id.to(device), batch.user_id.to(device), pos_log_q
        )
        random_negs = Candidates(
            rand_emb.float(),
            rand_ids,
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
                amp_dtype(device, cfg.amp),
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
        opt.step()
        if ema is not None:
            ema.update_parameters(raw_model)
        seqs += len(batch.seq.lengths) * world
        step += 1
        elapsed = time.perf_counter() - t0
        if _is_rank0() and (step % cfg.log_every == 0 or step == n_steps):
            row = {
                "step": float(step),
                "epoch": step / spe,
                "loss": float(loss.item()),
                "lr": lr,
                "temperature": float(temperature.item()),
                "grad_norm": float(grad_norm.item()),
                "sequences_per_s": seqs / elapsed,
            }
            result.history.append(row)
            eta = (last - step) * elapsed / max(1, step - start)
            log.info(
                "step %d/%d (epoch %.1f) loss %.4f lr %.2e tau %.3f %.0f seq/s eta %.0fs",
                step,
                n_steps,
                row["epoch"],
                row["loss"],
                lr,
                row["temperature"],
                row["sequences_per_s"],
                eta,
            )
        # Under DDP rank 0's clock decides for every rank: a rank that stopped alone would leave
        # the others waiting in the next gradient all-reduce.
        out_of_time = deadline is not None and bool(
            _from_rank0(int(time.monotonic() > deadline), device)
        )
        scorer = validate if (step % eval_every == 0 or step == last or out_of_time) else None
        if scorer is not None:
            ddp_model.eval()
            served.eval()
            score = float(scorer(served))
            served.train()
            ddp_model.train()
            result.validation.append({"step": float(step), "epoch": step / spe, "score": score})
            if score > best[0]:
                state_copy = {k: v.detach().clone() for k, v in served.state_dict().items()}
                best = (score, step, state_copy)
            if _is_rank0():
                log.info(
                    "epoch %.1f step %d validation %.4f (best %.4f at step %d)",
                    step / spe,
                    step,
                    score,
                    best[0],
                    best[1],
                )
            if (step - best[1]) >= cfg.patience * eval_every:
                stop_reason = "early_stopping"
                break
        if deadline is not None and (scorer is not None or step % cfg.log_every == 0):
            schedule = _from_rank0(  # after a validation, so its cost counts in the pace
                fitted_schedule(step, start, time.perf_counter() - t0, deadline, n_steps), device
            )
        if out_of_time:
            stop_reason = "max_minutes"
            break
        if (
            checkpoint_path is not None
            and _is_rank0()
            and (step % cfg.checkpoint_every == 0 or step == n_steps)
        ):
            save_checkpoint(
                checkpoint_path,
                raw_model,
                opt,
                step,
                result.history,
                {
                    "validation": result.validation,
                    "best": _best_state(best),
                    "ema": None if ema is None else ema.state_dict(),
                },
            )
    if best[2] is not None:
        raw_model.load_state_dict(best[2])
        result.best_step, result.best_score = best[1], best[0]
    elif ema is not None:
        raw_model.load_state_dict(ema.module.state_dict())
    result.steps = step
    result.stop_reason = stop_reason
    result.seconds = time.perf_counter() - t0
    result.sequences_per_s = seqs / result.seconds if result.seconds > 0 and seqs else 0.0
    raw_model.eval()
    return result


def _best_state(best: tuple[float, int, dict[str, torch.Tensor] | None]) -> dict[str, Any] | None:
    if best[2] is None:
        return None
    return {"score": best[0], "step": best[1], "model": best[2]}


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

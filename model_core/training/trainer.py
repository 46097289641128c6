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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.optim.swa_utils import AveragedModel

from model_core.model.pinnerformer import PinnerFormer
from model_core.training.checkpoint import save_checkpoint
from model_core.training.config import TrainConfig, TrainResult, resolve_device, seed_everything
from model_core.training.distributed import from_rank0, is_rank0, world
from model_core.training.loss import LossConfig
from model_core.training.sampler import SequenceSampler
from model_core.training.schedule import fitted_schedule, lr_at
from model_core.training.sketch import CountMinSketch
from model_core.training.step import StepLoss, StepOutput
from model_core.training.weight_average import averaged

log = logging.getLogger(__name__)


def total_steps(cfg: TrainConfig, sampler: SequenceSampler, world: int = 1) -> int:
    """The run's length in optimizer steps: `epochs` passes over the sequences, else `steps`."""
    if cfg.epochs is None:
        return cfg.steps
    return max(1, math.ceil(cfg.epochs * sampler.steps_per_epoch(cfg.batch_size) / world))


def optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over `param_groups`. fused: one kernel over every parameter (CPU and CUDA); the
    default on a CPU steps one tensor at a time: 23 ms against 2.7 ms a step for a 50k-row id
    table and a small tower."""
    groups = param_groups(model, cfg.weight_decay)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)


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


@dataclass
class Best:
    """The best validation score so far, its step and the served weights at that step."""

    score: float = -math.inf
    step: int = 0
    state: dict[str, torch.Tensor] | None = None

    def offer(self, score: float, step: int, model: torch.nn.Module) -> None:
        if score > self.score:
            state = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.score, self.step, self.state = score, step, state

    def to_checkpoint(self) -> dict[str, Any] | None:
        if self.state is None:
            return None
        return {"score": self.score, "step": self.step, "model": self.state}


def _resume(
    path: Path,
    device: torch.device,
    model: PinnerFormer,
    opt: torch.optim.Optimizer,
    ema: AveragedModel | None,
    result: TrainResult,
    best: Best,
) -> int:
    """Load a checkpoint into the run's state; returns its step."""
    state = torch.load(path, map_location=device, weights_only=True)
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    if ema is not None and state.get("ema") is not None:  # else it starts at the resume
        ema.load_state_dict(state["ema"])
    result.history = list(state["history"])
    result.validation = list(state.get("validation", []))
    if state.get("best") is not None:
        best.score, best.step = state["best"]["score"], state["best"]["step"]
        best.state = state["best"]["model"]
    torch.set_rng_state(state["torch_rng"])
    log.info("resumed from %s at step %d", path, int(state["step"]))
    return int(state["step"])


def _log_row(
    step: int, spe: int, out: Any, lr: float, grad_norm: torch.Tensor, seq_per_s: float
) -> dict[str, float]:
    return {
        "step": float(step),
        "epoch": step / spe,
        "loss": float(out.loss.item()),
        "lr": lr,
        "temperature": float(out.temperature.item()),
        "grad_norm": float(grad_norm.item()),
        "sequences_per_s": seq_per_s,
    }


def _log_line(row: dict[str, float], n_steps: int, eta: float, deadline: float | None) -> None:
    if deadline is not None:  # a capped run ends at its deadline at the latest
        eta = min(eta, max(0.0, deadline - time.monotonic()))
    log.info(
        "step %d/%d (epoch %.1f) loss %.4f lr %.2e tau %.3f %.0f seq/s eta %.0fs",
        *(row["step"], n_steps, row["epoch"], row["loss"], row["lr"], row["temperature"]),
        *(row["sequences_per_s"], eta),
    )


def _ddp(model: PinnerFormer, device: torch.device, n_ranks: int) -> torch.nn.Module:
    """The model as the steps call it: wrapped in DistributedDataParallel under several ranks."""
    if n_ranks == 1:
        return model
    return DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None
    )


def _validate(
    scorer: Callable[[PinnerFormer], float],
    models: tuple[torch.nn.Module, PinnerFormer],
    step: int,
    spe: int,
    result: TrainResult,
    best: Best,
) -> None:
    """Score the served weights (`models`: the training module, the served one) and keep the
    best; every rank scores the identical model, so every rank decides alike."""
    ddp_model, served = models
    ddp_model.eval()
    served.eval()
    score = float(scorer(served))
    served.train()
    ddp_model.train()
    result.validation.append({"step": float(step), "epoch": step / spe, "score": score})
    best.offer(score, step, served)
    if is_rank0():
        log.info(
            "epoch %.1f step %d validation %.4f (best %.4f at step %d)",
            step / spe,
            step,
            score,
            best.score,
            best.step,
        )


def _rank_device(name: str, n_ranks: int) -> torch.device:
    """The device this rank trains on: under DDP on CUDA, its LOCAL_RANK's GPU."""
    device = resolve_device(name)
    if device.type == "cuda" and n_ranks > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return device


def _checkpoint(
    path: Path,
    state: tuple[PinnerFormer, torch.optim.Optimizer, torch.nn.Module | None],
    step: int,
    result: TrainResult,
    best: Best,
) -> None:
    model, opt, ema = state
    extra = {
        "validation": result.validation,
        "best": best.to_checkpoint(),
        "ema": None if ema is None else ema.state_dict(),
    }
    save_checkpoint(path, model, opt, step, result.history, extra)


def _keep_served(
    model: PinnerFormer, ema: AveragedModel | None, best: Best, result: TrainResult
) -> None:
    """Leave in `model` what the run serves: the best validated weights, else the average."""
    if best.state is not None:
        model.load_state_dict(best.state)
        result.best_step, result.best_score = best.step, best.score
    elif ema is not None:
        model.load_state_dict(ema.module.state_dict())


def _update(
    step_loss: StepLoss,
    models: tuple[torch.nn.Module, PinnerFormer],
    opt: torch.optim.Optimizer,
    ema: AveragedModel | None,
    step: int,
    lr: float,
    cfg: TrainConfig,
) -> tuple[StepOutput, torch.Tensor]:
    """One optimizer step at learning rate `lr` on (the DDP wrapper or the model, the model):
    the step's loss, its gradients clipped, the update, the weight average. Returns the step's
    output and the gradient norm before clipping."""
    ddp_model, raw_model = models
    for group in opt.param_groups:
        group["lr"] = lr
    out = step_loss(ddp_model, raw_model, step)
    opt.zero_grad(set_to_none=True)
    out.loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(raw_model.parameters(), cfg.grad_clip)
    opt.step()
    if ema is not None:
        ema.update_parameters(raw_model)
    return out, grad_norm


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
    rank, n_ranks = world()
    device = _rank_device(cfg.device, n_ranks)
    seed_everything(cfg.seed + rank)
    raw_model = model.to(device)
    opt = optimizer(raw_model, cfg)
    result = TrainResult(device=str(device))
    n_steps = total_steps(cfg, sampler, n_ranks)
    spe = max(1, sampler.steps_per_epoch(cfg.batch_size) // n_ranks)
    ema = averaged(raw_model, cfg.ema_epochs * spe, n_steps)
    # what validation scores and the run returns: the weight average, else the raw weights
    served = raw_model if ema is None else cast(PinnerFormer, ema.module)
    eval_every = cfg.eval_every or spe
    best = Best()
    start = 0
    if checkpoint_path is not None and checkpoint_path.exists():
        start = _resume(checkpoint_path, device, raw_model, opt, ema, result, best)
    ddp_model = _ddp(raw_model, device, n_ranks)
    step_loss = StepLoss(sampler, sketch, loss_cfg, cfg, device, rank, n_ranks)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    ddp_model.train()
    t0, seqs = time.perf_counter(), 0
    last = n_steps if stop_after is None else min(n_steps, stop_after)
    step, stop_reason = start, "schedule"
    schedule = n_steps  # shortened to fit `max_minutes` (`fitted_schedule`)
    while step < last:
        lr = lr_at(step, cfg, schedule)
        out, grad_norm = _update(step_loss, (ddp_model, raw_model), opt, ema, step, lr, cfg)
        seqs += out.sequences * n_ranks
        step += 1
        elapsed = time.perf_counter() - t0
        if is_rank0() and (step % cfg.log_every == 0 or step == n_steps):
            row = _log_row(step, spe, out, lr, grad_norm, seqs / elapsed)
            result.history.append(row)
            eta = (last - step) * elapsed / max(1, step - start)
            _log_line(row, n_steps, eta, deadline)
        # Under DDP rank 0's clock decides for every rank: a rank that stopped alone would leave
        # the others waiting in the next gradient all-reduce.
        out_of_time = deadline is not None and bool(
            from_rank0(int(time.monotonic() > deadline), device)
        )
        scorer = validate if (step % eval_every == 0 or step == last or out_of_time) else None
        if scorer is not None:
            _validate(scorer, (ddp_model, served), step, spe, result, best)
            if (step - best.step) >= cfg.patience * eval_every:
                stop_reason = "early_stopping"
                break
        if deadline is not None and (scorer is not None or step % cfg.log_every == 0):
            schedule = from_rank0(  # after a validation, so its cost counts in the pace
                fitted_schedule(step, start, time.perf_counter() - t0, deadline, n_steps), device
            )
        if out_of_time:
            stop_reason = "max_minutes"
            break
        save = step % cfg.checkpoint_every == 0 or step == n_steps
        if checkpoint_path is not None and is_rank0() and save:
            _checkpoint(checkpoint_path, (raw_model, opt, ema), step, result, best)
    _keep_served(raw_model, ema, best, result)
    result.steps, result.stop_reason = step, stop_reason
    result.seconds = time.perf_counter() - t0
    result.sequences_per_s = seqs / result.seconds if result.seconds > 0 and seqs else 0.0
    raw_model.eval()
    return result

"""The learning-rate schedule: linear warmup then cosine decay, a pure function of the step, and
the schedule length that fits a wall-clock cap (`model_core.training.trainer`)."""

from __future__ import annotations

import math
import time

from model_core.training.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig, total_steps: int | None = None) -> float:
    """Linear warmup to cfg.lr over cfg.warmup_fraction of the run, then cosine decay to
    cfg.lr * cfg.min_lr_ratio at the last step (`total_steps`, default cfg.steps)."""
    total = total_steps or cfg.steps
    warmup = max(1, round(cfg.warmup_fraction * total))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1 + math.cos(math.pi * progress))


def fitted_schedule(step: int, start: int, elapsed: float, deadline: float, n_steps: int) -> int:
    """The schedule length that ends at the deadline at the pace of the run so far (`elapsed`
    seconds for `step - start` steps, validation included), at most `n_steps`."""
    pace = (step - start) / max(elapsed, 1e-9)  # steps per second
    projected = step + int(pace * max(0.0, deadline - time.monotonic()))
    return max(step + 1, min(n_steps, projected))

"""An exponential moving average of a model's weights (beyond the paper): what the trainer
validates, early-stops on and returns (`TrainConfig.ema_epochs`). On small public logs validation
peaks within a few epochs and falls after; the average holds the peak longer and higher."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

EMA_MAX_RUN_SHARE = 0.1  # the weight average's memory is at most this share of the run's steps


def averaged(model: torch.nn.Module, memory_steps: float, run_steps: int) -> AveragedModel | None:
    """An exponential moving average of `model`'s weights with a memory of `memory_steps`, at
    most EMA_MAX_RUN_SHARE of the run's `run_steps` (decay 1 - 1 / memory per step; a short run
    averaged over most of its length would serve half-trained weights); None when 0. Its first
    update copies the weights, so early steps are not pulled towards the initialisation."""
    if not memory_steps:
        return None
    decay = 1.0 - 1.0 / max(1.0, min(memory_steps, EMA_MAX_RUN_SHARE * run_steps))
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay))

"""Checkpoints: an atomic write of everything a resumed run needs to continue exactly."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from model_core.model.pinnerformer import PinnerFormer


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

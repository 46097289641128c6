"""What a training run is told and what it reports: `TrainConfig`, `TrainResult`, and the one idiom
for device and bf16 autocast (nanoGPT's `nullcontext()` on fp32, `torch.autocast` otherwise)."""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
import types
import typing
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

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
    # bf16 autocast: "auto" = on CUDA only; "on" also on a CPU that has bf16 matrix units (AMX /
    # AVX512-BF16; elsewhere fp32, with a warning: `amp_dtype`); "off" = fp32 everywhere.
    amp: Literal["auto", "on", "off"] = "auto"
    eval_every: int = 0  # steps between validation scores; 0 = once per epoch
    patience: int = 3  # validation scores without improvement before stopping
    max_minutes: float | None = None  # wall-clock cap on the training loop
    log_every: int = 100
    checkpoint_every: int = 500


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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@functools.cache
def cpu_bf16_units() -> bool:
    """Whether this CPU has bf16 matrix units (AMX or AVX512-BF16), from /proc/cpuinfo; False
    where it cannot tell. Without them (AVX2 only) a bf16 matmul runs at a small fraction of
    fp32's speed, so bf16 autocast would slow training down several times."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return re.search(r"\b(amx_bf16|avx512_bf16)\b", flags) is not None


@functools.cache
def _warn_no_bf16_units() -> None:
    log.warning(
        "bf16 autocast was asked for on a CPU without bf16 matrix units (no AMX, no "
        "AVX512-BF16): training in fp32 instead, which is faster there"
    )


def amp_dtype(device: torch.device, amp: str) -> torch.dtype:
    """The matmul dtype per `TrainConfig.amp`: bf16 when autocast is on (on a CPU only where it
    has bf16 matrix units, else fp32 with one warning), else fp32."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return torch.float32
    if device.type == "cpu" and not cpu_bf16_units():
        _warn_no_bf16_units()
        return torch.float32
    return torch.bfloat16


def autocast(device: torch.device, amp: str) -> AbstractContextManager[Any]:
    """bf16 autocast per `TrainConfig.amp`, or a no-op."""
    if amp_dtype(device, amp) == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def config_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Rebuild a (nested, frozen) config dataclass from `dataclasses.asdict` output: nested
    dataclass fields recurse, JSON lists become tuples where the field is a tuple."""
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue  # a field added since the job was written keeps its default
        kwargs[f.name] = _coerce(hints[f.name], data[f.name])
    return cls(**kwargs)


def _coerce(tp: Any, value: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return value if value is None or len(args) != 1 else _coerce(args[0], value)
    if dataclasses.is_dataclass(tp) and isinstance(value, Mapping):
        return config_from_dict(tp, value)  # type: ignore[arg-type]
    if origin is tuple and isinstance(value, list):
        return tuple(value)
    return value

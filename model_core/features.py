"""Per-action feature encoding (paper §3.1 and appendix A.1).

Every action i of a user becomes one vector a_i ∈ R^{D_in}, the concatenation of

- the item's content embedding (the paper's 256-d PinSage vector; any dimension here);
- a small learnable embedding of the action type and of the surface;
- log(duration);
- three time features, each encoded Time2vec-style with FIXED periods and a LEARNED phase:
  cos(2πt/p_i + φ_i), sin(2πt/p_i + φ_i) for every period p_i, plus log(t) — 2P+1 numbers:
    * the absolute timestamp (12 periods from 15 minutes to a year),
    * the time since the sequence's latest action,
    * the gap to the next action (0 for the latest action),
  the two relative ones with P_rel = 32 periods log-spaced from 1 second to 4 weeks.

Sequences are RIGHT-padded: positions [0, length) hold actions oldest → newest. Vocabulary index 0
is reserved for padding; out-of-vocabulary rows are dropped (and counted) before they get here, see
`model_core.timelines`.

The two relative time features are, by the paper's definition, functions of LATER timestamps in the
window (the latest action's time, the next action's time). An intermediate position therefore knows
when the sequence continues; `use_relative_time=False` turns them off for ablations and for strictly
causal features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

HOUR = 3600.0
DAY = 86400.0
# A.1: 0.25h, 0.5h, 0.75h, 1h, 2h, 4h, 8h, 16h, 1d, 7d, 28d, 365d.
ABSOLUTE_PERIODS_S: tuple[float, ...] = tuple(
    h * HOUR for h in (0.25, 0.5, 0.75, 1, 2, 4, 8, 16)
) + tuple(d * DAY for d in (1, 7, 28, 365))


def relative_periods(n: int = 32, lo_s: float = 1.0, hi_s: float = 28 * DAY) -> tuple[float, ...]:
    """A.1: P_rel periods evenly spaced on a log scale from `lo_s` to `hi_s` seconds."""
    return tuple(float(p) for p in np.geomspace(lo_s, hi_s, n))


@dataclass(frozen=True)
class FeatureConfig:
    """What goes into a_i. The defaults follow the paper; the `use_*` flags serve the ablations."""

    content_dim: int = 32  # width of the item content embedding; 256 for PinSage in the paper
    action_types: tuple[str, ...] = ("repin", "closeup", "click", "hide")  # vocab, order = index-1
    surfaces: tuple[str, ...] = ("home_feed", "search", "related")
    type_dim: int = 8  # "small learnable embedding tables": a handful of values needs few dims
    surface_dim: int = 8
    n_relative_periods: int = 32  # A.1
    use_content: bool = True
    use_action_type: bool = True
    use_surface: bool = True
    use_duration: bool = True
    use_absolute_time: bool = True
    use_relative_time: bool = True

    @property
    def time_dim(self) -> int:
        return 2 * len(ABSOLUTE_PERIODS_S) + 1

    @property
    def relative_time_dim(self) -> int:
        return 2 * self.n_relative_periods + 1

    @property
    def input_dim(self) -> int:
        """D_in, the width of a_i."""
        return (
            self.content_dim * self.use_content
            + self.type_dim * self.use_action_type
            + self.surface_dim * self.use_surface
            + 1 * self.use_duration
            + self.time_dim * self.use_absolute_time
            + 2 * self.relative_time_dim * self.use_relative_time
        )


class Time2Vec(nn.Module):
    """Fixed periods, learned phase (A.1): t [..] seconds → [.., 2P+1] float32.

    t is int64 or float64 seconds. The phase 2π·(t mod p)/p is reduced in float64 before casting,
    so absolute Unix timestamps (~1.7e9 s) keep sub-second resolution even for a 15-minute period.
    """

    periods: torch.Tensor

    def __init__(self, periods_s: tuple[float, ...]) -> None:
        super().__init__()
        self.register_buffer(
            "periods", torch.tensor(periods_s, dtype=torch.float64), persistent=False
        )
        self.phase = nn.Parameter(torch.zeros(len(periods_s)))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t64 = t.to(torch.float64).clamp_min(0.0).unsqueeze(-1)  # (.., 1)
        frac = (torch.remainder(t64, self.periods) / self.periods).to(torch.float32)  # (.., P)
        angle = 2 * math.pi * frac + self.phase
        log_t = torch.log1p(t64).to(torch.float32)
        return torch.cat([torch.cos(angle), torch.sin(angle), log_t], dim=-1)


@dataclass
class SeqBatch:
    """A batch of right-padded action sequences.

    content:  [B, M, C] float32   item content embeddings (zeros at padding)
    action:   [B, M] int64        action-type index, 0 = padding
    surface:  [B, M] int64        surface index, 0 = padding
    duration: [B, M] float32      seconds, >= 0
    ts:       [B, M] int64        Unix seconds, non-decreasing over the valid prefix
    lengths:  [B] int64           number of valid positions, 1 <= length <= M
    """

    content: torch.Tensor
    action: torch.Tensor
    surface: torch.Tensor
    duration: torch.Tensor
    ts: torch.Tensor
    lengths: torch.Tensor

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(
            *(
                getattr(self, f).to(device, non_blocking=True)
                for f in ("content", "action", "surface", "duration", "ts", "lengths")
            )
        )

    @property
    def valid(self) -> torch.Tensor:
        """[B, M] bool, True at real actions."""
        positions = torch.arange(self.ts.shape[1], device=self.ts.device)
        return positions.unsqueeze(0) < self.lengths.unsqueeze(1)


class ActionEncoder(nn.Module):
    """SeqBatch → a: [B, M, D_in] float32 (zeros at padding)."""

    def __init__(self, config: FeatureConfig) -> None:
        super().__init__()
        self.config = config
        self.action_emb = nn.Embedding(len(config.action_types) + 1, config.type_dim, padding_idx=0)
        self.surface_emb = nn.Embedding(len(config.surfaces) + 1, config.surface_dim, padding_idx=0)
        self.abs_time = Time2Vec(ABSOLUTE_PERIODS_S)
        rel = relative_periods(config.n_relative_periods)
        self.since_latest = Time2Vec(rel)
        self.gap_next = Time2Vec(rel)

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        cfg = self.config
        B, M = batch.ts.shape
        assert batch.content.shape == (B, M, cfg.content_dim), (
            f"content must be [B, M, {cfg.content_dim}], got {tuple(batch.content.shape)}"
        )
        assert bool((batch.lengths >= 1).all()), "every sequence needs at least one action"
        assert bool((batch.lengths <= M).all()), "lengths must not exceed the padded width M"
        valid = batch.valid
        ts = torch.where(valid, batch.ts, torch.zeros_like(batch.ts))
        parts: list[torch.Tensor] = []
        if cfg.use_content:
            parts.append(batch.content)
        if cfg.use_action_type:
            parts.append(self.action_emb(batch.action))
        if cfg.use_surface:
            parts.append(self.surface_emb(batch.surface))
        if cfg.use_duration:
            parts.append(torch.log1p(batch.duration.clamp_min(0.0)).unsqueeze(-1))
        if cfg.use_absolute_time:
            parts.append(self.abs_time(ts))
        if cfg.use_relative_time:
            latest = ts.gather(1, (batch.lengths - 1).unsqueeze(1))  # (B, 1)
            since_latest = (latest - ts).clamp_min(0)
            gap = torch.zeros_like(ts)
            gap[:, :-1] = ts[:, 1:] - ts[:, :-1]
            has_next = torch.arange(M, device=ts.device).unsqueeze(0) < (
                batch.lengths - 1
            ).unsqueeze(1)
            gap = torch.where(has_next, gap, torch.zeros_like(gap)).clamp_min(0)
            parts.append(self.since_latest(since_latest))
            parts.append(self.gap_next(gap))
        a = torch.cat(parts, dim=-1)  # (B, M, D_in)
        return a * valid.unsqueeze(-1).to(a.dtype)

"""Per-action feature encoding (paper §3.1 and appendix A.1).

Every action i of a user becomes one vector a_i ∈ R^{D_in}, the concatenation of

- the item's content embedding (the paper's 256-d PinSage vector; any dimension here);
- a small learnable embedding of the action type and of the surface;
- log(duration);
- three time features, each encoded Time2vec-style with FIXED periods and a LEARNED phase:
  cos(2πt/p_i + φ_i), sin(2πt/p_i + φ_i) for every period p_i, plus log(t) — 2P+1 numbers:
    * the absolute timestamp (12 periods from 15 minutes to a year),
    * the time since the sequence's latest action,
    * the gap to the PREVIOUS action (0 for the oldest): A.1 lists actions newest first, so its
      "gap to the next action" is the time back to the one before,
  the two relative ones with P_rel = 32 periods log-spaced from 1 second to 4 weeks;
- beyond the paper, when the model learns item ids: the item's id embedding (shared with the pin
  tower, `model_core.features.item_ids`).

Scale: the groups differ wildly in energy (log of a Unix time is ~21 while a content vector has
norm ~1), so the log term of each Time2vec is divided by the log of its longest period and every
multi-dimensional group gets its own LayerNorm before the concatenation; the model's input
projection then sees each group at a comparable scale (`normalise_groups=False` is the paper's plain
concatenation).

Sequences are RIGHT-padded: positions [0, length) hold actions oldest → newest. Vocabulary index 0
is reserved for padding; out-of-vocabulary rows are dropped (and counted) before they get here, see
`model_core.data.timelines`.

 The time since the latest action is a function of a
LATER timestamp in the window: an intermediate position knows when the sequence continues;
`use_relative_time=False` turns both off for ablations and for strictly causal features.
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
    normalise_groups: bool = True  # LayerNorm per group; False = the paper's plain concatenation

    @property
    def time_dim(self) -> int:
        return 2 * len(ABSOLUTE_PERIODS_S) + 1

    @property
    def relative_time_dim(self) -> int:
        return 2 * self.n_relative_periods + 1

    def group_dims(self, item_id_dim: int = 0) -> dict[str, int]:
        """Width of every feature group in a_i, in concatenation order (0 = off)."""
        dims = {
            "content": self.content_dim * self.use_content,
            "item_id": item_id_dim,
            "action_type": self.type_dim * self.use_action_type,
            "surface": self.surface_dim * self.use_surface,
            "duration": 1 * self.use_duration,
            "absolute_time": self.time_dim * self.use_absolute_time,
            "since_latest": self.relative_time_dim * self.use_relative_time,
            "gap_prev": self.relative_time_dim * self.use_relative_time,
        }
        return {k: v for k, v in dims.items() if v}

    def input_dim(self, item_id_dim: int = 0) -> int:
        """D_in, the width of a_i."""
        return sum(self.group_dims(item_id_dim).values())


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
        # log(t) over log(longest period): ~1 over the range the periods cover, not ~21 for a
        # Unix time, so the log term does not drown the 2P bounded ones.
        self.log_scale = 1.0 / math.log1p(max(periods_s))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        t64 = t.to(torch.float64).clamp_min(0.0).unsqueeze(-1)  # (.., 1)
        frac = (torch.remainder(t64, self.periods) / self.periods).to(torch.float32)  # (.., P)
        angle = 2 * math.pi * frac + self.phase
        log_t = (torch.log1p(t64) * self.log_scale).to(torch.float32)
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
    pin_id:   [B, M] int64        item ids (any value at padding); needed when ids are learned
    """

    content: torch.Tensor
    action: torch.Tensor
    surface: torch.Tensor
    duration: torch.Tensor
    ts: torch.Tensor
    lengths: torch.Tensor
    pin_id: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> SeqBatch:
        def move(t: torch.Tensor) -> torch.Tensor:
            return t.to(device, non_blocking=True)

        return SeqBatch(
            content=move(self.content),
            action=move(self.action),
            surface=move(self.surface),
            duration=move(self.duration),
            ts=move(self.ts),
            lengths=move(self.lengths),
            pin_id=None if self.pin_id is None else move(self.pin_id),
        )

    @property
    def valid(self) -> torch.Tensor:
        """[B, M] bool, True at real actions."""
        positions = torch.arange(self.ts.shape[1], device=self.ts.device)
        return positions.unsqueeze(0) < self.lengths.unsqueeze(1)

    @property
    def tokens(self) -> torch.Tensor:
        """[T] int64: the real actions' flat positions b·M + i, ascending (so the action at
        (b, i) is the (cumsum(lengths)[b] - lengths[b] + i)-th)."""
        return self.valid.flatten().nonzero().squeeze(1)


def pad_rows(x: torch.Tensor, tokens: torch.Tensor, n: int) -> torch.Tensor:
    """[T, F] packed rows → [n, F], row tokens[t] = x[t] and zeros elsewhere (an index_put:
    index_copy's CPU backward is ~15x slower)."""
    out = x.new_zeros(n, x.shape[-1])
    out[tokens] = x
    return out


class ActionEncoder(nn.Module):
    """SeqBatch (+ item-id embeddings) → a_i ∈ R^{D_in} for every real action: `encode` gives
    them packed ([T, D_in], what the user tower runs on), `forward` padded ([B, M, D_in], zeros
    at padding)."""

    def __init__(self, config: FeatureConfig, item_id_dim: int = 0) -> None:
        super().__init__()
        self.config = config
        self.item_id_dim = item_id_dim
        self.action_emb = nn.Embedding(len(config.action_types) + 1, config.type_dim, padding_idx=0)
        self.surface_emb = nn.Embedding(len(config.surfaces) + 1, config.surface_dim, padding_idx=0)
        self.abs_time = Time2Vec(ABSOLUTE_PERIODS_S)
        rel = relative_periods(config.n_relative_periods)
        self.since_latest = Time2Vec(rel)
        self.gap_prev = Time2Vec(rel)
        dims = config.group_dims(item_id_dim)
        self.norms = nn.ModuleDict(
            {g: nn.LayerNorm(d) for g, d in dims.items() if d > 1 and config.normalise_groups}
        )

    def forward(self, batch: SeqBatch, item_id_emb: torch.Tensor | None = None) -> torch.Tensor:
        """[B, M, D_in], zeros at padding; item_id_emb: [B, M, item_id_dim]."""
        B, M = batch.ts.shape
        tokens = batch.tokens
        ids = None if item_id_emb is None else item_id_emb.flatten(0, 1)[tokens]
        return pad_rows(self.encode(batch, tokens, ids), tokens, B * M).view(B, M, -1)

    def encode(
        self, batch: SeqBatch, tokens: torch.Tensor, item_id_emb: torch.Tensor | None = None
    ) -> torch.Tensor:
        """[T, D_in]: the real actions only, at flat positions `tokens` ([T] int64 indices into
        B·M, `SeqBatch.tokens`); item_id_emb: [T, item_id_dim], theirs. The time features read
        each action's window ([B, M]); everything per action runs on the T real ones."""
        cfg = self.config
        B, M = batch.ts.shape
        assert batch.content.shape == (B, M, cfg.content_dim), (
            f"content must be [B, M, {cfg.content_dim}], got {tuple(batch.content.shape)}"
        )
        assert bool((batch.lengths >= 1).all()), "every sequence needs at least one action"
        assert bool((batch.lengths <= M).all()), "lengths must not exceed the padded width M"
        assert (item_id_emb is not None) == (self.item_id_dim > 0), (
            "pass item_id_emb [T, item_id_dim] exactly when the encoder was built with ids"
        )

        def real(t: torch.Tensor) -> torch.Tensor:
            return t.flatten(0, 1)[tokens]

        parts: dict[str, torch.Tensor] = {}
        if cfg.use_content:
            parts["content"] = real(batch.content)
        if item_id_emb is not None:
            parts["item_id"] = item_id_emb
        if cfg.use_action_type:
            parts["action_type"] = self.action_emb(real(batch.action))
        if cfg.use_surface:
            parts["surface"] = self.surface_emb(real(batch.surface))
        if cfg.use_duration:
            # log(1 + seconds) / log(1 + 1 hour): ~[0, 1] for dwell times that matter
            parts["duration"] = (
                torch.log1p(real(batch.duration).clamp_min(0.0)) / math.log1p(HOUR)
            ).unsqueeze(-1)
        ts = batch.ts
        if cfg.use_absolute_time:
            parts["absolute_time"] = self.abs_time(real(ts))
        if cfg.use_relative_time:
            latest = ts.gather(1, (batch.lengths - 1).unsqueeze(1))  # (B, 1)
            gap = torch.zeros_like(ts)
            gap[:, 1:] = ts[:, 1:] - ts[:, :-1]  # time since the previous action; 0 for the oldest
            parts["since_latest"] = self.since_latest(real(latest - ts).clamp_min(0))
            parts["gap_prev"] = self.gap_prev(real(gap).clamp_min(0))
        return torch.cat(
            [self.norms[g](x) if g in self.norms else x for g, x in parts.items()], dim=-1
        )  # (T, D_in)

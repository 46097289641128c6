"""Reference SASRec (Kang & McAuley, ICDM 2018): the baseline PinnerFormer must beat.

A faithful re-implementation of the original recipe, so that comparisons are against SASRec as the
field runs it, not against our SASRec-objective PinnerFormer:

- item-id embeddings only (d = 50, scaled by sqrt(d)), learnable positions, embedding dropout;
- 2 blocks, 1 head: Q = LN(x); x = Q + MHA(Q, x, x) with a causal mask; x = LN(x);
  x = x + FFN(x) (two pointwise layers with ReLU and dropout); a final LayerNorm;
- sequences LEFT-padded so the newest item always sits in the last slot (its position embedding
  is the same for every user), padding zeroed after every block;
- scores are dot products with the SAME item table (tied input / output embeddings);
- Adam (lr 1e-3, β = (0.9, 0.98)), batch 128, dropout 0.2, max length 200 on MovieLens and 50 on
  sparse logs; one training sequence per user per epoch (their latest `max_len` + 1 items).

Two losses on the same network (`SASRecConfig.loss`):

- "bce": the original — every position's next item against ONE uniformly drawn negative the user
  never interacted with, binary cross-entropy;
- "ce": full softmax cross-entropy over the whole catalogue at every position (Klenitskiy &
  Vasilev, "Turning Dross Into Gold Loss: is BERT4Rec really better than SASRec?", RecSys 2023).

Deviations, on purpose: a position's label is the user's NEXT POSITIVE action (the evaluation's
target is a positive), with every action as input — on logs where every action is positive
(Amazon) that is exactly the next item; training stops early on the validation split like every
other model here (`model_core.training.validation`), instead of a fixed epoch count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

from model_core.data.timelines import PinCatalog, Timelines


@dataclass(frozen=True)
class SASRecConfig:
    loss: Literal["bce", "ce"] = "bce"  # "bce" = the original; "ce" = full cross-entropy
    hidden: int = 50  # d in the SASRec paper
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.2
    max_len: int = 200  # 200 on MovieLens, 50 on sparse logs (Amazon)
    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.98)
    batch_size: int = 128
    max_epochs: int = 200
    eval_every_epochs: int = 1  # validation cadence for early stopping
    patience: int = 5  # validation scores without improvement before stopping
    max_minutes: float | None = None
    seed: int = 0
    log_every_epochs: int = 5
    # The training affordances PinnerFormer gets (`model_core.training.reference`): warmup +
    # cosine learning rate fitted to max_minutes, validation and the result on a moving average
    # of the weights over ema_epochs epochs. False: the original recipe (constant lr, raw weights).
    affordances: bool = True
    ema_epochs: float = 1.8


class PointWiseFeedForward(nn.Module):
    def __init__(self, d: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(d, d), nn.Dropout(dropout), nn.ReLU(), nn.Linear(d, d), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class SASRec(nn.Module):
    """item rows [B, L] int64 (catalogue row + 1, 0 = padding, left-padded) → [B, L, d]."""

    def __init__(self, n_items: int, cfg: SASRecConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.hidden
        self.item_emb = nn.Embedding(n_items + 1, d, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, d)
        self.emb_drop = nn.Dropout(cfg.dropout)
        self.attn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.n_blocks))
        self.attns = nn.ModuleList(
            nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
            for _ in range(cfg.n_blocks)
        )
        self.ffn_norms = nn.ModuleList(nn.LayerNorm(d, eps=1e-8) for _ in range(cfg.n_blocks))
        self.ffns = nn.ModuleList(PointWiseFeedForward(d, cfg.dropout) for _ in range(cfg.n_blocks))
        self.last_norm = nn.LayerNorm(d, eps=1e-8)
        for name, p in self.named_parameters():  # the reference implementation's init
            if p.dim() > 1 and "norm" not in name:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        B, L = items.shape
        assert L <= self.cfg.max_len, f"sequence length {L} > max_len {self.cfg.max_len}"
        keep = (items != 0).unsqueeze(-1).float()  # (B, L, 1)
        x = self.item_emb(items) * math.sqrt(self.cfg.hidden)
        x = x + self.pos_emb.weight[self.cfg.max_len - L :]  # newest item: the last position
        x = self.emb_drop(x) * keep
        causal = torch.ones(L, L, dtype=torch.bool, device=items.device).triu(1)  # True = hidden
        for attn_norm, attn, ffn_norm, ffn in zip(
            self.attn_norms, self.attns, self.ffn_norms, self.ffns, strict=True
        ):
            q = attn_norm(x)
            out, _ = attn(q, x, x, attn_mask=causal, need_weights=False)
            x = ffn(ffn_norm(q + out)) * keep
        return self.last_norm(x)  # (B, L, d)

    @torch.no_grad()
    def vectors(self, history: Timelines, catalog: PinCatalog) -> tuple[np.ndarray, np.ndarray]:
        """(users [U, d] = the output at each user's newest action, items [N catalogue rows, d])."""
        self.eval()
        ends = history.offsets[1:] - 1
        out = np.empty((len(ends), self.cfg.hidden), dtype=np.float32)
        for i in range(0, len(ends), 1024):
            items, _ = left_padded(history, ends[i : i + 1024], self.cfg.max_len)
            out[i : i + 1024] = self(torch.from_numpy(items))[:, -1].numpy()
        return out, self.item_emb.weight[1:].detach().numpy().copy()


def left_padded(tl: Timelines, ends: np.ndarray, max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The last `max_len` actions up to flat rows `ends` ([B]), LEFT-padded:
    (item index [B, L] = catalogue row + 1, 0 = padding; flat row [B, L], -1 = padding)."""
    owner = np.searchsorted(tl.offsets, ends, side="right") - 1
    starts = np.maximum(tl.offsets[owner], ends - max_len + 1)
    lengths = ends - starts + 1
    L = int(lengths.max()) if len(ends) else 1
    slot = np.arange(L)[None, :] - (L - lengths[:, None])  # (B, L) offset from the window start
    valid = slot >= 0
    rows = np.where(valid, starts[:, None] + slot, -1)
    items = np.where(valid, tl.pin_row[np.maximum(rows, 0)] + 1, 0)
    return items.astype(np.int64), rows

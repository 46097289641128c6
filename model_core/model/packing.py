"""Packed sequences: the user tower computes on a batch's real actions only.

A training batch holds B right-padded windows of width M. On public logs most of it is padding
(Amazon's reviews: ~90%; the synthetic world: ~55%), and every layer of the user tower but
attention is per action, so those layers run on the T real actions packed into [T, ...] rows.
Attention needs the windows; `causal_attention` re-pads them for the SDPA call only, in groups of
similar length (widths 8, 16, 32, ... up to M), so a short window is not padded to the batch's
longest: the attention FLOPs go as Σ n_g·w_g² instead of B·M². The computation is exact: with
right padding, a causal mask already hides every padded key from every real query.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model_core.features.actions import SeqBatch, pad_rows

SMALLEST_WIDTH = 8  # attention groups are 8, 16, 32, ... actions wide (the last one M)


@dataclass(frozen=True)
class Group:
    """Windows of similar length, padded to one width for attention.

    windows: [n] int64  the windows (rows of the batch) in the group
    rows:  [T_g] int64  their actions' rows among the T packed ones
    slots: [T_g] int64  the same actions' flat positions j·width + i in the group's [n, width]
    """

    windows: torch.Tensor
    rows: torch.Tensor
    slots: torch.Tensor
    n: int
    width: int


@dataclass(frozen=True)
class Packing:
    """Where a right-padded [B, M] batch's T real actions sit once packed into [T, ...].

    tokens: [T] int64  flat positions b·M + i of the real actions, ascending
    starts: [B] int64  where window b's first action sits among the T
    lengths: [B] int64 its number of actions
    shape:  (B, M)
    groups: the windows by length, for attention (`causal_attention`)
    """

    tokens: torch.Tensor
    starts: torch.Tensor
    lengths: torch.Tensor
    shape: tuple[int, int]
    groups: tuple[Group, ...]

    @staticmethod
    def of(batch: SeqBatch) -> Packing:
        lengths = batch.lengths
        B, M = batch.ts.shape
        starts = torch.cumsum(lengths, 0) - lengths
        groups, narrower = [], 0
        width = min(SMALLEST_WIDTH, M)
        while narrower < M:
            windows = ((lengths > narrower) & (lengths <= width)).nonzero().squeeze(1)
            if len(windows):
                offset = torch.arange(width, device=lengths.device)
                real = offset.unsqueeze(0) < lengths[windows].unsqueeze(1)  # (n, width)
                rows = (starts[windows].unsqueeze(1) + offset)[real]
                slots = real.flatten().nonzero().squeeze(1)
                groups.append(Group(windows, rows, slots, len(windows), width))
            narrower, width = width, min(2 * width, M)
        return Packing(batch.tokens, starts, lengths, (B, M), tuple(groups))

    @property
    def ends(self) -> torch.Tensor:
        """[B] int64: where each window's last action sits among the T."""
        return self.starts + self.lengths - 1

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """[T, F] → [B·M, F], zeros at padding."""
        return pad_rows(x, self.tokens, self.shape[0] * self.shape[1])


def causal_attention(qkv: torch.Tensor, packing: Packing, n_heads: int) -> torch.Tensor:
    """Multi-head causal self-attention within each window: qkv [T, 3H] packed → [T, H]."""
    T, H = qkv.shape[0], qkv.shape[1] // 3
    out = qkv.new_zeros(T, H)
    # index_select / index_copy rather than [rows] indexing: their backward is a gather or an
    # index_add, where advanced indexing's is a sorting index_put (rows never repeat here).
    for g in packing.groups:
        q, k, v = _padded_heads(qkv, g, n_heads)
        y = _sdpa(q, k, v)  # (n, heads, width, H / heads)
        y = y.transpose(1, 2).reshape(g.n * g.width, H).index_select(0, g.slots)
        out.index_copy_(0, g.rows, y.to(out.dtype))
    return out


def last_query_attention(qkv: torch.Tensor, packing: Packing, n_heads: int) -> torch.Tensor:
    """`causal_attention` at each window's last action only: qkv [T, 3H] packed → [B, H].

    The last action attends to every action of its window, so the keys need no causal mask, only
    one that hides the group's padding. A user embedding needs no other query
    (`UserTower.latest`)."""
    H = qkv.shape[1] // 3
    out = qkv.new_zeros(packing.shape[0], H)
    ends = packing.ends
    for g in packing.groups:
        _, k, v = _padded_heads(qkv, g, n_heads)
        q = qkv.index_select(0, ends[g.windows])[:, :H].view(g.n, n_heads, 1, H // n_heads)
        real = torch.arange(g.width, device=qkv.device) < packing.lengths[g.windows, None]
        y = _sdpa(q, k, v, real.view(g.n, 1, 1, g.width))  # (n, heads, 1, H / heads)
        out.index_copy_(0, g.windows, y.reshape(g.n, H).to(out.dtype))
    return out


def _padded_heads(
    qkv: torch.Tensor, g: Group, n_heads: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The group's windows re-padded to its width: q, k, v each [n, heads, width, H / heads]."""
    H = qkv.shape[1] // 3
    padded = qkv.new_zeros(g.n * g.width, 3 * H)
    padded.index_copy_(0, g.slots, qkv.index_select(0, g.rows))
    q, k, v = padded.view(g.n, g.width, 3, n_heads, H // n_heads).permute(2, 0, 3, 1, 4)
    return q, k, v


def _sdpa(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Causal attention, or attention under `mask` (True = attend) when one is given.

    No dropout on the attention weights: it forces SDPA's unfused path (~2x slower on CPU); the
    residual, FFN and input dropouts regularise instead."""
    causal = mask is None
    if q.device.type == "cpu" and q.dtype != torch.float32:
        # CPU attention in fp32 under bf16 autocast: its bf16 backward ran 5x slower than fp32
        # on an AVX512-BF16 CPU, and attention is a small share of the step's FLOPs.
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(
                q.float(), k.float(), v.float(), attn_mask=mask, is_causal=causal
            )
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)

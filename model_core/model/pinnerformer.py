"""The PinnerFormer user tower and the pin tower (paper §3.2, appendix A.2).

User tower: a_i → Linear(D_in, H) + learnable positional encoding → L PreNorm transformer blocks
(causal multi-head self-attention, FFN 4H with GELU) → output MLP (LayerNorm → Linear H→4H → GELU →
Linear 4H→D) → L2 normalisation at EVERY position. The user embedding is the output at the most
recent position.

Padding: sequences are right-padded, so a causal mask alone already hides every padded key from
every real query — `scaled_dot_product_attention(..., is_causal=True)` is exact for the valid
positions and lets CUDA use the fused flash kernel (an explicit boolean mask would rule it out).
Every other layer is per action, so it runs on the real actions alone, packed, and attention
re-pads windows of similar length together (`model_core.model.packing`).

Pin tower: an MLP over the content embedding only, L2-normalised.

Beyond the paper (`latest_pin`): the user embedding also adds a learned share of the pin
tower's embedding of the user's latest pin, u = normalise(user tower + w · pin(latest)), so
"more like what they just engaged with" is one parameter away instead of something the
transformer and its output MLP must relearn (`PinnerFormer.user_at`).

Beyond the paper (`item_id_vocab` / `pin_id_buckets`): a learnable item-id embedding shared by the
pin tower (added before the norm) and the user tower's input (one more feature group per action);
see `model_core.features.item_ids`. Both 0 is the paper's content-only model. With a full table the
ids may also carry learned vectors of the items' metadata tokens (`item_token_vocab`) and average in
their co-engagement neighbours' (`item_neighbors`, `model_core.features.item_graph`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model_core.features.actions import ActionEncoder, FeatureConfig, SeqBatch
from model_core.features.item_ids import ItemIds
from model_core.model.cpu_bf16 import bucket_rows, cpu_bf16, row_bucketed
from model_core.model.packing import Packing, causal_attention, last_query_attention

LATEST_PIN_INIT = 0.5  # the latest pin's starting share of the user embedding (`latest_pin`)


def latest_pin_on(mode: str, item_ids: str) -> bool:
    """`ModelConfig.latest_pin` for a `--latest-pin` mode: "auto" = wherever ids are learned
    (`item_ids` is not "none"; the paper's content-only variant keeps the paper's user tower),
    "none" = off."""
    if mode not in ("auto", "none"):
        raise ValueError(f"latest pin must be auto or none, got {mode!r}")
    return mode == "auto" and item_ids != "none"


@dataclass(frozen=True)
class ModelConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    max_len: int = 64  # M; the paper uses 256, 64 keeps the 2-core demo fast
    hidden: int = 64  # H; Table 9 explores 256..768 at Pinterest scale
    n_layers: int = 2  # L; Table 9: 2..6, gains flatten quickly
    # A.2 has 8 heads at H >= 256, i.e. a head width of 32+; at H = 64 two heads keep that width
    # (8 heads of width 8 cost ~2x per attention call on a CPU and learn no better).
    n_heads: int = 2
    out_dim: int = 64  # D; 256 in the paper
    dropout: float = 0.0  # the paper's data volume needs none; small public logs want ~0.2
    pin_hidden: int = 256  # width of the pin tower's hidden layer
    # Beyond the paper: learnable item-id embeddings in both towers, so the model can learn what
    # content alone does not show (popularity, co-engagement). item_id_vocab > 0: a full table of
    # that many known ids; pin_id_buckets > 0: hashed (item_id_hashes hashes). Both 0: the paper.
    item_id_vocab: int = 0
    pin_id_buckets: int = 0
    item_id_hashes: int = 2
    item_ids_in_input: bool = True  # also feed E[id] to the user tower as a feature group
    # With a full table: learned vectors of the items' metadata tokens, averaged into E[id]
    # (`model_core.features.item_ids`); item_token_vocab > 0 turns them on (fit sets both sizes).
    item_token_vocab: int = 0
    item_tokens_per_item: int = 0
    # With a full table: each item also averages in the vectors of up to this many co-engagement
    # neighbours (`model_core.features.item_graph`; fit builds them from the training timelines and
    # narrows this to the widest row). 0: no graph layer.
    item_neighbors: int = 0
    # Beyond the paper, for items new since training: in training, each item's learned id vector
    # is dropped from its pin-tower embedding with this probability (per item and step), so the
    # content path also learns to place an item alone — what every item without an id row (new
    # since training) has (DropoutNet, Volkovs et al., NeurIPS 2017). 0: never dropped.
    item_id_dropout: float = 0.0
    # Beyond the paper: the user embedding adds a learned share (init LATEST_PIN_INIT) of its
    # latest pin's embedding (`PinnerFormer.user_at`). False: the paper's user tower alone.
    latest_pin: bool = False
    init_temperature: float = 0.07  # τ start; learnable, clamped at >= min_temperature in the loss

    def __post_init__(self) -> None:
        assert not (self.item_id_vocab and self.pin_id_buckets), (
            "choose item_id_vocab (a full table) or pin_id_buckets (hashing), not both"
        )
        assert not self.item_token_vocab or self.item_id_vocab, (
            "item tokens need a full item-id table (item_id_vocab > 0)"
        )
        assert not self.item_neighbors or self.item_id_vocab, (
            "item neighbours need a full item-id table (item_id_vocab > 0)"
        )

    @property
    def learns_ids(self) -> bool:
        return bool(self.item_id_vocab or self.pin_id_buckets)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        feats = d["features"]
        feats = {k: tuple(v) if isinstance(v, list) else v for k, v in feats.items()}
        return cls(**{**d, "features": FeatureConfig(**feats)})


class CausalSelfAttention(nn.Module):
    def __init__(self, hidden: int, n_heads: int) -> None:
        super().__init__()
        assert hidden % n_heads == 0, f"hidden {hidden} must be divisible by n_heads {n_heads}"
        self.n_heads = n_heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """x: [T, H], the real actions packed (`model_core.model.packing`) → [T, H]."""
        return self.proj(causal_attention(self.qkv(x), packing, self.n_heads))


class Block(nn.Module):
    """PreNorm transformer block: x + MHSA(LN(x)); x + FFN(LN(x))."""

    def __init__(self, hidden: int, n_heads: int, dropout: float) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, n_heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(
            nn.Linear(hidden, 4 * hidden),
            nn.GELU(),
            nn.Linear(4 * hidden, hidden),
            nn.Dropout(dropout),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), packing))
        return x + self.ffn(self.ln2(x))

    def last(self, x: torch.Tensor, packing: Packing) -> torch.Tensor:
        """`forward` at each window's last action only: [T, H] packed → [B, H]. Keys and values
        still come from every action; the query, the projection and the FFN run on B rows."""
        attn = self.attn
        y = last_query_attention(attn.qkv(self.ln1(x)), packing, attn.n_heads)
        x = x[packing.ends] + self.drop(attn.proj(y))
        return x + self.ffn(self.ln2(x))


class UserTower(nn.Module):
    def __init__(self, config: ModelConfig, item_ids: ItemIds | None = None) -> None:
        super().__init__()
        self.config = config
        H = config.hidden
        self.item_ids = item_ids
        id_dim = config.out_dim if item_ids is not None else 0
        self.encoder = ActionEncoder(config.features, id_dim)
        self.in_proj = nn.Linear(config.features.input_dim(id_dim), H)
        self.in_drop = nn.Dropout(config.dropout)
        self.pos = nn.Parameter(torch.randn(config.max_len, H) * 0.02)
        self.blocks = nn.ModuleList(
            Block(H, config.n_heads, config.dropout) for _ in range(config.n_layers)
        )
        self.out = nn.Sequential(
            nn.LayerNorm(H), nn.Linear(H, 4 * H), nn.GELU(), nn.Linear(4 * H, config.out_dim)
        )

    def forward(self, batch: SeqBatch) -> torch.Tensor:
        """batch → [B, M, D] float32, unit norm at every position (padded positions: ignore)."""
        B, M = batch.ts.shape
        x, packing = self.hidden(batch)
        return self.head(packing.pad(x)).view(B, M, -1)

    def at(self, batch: SeqBatch, b: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[N, D] unit-norm outputs at (window b[n], position pos[n]) only: the output MLP runs
        on the N positions that emit an embedding, not on all B·M."""
        x, packing = self.hidden(batch)
        return self.head(x[packing.starts[b] + pos])

    def latest(self, batch: SeqBatch) -> torch.Tensor:
        """[B, D]: `at` each window's last action, which is all inference needs. The last block
        runs for those B actions only (`Block.last`): on 64-action windows a third of the
        tower's work, the same outputs up to float rounding."""
        x, packing = self.hidden(batch, last_block=False)
        last_block = cast(Block, self.blocks[-1])
        return self.head(last_block.last(x, packing))

    def head(self, h: torch.Tensor) -> torch.Tensor:
        """[..., H] → [..., D]: the output MLP and the L2 norm."""
        return F.normalize(row_bucketed(self.out, h).float(), dim=-1)

    def hidden(self, batch: SeqBatch, last_block: bool = True) -> tuple[torch.Tensor, Packing]:
        """batch → [T, H], the transformer's last hidden states at the T real actions, packed
        (`Packing`); before the last block when `last_block` is False."""
        M = batch.ts.shape[1]
        assert M <= self.config.max_len, f"sequence length {M} > max_len {self.config.max_len}"
        packing = Packing.of(batch)
        tokens = packing.tokens
        T = len(tokens)
        if cpu_bf16(batch.ts):  # pad with copies of the first action (`model_core.model.cpu_bf16`)
            tokens = torch.cat([tokens, tokens[:1].expand(bucket_rows(T) - T)])
        id_emb = None
        if self.item_ids is not None:
            assert batch.pin_id is not None, "this model learns item ids: the batch needs pin_id"
            id_emb = self.item_ids(batch.pin_id.flatten()[tokens])  # (T, D)
        a = self.encoder.encode(batch, tokens, id_emb)
        x = self.in_drop(self.in_proj(a) + self.pos[tokens % M])  # (T, H)
        for block in self.blocks if last_block else self.blocks[:-1]:
            x = block(x, packing)
        return x[:T], packing


class PinTower(nn.Module):
    """content [N, C] (+ pin_ids [N] int64 when ids are learned) → [N, D] unit norm."""

    def __init__(
        self,
        content_dim: int,
        hidden: int,
        out_dim: int,
        item_ids: ItemIds | None = None,
        id_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        assert 0.0 <= id_dropout < 1.0, f"id_dropout must be in [0, 1), got {id_dropout}"
        self.mlp = nn.Sequential(
            nn.Linear(content_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim)
        )
        self.item_ids = item_ids  # [*, D] added to the MLP output: what content alone misses
        self.id_dropout = id_dropout  # `ModelConfig.item_id_dropout`

    def forward(self, content: torch.Tensor, pin_ids: torch.Tensor | None = None) -> torch.Tensor:
        assert content.dim() == 2, f"content must be [N, C], got {tuple(content.shape)}"
        h = row_bucketed(self.mlp, content)  # (N, D)
        if self.item_ids is not None:
            assert pin_ids is not None, "this pin tower embeds pin ids: pass pin_ids"
            ids = self.item_ids(pin_ids)
            if self.training and self.id_dropout:  # some items as if new: content alone
                keep = torch.rand(len(ids), 1, device=ids.device) >= self.id_dropout
                ids = ids * keep.to(ids.dtype)
            h = h + ids
        return F.normalize(h.float(), dim=-1)


class PinnerFormer(nn.Module):
    """Both towers plus the learnable softmax temperature (log-parameterised, A.3)."""

    def __init__(
        self,
        config: ModelConfig,
        item_vocab: np.ndarray | None = None,
        item_tokens: np.ndarray | None = None,
        item_neighbors: np.ndarray | None = None,
    ) -> None:
        """item_vocab: [item_id_vocab] int64, the known item ids of a full id table; item_tokens:
        their [item_id_vocab, ≤ item_tokens_per_item] token codes when tokens are learned;
        item_neighbors: their [item_id_vocab, ≤ item_neighbors] neighbour codes (1 + position in
        item_vocab, 0 = none) with the graph layer. Omit all three when loading a checkpoint:
        they travel in the state dict."""
        super().__init__()
        self.config = config
        item_ids = None
        if config.learns_ids:
            item_ids = ItemIds(
                config.out_dim,
                config.item_id_vocab,
                config.pin_id_buckets,
                config.item_id_hashes,
                config.item_token_vocab,
                config.item_tokens_per_item,
                config.item_neighbors,
            )
            if item_vocab is not None:
                item_ids.set_vocab(item_vocab, item_tokens, item_neighbors)
        self.user_tower = UserTower(config, item_ids if config.item_ids_in_input else None)
        self.pin_tower = PinTower(
            config.features.content_dim,
            config.pin_hidden,
            config.out_dim,
            item_ids,
            config.item_id_dropout,
        )
        self.log_temperature = nn.Parameter(torch.tensor(config.init_temperature).log())
        self.latest_pin_weight = (
            nn.Parameter(torch.tensor(LATEST_PIN_INIT)) if config.latest_pin else None
        )

    def temperature(self, min_temperature: float) -> torch.Tensor:
        return self.log_temperature.exp().clamp_min(min_temperature)

    def user_at(self, seq: SeqBatch, b: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        """[N, D] unit-norm user embeddings as of (window b[n], position pos[n]): the user
        tower's output, plus w · the pin tower's embedding of the pin acted on there when
        `latest_pin` is on."""
        return self._with_latest_pin(self.user_tower.at(seq, b, pos), seq, b, pos)

    def _with_latest_pin(
        self, user: torch.Tensor, seq: SeqBatch, b: torch.Tensor, pos: torch.Tensor
    ) -> torch.Tensor:
        if self.latest_pin_weight is None:
            return user
        ids = None if self.pin_tower.item_ids is None or seq.pin_id is None else seq.pin_id[b, pos]
        latest = self.pin_tower(seq.content[b, pos], ids)
        return F.normalize(user + self.latest_pin_weight * latest, dim=-1)

    def user_embedding(self, seq: SeqBatch) -> torch.Tensor:
        """[B, D]: each sequence's user embedding as of its most recent action."""
        rows = torch.arange(len(seq.lengths), device=seq.lengths.device)
        return self._with_latest_pin(self.user_tower.latest(seq), seq, rows, seq.lengths - 1)

    def forward(
        self,
        seq: SeqBatch,
        pair_b: torch.Tensor,
        pair_pos: torch.Tensor,
        item_content: torch.Tensor,
        item_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One training forward (a single call so DDP sees every parameter used).

        pair_b, pair_pos: [N] int64  which window and position emits each pair's embedding
        item_content:     [K, C]     content of the positives followed by random negatives
        item_ids:         [K] int64  their pin ids
        Returns user_emb [N, D] and item_emb [K, D], both unit norm.
        """
        table = self.pin_tower.item_ids
        with nullcontext() if table is None else table.shared():  # one table for both towers
            return self.user_at(seq, pair_b, pair_pos), self.pin_tower(item_content, item_ids)

"""Learnable item-id embeddings for both towers (beyond the paper).

The paper's items carry PinSage vectors, which already encode popularity and co-engagement; public
logs have no such vectors, and a content-only pin tower cannot tell a topic's popular items from its
unpopular ones. Here every item also gets a learnable vector E[id] ∈ R^D:

- in the pin tower, added to the content MLP's output before the L2 norm;
- in the user tower, as one more feature group of each action (the same table: tied, as in SASRec,
  so what an item's vector learns as a label it also means as an input).

Two layouts:

- a FULL table over the ids known at training time (`vocab` ids, sorted; looked up by binary
  search, so the catalogue may grow later): an id never seen in training maps to row 0, a fixed zero
  vector, and the item is represented by its content alone. Used while the catalogue has at most
  `MAX_TABLE_ITEMS` items: 1M × 64 floats is 256 MB of weights plus 512 MB of Adam state, which
  still fits a laptop or one GPU;
- beyond that, HASHED: `n_hashes` independent multiplicative hashes into `buckets` rows, summed
  (the "hashing trick" with several hashes: two colliding items rarely collide under every hash).
"""

from __future__ import annotations

from typing import TypedDict

import numpy as np
import torch
from torch import nn

MAX_TABLE_ITEMS = 1_000_000
DEFAULT_BUCKETS = 2**20
# Odd 32-bit multipliers (Knuth's golden-ratio one first) for independent multiplicative hashes.
_MULTIPLIERS = (2654435761, 2246822519, 3266489917, 668265263)


class IdFields(TypedDict):
    item_id_vocab: int
    pin_id_buckets: int


def id_fields(n_items: int, mode: str = "auto") -> IdFields:
    """ModelConfig fields for learning the ids of a catalogue of `n_items`: "auto" = a full table
    up to MAX_TABLE_ITEMS items, hashing beyond; "table", "hashed"; "none" = content only."""
    if mode == "none":
        return {"item_id_vocab": 0, "pin_id_buckets": 0}
    if mode == "table" or (mode == "auto" and n_items <= MAX_TABLE_ITEMS):
        return {"item_id_vocab": n_items, "pin_id_buckets": 0}
    if mode in ("hashed", "auto"):
        return {"item_id_vocab": 0, "pin_id_buckets": DEFAULT_BUCKETS}
    raise ValueError(f"item id mode must be auto, table, hashed or none, got {mode!r}")


def hash_bucket(ids: torch.Tensor, buckets: int, which: int = 0) -> torch.Tensor:
    """[N] int64 ids → [N] int64 in [0, buckets), with the `which`-th multiplicative hash."""
    return torch.remainder(ids * _MULTIPLIERS[which], 2**31) % buckets


class ItemIds(nn.Module):
    """ids [...] int64 → [..., dim] float32.

    vocab_size > 0: a full table over that many known ids (the `known` buffer, set with
    `set_vocab` and saved in the state dict); otherwise `buckets` rows with `n_hashes` hashes.
    """

    known: torch.Tensor

    def __init__(self, dim: int, vocab_size: int = 0, buckets: int = 0, n_hashes: int = 2) -> None:
        super().__init__()
        assert (vocab_size > 0) != (buckets > 0), "choose a full table (vocab) or hashing"
        assert 1 <= n_hashes <= len(_MULTIPLIERS), f"n_hashes must be in 1..{len(_MULTIPLIERS)}"
        self.vocab_size, self.buckets, self.n_hashes = vocab_size, buckets, n_hashes
        rows = vocab_size + 1 if vocab_size else buckets
        self.table = nn.Embedding(rows, dim, padding_idx=0 if vocab_size else None)
        nn.init.normal_(self.table.weight, std=0.02)
        if vocab_size:
            with torch.no_grad():
                self.table.weight[0].zero_()
        self.register_buffer("known", torch.zeros(vocab_size, dtype=torch.int64))

    def set_vocab(self, ids: np.ndarray) -> None:
        """The known ids ([vocab_size] int64, any order; must be distinct)."""
        assert len(ids) == self.vocab_size, f"need {self.vocab_size} ids, got {len(ids)}"
        known = torch.from_numpy(np.sort(np.asarray(ids, dtype=np.int64)))
        assert bool((known[1:] > known[:-1]).all()), "item ids must be distinct"
        self.known.copy_(known)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Full table: ids → rows (1 + position among the known ids; 0 when unknown)."""
        pos = torch.searchsorted(self.known, ids).clamp_max(self.vocab_size - 1)
        return torch.where(self.known[pos] == ids, pos + 1, torch.zeros_like(pos))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.vocab_size:
            return self.table(self.rows(ids))
        out = self.table(hash_bucket(ids, self.buckets, 0))
        for k in range(1, self.n_hashes):
            out = out + self.table(hash_bucket(ids, self.buckets, k))
        return out

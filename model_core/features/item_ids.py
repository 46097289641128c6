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

With a full table, an item may also carry metadata TOKENS (its topic and the words of its text:
Amazon's brand and category codes, MovieLens' genres and title words, Taobao's category): each
token gets a learnable vector too, and an item's vector is E[id] + mean of its tokens' vectors.
What one item learns about its brand or category then reaches every item that shares it, which a
per-item id cannot do for the many items with a handful of interactions. Only tokens that at least
two known items carry get a vector (`shared_tokens`): a token of one item is its id again.

With a full table, an item may also take in the vectors of its co-engagement NEIGHBOURS
(`model_core.features.item_graph`, read from the training timelines): GRAPH_HOPS propagation steps
over the item-item graph, E' = E + A·E + A²·E, where A averages an item's neighbours and E includes
the token mean (LightGCN's propagation, without the user nodes); that is the role PinSage's graph
plays in the paper. The neighbours' gradients flow back to their own rows.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypedDict

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MAX_TABLE_ITEMS = 1_000_000
DEFAULT_NEIGHBORS = 10  # co-engagement neighbours per item (the Amazon probes, RESULTS_NOTES)
GRAPH_HOPS = 2  # propagation steps over them: E + A·E + A²·E (1 and 2 tie on Amazon's validation)
DEFAULT_BUCKETS = 2**20
# Odd 32-bit multipliers (Knuth's golden-ratio one first) for independent multiplicative hashes.
_MULTIPLIERS = (2654435761, 2246822519, 3266489917, 668265263)


class IdFields(TypedDict):
    item_id_vocab: int
    pin_id_buckets: int


class TokenFields(TypedDict):
    item_token_vocab: int
    item_tokens_per_item: int


class NeighborFields(TypedDict):
    item_neighbors: int


class RowMean:
    """The fixed averaging matrix of [R, A] int64 codes (0 = none): row r holds 1/n at each of
    its n nonzero codes (a row without any is empty). `RowMean(codes, n_cols) @ table` ([n_cols,
    D]) is each row's mean, as a CSR product whose backward is a second CSR product with the
    transpose, built once: torch.sparse.mm's own COO backward took 5x as long (RESULTS_NOTES)."""

    def __init__(self, codes: torch.Tensor, n_cols: int) -> None:
        keep = codes > 0
        row = torch.arange(codes.shape[0], device=codes.device).unsqueeze(1).expand_as(codes)[keep]
        n = keep.sum(1).clamp_min(1)
        values = 1.0 / n[row].to(torch.float32)
        idx = torch.stack([row, codes[keep]])  # in range: set_vocab checks the codes
        shape = (codes.shape[0], n_cols)
        coo = torch.sparse_coo_tensor(idx, values, shape, check_invariants=False).coalesce()
        with warnings.catch_warnings():  # "CSR support is in beta": the product is what we use
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = coo.to_sparse_csr()
            self.transpose = coo.t().coalesce().to_sparse_csr()

    def __matmul__(self, table: torch.Tensor) -> torch.Tensor:
        return _SparseProduct.apply(self.matrix, self.transpose, table)


class _SparseProduct(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, matrix: torch.Tensor, transpose: torch.Tensor, x: torch.Tensor) -> Any:
        ctx.transpose = transpose
        return matrix @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> Any:
        return None, None, ctx.transpose @ grad


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


def token_fields(
    tokens: np.ndarray | None, n_items: int, mode: str = "auto", tokens_mode: str = "auto"
) -> TokenFields:
    """ModelConfig's item-token sizes for a catalogue of `n_items` whose items carry `tokens`
    ([n_items, A] codes, 0 = none; None = no metadata): on ("auto") when there are tokens and the
    ids (`mode`, as `id_fields`) are a full table; fit narrows the sizes to the tokens the known
    items share. "none": ids alone."""
    table = id_fields(n_items, mode)["item_id_vocab"] > 0
    if tokens_mode not in ("auto", "none"):
        raise ValueError(f"item tokens must be auto or none, got {tokens_mode!r}")
    if tokens_mode == "none" or tokens is None or not table or not tokens.any():
        return {"item_token_vocab": 0, "item_tokens_per_item": 0}
    return {"item_token_vocab": int(tokens.max()), "item_tokens_per_item": tokens.shape[1]}


def neighbor_fields(n_items: int, mode: str = "auto", graph: str = "auto") -> NeighborFields:
    """ModelConfig's graph-layer size for a catalogue of `n_items`: "auto" = DEFAULT_NEIGHBORS
    co-engagement neighbours per item wherever the ids (`mode`, as `id_fields`) are a full table
    (fit builds them from the training timelines, `model_core.features.item_graph`); "none": no
    graph."""
    if graph not in ("auto", "none"):
        raise ValueError(f"item graph must be auto or none, got {graph!r}")
    table = id_fields(n_items, mode)["item_id_vocab"] > 0
    return {"item_neighbors": DEFAULT_NEIGHBORS if graph == "auto" and table else 0}


def hash_bucket(ids: torch.Tensor, buckets: int, which: int = 0) -> torch.Tensor:
    """[N] int64 ids → [N] int64 in [0, buckets), with the `which`-th multiplicative hash."""
    return torch.remainder(ids * _MULTIPLIERS[which], 2**31) % buckets


def shared_tokens(tokens: np.ndarray) -> np.ndarray:
    """[n, A] int64 token codes of n items (0 = none) → the same layout recoded 1..T over the
    tokens that at least two of the items carry (others dropped), each row's tokens first, and
    trimmed to the widest row (at least one column)."""
    codes, counts = np.unique(tokens[tokens > 0], return_counts=True)
    kept = codes[counts >= 2]
    pos = np.searchsorted(kept, tokens).clip(max=max(len(kept) - 1, 0))
    ok = (tokens > 0) & (kept[pos] == tokens) if len(kept) else np.zeros(tokens.shape, bool)
    recoded = np.where(ok, pos + 1, 0)
    order = np.argsort(~ok, axis=1, kind="stable")  # kept tokens to the front of each row
    recoded = np.take_along_axis(recoded, order, axis=1)
    return recoded[:, : max(1, int(ok.sum(axis=1).max(initial=0)))].astype(np.int64)


def _embedding(rows: int, dim: int, padded: bool) -> nn.Embedding:
    """N(0, 0.02) rows; `padded`: row 0 is a fixed zero (padding_idx 0, never trained)."""
    table = nn.Embedding(rows, dim, padding_idx=0 if padded else None)
    nn.init.normal_(table.weight, std=0.02)
    if padded:
        with torch.no_grad():
            table.weight[0].zero_()
    return table


class ItemIds(nn.Module):
    """ids [...] int64 → [..., dim] float32.

    vocab_size > 0: a full table over that many known ids (the `known` buffer, set with
    `set_vocab` and saved in the state dict); otherwise `buckets` rows with `n_hashes` hashes.
    token_vocab > 0 (full table only): each known id also carries up to `tokens_per_item` token
    codes in 1..token_vocab (the `item_tokens` buffer), whose learned vectors are averaged in.
    neighbors_per_item > 0 (full table only): each known id also carries up to that many
    co-engagement neighbours (the `item_neighbors` buffer, rows 1..vocab_size), propagated
    GRAPH_HOPS times (`vectors`).
    """

    known: torch.Tensor
    item_tokens: torch.Tensor
    item_neighbors: torch.Tensor

    def __init__(
        self,
        dim: int,
        vocab_size: int = 0,
        buckets: int = 0,
        n_hashes: int = 2,
        token_vocab: int = 0,
        tokens_per_item: int = 0,
        neighbors_per_item: int = 0,
    ) -> None:
        super().__init__()
        assert (vocab_size > 0) != (buckets > 0), "choose a full table (vocab) or hashing"
        assert 1 <= n_hashes <= len(_MULTIPLIERS), f"n_hashes must be in 1..{len(_MULTIPLIERS)}"
        assert not token_vocab or (vocab_size and tokens_per_item), (
            "item tokens need a full id table and tokens_per_item >= 1"
        )
        self.vocab_size, self.buckets, self.n_hashes = vocab_size, buckets, n_hashes
        rows = vocab_size + 1 if vocab_size else buckets
        self.table = _embedding(rows, dim, padded=bool(vocab_size))
        self.register_buffer("known", torch.zeros(vocab_size, dtype=torch.int64))
        self.tokens: nn.Embedding | None = None
        if token_vocab:
            self.tokens = _embedding(token_vocab + 1, dim, padded=True)
            shape = (vocab_size + 1, tokens_per_item)
            self.register_buffer("item_tokens", torch.zeros(shape, dtype=torch.int64))
        assert not neighbors_per_item or vocab_size, "item neighbours need a full id table"
        self.has_neighbors = neighbors_per_item > 0
        if self.has_neighbors:
            shape = (vocab_size + 1, neighbors_per_item)
            self.register_buffer("item_neighbors", torch.zeros(shape, dtype=torch.int64))
        self._means: dict[str, tuple[Any, RowMean]] = {}
        self._shared: torch.Tensor | None = None
        self._inference: tuple[Any, torch.Tensor] | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Pickled (a model sent to an inference shard's worker) without the caches: they are
        rebuilt where they are used, and a sparse matrix does not travel well."""
        return {**self.__dict__, "_means": {}, "_shared": None, "_inference": None}

    def set_vocab(
        self, ids: np.ndarray, tokens: np.ndarray | None = None, neighbors: np.ndarray | None = None
    ) -> None:
        """The known ids ([vocab_size] int64, any order; must be distinct); with item tokens,
        their token codes ([vocab_size, ≤ tokens_per_item] int64, 1..token_vocab, 0 = none); with
        item neighbours, theirs ([vocab_size, ≤ neighbors_per_item] int64: 1 + the neighbour's
        position in `ids`, 0 = none)."""
        assert len(ids) == self.vocab_size, f"need {self.vocab_size} ids, got {len(ids)}"
        ids = np.asarray(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")
        known = torch.from_numpy(ids[order])
        assert bool((known[1:] > known[:-1]).all()), "item ids must be distinct"
        self.known.copy_(known)
        assert (tokens is not None) == (self.tokens is not None), (
            "pass tokens exactly when the table was built with token_vocab > 0"
        )
        if tokens is not None and self.tokens is not None:
            width = self.item_tokens.shape[1]
            assert tokens.shape[0] == len(ids), f"need tokens for {len(ids)} ids: {tokens.shape}"
            assert tokens.shape[1] <= width, f"at most {width} tokens per id: {tokens.shape}"
            assert tokens.min() >= 0, "token codes must be >= 0 (0 = none)"
            assert tokens.max() < self.tokens.num_embeddings, "token codes must be <= token_vocab"
            self.item_tokens.zero_()
            self.item_tokens[1:, : tokens.shape[1]] = torch.from_numpy(tokens[order])
        assert (neighbors is not None) == self.has_neighbors, (
            "pass neighbors exactly when the table was built with neighbors_per_item > 0"
        )
        if neighbors is not None:
            width = self.item_neighbors.shape[1]
            assert neighbors.shape[0] == len(ids), f"need neighbours for {len(ids)} ids"
            assert neighbors.shape[1] <= width, f"at most {width} neighbours per id"
            assert neighbors.min() >= 0, "neighbour codes must be >= 0 (0 = none)"
            assert neighbors.max() <= len(ids), "neighbour codes must be <= the number of ids"
            rank = np.empty_like(order)
            rank[order] = np.arange(len(order))  # position in `ids` → position among the sorted
            recoded = np.where(neighbors > 0, rank[(neighbors - 1).clip(min=0)] + 1, 0)
            self.item_neighbors.zero_()
            self.item_neighbors[1:, : neighbors.shape[1]] = torch.from_numpy(recoded[order])

    @property
    def mixes(self) -> bool:
        """Whether a row's vector is more than its own E[id] (full table with tokens or
        neighbours): lookups then read `vectors()`."""
        return bool(self.vocab_size) and (self.tokens is not None or self.has_neighbors)

    def _mean(self, name: str, n_cols: int) -> RowMean:
        """The averaging matrix of buffer `name`, rebuilt whenever the buffer changes (a loaded
        state dict, `set_vocab`, a move to another device)."""
        codes: torch.Tensor = getattr(self, name)
        key = (codes.data_ptr(), codes._version, codes.device)
        cached = self._means.get(name)
        if cached is None or cached[0] != key:
            cached = (key, RowMean(codes, n_cols))
            self._means[name] = cached
        return cached[1]

    def vectors(self) -> torch.Tensor:
        """Full table: [vocab_size + 1, dim], every row's vector: E[id], plus its token mean,
        then GRAPH_HOPS propagation steps over the neighbours. Row 0 (unknown ids) stays zero.
        In fp32 even under bf16 autocast (the sparse products' backward cannot mix the two).
        In eval mode without autograd (validation, inference in chunks) the result is kept until
        a weight or code buffer changes or the module returns to training, so a pass over many
        chunks computes it once."""
        if self._shared is not None:
            return self._shared
        if torch.is_grad_enabled() or self.training:
            return self._compute_vectors()
        tensors = [*self.parameters(), *self.buffers()]
        key = tuple((t.data_ptr(), t._version) for t in tensors)
        if self._inference is None or self._inference[0] != key:
            self._inference = (key, self._compute_vectors())
        return self._inference[1]

    def _compute_vectors(self) -> torch.Tensor:
        with torch.autocast(self.table.weight.device.type, enabled=False):
            out = self.table.weight
            if self.tokens is not None:
                out = (
                    out + self._mean("item_tokens", self.tokens.num_embeddings) @ self.tokens.weight
                )
            if self.has_neighbors:
                neighbors = self._mean("item_neighbors", self.vocab_size + 1)
                hop = out
                for _ in range(GRAPH_HOPS):
                    hop = neighbors @ hop
                    out = out + hop
        return out

    def train(self, mode: bool = True) -> ItemIds:
        # A fused optimizer step changes the weights without bumping their `_version`, so the
        # eval-mode table is dropped whenever training may resume (and kept by `eval()`, which
        # inference calls once per chunk of users).
        if mode:
            self._inference = None
        return super().train(mode)

    @contextmanager
    def shared(self) -> Iterator[None]:
        """Within the block every lookup reads one computation of `vectors()`: a training step
        embeds the user tower's inputs and the pin tower's items from the same table."""
        self._shared = self.vectors() if self.mixes else None
        try:
            yield
        finally:
            self._shared = None

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Full table: ids → rows (1 + position among the known ids; 0 when unknown)."""
        pos = torch.searchsorted(self.known, ids).clamp_max(self.vocab_size - 1)
        return torch.where(self.known[pos] == ids, pos + 1, torch.zeros_like(pos))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        if self.vocab_size:
            rows = self.rows(ids)
            if not self.mixes:
                return self.table(rows)
            return F.embedding(rows, self.vectors(), padding_idx=0)  # unknown ids stay zero
        out = self.table(hash_bucket(ids, self.buckets, 0))
        for k in range(1, self.n_hashes):
            out = out + self.table(hash_bucket(ids, self.buckets, k))
        return out

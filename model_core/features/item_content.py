"""Item content embeddings for real logs: the stand-in for the paper's PinSage vectors (§3.1).

Public logs ship no content embeddings, so `item_content_embeddings` builds one per item from two
parts, each computed ONLY from what is known before `cutoff` (no leakage into evaluation):

1. metadata, m_i ∈ R^(dim - dim/2): a random projection of the item's bag of tokens — its topic
   (genre / category id) and the lower-cased words of its text (title and genres). Every token
   has a fixed Gaussian vector derived from (seed, BLAKE2b(token)), so a token's vector never
   depends on which other items or tokens exist. m_i = normalise(normalise(topic vector) +
   normalise(mean of word vectors)); an item with no metadata at all gets the vector of the token
   "pin=<id>" (unit norm, carries no information but keeps the contract).
2. co-engagement, c_i ∈ R^(dim/2): a rank-dim/2 truncated SVD (randomized, seeded) of the
   user × item matrix of engagements with ts < cutoff — every action by default
   (`engagement="all"`: on logs where positives are rare, e.g. Taobao's views vs cart/fav/buy,
   positives alone leave most items without a vector), or positives only (`log.rule`) —
   symmetrically degree-normalised (X_ui / sqrt(deg_u · deg_i)), so the item factors V·sqrt(S)
   approximate the spectral embedding of the item-item co-occurrence graph (items engaged by the
   same users). Items with no
   engagement before the cutoff get c_i = 0: the metadata part only.

The embedding is normalise([m_i, w·c_i]): the two parts CONCATENATED (a random projection of both
into one space would mix them, so the model could not weigh metadata against co-engagement), so
every item — in `log.items` or only in `log.actions`, even one first seen after the cutoff — gets a
unit-norm float32 vector of width `dim`, and the result is deterministic for a seed.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import polars as pl
import torch

from model_core.data.raw_log import RawLog

_TOKEN = re.compile(r"[^\W_]+", re.UNICODE)


def _token_vectors(tokens: Sequence[str], dim: int, seed: int) -> np.ndarray:
    """[T] tokens → [T, dim] float64 standard Gaussian vectors, fixed by (seed, token)."""
    out = np.empty((len(tokens), dim))
    for row, token in enumerate(tokens):
        digest = hashlib.blake2b(f"{seed}\x00{token}".encode(), digest_size=8).digest()
        out[row] = np.random.default_rng(int.from_bytes(digest, "big")).standard_normal(dim)
    return out


def _normalise(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _bag(pin_rows: np.ndarray, tokens: list[str], n: int, dim: int, seed: int) -> np.ndarray:
    """Mean token vector per item: rows [K] int, tokens [K] → [n, dim] (zeros without tokens)."""
    if not tokens:
        return np.zeros((n, dim))
    vocab, token_idx = np.unique(np.asarray(tokens, dtype=object), return_inverse=True)
    vectors = _token_vectors(list(vocab), dim, seed)
    total = np.zeros((n, dim))
    np.add.at(total, pin_rows, vectors[token_idx])
    counts = np.bincount(pin_rows, minlength=n)[:, None]
    return np.divide(total, counts, out=np.zeros_like(total), where=counts > 0)


def metadata_vectors(items: pl.DataFrame, dim: int, seed: int) -> np.ndarray:
    """items (pin_id, topic, text) → [N, dim] float64 unit-norm metadata part, in `items` order."""
    n = items.height
    topics = items.select(row=pl.int_range(pl.len()), topic=pl.col("topic").cast(pl.Int64))
    topics = topics.drop_nulls("topic")  # an integer column even when some topics are null
    topic_part = _bag(
        topics["row"].to_numpy(), [f"topic={t}" for t in topics["topic"].to_list()], n, dim, seed
    )
    words = items.select(
        row=pl.int_range(pl.len()), word=pl.col("text").str.to_lowercase().str.extract_all(
            _TOKEN.pattern
        )
    ).explode("word").drop_nulls("word")  # fmt: skip
    text_part = _bag(
        words["row"].to_numpy(), [f"word={w}" for w in words["word"].to_list()], n, dim, seed
    )
    meta = _normalise(topic_part) + _normalise(text_part)
    empty = np.linalg.norm(meta, axis=1) == 0
    if empty.any():
        ids = items["pin_id"].to_numpy()[empty]
        meta[empty] = _token_vectors([f"pin={i}" for i in ids], dim, seed)
    return _normalise(meta)


def item_tokens(items: pl.DataFrame) -> pl.Series:
    """items (topic, text) → per item the distinct tokens its metadata vector is built from:
    "topic=<topic>" and "word=<lower-cased word>" (list of str, empty without metadata). The
    model may learn a vector per token (`model_core.features.item_ids`)."""
    topic = pl.when(pl.col("topic").is_not_null()).then(
        pl.concat_list(pl.lit("topic=") + pl.col("topic").cast(pl.Utf8))
    )
    words = pl.col("text").str.to_lowercase().str.extract_all(_TOKEN.pattern)
    none = pl.lit([], dtype=pl.List(pl.Utf8))
    both = pl.concat_list(
        topic.otherwise(none),
        words.list.eval(pl.lit("word=") + pl.element()).fill_null(none),
    )
    return items.select(tokens=both.list.unique(maintain_order=True))["tokens"]


def _orthonormalise(y: np.ndarray) -> np.ndarray:
    """[n, k] → [n, k'] orthonormal basis of its column space (Gram eigendecomposition, twice).

    k' <= k drops numerically null directions. A Gram step costs one [k, k] eigh instead of a QR
    of the tall matrix, which matters on a few CPU cores.
    """
    for _ in range(2):
        w, v = np.linalg.eigh(y.T @ y)
        keep = w > max(float(w.max()), 1e-300) * 1e-12
        y = y @ (v[:, keep] / np.sqrt(w[keep]))
    return y


def _sparse(rows: np.ndarray, cols: np.ndarray, values: np.ndarray, shape: tuple[int, int]):
    """COO tensor from (row, col)-sorted unique indices (already coalesced)."""
    idx = torch.from_numpy(np.stack([rows, cols]).astype(np.int64))
    return torch.sparse_coo_tensor(
        idx, torch.from_numpy(values), shape, is_coalesced=True, check_invariants=False
    )


def co_engagement_vectors(
    users: np.ndarray, pins: np.ndarray, dim: int, seed: int, n_iter: int = 4
) -> tuple[np.ndarray, np.ndarray]:
    """Engagement pairs users [E], pins [E] (int64) → (pin ids [I], factors [I, dim] float64).

    Randomized truncated SVD (Halko et al. 2011) of the binary user × item matrix X normalised by
    1/sqrt(deg_u · deg_i); factors = V[:, :r] · sqrt(S[:r]), zero-padded to `dim` when the rank r
    is smaller. Deterministic: the sketch uses a torch.Generator seeded with `seed`.
    """
    pairs = np.unique(np.stack([users, pins], axis=1), axis=0)  # sorted by (user, pin)
    user_ids, u = np.unique(pairs[:, 0], return_inverse=True)
    pin_ids, p = np.unique(pairs[:, 1], return_inverse=True)
    n_users, n_pins = len(user_ids), len(pin_ids)
    factors = np.zeros((n_pins, dim))
    rank = min(dim, n_users, n_pins)
    if rank == 0:
        return pin_ids, factors
    deg_u = np.bincount(u, minlength=n_users).astype(np.float64)
    deg_p = np.bincount(p, minlength=n_pins).astype(np.float64)
    values = 1.0 / np.sqrt(deg_u[u] * deg_p[p])
    x = _sparse(u, p, values, (n_users, n_pins))  # (U, I)

    def mm(a: torch.Tensor, dense: np.ndarray) -> np.ndarray:
        return torch.sparse.mm(a, torch.from_numpy(dense)).numpy()

    by_pin = np.lexsort((u, p))
    xt = _sparse(p[by_pin], u[by_pin], values[by_pin], (n_pins, n_users))  # (I, U)
    gen = torch.Generator().manual_seed(seed)
    width = min(rank + 10, n_users, n_pins)  # oversampling sharpens the top-r subspace
    omega = torch.randn(n_pins, width, generator=gen, dtype=torch.float64).numpy()  # (I, k)
    q = _orthonormalise(mm(x, omega))  # (U, k)
    for _ in range(n_iter):  # power iterations (X Xᵀ)^n separate the singular values; the
        q = _orthonormalise(mm(x, mm(xt, q)))  # user-side basis alone keeps float64 stable
    bt = mm(xt, q)  # (I, k) = (Qᵀ X)ᵀ
    w, ub = np.linalg.eigh(bt.T @ bt)  # ascending; w = S²
    w, ub = w[::-1][:rank], ub[:, ::-1][:, :rank]
    keep = w > max(float(w[0]), 1e-300) * 1e-12
    out = (bt @ ub[:, keep]) / w[keep] ** 0.25  # V · sqrt(S) = Bᵀ U / S · sqrt(S)
    signs = np.sign(out[np.abs(out).argmax(axis=0), np.arange(out.shape[1])])  # fix SVD signs
    factors[:, : out.shape[1]] = out * signs
    return pin_ids, factors


def item_content_embeddings(
    log: RawLog,
    cutoff: datetime.datetime,
    dim: int = 32,
    seed: int = 0,
    co_weight: float = 1.0,
    engagement: Literal["positive", "all"] = "all",
) -> pl.DataFrame:
    """The `pin_features` contract for a real log, from what is known strictly before `cutoff`.

    Returns one row per item in `log.items` ∪ `log.actions`, sorted by pin_id: pin_id Int64,
    embedding Array(Float32, dim) unit-norm, topic Int32 (nullable), tokens List(Utf8) (the
    metadata's tokens, `item_tokens`). `cutoff` without a time zone
    is UTC. `co_weight` scales the co-engagement part against the metadata part; `engagement`
    = "all" uses every action, not only positives, for the co-engagement graph (useful when
    positives are rare, e.g. Taobao's pv vs cart/fav/buy). See the module docstring for the method.
    """
    assert dim >= 2, f"dim must be >= 2 (two concatenated parts), got {dim}"
    co_dim = dim // 2
    if cutoff.tzinfo is None:
        cutoff = cutoff.replace(tzinfo=datetime.timezone.utc)
    items = (
        pl.concat([log.items, log.actions.select("pin_id").unique()], how="diagonal_relaxed")
        .unique("pin_id", keep="first")
        .sort("pin_id")
    )
    ids = items["pin_id"].to_numpy().astype(np.int64)
    meta = metadata_vectors(items, dim - co_dim, seed)  # (N, dim - co_dim)

    before = log.actions.filter(pl.col("ts") < cutoff)
    if engagement == "positive":
        before = before.filter(pl.Series(log.rule.frame_mask(before)))
    co_ids, co = co_engagement_vectors(
        before["user_id"].to_numpy().astype(np.int64),
        before["pin_id"].to_numpy().astype(np.int64),
        co_dim,
        seed,
    )
    co_full = np.zeros((len(ids), co_dim))
    co_full[np.searchsorted(ids, co_ids)] = _normalise(co)
    z = np.concatenate([meta, co_weight * co_full], axis=1)  # (N, dim)
    embedding = _normalise(z).astype(np.float32)
    return pl.DataFrame(
        {
            "pin_id": pl.Series(ids, dtype=pl.Int64),
            "embedding": pl.Series(embedding),
            "topic": items["topic"].cast(pl.Int32),
            "tokens": item_tokens(items),
        }
    )


__all__ = ["co_engagement_vectors", "item_content_embeddings", "item_tokens", "metadata_vectors"]

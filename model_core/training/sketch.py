"""Count-min sketch of positive-item frequency, for the logQ correction (PinnerFormer §3.3, A.3).

The sampled-softmax loss subtracts ``log Q(v)`` from every logit, where ``Q(v)`` is the probability
that item ``v`` appears among the in-batch positives. The paper estimates the item frequency behind
``Q`` with a count-min sketch (Cormode & Muthukrishnan, 2005) over the positives of the training
stream, because an exact counter over a billion-item corpus does not fit.

Guarantee. A sketch of width ``w = ceil(e / eps)`` and depth ``d = ceil(ln(1 / delta))`` (see
:meth:`CountMinSketch.from_error`) fed non-negative counts with total ``N`` answers, for EVERY key,
an estimate ``>=`` the true count (each row only adds colliding mass), and, for any fixed key, with
probability ``>= 1 - delta`` over the choice of hash functions, an estimate ``<= true + eps * N``.

Hash family. Row ``r`` hashes a 64-bit key ``x`` (the int64 bit pattern, split into 32-bit halves
``x_hi, x_lo``) with the Carter–Wegman linear family over the Mersenne prime ``p = 2^61 - 1``::

    h_r(x) = ((a_r1 * x_hi + a_r0 * x_lo + b_r) mod p) mod w,   a_r1, a_r0, b_r ~ U[0, p)

drawn from ``numpy.random.default_rng(seed)``. Because ``x_hi, x_lo < 2^32 < p`` the map from keys
to ``Z_p^2`` is injective, so ``x -> a . x + b`` is exactly pairwise independent over ``Z_p`` for
all int64 keys; the final ``mod w`` makes ``P[h(x) = h(y)] <= ceil(p / w) / p <= 1/w + 1/p``, i.e.
the pairwise-independence assumption of the count-min analysis holds up to a ``1/p ~ 4e-19`` slack.
The arithmetic is exact in numpy uint64 (products are split so nothing overflows).
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

_P = np.uint64((1 << 61) - 1)  # Mersenne prime 2^61 - 1: reduction is a shift and an add
_MASK32 = np.uint64(0xFFFFFFFF)
_MASK29 = np.uint64((1 << 29) - 1)


def _fold(v: np.ndarray) -> np.ndarray:
    """One folding step of ``v mod p`` (``2^61 = 1 mod p``): any uint64 ``v`` -> ``< 2^61 + 8``."""
    return (v & _P) + (v >> np.uint64(61))


def _mulmod_p_lazy(a: np.uint64, x: np.ndarray) -> np.ndarray:
    """A value ``= a * x (mod p)`` and ``< 2^62 + 2^33``, for ``a < p`` (61 bits) and ``x < 2^32``.

    ``a = a_hi * 2^32 + a_lo``; ``a_lo * x < 2^64`` fits, and ``t = a_hi * x < 2^61`` is shifted by
    32 using ``2^61 = 1 (mod p)``: ``t * 2^32 = (t >> 29) * 2^61 + (t & (2^29-1)) * 2^32``.
    """
    low = _fold((a & _MASK32) * x)  # (n,) < 2^61 + 8
    t = (a >> np.uint64(32)) * x  # (n,) < 2^61
    high = (t >> np.uint64(29)) + ((t & _MASK29) << np.uint64(32))  # (n,) < 2^61 + 2^32
    return low + high


def _mulmod_p(a: np.uint64, x: np.ndarray) -> np.ndarray:
    """Exact ``(a * x) mod p`` (used by the tests to check the lazy arithmetic)."""
    return _reduce(_mulmod_p_lazy(a, x))


def _reduce(v: np.ndarray) -> np.ndarray:
    """Exact ``v mod p`` for any uint64 ``v``."""
    v = _fold(_fold(v))  # < 2^61 + 1
    return np.minimum(v, v - _P)  # v - p wraps past v unless v >= p: a branch-free where


class CountMinSketch:
    """Count-min sketch over int64 keys with int64 counters ``table: [depth, width] int64``."""

    def __init__(self, width: int = 2**16, depth: int = 4, seed: int = 0) -> None:
        if width < 1 or depth < 1:
            raise ValueError(f"width and depth must be >= 1, got width={width}, depth={depth}")
        self.width = int(width)
        self.depth = int(depth)
        self.seed = int(seed)
        # One (a1, a0, b) triple per row, each uniform in [0, p): see the module docstring.
        params = np.random.default_rng(self.seed).integers(0, int(_P), size=(self.depth, 3))
        self._params = params.astype(np.uint64)  # (d, 3)
        self.table = np.zeros((self.depth, self.width), dtype=np.int64)  # (d, w)

    @classmethod
    def from_error(cls, epsilon: float, delta: float, seed: int = 0) -> CountMinSketch:
        """Width ``ceil(e / epsilon)``, depth ``ceil(ln(1 / delta))``: see the module docstring."""
        if not 0.0 < epsilon < 1.0 or not 0.0 < delta < 1.0:
            raise ValueError(f"epsilon and delta must be in (0, 1), got {epsilon}, {delta}")
        width = math.ceil(math.e / epsilon)
        depth = math.ceil(math.log(1.0 / delta))
        return cls(width=width, depth=max(depth, 1), seed=seed)

    def _buckets(self, keys: np.ndarray) -> np.ndarray:
        """Column of every key in every row. keys: [n] int64 -> [d, n] int64."""
        x = np.ascontiguousarray(keys, dtype=np.int64).view(np.uint64)  # bit pattern, all 64 bits
        x_hi = x >> np.uint64(32)
        x_lo = x & _MASK32
        out = np.empty((self.depth, x.shape[0]), dtype=np.int64)
        for r in range(self.depth):  # loop over the d rows only; keys are vectorised
            a1, a0, b = self._params[r]
            h = _mulmod_p_lazy(a1, x_hi) + _mulmod_p_lazy(a0, x_lo) + b  # (n,) < 2^64
            h = _reduce(h)  # (n,) in [0, p)
            out[r] = (h % np.uint64(self.width)).astype(np.int64)
        return out

    def add(self, keys: np.ndarray, counts: np.ndarray | None = None) -> None:
        """Add ``counts`` (default 1 each) to ``keys``. keys: [n] int64; counts: [n] int, >= 0."""
        keys = np.asarray(keys)
        if keys.ndim != 1:
            raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
        if not np.issubdtype(keys.dtype, np.integer):
            raise ValueError(f"keys must be integers, got dtype {keys.dtype}")
        if counts is None:
            counts_arr = np.ones(keys.shape[0], dtype=np.int64)
        else:
            counts_arr = np.asarray(counts)
            if counts_arr.shape != keys.shape:
                raise ValueError(f"counts shape {counts_arr.shape} != keys shape {keys.shape}")
            if not np.issubdtype(counts_arr.dtype, np.integer):
                raise ValueError(f"counts must be integers, got dtype {counts_arr.dtype}")
            if counts_arr.size and counts_arr.min() < 0:
                raise ValueError(
                    "counts must be >= 0 (the count-min bounds need non-negative updates)"
                )
            counts_arr = counts_arr.astype(np.int64)
        if keys.shape[0] == 0:
            return
        cols = self._buckets(keys)  # (d, n)
        flat = cols + (np.arange(self.depth, dtype=np.int64) * self.width)[:, None]  # (d, n)
        size = self.depth * self.width
        if counts is None:
            delta = np.bincount(flat.reshape(-1), minlength=size)
        elif int(counts_arr.sum()) < 2**53:  # float64 bincount weights are exact below 2^53
            weights = np.tile(counts_arr, self.depth).astype(np.float64)
            delta = np.rint(np.bincount(flat.reshape(-1), weights, minlength=size))
        else:
            delta = np.zeros(size, dtype=np.int64)
            np.add.at(delta, flat.reshape(-1), np.tile(counts_arr, self.depth))
        self.table += delta.astype(np.int64).reshape(self.depth, self.width)

    def query(self, keys: np.ndarray) -> np.ndarray:
        """Estimated counts, the minimum over rows. keys: [n] int64 -> [n] int64."""
        keys = np.asarray(keys)
        if keys.ndim != 1:
            raise ValueError(f"keys must be 1-D, got shape {keys.shape}")
        if keys.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        cols = self._buckets(keys)  # (d, n)
        return self.table[np.arange(self.depth)[:, None], cols].min(axis=0)

    @property
    def total(self) -> int:
        """Sum of all added counts (every row sums to it)."""
        return int(self.table[0].sum())

    def merge(self, other: CountMinSketch) -> CountMinSketch:
        """New sketch of the union of both streams; both must share width, depth and seed."""
        mine = (self.width, self.depth, self.seed)
        theirs = (other.width, other.depth, other.seed)
        if mine != theirs:
            raise ValueError(
                "cannot merge count-min sketches with different (width, depth, seed): "
                f"{mine} vs {theirs}; their hash functions differ, so their tables do not align"
            )
        out = CountMinSketch(self.width, self.depth, self.seed)
        out.table = self.table + other.table
        return out

    def inclusion_log_prob(self, keys: np.ndarray, batch_size: int) -> np.ndarray:
        """``log Q(v)``, Q(v) = P(v in a batch of ``batch_size`` i.i.d. positives). -> [n] float32.

        ``Q(v) = 1 - (1 - p_v)^B`` with ``p_v = count(v) / total``; ``p_v`` is floored at
        ``1 / total`` so unseen items get a finite correction. Computed as
        ``log(-expm1(B * log1p(-p_v)))``, which stays accurate for ``p_v * B << 1`` (where it is
        ``~ log(B p_v)``) and gives 0 for ``p_v = 1``.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        total = self.total
        if total <= 0:
            raise ValueError("inclusion_log_prob needs a non-empty sketch (total count is 0)")
        counts = self.query(keys).astype(np.float64)
        p = np.clip(np.maximum(counts, 1.0) / total, 0.0, 1.0)  # (n,)
        with np.errstate(divide="ignore"):  # log1p(-1) = -inf is intended when p_v = 1
            log_not_in = batch_size * np.log1p(-p)  # log (1 - p)^B
        return np.log(-np.expm1(log_not_in)).astype(np.float32)

    def expected_count_log(self, keys: np.ndarray, pool_size: int) -> np.ndarray:
        """``log E[copies of v in a pool of pool_size i.i.d. draws] = log(B p_v)`` -> [n] float32.

        The logQ correction for an in-batch pool: subtracted from EVERY copy of v, the copies'
        summed weight is ``c exp(s) / (B p_v)``, which is ``exp(s)`` in expectation. (The
        inclusion probability of :meth:`inclusion_log_prob`, applied per copy, would leave a
        popular item with c copies over-weighted by about ``log c``.) ``p_v = count(v) / total``,
        floored at ``1 / total`` so unseen items get a finite correction.
        """
        if pool_size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size}")
        if self.total <= 0:
            raise ValueError("expected_count_log needs a non-empty sketch (total count is 0)")
        counts = np.maximum(self.query(keys).astype(np.float64), 1.0)
        return (np.log(pool_size * counts) - np.log(self.total)).astype(np.float32)

    def to_bytes(self) -> bytes:
        """Serialise with ``np.savez`` (width, depth, seed, total, table)."""
        buf = io.BytesIO()
        np.savez(
            buf,
            width=np.int64(self.width),
            depth=np.int64(self.depth),
            seed=np.int64(self.seed),
            total=np.int64(self.total),
            table=self.table,
        )
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> CountMinSketch:
        """Inverse of :meth:`to_bytes`; checks the table shape and total against the header."""
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            width, depth, seed = int(z["width"]), int(z["depth"]), int(z["seed"])
            total = int(z["total"])
            table = np.asarray(z["table"], dtype=np.int64)
        if table.shape != (depth, width):
            raise ValueError(f"corrupt sketch: table shape {table.shape} != ({depth}, {width})")
        out = cls(width=width, depth=depth, seed=seed)
        out.table = table.copy()
        if out.total != total:
            raise ValueError(f"corrupt sketch: table sums to {out.total}, header says {total}")
        return out

    def save(self, path: str | Path) -> None:
        """Write :meth:`to_bytes` to ``path``."""
        Path(path).write_bytes(self.to_bytes())

    @classmethod
    def load(cls, path: str | Path) -> CountMinSketch:
        """Read a sketch written by :meth:`save`."""
        return cls.from_bytes(Path(path).read_bytes())

    def __repr__(self) -> str:
        return (
            f"CountMinSketch(width={self.width}, depth={self.depth}, seed={self.seed}, "
            f"total={self.total})"
        )

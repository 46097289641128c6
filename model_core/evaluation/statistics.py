"""Paired comparison of two leave-one-out rows scored on the same users.

Two rows' separate 95% intervals answer "where is each mean"; whether one model beats the other is
a question about their DIFFERENCE on the same users, whose interval is much narrower when the two
models find the same users easy or hard. So every leave-one-out row stores each seed's per-user
rank of the held-out item, capped at k (anything at or past k scores 0 at @k), compactly as one
ASCII digit per user ('0'..'9', ':' for a miss at k = 10), and `ratio_ci` bootstraps the ratio
of two rows' mean NDCG@k over users resampled jointly.
"""

from __future__ import annotations

import math

import numpy as np

from model_core.evaluation.metrics import hit_and_ndcg_per_user, resampled_means

K = 10
_ZERO = ord("0")


def encode_ranks(ranks: np.ndarray, k: int = K) -> str:
    """[U] 0-based ranks → one character per user: the rank below k, chr('0' + k) at or past k."""
    assert k <= 10, "one ASCII digit per user holds ranks below 10"
    capped = np.minimum(np.asarray(ranks, dtype=np.int64), k).astype(np.uint8) + _ZERO
    return capped.tobytes().decode("ascii")


def decode_ranks(text: str) -> np.ndarray:
    """The inverse of `encode_ranks`: [U] int64, k for a miss."""
    return np.frombuffer(text.encode("ascii"), dtype=np.uint8).astype(np.int64) - _ZERO


def per_user_ndcg(encoded_seeds: list[str], k: int = K) -> np.ndarray:
    """[U] NDCG@k per user, averaged over the seeds' encoded ranks."""
    return np.mean([hit_and_ndcg_per_user(decode_ranks(s), k)[1] for s in encoded_seeds], axis=0)


def ratio_ci(
    a: np.ndarray, b: np.ndarray, n_boot: int = 1000, alpha: float = 0.05, seed: int = 0
) -> tuple[float, float, float]:
    """mean(a) / mean(b) over the same users, with a percentile bootstrap (lo, hi) resampling
    users jointly; NaN where b's mean is 0. A resample where b's mean is 0 (b hits a handful of
    users) has an infinite ratio, so a bound can be inf — never NaN."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"paired rows need the same users: {a.shape} vs {b.shape}"
    if a.size == 0 or b.mean() == 0:
        return math.nan, math.nan, math.nan
    means = resampled_means(np.stack([a, b], axis=1), n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = means[:, 0] / means[:, 1]  # x / 0 = inf; 0 / 0 = NaN, dropped below
    # "nearest": interpolating between two infinite ratios would give NaN
    lo, hi = np.nanquantile(ratios, [alpha / 2, 1 - alpha / 2], method="nearest")
    return float(a.mean() / b.mean()), float(lo), float(hi)

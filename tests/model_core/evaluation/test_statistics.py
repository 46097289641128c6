"""Paired comparison of leave-one-out rows: compact per-user ranks and the paired ratio interval."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_core.evaluation.metrics import bootstrap_ci, hit_and_ndcg_per_user
from model_core.evaluation.statistics import decode_ranks, encode_ranks, per_user_ndcg, ratio_ci


def test_encoded_ranks_keep_every_user_metric_at_10() -> None:
    ranks = np.array([0, 3, 9, 10, 11, 9000])
    text = encode_ranks(ranks)
    assert text == "039:::"
    np.testing.assert_array_equal(decode_ranks(text), [0, 3, 9, 10, 10, 10])
    np.testing.assert_allclose(per_user_ndcg([text]), hit_and_ndcg_per_user(ranks)[1])
    # seeds are averaged per user
    two = per_user_ndcg([encode_ranks(np.array([0, 20])), encode_ranks(np.array([20, 0]))])
    np.testing.assert_allclose(two, [0.5, 0.5])


def test_paired_interval_sees_a_gain_that_separate_intervals_cannot() -> None:
    """B finds the held-out item for a random 5% of users; A finds it for those same users and
    for 1% more. Each row's own interval overlaps the other's, while the paired interval of
    A / B lies above 1 — and the ratio of a row to itself is exactly 1."""
    rng = np.random.default_rng(0)
    n = 4000
    b = (rng.random(n) < 0.05).astype(float)
    a = b.copy()
    a[rng.choice(np.flatnonzero(b == 0), size=40, replace=False)] = 1.0
    a_lo, b_hi = bootstrap_ci(a)[0], bootstrap_ci(b)[1]
    assert a_lo < b_hi  # the separate intervals overlap
    ratio, lo, hi = ratio_ci(a, b)
    assert ratio == a.mean() / b.mean()
    assert 1.0 < lo < ratio < hi
    assert ratio_ci(b, b) == (1.0, 1.0, 1.0)
    assert all(np.isnan(ratio_ci(a, np.zeros(n))))


def test_ratio_interval_is_infinite_not_nan_when_resamples_lose_the_reference() -> None:
    """A reference that hits two users of 200 has resamples with a zero mean: the upper bound is
    inf, not NaN (which the results table printed as "nan")."""
    a = np.full(200, 0.5)
    b = np.zeros(200)
    b[:2] = 0.3
    ratio, lo, hi = ratio_ci(a, b)
    assert ratio == pytest.approx(0.5 / 0.003)
    assert np.isfinite(lo)
    assert lo > 1
    assert hi == math.inf

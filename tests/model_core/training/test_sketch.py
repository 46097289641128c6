"""The count-min sketch against exact counts (np.unique) on Zipf streams."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_core.training.sketch import CountMinSketch

EPS = 0.002
DELTA = 0.01


def _zipf_stream(n: int, seed: int) -> np.ndarray:
    """n int64 keys, Zipf(1.3) ranks scattered over the int64 range (negative ids included)."""
    rng = np.random.default_rng(seed)
    ranks = rng.zipf(1.3, size=n).astype(np.int64)
    return ranks * np.int64(0x9E3779B97F4A7C15 - (1 << 64))  # wraps: a bijection on int64


@pytest.fixture(scope="module")
def stream() -> np.ndarray:
    return _zipf_stream(200_000, seed=0)


@pytest.fixture(scope="module")
def sketch(stream: np.ndarray) -> CountMinSketch:
    cms = CountMinSketch.from_error(EPS, DELTA, seed=7)
    cms.add(stream)
    return cms


def test_from_error_sizes() -> None:
    cms = CountMinSketch.from_error(0.01, 0.001)
    assert cms.width == math.ceil(math.e / 0.01) == 272
    assert cms.depth == math.ceil(math.log(1000)) == 7
    assert cms.table.shape == (7, 272)


def test_never_underestimates(stream: np.ndarray, sketch: CountMinSketch) -> None:
    keys, true = np.unique(stream, return_counts=True)
    est = sketch.query(keys)
    assert est.dtype == np.int64
    assert (est >= true).all()
    assert sketch.total == stream.shape[0]


def test_error_bound_holds_with_probability_one_minus_delta(
    stream: np.ndarray, sketch: CountMinSketch
) -> None:
    keys, true = np.unique(stream, return_counts=True)
    est = sketch.query(keys)
    bound = true + EPS * stream.shape[0]
    frac_over = float((est > bound).mean())
    assert keys.shape[0] > 1000  # enough distinct keys for the fraction to mean something
    assert frac_over <= DELTA / 2, frac_over  # margin: the bound is loose in practice


def test_heavy_hitters_are_accurate(stream: np.ndarray, sketch: CountMinSketch) -> None:
    keys, true = np.unique(stream, return_counts=True)
    top = np.argsort(-true)[:20]
    est = sketch.query(keys[top])
    rel_err = (est - true[top]) / true[top]
    assert rel_err.max() < 0.05, rel_err


def test_weighted_add_equals_repeated_add() -> None:
    keys = np.array([5, -3, 5, 2**62], dtype=np.int64)
    counts = np.array([2, 1, 3, 4], dtype=np.int64)
    a = CountMinSketch(width=64, depth=3)
    a.add(keys, counts)
    b = CountMinSketch(width=64, depth=3)
    b.add(np.repeat(keys, counts))
    np.testing.assert_array_equal(a.table, b.table)
    assert a.total == 10


def test_merge_equals_sketch_of_concatenated_stream() -> None:
    s1, s2 = _zipf_stream(30_000, seed=1), _zipf_stream(20_000, seed=2)
    a = CountMinSketch(width=500, depth=4, seed=3)
    a.add(s1)
    b = CountMinSketch(width=500, depth=4, seed=3)
    b.add(s2)
    both = CountMinSketch(width=500, depth=4, seed=3)
    both.add(np.concatenate([s1, s2]))
    merged = a.merge(b)
    np.testing.assert_array_equal(merged.table, both.table)
    assert merged.total == 50_000
    assert a.total == 30_000  # merge does not mutate its inputs


@pytest.mark.parametrize(
    "other",
    [
        CountMinSketch(width=101, depth=4, seed=3),
        CountMinSketch(width=100, depth=5, seed=3),
        CountMinSketch(width=100, depth=4, seed=4),
    ],
)
def test_merge_mismatched_raises(other: CountMinSketch) -> None:
    with pytest.raises(ValueError, match="different \\(width, depth, seed\\)"):
        CountMinSketch(width=100, depth=4, seed=3).merge(other)


def test_serialisation_round_trip(sketch: CountMinSketch, tmp_path) -> None:
    back = CountMinSketch.from_bytes(sketch.to_bytes())
    assert (back.width, back.depth, back.seed, back.total) == (
        sketch.width,
        sketch.depth,
        sketch.seed,
        sketch.total,
    )
    np.testing.assert_array_equal(back.table, sketch.table)
    keys = np.arange(-50, 50, dtype=np.int64)
    np.testing.assert_array_equal(back.query(keys), sketch.query(keys))

    path = tmp_path / "cms.npz"
    sketch.save(path)
    np.testing.assert_array_equal(CountMinSketch.load(path).table, sketch.table)


def test_same_seed_same_hashes_different_seed_different() -> None:
    keys = np.arange(1000, dtype=np.int64)
    a, b, c = CountMinSketch(97, 3, seed=1), CountMinSketch(97, 3, seed=1), CountMinSketch(97, 3, 2)
    for s in (a, b, c):
        s.add(keys)
    np.testing.assert_array_equal(a.table, b.table)
    assert not np.array_equal(a.table, c.table)


def test_inclusion_log_prob_closed_form() -> None:
    cms = CountMinSketch(width=2**16, depth=4)
    cms.add(np.array([1, 1, 1, 2], dtype=np.int64))  # total 4: p_1 = 3/4, p_2 = 1/4
    got = cms.inclusion_log_prob(np.array([1, 2, 3], dtype=np.int64), batch_size=2)
    # Q = 1 - (1 - p)^2; key 3 is unseen, so p_3 is floored at 1/total = 1/4.
    expected = np.log([1 - (1 / 4) ** 2, 1 - (3 / 4) ** 2, 1 - (3 / 4) ** 2])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_inclusion_log_prob_edge_cases() -> None:
    only = CountMinSketch(width=1024, depth=2)
    only.add(np.array([9], dtype=np.int64), np.array([5], dtype=np.int64))
    assert only.inclusion_log_prob(np.array([9], dtype=np.int64), batch_size=3)[0] == 0.0  # p=1

    # Tiny p, big batch: naive 1 - (1 - p)^B loses ~4 digits here; the stable form must not.
    big = CountMinSketch(width=1024, depth=2)
    n = 10**12
    big.add(np.array([1, 2], dtype=np.int64), np.array([1, n - 1], dtype=np.int64))
    b = 1000
    got = big.inclusion_log_prob(np.array([1], dtype=np.int64), batch_size=b)[0]
    p = 1 / n
    expected = math.log(b * p) - (b - 1) * p / 2  # series of log(1 - (1-p)^B) for B p << 1
    assert abs(got - expected) < 1e-5 * abs(expected)

    with pytest.raises(ValueError, match="non-empty"):
        CountMinSketch(16, 2).inclusion_log_prob(np.array([1]), batch_size=4)


def test_add_validates_inputs() -> None:
    cms = CountMinSketch(16, 2)
    with pytest.raises(ValueError, match=">= 0"):
        cms.add(np.array([1, 2]), np.array([1, -1]))
    with pytest.raises(ValueError, match="shape"):
        cms.add(np.array([1, 2]), np.array([1]))
    cms.add(np.zeros(0, dtype=np.int64))
    assert cms.total == 0
    assert cms.query(np.zeros(0, dtype=np.int64)).shape == (0,)


def test_hash_arithmetic_is_exact_against_python_ints() -> None:
    """The uint64 Carter–Wegman arithmetic equals ((a1*x_hi + a0*x_lo + b) mod p) mod w."""
    p = (1 << 61) - 1
    rng = np.random.default_rng(0)
    keys = rng.integers(-(2**63), 2**63 - 1, size=2000, dtype=np.int64, endpoint=True)
    keys[:4] = [-(2**63), 2**63 - 1, 0, -1]
    cms = CountMinSketch(width=1009, depth=3, seed=11)
    got = cms._buckets(keys)
    for r in range(cms.depth):
        a1, a0, b = (int(v) for v in cms._params[r])
        u = [int(k) % 2**64 for k in keys]
        expected = [((a1 * (x >> 32) + a0 * (x & 0xFFFFFFFF) + b) % p) % 1009 for x in u]
        np.testing.assert_array_equal(got[r], expected)

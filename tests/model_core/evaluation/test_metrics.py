"""§4.1 metrics against hand-computed values and a brute-force numpy reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

from model_core.evaluation.index import index_positions
from model_core.evaluation.metrics import (
    RetrievalMetrics,
    bootstrap_ci,
    evaluate_retrieval,
    exact_topk,
    hit_rate_and_ndcg_at_k,
    interest_entropy,
    p90_coverage,
    recall_at_k,
)


def _f32(x: list) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def test_recall_hand_example_with_ties_and_user_without_positives() -> None:
    # Index scores are exact small numbers, so ties are exact.
    index = _f32([[5, 0], [4, 0], [3, 0], [2, 0], [1, 0]])
    users = _f32([[1, 0], [0, 1], [1, 1], [-1, 0]])  # user 2 has no positives
    positives = [
        # user 0 sees index scores 5, 4, 3, 2, 1
        (0, [4.5, 0]),  # {5} >= 4.5 -> 1 < 2: hit
        (0, [4, 0]),  # {5, 4} >= 4 -> 2, the tie counts against it: miss
        (0, [6, 0]),  # nothing >= 6: hit
        (0, [3.9, 0]),  # {5, 4}: miss                    -> recall 2/4
        # user 1 sees index scores 0, 0, 0, 0, 0
        (1, [0, 1]),  # score 1: hit
        (1, [1, 0]),  # score 0 ties all five: miss
        (1, [0, 0.5]),  # score 0.5: hit                    -> recall 2/3
        # user 3 sees index scores -5, -4, -3, -2, -1
        (3, [2, 0]),  # score -2: {-1, -2} -> 2: miss
        (3, [0.5, 0]),  # score -0.5: hit                   -> recall 1/2
    ]
    pos_user = np.array([u for u, _ in positives], dtype=np.int64)
    pos_vecs = _f32([v for _, v in positives])

    m = evaluate_retrieval(users, pos_user, pos_vecs, index, k=2, coverage_k=2, entropy_k=2)

    np.testing.assert_allclose(m.per_user_recall, [2 / 4, 2 / 3, 1 / 2])
    assert m.recall_at_k == pytest.approx((2 / 4 + 2 / 3 + 1 / 2) / 3)
    assert (m.n_users, m.n_positives, m.index_size) == (3, 9, 5)
    assert math.isnan(m.interest_entropy_at_k)  # no topics given
    d = m.as_dict()
    assert set(d) == {
        "recall_at_2",
        "p90_coverage_at_2",
        "interest_entropy_at_2",
        "n_users",
        "n_positives",
        "index_size",
    }
    assert d["recall_at_2"] == m.recall_at_k


def test_recall_index_smaller_than_k_is_all_hits() -> None:
    index = _f32([[1.0], [2.0]])
    m = evaluate_retrieval(
        _f32([[1.0]]), np.array([0, 0]), _f32([[0.5], [3.0]]), index, k=10, entropy_k=3
    )
    assert m.recall_at_k == 1.0
    assert m.p90_coverage_at_k == 1.0  # the user's top-2 is the whole index


def test_popularity_baseline_through_the_same_api() -> None:
    # Not unit-norm: user = 1, item = log1p(count). Fewer than k more-popular pins -> hit.
    counts = np.array([100, 50, 10, 5, 1, 0])
    index = np.log1p(counts).astype(np.float32)[:, None]
    users = np.ones((2, 1), dtype=np.float32)
    pos_user = np.array([0, 0, 1])
    pos_vecs = np.log1p(np.array([60, 7, 200])).astype(np.float32)[:, None]
    m = evaluate_retrieval(users, pos_user, pos_vecs, index, k=2, coverage_k=2, entropy_k=2)
    # count 60: {100} -> hit; count 7: {100, 50, 10} -> miss; count 200: hit.
    np.testing.assert_allclose(m.per_user_recall, [0.5, 1.0])
    assert m.p90_coverage_at_k == pytest.approx(2 / 6)  # both users' top-2 = pins 0 and 1


def test_p90_coverage_hand_example() -> None:
    ids = np.array([[0, 1], [0, 2], [0, 1], [3, 0]])  # 8 slots: pin 0 x4, 1 x2, 2 x1, 3 x1
    assert p90_coverage(ids, index_size=10) == pytest.approx(0.4)  # 7.2 slots -> 8 -> 4 pins
    assert p90_coverage(ids, index_size=10, quantile=0.75) == pytest.approx(0.2)  # 6 -> {0, 1}
    assert p90_coverage(ids, index_size=10, quantile=0.5) == pytest.approx(0.1)  # 4 -> {0}
    # 0.9 * 10 slots is exactly 9 (no float slop pushing it to 10)
    ten = np.array([[0] * 9 + [1]])
    assert p90_coverage(ten, index_size=4) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="topk_ids"):
        p90_coverage(np.array([[5]]), index_size=3)


def test_interest_entropy_hand_example() -> None:
    topics = np.array([7, 7, 3, 3, -1, 9])
    ids = np.array(
        [
            [0, 1, 2, 3],  # 7 7 3 3 -> ln 2
            [0, 2, 4, 5],  # 7 3 ? 9 -> unknown dropped, uniform over 3 -> ln 3
            [0, 1, 2, 4],  # 7 7 3 ? -> (2/3, 1/3)
            [4, 4, 4, 4],  # all unknown: left out of the mean
        ]
    )
    h_c = -(2 / 3 * math.log(2 / 3) + 1 / 3 * math.log(1 / 3))
    expected = (math.log(2) + math.log(3) + h_c) / 3
    assert interest_entropy(ids, topics) == pytest.approx(expected)
    assert math.isnan(interest_entropy(np.array([[4, 4]]), topics))
    assert interest_entropy(np.array([[0, 1]]), topics) == 0.0  # one topic


def _brute_force(user_vecs, pos_user, pos_vecs, index_vecs, topics, k, ck, ek):
    """Full [U, N] score matrix in float64 numpy, straight from the paper's formula."""
    scores = user_vecs.astype(np.float64) @ index_vecs.astype(np.float64).T  # (U, N)
    s_pos = np.einsum("pd,pd->p", user_vecs[pos_user].astype(np.float64), pos_vecs)
    n_closer = (scores[pos_user] >= s_pos[:, None]).sum(axis=1)  # (P,)
    hit = n_closer < k
    users = np.unique(pos_user)
    per_user = np.array([hit[pos_user == u].mean() for u in users])
    order = np.argsort(-scores[users], axis=1, kind="stable")
    top_c, top_e = order[:, :ck], order[:, :ek]
    freq = np.sort(np.bincount(top_c.ravel(), minlength=len(index_vecs)))[::-1]
    n_pins = 1 + np.argmax(np.cumsum(freq) >= math.ceil(0.9 * top_c.size - 1e-9))
    ents = []
    for row in topics[top_e]:
        row = row[row >= 0]
        if row.size:
            p = np.unique(row, return_counts=True)[1] / row.size
            ents.append(-(p * np.log(p)).sum())
    return per_user, n_pins / len(index_vecs), float(np.mean(ents))


@pytest.mark.parametrize("dim", [1, 8])
def test_chunked_equals_unchunked_equals_brute_force(dim: int) -> None:
    rng = np.random.default_rng(dim)
    n_users, n_index, n_pos = 37, 211, 150
    user_vecs = rng.normal(size=(n_users, dim)).astype(np.float32)
    index_vecs = rng.normal(size=(n_index, dim)).astype(np.float32)
    pos_user = rng.integers(0, n_users - 5, size=n_pos)  # the last users have no positives
    pos_vecs = rng.normal(size=(n_pos, dim)).astype(np.float32)
    topics = rng.integers(-1, 6, size=n_index)
    kw = dict(index_topics=topics, k=5, coverage_k=7, entropy_k=20)

    full = evaluate_retrieval(user_vecs, pos_user, pos_vecs, index_vecs, **kw)
    tiny = evaluate_retrieval(
        user_vecs, pos_user, pos_vecs, index_vecs, user_chunk=3, index_chunk=7, device="cpu", **kw
    )
    ref_recall, ref_cov, ref_ent = _brute_force(
        user_vecs, pos_user, pos_vecs, index_vecs, topics, 5, 7, 20
    )
    for m in (full, tiny):
        assert isinstance(m, RetrievalMetrics)
        np.testing.assert_allclose(m.per_user_recall, ref_recall)
        assert m.recall_at_k == pytest.approx(ref_recall.mean())
        assert m.p90_coverage_at_k == pytest.approx(ref_cov)
        assert m.interest_entropy_at_k == pytest.approx(ref_ent)
        assert m.n_users == len(np.unique(pos_user))
    assert 0.0 < full.recall_at_k < 1.0


def test_exact_topk_matches_argsort() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(9, 4)).astype(np.float32)
    x = rng.normal(size=(50, 4)).astype(np.float32)
    s, i = exact_topk(q, x, k=6, query_chunk=2, index_chunk=4)
    ref = np.argsort(-(q @ x.T), axis=1)[:, :6]
    np.testing.assert_array_equal(i, ref)
    np.testing.assert_allclose(s, np.take_along_axis(q @ x.T, ref, axis=1), rtol=1e-6)


def test_recall_at_k_helper_nan_for_users_without_positives() -> None:
    top = np.array([[3.0, 2.0, 1.0], [9.0, 8.0, 7.0]])
    out = recall_at_k(np.array([0, 0]), np.array([2.5, 2.0]), np.vstack([top, top[:1]]), k=2)
    np.testing.assert_allclose(out[:2], [0.5, np.nan])
    assert math.isnan(out[2])


def test_no_positives_raises() -> None:
    with pytest.raises(ValueError, match="positive"):
        evaluate_retrieval(
            _f32([[1.0]]), np.zeros(0, dtype=np.int64), np.zeros((0, 1), np.float32), _f32([[1.0]])
        )


def test_bootstrap_ci_contains_mean_and_shrinks() -> None:
    rng = np.random.default_rng(0)
    small = rng.uniform(size=100)
    large = rng.uniform(size=10_000)
    lo_s, hi_s = bootstrap_ci(small, n_boot=500)
    lo_l, hi_l = bootstrap_ci(large, n_boot=500)
    assert lo_s < small.mean() < hi_s
    assert lo_l < large.mean() < hi_l
    assert (hi_l - lo_l) < (hi_s - lo_s) / 5  # ~ 1/sqrt(U): 10x narrower
    assert bootstrap_ci(small, n_boot=500) == (lo_s, hi_s)  # seeded
    with_nan = np.append(small, np.nan)
    assert bootstrap_ci(with_nan, n_boot=500) == (lo_s, hi_s)


def test_hit_rate_and_ndcg_hand_example() -> None:
    hr, ndcg = hit_rate_and_ndcg_at_k(np.array([0, 3, 10, 1]), k=10)
    assert hr == pytest.approx(3 / 4)
    assert ndcg == pytest.approx((1 / math.log2(2) + 1 / math.log2(5) + 1 / math.log2(3)) / 4)
    assert hit_rate_and_ndcg_at_k(np.array([9]), k=10) == pytest.approx((1.0, 1 / math.log2(11)))


def test_recall_never_counts_a_positive_against_itself() -> None:
    """Regression: a positive that is in the index at rank 10 (nine others above it) scored 0,
    i.e. the metric was Recall@9. Only OTHER index pins may push a positive out of the top k."""
    index = np.arange(20, 0, -1, dtype=np.float32)[:, None]  # scores 20, 19, ..., 1
    user = np.ones((1, 1), dtype=np.float32)
    tenth = 9  # index position of the pin scoring 11: nine pins score higher
    m = evaluate_retrieval(
        user, np.array([0]), index[[tenth]], index, positive_index_pos=np.array([tenth])
    )
    assert m.recall_at_k == 1.0
    eleventh = 10  # ten others score higher: a miss
    m = evaluate_retrieval(
        user, np.array([0]), index[[eleventh]], index, positive_index_pos=np.array([eleventh])
    )
    assert m.recall_at_k == 0.0
    # A positive outside the index with the same score as the tenth pin: ten pins >= it, a miss.
    m = evaluate_retrieval(user, np.array([0]), index[[tenth]], index)
    assert m.recall_at_k == 0.0


def test_seen_pins_leave_each_users_ranking_but_a_positive_still_counts() -> None:
    """evaluate_retrieval(seen=...) equals, user by user, recall on an index without that user's
    seen pins — except that a seen pin which is itself a positive is still scored."""
    from model_core.evaluation.seen import Seen

    rng = np.random.default_rng(4)
    users, index, dim, k = 6, 40, 8, 5
    u = rng.normal(size=(users, dim)).astype(np.float32)
    x = rng.normal(size=(index, dim)).astype(np.float32)
    positive_user = np.repeat(np.arange(users), 3)
    positive_pos = rng.integers(0, index, size=len(positive_user))
    seen_sets = [sorted(set(rng.integers(0, index, size=6).tolist()) | {int(positive_pos[3 * i])})
                 for i in range(users)]  # fmt: skip  # each user saw their first positive
    seen = Seen(
        np.concatenate([[0], np.cumsum([len(s) for s in seen_sets])]),
        np.concatenate([np.array(s) for s in seen_sets]),
    )
    got = evaluate_retrieval(
        u, positive_user, x[positive_pos], x, None, positive_pos, k=k, seen=seen
    ).per_user_recall
    for i in range(users):
        keep = np.setdiff1d(np.arange(index), seen_sets[i])
        mine = positive_user == i
        want = evaluate_retrieval(
            u[i : i + 1],
            np.zeros(mine.sum(), dtype=np.int64),
            x[positive_pos[mine]],
            x[keep],
            None,
            index_positions(keep, positive_pos[mine]),
            k=k,
        ).per_user_recall[0]
        assert got[i] == pytest.approx(want)


def test_non_finite_vectors_are_rejected_by_retrieval() -> None:
    user = np.array([[np.nan, 0.0]], dtype=np.float32)
    with pytest.raises(ValueError, match="user_vecs has non-finite values"):
        evaluate_retrieval(
            user, np.array([0]), np.eye(2, dtype=np.float32)[:1], np.eye(2, dtype=np.float32)
        )

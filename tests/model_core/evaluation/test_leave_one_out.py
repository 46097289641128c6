"""Leave-one-out split and full-ranking metrics against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.data.timelines import Timelines
from model_core.evaluation.leave_one_out import full_ranks, leave_one_out
from model_core.evaluation.metrics import hit_rate_and_ndcg_at_k
from model_core.evaluation.seen import Seen


def timelines() -> Timelines:
    # user 1: rows 0-4, positives at 1 and 3 → target row 3, history rows 0..2
    # user 2: rows 5-6, one positive → excluded (needs 2)
    # user 3: rows 7-9, positives at 7 and 8 → target row 8, history row 7
    positive = np.array([0, 1, 0, 1, 0, 1, 0, 1, 1, 0], dtype=bool)
    n = len(positive)
    return Timelines(
        user_ids=np.array([1, 2, 3]),
        offsets=np.array([0, 5, 7, 10]),
        ts=np.arange(n) * 10,
        pin_row=np.arange(n) % 4,
        pin_id=np.arange(n) % 4 + 100,
        action=np.ones(n, np.int64),
        surface=np.ones(n, np.int64),
        duration=np.ones(n, np.float32),
        positive=positive,
    )


def test_split_holds_out_the_last_positive_and_everything_after() -> None:
    loo = leave_one_out(timelines())
    assert loo.history.user_ids.tolist() == [1, 3]
    assert loo.history.lengths.tolist() == [3, 1]
    assert loo.target_pin_row.tolist() == [3 % 4, 8 % 4]
    assert loo.history.ts.max() < 80  # nothing at or after a target is history


def test_full_ranks_are_pessimistic_on_ties() -> None:
    items = np.array([[1.0], [2.0], [3.0], [2.0]], dtype=np.float32)
    users = np.array([[1.0], [-1.0]], dtype=np.float32)
    # user 0 target item 1 (score 2): items 2 (3) and 3 (2, a tie) are >= → rank 2
    # user 1 target item 0 (score -1): the best; nothing else >= → rank 0
    ranks = full_ranks(users, items, np.array([1, 0]), chunk=1)
    assert ranks.tolist() == [2, 0]
    hr, ndcg = hit_rate_and_ndcg_at_k(ranks, k=2)
    assert hr == 0.5
    assert np.isclose(ndcg, 0.5 * 1.0)
    hr3, ndcg3 = hit_rate_and_ndcg_at_k(ranks, k=3)
    assert hr3 == 1.0
    assert np.isclose(ndcg3, 0.5 * (1 / np.log2(4) + 1.0))


def test_seen_items_leave_the_ranking_but_never_the_target() -> None:
    """Regression: leave-one-out ranked the target against items the user already rated, which
    punished similarity-based models (up to ~4 of a top 10 were seen items)."""
    items = np.array([[5.0], [4.0], [3.0], [2.0], [1.0]], dtype=np.float32)
    users = np.ones((2, 1), dtype=np.float32)
    target = np.array([3, 0])
    hist = Timelines(
        user_ids=np.array([1, 2]),
        offsets=np.array([0, 3, 5]),
        ts=np.arange(5),
        pin_row=np.array([0, 1, 0, 0, 2]),  # user 1 saw items 0, 1; user 2 saw 0 (its target), 2
        pin_id=np.arange(5),
        action=np.ones(5, np.int64),
        surface=np.ones(5, np.int64),
        duration=np.ones(5, np.float32),
        positive=np.ones(5, bool),
    )
    seen = Seen.of(hist)
    assert seen.rows.tolist() == [0, 1, 0, 2]
    assert full_ranks(users, items, target).tolist() == [3, 0]
    # user 1: items 0 and 1 are gone, only item 2 is above the target; user 2 keeps its target.
    assert full_ranks(users, items, target, seen, chunk=1).tolist() == [1, 0]


def test_a_non_finite_score_is_rejected_not_counted_as_a_hit() -> None:
    """A NaN user vector compares false with every item: its target used to get rank -1 (a hit,
    NDCG inf)."""
    users = np.array([[1.0, 0.0], [np.nan, 0.0]], dtype=np.float32)
    items = np.eye(2, dtype=np.float32)
    with pytest.raises(ValueError, match=r"user_vecs has non-finite values in 1 of 2 rows"):
        full_ranks(users, items, np.array([0, 1]))
    with pytest.raises(ValueError, match="item_vecs has non-finite values"):
        full_ranks(users[:1], np.array([[np.inf, 0.0], [0.0, 1.0]], np.float32), np.array([0]))

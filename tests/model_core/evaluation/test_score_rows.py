"""An embedding blended with the user's history: the embedding alone at weight 0, the history
first at a large weight, and the same figures through every ranking path."""

from __future__ import annotations

import numpy as np
import pytest

from model_core.evaluation.history_scorers import history_scores
from model_core.evaluation.index import index_positions
from model_core.evaluation.leave_one_out import full_ranks, score_ranks
from model_core.evaluation.metrics import evaluate_retrieval
from model_core.evaluation.score_rows import EmbeddingWithHistory, evaluate_score_rows
from tests.model_core.evaluation.test_history_scorers import timelines


def setup() -> tuple[np.ndarray, np.ndarray, object]:
    rng = np.random.default_rng(3)
    users = rng.normal(size=(3, 4)).astype(np.float32)
    items = rng.normal(size=(20, 4)).astype(np.float32)
    return users, items, timelines([[1, 2, 1], [5], [7, 8, 9]])


def test_weight_zero_is_the_embedding_alone() -> None:
    users, items, tl = setup()
    blend = EmbeddingWithHistory(users, items, history_scores(tl, 20), 0.0)
    targets = np.array([4, 5, 19])
    np.testing.assert_array_equal(score_ranks(blend, targets), full_ranks(users, items, targets))
    pos_user, pos_row = np.array([0, 1, 2, 2]), np.array([1, 3, 8, 12])
    index = np.arange(20)
    in_index = index_positions(index, pos_row)
    want = evaluate_retrieval(users, pos_user, items[pos_row], items[index], None, in_index, k=3)
    got = evaluate_score_rows(blend, pos_user, pos_row, index, None, in_index, k=3)
    np.testing.assert_allclose(got.per_user_recall, want.per_user_recall)


def test_a_large_weight_ranks_the_users_own_items_first_by_the_history_order() -> None:
    users, items, tl = setup()
    scale = float(np.abs(users @ items.T).max())
    blend = EmbeddingWithHistory(users, items, history_scores(tl, 20), 10 * scale)
    # user 0: item 1 (twice) before item 2; user 1: item 5
    np.testing.assert_array_equal(score_ranks(blend, np.array([1, 5, 9])), [0, 0, 0])
    assert score_ranks(blend, np.array([2, 5, 9]))[0] == 1


def test_a_negative_weight_or_a_non_finite_vector_is_refused() -> None:
    users, items, tl = setup()
    with pytest.raises(ValueError, match="weight"):
        EmbeddingWithHistory(users, items, history_scores(tl, 20), -1.0)
    users[1, 2] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        EmbeddingWithHistory(users, items, history_scores(tl, 20), 0.5)

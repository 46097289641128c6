"""The history and item-kNN scorers against hand-computed answers, and their ranking and
retrieval against the embedding path on the same scores."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from model_core.data.timelines import Timelines
from model_core.evaluation.history_scorers import (
    choose,
    history_scores,
    item_knn_scores,
    item_similarity,
)
from model_core.evaluation.index import index_positions
from model_core.evaluation.leave_one_out import full_ranks, leave_one_out, score_ranks
from model_core.evaluation.metrics import evaluate_retrieval
from model_core.evaluation.score_rows import evaluate_score_rows
from model_core.evaluation.seen import Seen


def timelines(items_per_user: list[list[int]]) -> Timelines:
    rows = np.concatenate([np.asarray(u, dtype=np.int64) for u in items_per_user])
    n = len(rows)
    offsets = np.concatenate([[0], np.cumsum([len(u) for u in items_per_user])])
    return Timelines(
        user_ids=np.arange(len(items_per_user)) + 1,
        offsets=offsets.astype(np.int64),
        ts=np.arange(n, dtype=np.int64) * 10,
        pin_row=rows,
        pin_id=rows + 100,
        action=np.ones(n, np.int64),
        surface=np.ones(n, np.int64),
        duration=np.ones(n, np.float32),
        positive=np.ones(n, bool),
    )


def test_history_ranks_frequent_items_first_then_recent_ones() -> None:
    tl = timelines([[0, 1, 0, 2], [3]])
    freq = history_scores(tl, 5).toarray()
    assert freq[0].argsort()[::-1][:3].tolist() == [0, 2, 1]  # 0 twice; then 2 (latest), 1
    assert freq[0, 4] == 0.0
    assert freq[1, 3] > 0
    recent = history_scores(tl, 5, by="recency").toarray()
    assert recent[0].argsort()[::-1][:3].tolist() == [2, 0, 1]


def test_item_similarity_is_the_cosine_of_user_sets_pruned_to_the_top_neighbours() -> None:
    train = timelines([[0, 1], [0, 1, 2], [2, 3], [0]])
    x = np.zeros((4, 4))
    for u, items in enumerate([[0, 1], [0, 1, 2], [2, 3], [0]]):
        x[u, items] = 1
    cos = (x.T @ x) / np.sqrt(np.outer(x.sum(0), x.sum(0)))
    np.fill_diagonal(cos, 0)
    full = item_similarity(train, 4, neighbors=3).toarray()
    np.testing.assert_allclose(full, cos, rtol=1e-6)
    top1 = item_similarity(train, 4, neighbors=1).toarray()
    assert (np.count_nonzero(top1, axis=1) <= 1).all()
    assert top1[0].argmax() == cos[0].argmax()


def test_item_knn_sums_the_neighbours_of_the_last_distinct_items() -> None:
    sim = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 2], [0, 2, 0]], dtype=np.float32))
    history = timelines([[2, 0, 0]])  # latest first, distinct: 0, 2
    np.testing.assert_allclose(item_knn_scores(history, sim, recent=1).toarray(), [[0, 1, 0]])
    np.testing.assert_allclose(item_knn_scores(history, sim, recent=2).toarray(), [[0, 3, 0]])


def test_sparse_scores_rank_and_retrieve_exactly_as_the_same_dense_scores() -> None:
    rng = np.random.default_rng(0)
    users, items = rng.normal(size=(6, 4)).astype(np.float32), rng.normal(size=(30, 4))
    items = items.astype(np.float32)
    dense = users @ items.T
    scores = sp.csr_matrix(dense)
    targets = rng.integers(0, 30, size=6)
    seen = Seen.of(timelines([[1, 2], [3], [4, 5, 6], [7], [8], [9]]))
    np.testing.assert_array_equal(
        score_ranks(scores, targets, seen), full_ranks(users, items, targets, seen)
    )
    pos_user, pos_row = np.array([0, 0, 2, 5]), np.array([3, 7, 11, 29])
    index = np.arange(0, 30, 2)
    in_index = index_positions(index, pos_row)
    want = evaluate_retrieval(users, pos_user, items[pos_row], items[index], None, in_index, k=3)
    got = evaluate_score_rows(scores, pos_user, pos_row, index, None, in_index, k=3)
    np.testing.assert_allclose(got.per_user_recall, want.per_user_recall)


def test_a_target_the_scorer_never_saw_is_a_miss_not_a_tie_win() -> None:
    """history gives 0 to every unseen item: with pessimistic ties a new target never hits."""
    loo = leave_one_out(timelines([[0, 1, 5], [2, 2, 3, 2]]))  # targets: 5 (new), 2 (repeat)
    assert loo.repeat.tolist() == [False, True]
    ranks = score_ranks(history_scores(loo.history, 10), loo.target_pin_row)
    assert ranks[0] >= 9  # every other item ties with it at 0
    assert ranks[1] == 0  # the user's own most frequent item


def test_choose_keeps_the_best_setting_on_validation() -> None:
    choice = choose([{"a": 1}, {"a": 2}, {"a": 3}], lambda s: -abs(s["a"] - 2))
    assert choice.setting == {"a": 2}
    assert len(choice.validation) == 3

"""Co-engagement neighbours read from the training timelines (`model_core.features.item_graph`)."""

from __future__ import annotations

import numpy as np

from model_core.data.timelines import Timelines
from model_core.features.item_graph import co_engagement_neighbors


def _timelines(histories: list[list[int]]) -> Timelines:
    """Users' histories as catalogue rows, oldest first (only the fields the graph reads)."""
    rows = np.array([r for h in histories for r in h], dtype=np.int64)
    t = len(rows)
    offsets = np.concatenate([[0], np.cumsum([len(h) for h in histories])]).astype(np.int64)
    return Timelines(
        user_ids=np.arange(len(histories), dtype=np.int64), offsets=offsets,
        ts=np.arange(t, dtype=np.int64), pin_row=rows, pin_id=rows + 100,
        action=np.ones(t, np.int64), surface=np.ones(t, np.int64),
        duration=np.zeros(t, np.float32), positive=np.ones(t, bool),
    )  # fmt: skip


def test_neighbours_are_the_strongest_co_engaged_items_by_cosine() -> None:
    # rows 10, 20, 30, 40 → codes 1..4. 10 and 20 co-occur for two users; 10 and 30 for one,
    # but 30 is everywhere (popular), so its cosine with 10 is lower; 40 occurs alone.
    tl = _timelines([[10, 20, 30], [20, 10, 30], [30, 30], [40], [30]])
    nb = co_engagement_neighbors(tl, np.array([10, 20, 30, 40]), k=1)
    assert nb.tolist() == [[2], [1], [1], [0]]
    both = co_engagement_neighbors(tl, np.array([10, 20, 30, 40]), k=5)
    assert both.shape == (4, 2)  # trimmed to the widest row
    assert both[0].tolist() == [2, 3]
    assert both[3].tolist() == [0, 0]


def test_neighbours_never_cross_users_or_the_window() -> None:
    # the same rows, but split across users: no pair at all
    tl = _timelines([[10], [20], [30]])
    assert co_engagement_neighbors(tl, np.array([10, 20, 30])).tolist() == [[0], [0], [0]]
    # one user, 10 and 30 three actions apart: only a window of 3 or more links them
    tl = _timelines([[10, 20, 20, 30]])
    assert co_engagement_neighbors(tl, np.array([10, 20, 30]), window=2)[0].tolist() == [2, 0]
    assert co_engagement_neighbors(tl, np.array([10, 20, 30]), window=3)[0].tolist() == [2, 3]


def test_an_item_with_repeats_is_not_its_own_neighbour() -> None:
    tl = _timelines([[10, 10, 10]])
    assert co_engagement_neighbors(tl, np.array([10])).tolist() == [[0]]

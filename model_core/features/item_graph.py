"""Co-engagement neighbours of the items, for the id table's graph layer (beyond the paper).

The paper's PinSage vectors come from a graph network over Pinterest's pin-board graph: a pin's
vector mixes in what its neighbours are. Public logs have no such vectors, and a learned id vector
of an item with a dozen interactions learns little. So each known item also takes in the
learned vectors of its `k` strongest co-engagement neighbours, and theirs (propagation over the
item-item graph, as in LightGCN; `model_core.features.item_ids`): what the model learns about an
item reaches the items engaged with alongside it.

The graph is read from the training timelines alone (inside `fit`), so no held-out label shapes
it. Two items are co-engaged when one user acts on both within `window` actions of each other
(a context window bounds the pairs at T·2·window, however long a history is); the strength of
a pair is its count over sqrt(count_i · count_j), the cosine of the two items' occurrence
vectors, so that a popular item is not everyone's neighbour.
"""

from __future__ import annotations

import numpy as np

from model_core.data.timelines import Timelines
from model_core.features.item_ids import DEFAULT_NEIGHBORS

DEFAULT_WINDOW = 10  # actions either side: a 5-core Amazon history (8 actions on average) whole


def co_engagement_neighbors(
    tl: Timelines, rows: np.ndarray, k: int = DEFAULT_NEIGHBORS, window: int = DEFAULT_WINDOW
) -> np.ndarray:
    """The training timelines and the known items' catalogue rows ([V] int64, ascending, every
    row of `tl.pin_row` among them) → [V, ≤ k] int64: each known item's strongest co-engagement
    neighbours as codes 1..V (1 + position in `rows`; 0 = none), strongest first. Trimmed to the
    widest row (at least one column)."""
    n = len(rows)
    code = np.searchsorted(rows, tl.pin_row)
    assert len(tl.pin_row) == 0 or bool((rows[code.clip(max=n - 1)] == tl.pin_row).all()), (
        "every training item must be a known row"
    )
    user = np.repeat(np.arange(tl.n_users), tl.lengths)
    left, right = [], []
    for d in range(1, window + 1):
        same = user[d:] == user[:-d]
        a, b = code[:-d][same], code[d:][same]
        other = a != b
        left += [a[other], b[other]]
        right += [b[other], a[other]]
    if not left or not sum(len(x) for x in left):
        return np.zeros((n, 1), dtype=np.int64)
    key = np.concatenate(left) * n + np.concatenate(right)
    pair, count = np.unique(key, return_counts=True)
    i, j = pair // n, pair % n
    freq = np.bincount(code, minlength=n).astype(np.float64)
    strength = count / np.sqrt(freq[i] * freq[j])
    # by item, strongest first, ties by code: `pair` is sorted by (i, j), so two stable sorts
    # (strength, then item) give that order; 2x faster than a three-key lexsort
    order = np.argsort(-strength, kind="stable")
    order = order[np.argsort(i[order], kind="stable")]
    i, j = i[order], j[order]
    rank = np.arange(len(i)) - np.searchsorted(i, i)
    keep = rank < k
    out = np.zeros((n, max(1, min(k, int(rank.max()) + 1))), dtype=np.int64)
    out[i[keep], rank[keep]] = j[keep] + 1
    return out

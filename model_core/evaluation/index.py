"""The index a ranking is scored against (paper §4.1): a random sample of the catalogue, and where
a catalogue row sits in it."""

from __future__ import annotations

import numpy as np


def random_index(n_items: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """[min(size, n_items)] int64 catalogue rows drawn without replacement, sorted."""
    return np.sort(rng.choice(n_items, size=min(size, n_items), replace=False))


def index_positions(index_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """[P] int64 position of each catalogue row in the sorted ``index_rows`` ([N] int64), -1 when
    the row is not in the index (for ``positive_index_pos``)."""
    if len(index_rows) == 0:
        return np.full(len(rows), -1, dtype=np.int64)
    pos = np.minimum(np.searchsorted(index_rows, rows), len(index_rows) - 1)
    return np.where(index_rows[pos] == rows, pos, -1).astype(np.int64)

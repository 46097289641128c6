"""The logs an experiment runs on (model_core.experiment_data): under leave-one-out, models train
and validate on item vectors that never saw a validation target; the test is scored on vectors
that include it (the test's history does)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from model_core.adapters import read_movielens
from model_core.experiment_data import aligned, before_last_positives, load
from model_core.leave_one_out import leave_one_out
from model_core.timelines import PinCatalog

N_USERS = 40
HIDDEN = 999  # engaged only as users' validation positives (their second-to-last)


def _write_log(path: Path) -> None:
    """Every user rates items 1..5 (5 stars, one a day), then HIDDEN, then a test item; movies
    have titles and genres."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(1, N_USERS + 1):
        items = [*rng.choice(np.arange(1, 30), size=5, replace=False).tolist(), HIDDEN]
        items.append(int(rng.integers(30, 40)))
        rows += [f"{u},{i},5.0,{1_000_000_000 + 86_400 * d}\n" for d, i in enumerate(items)]
    (path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "".join(rows))
    movies = [f"{i},Movie {i} (2000),{'Drama' if i % 2 else 'Comedy'}\n" for i in range(1, 40)]
    movies.append(f"{HIDDEN},Hidden (2000),Drama\n")
    (path / "movies.csv").write_text("movieId,title,genres\n" + "".join(movies))


def test_leave_one_out_trains_on_vectors_without_validation_targets(tmp_path: Path) -> None:
    _write_log(tmp_path)
    data = load("movielens", str(tmp_path), quick=False, protocol="leave_one_out")
    train, test = data.training_catalog, data.catalog
    assert np.array_equal(train.pin_ids, test.pin_ids)
    row = int(train.rows(np.array([HIDDEN]))[0])
    co = slice(data.features.content_dim // 2, None)  # the co-engagement half
    assert not train.embeddings[row, co].any(), "a validation target shaped the training vectors"
    assert not np.allclose(test.embeddings[row], train.embeddings[row]), (
        "the test vectors must include the co-engagement the test history has"
    )
    # The test is what it was: each user's last positive, scored against the test vectors.
    loo = leave_one_out(data.timelines)
    assert set(test.pin_ids[loo.target_pin_row].tolist()) <= set(range(30, 40))
    # Paper protocol: one set.
    paper = load("movielens", str(tmp_path), quick=False, protocol="paper")
    assert paper.train_catalog is None
    assert paper.training_catalog is paper.catalog


def test_before_last_positives_cuts_each_user_at_their_nth_last_positive(tmp_path: Path) -> None:
    _write_log(tmp_path)
    log = read_movielens(tmp_path)
    for n, last_kept in ((1, HIDDEN), (2, None)):
        cut = before_last_positives(log, n)
        per_user = cut.actions.group_by("user_id").agg(pl.len(), pl.col("pin_id").last())
        assert (per_user["len"] == 7 - n).all()
        if last_kept is not None:
            assert (per_user["pin_id"] == last_kept).all()
    assert HIDDEN not in before_last_positives(log, 2).actions["pin_id"].to_list()


def test_aligned_undoes_a_rotation_and_keeps_dot_products() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(50, 8)).astype(np.float32)
    rotation, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    ids = np.arange(50, dtype=np.int64)
    reference = PinCatalog(ids, ref, np.full(50, -1, np.int64))
    rotated = PinCatalog(ids, (ref @ rotation).astype(np.float32), reference.topics)
    back = aligned(rotated, reference)
    np.testing.assert_allclose(back.embeddings, ref, atol=1e-4)
    np.testing.assert_allclose(
        back.embeddings @ back.embeddings.T, rotated.embeddings @ rotated.embeddings.T, atol=1e-4
    )

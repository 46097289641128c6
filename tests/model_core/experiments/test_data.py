"""What an experiment's item vectors may read: no test target, and no validation label of a
user whose validation score steers early stopping."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import polars as pl

from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.experiments.data import item_vector_actions, load, paper_item_vector_actions
from model_core.training.validation import PAPER_HORIZON_DAYS, paper_split, validation_users

RULE = PositiveRule()


def _actions(rows: list[tuple[int, int, int, str]]) -> pl.DataFrame:
    """(user, pin, minute, action type) → the action contract's columns."""
    t0 = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)
    return pl.DataFrame(
        {
            "ts": [t0 + datetime.timedelta(minutes=m) for _, _, m, _ in rows],
            "user_id": [u for u, _, _, _ in rows],
            "pin_id": [p for _, p, _, _ in rows],
            "action_type": [a for _, _, _, a in rows],
            "surface": ["home_feed"] * len(rows),
            "duration_s": [1.0] * len(rows),
        }
    )


def test_item_vectors_leave_out_test_targets_and_validated_users_validation_targets() -> None:
    acts = _actions(
        [
            # user 1 (validated): repin 10, view 11, repin 12 (validation), view 13, repin 14 (test)
            (1, 10, 0, "repin"),
            (1, 11, 1, "view"),
            (1, 12, 2, "repin"),
            (1, 13, 3, "view"),
            (1, 14, 4, "repin"),
            (1, 15, 5, "view"),
            # user 2 (not validated): the same shape; only the test target and after are cut
            (2, 20, 0, "repin"),
            (2, 22, 2, "repin"),
            (2, 23, 3, "view"),
            (2, 24, 4, "repin"),
        ]
    )
    kept = item_vector_actions(acts, RULE, validated=np.array([1]))
    pins = sorted(kept["pin_id"].to_list())
    # user 1 keeps the history between the two targets (view 13), loses both targets
    assert pins == [10, 11, 13, 20, 22, 23]
    assert kept.columns == acts.columns


def test_validation_users_are_a_stable_hash_of_the_id() -> None:
    ids = np.arange(1000, 21000, dtype=np.int64)
    chosen = validation_users(ids, max_users=2000)
    assert 1700 < len(chosen) < 2300
    # the same users whatever the row order: a log and its split agree
    shuffled = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(validation_users(shuffled, max_users=2000), chosen)
    assert np.array_equal(validation_users(ids[:5], max_users=2000), ids[:5])


def test_paper_item_vectors_leave_out_the_held_out_users_validation_window(
    tiny_actions: pl.DataFrame, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    split = int(tiny_actions["ts"].dt.epoch("s").max()) - 3 * 86_400
    train = tiny_timelines.before(split)
    val = paper_split(train, tiny_catalog, split)
    held = np.setdiff1d(train.user_ids, val.train.user_ids)  # held out of training to validate
    assert len(held) > 0
    ts = tiny_actions["ts"].dt.epoch("s").to_numpy()
    window = (ts > split - PAPER_HORIZON_DAYS * 86_400) & (ts <= split)
    held_in_window = window & np.isin(tiny_actions["user_id"].to_numpy(), held)
    assert held_in_window.any()
    # exactly the held-out users' actions in the validation window leave; nothing else does
    expected = tiny_actions.filter(pl.Series(~held_in_window))
    assert paper_item_vector_actions(tiny_actions, split).equals(expected)


def test_a_real_log_loads_for_both_protocols_with_every_item_in_the_catalogue(
    tmp_path: Path,
) -> None:
    rng = np.random.default_rng(0)
    t0 = 1_600_000_000
    ratings = [
        (u, int(i), 4.5, t0 + 86_400 * d + u)
        for u in range(1, 41)
        for d, i in enumerate(rng.choice(np.arange(1, 31), size=12, replace=False) * 10)
    ]
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n"
        + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ratings)
    )
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n"
        + "".join(f"{i * 10},Film {i} (2000),Drama\n" for i in range(1, 32))
    )
    for protocol in ("paper", "leave_one_out"):
        data = load("movielens", str(tmp_path), False, protocol)
        assert len(data.catalog) == 31  # movie 310 nobody rated included
        assert data.timelines.n_users == 40
        assert len(data.timelines.ts) == len(ratings)
        assert np.array_equal(data.validation_users, np.arange(1, 41))  # a small log: everyone

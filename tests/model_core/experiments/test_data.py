"""What an experiment's item vectors may read: no test target, and no validation label of a
user whose validation score steers early stopping."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import polars as pl

from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.evaluation.leave_one_out import leave_one_out
from model_core.evaluation.paper_protocol import EvalConfig, is_eval_user
from model_core.experiments.data import item_vector_actions, load, paper_item_vector_actions
from model_core.features.actions import FeatureConfig
from model_core.training.validation import leave_one_out_split, paper_split, validation_users

RULE = PositiveRule()
FEATURES = FeatureConfig(content_dim=2)


def _catalog(actions: pl.DataFrame) -> PinCatalog:
    pins = sorted(set(actions["pin_id"].to_list()))
    return PinCatalog.from_frame(
        pl.DataFrame(
            {"pin_id": pins, "embedding": [[0.0, 1.0]] * len(pins), "topic": [0] * len(pins)}
        )
    )


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


def test_item_vectors_read_exactly_what_training_reads() -> None:
    """Every user is cut where leave-one-out training cuts them: before the validation target
    when they have one (it used to keep what lies between the two targets, which no model
    trains on), else before the test target."""
    acts = _actions(
        [
            # user 1: repin 10, view 11, repin 12 (validation), view 13, repin 14 (test)
            (1, 10, 0, "repin"),
            (1, 11, 1, "closeup"),
            (1, 12, 2, "repin"),
            (1, 13, 3, "closeup"),
            (1, 14, 4, "repin"),
            (1, 15, 5, "closeup"),
            # user 2: two positives, the first its first action: no validation target
            (2, 22, 2, "repin"),
            (2, 23, 3, "closeup"),
            (2, 24, 4, "repin"),
        ]
    )
    kept = item_vector_actions(acts, RULE)
    assert sorted(kept["pin_id"].to_list()) == [10, 11, 22, 23]
    assert kept.columns == acts.columns
    tl, _ = Timelines.from_actions(acts, _catalog(acts), FEATURES, RULE)
    trained = leave_one_out_split(leave_one_out(tl).history, _catalog(acts), tl.user_ids).train
    assert sorted(trained.pin_id.tolist()) == [10, 11, 22, 23]


def test_validation_users_are_a_stable_hash_of_the_id() -> None:
    ids = np.arange(1000, 21000, dtype=np.int64)
    chosen = validation_users(ids, max_users=2000)
    assert 1700 < len(chosen) < 2300
    # the same users whatever the row order: a log and its split agree
    shuffled = np.random.default_rng(0).permutation(ids)
    assert np.array_equal(validation_users(shuffled, max_users=2000), chosen)
    assert np.array_equal(validation_users(ids[:5], max_users=2000), ids[:5])


def test_paper_item_vectors_read_only_the_users_the_models_train_on(
    tiny_actions: pl.DataFrame, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """No evaluation user's and no held-out validation user's action reaches the vectors (they
    used to read every user's actions before t)."""
    split = int(tiny_actions["ts"].dt.epoch("s").max()) - 3 * 86_400
    cfg = EvalConfig()
    train = tiny_timelines.select_users(
        ~is_eval_user(tiny_timelines.user_ids, cfg.eval_fraction, cfg.seed)
    ).before(split)
    val = paper_split(train, tiny_catalog, split)
    kept = set(paper_item_vector_actions(tiny_actions, split)["user_id"].unique().to_list())
    everyone = np.unique(tiny_actions["user_id"].to_numpy())
    held = set(train.user_ids.tolist()) - set(val.train.user_ids.tolist())
    evaluated = set(everyone[is_eval_user(everyone, cfg.eval_fraction, cfg.seed)].tolist())
    assert held
    assert evaluated
    assert kept == set(everyone.tolist()) - held - evaluated


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

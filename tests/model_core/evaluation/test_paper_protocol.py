"""The §4.1 protocol: disjoint users, no future information in training, baselines."""

from __future__ import annotations

import datetime

import numpy as np
import polars as pl

from model_core.data.synthetic import WorldConfig
from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.paper_protocol import (
    EvalConfig,
    build_eval_set,
    is_eval_user,
    popularity_counts,
    recent_mean,
)
from model_core.features.actions import FeatureConfig
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.recipe import (
    RecipeConfig,
    label_sketch,
    split_timestamp,
    training_timelines,
)
from model_core.training.sampler import SequenceSampler


def test_split_timestamp_leaves_exactly_the_horizon() -> None:
    t = split_timestamp(datetime.date(2026, 1, 31), 14)
    end = datetime.datetime(2026, 2, 1, tzinfo=datetime.timezone.utc).timestamp()
    assert end - t == 14 * 86400


def test_eval_users_are_disjoint_stable_and_sized() -> None:
    ids = np.arange(100_000, 200_000, dtype=np.int64)
    held = is_eval_user(ids, 0.2, seed=0)
    assert 0.19 < held.mean() < 0.21
    assert np.array_equal(held[::-1], is_eval_user(ids[::-1], 0.2, seed=0))  # order-free
    assert not np.array_equal(held, is_eval_user(ids, 0.2, seed=1))


def test_no_evaluation_period_information_reaches_training(
    tiny_world: WorldConfig, tiny_actions: pl.DataFrame, tiny_catalog: PinCatalog
) -> None:
    """Plant a marker pin engaged by training users only after the split: it must not appear in
    the training timelines or the sketch, while evaluation positives do see it."""
    cfg = RecipeConfig()
    split = split_timestamp(tiny_world.dates[-1], cfg.eval.horizon_days)
    marker = int(tiny_catalog.pin_ids[0])
    late = pl.col("ts").dt.epoch("s") > split
    planted = tiny_actions.with_columns(
        pl.when(late).then(marker).otherwise(pl.col("pin_id")).alias("pin_id")
    ).filter(~(~late & (pl.col("pin_id") == marker)))
    tl, _ = Timelines.from_actions(
        planted, tiny_catalog, FeatureConfig(content_dim=tiny_world.content_dim)
    )
    train = training_timelines(tl, split, cfg)
    assert train.ts.max() <= split
    assert marker not in set(train.pin_id.tolist())
    sampler = SequenceSampler(train, tiny_catalog, cfg.sampler)
    assert label_sketch(sampler, cfg).query(np.array([marker]))[0] == 0
    assert not np.isin(train.user_ids, tl.user_ids[is_eval_user(tl.user_ids, 0.2)]).any()

    es = build_eval_set(tl, tiny_catalog, split, cfg.eval)
    assert es.history.ts.max() <= split
    assert (tiny_catalog.pin_ids[es.positive_pin_row] == marker).all()
    assert np.isin(es.history.user_ids, train.user_ids).sum() == 0


def test_eval_positives_are_in_the_14_days_after_the_split(
    tiny_world: WorldConfig, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    split = split_timestamp(tiny_world.dates[-8], 7)
    es = build_eval_set(tiny_timelines, tiny_catalog, split, EvalConfig(horizon_days=7))
    assert es.history.n_users > 0
    assert len(np.unique(es.positive_user)) == es.history.n_users  # everyone has a positive
    # Recompute positives by brute force for the held-out users.
    want = 0
    for uid in es.history.user_ids:
        u = int(np.searchsorted(tiny_timelines.user_ids, uid))
        sl = slice(tiny_timelines.offsets[u], tiny_timelines.offsets[u + 1])
        ts, pos = tiny_timelines.ts[sl], tiny_timelines.positive[sl]
        want += int((pos & (ts > split) & (ts <= split + 7 * 86400)).sum())
    assert len(es.positive_user) == want


def test_baselines() -> None:
    catalog = PinCatalog(
        np.array([1, 2, 3]), np.array([[1, 0], [0, 1], [1, 1]], dtype=np.float32), np.zeros(3)
    )
    tl = Timelines(
        user_ids=np.array([7, 8]),
        offsets=np.array([0, 3, 4]),
        ts=np.array([1, 2, 3, 1]),
        pin_row=np.array([0, 1, 0, 2]),
        pin_id=np.array([1, 2, 1, 3]),
        action=np.ones(4, dtype=np.int64),
        surface=np.ones(4, dtype=np.int64),
        duration=np.ones(4, dtype=np.float32),
        positive=np.array([True, False, True, False]),
    )
    assert popularity_counts(tl, 3).tolist() == [2.0, 0.0, 0.0]
    rm = recent_mean(tl, catalog, max_len=10)
    np.testing.assert_allclose(rm[0], [1, 0])  # user 7: positives only (pin 1 twice)
    np.testing.assert_allclose(rm[1], [2**-0.5, 2**-0.5], rtol=1e-6)  # no positive: all actions
    rm1 = recent_mean(tl, catalog, max_len=1)
    np.testing.assert_allclose(rm1[0], [1, 0])


def test_paper_validation_split_fits_a_short_log(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog, tiny_world: WorldConfig
) -> None:
    """The validation window shrinks to what a short log holds (Taobao's sample spans 9 days),
    its users are held out of training, and the metric is a recall."""
    from model_core.training.validation import paper_split

    split = split_timestamp(tiny_world.dates[-1], 14.0)
    train = training_timelines(tiny_timelines, split, RecipeConfig())
    short = train.select_rows(train.ts > split - 5 * 86_400)  # a 5-day log
    val = paper_split(short, tiny_catalog, split, horizon_days=14.0)
    assert val.n_users > 0
    assert 0 < len(val.train.user_ids) < len(short.user_ids)  # validation users left training
    features = FeatureConfig(content_dim=tiny_catalog.embeddings.shape[1])
    model = PinnerFormer(ModelConfig(features=features, max_len=16, hidden=16, out_dim=8))
    assert 0.0 <= val.validate(model) <= 1.0


def test_repeat_positives_and_recall_on_each_part(
    tiny_world: WorldConfig, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """A positive is a repeat iff its user acted on that pin up to t; recall on each part is
    each user's hits on that part, over the users who have such positives — so the user's own
    history scores every new positive a miss and hits repeats."""
    from model_core.evaluation.history_scorers import history_scores
    from model_core.evaluation.index import index_positions
    from model_core.evaluation.score_rows import evaluate_score_rows

    split = split_timestamp(tiny_world.dates[-8], 7)
    es = build_eval_set(tiny_timelines, tiny_catalog, split, EvalConfig(horizon_days=7))
    want = [
        int(pin) in set(es.history.pin_row[es.history.offsets[u] : es.history.offsets[u + 1]])
        for u, pin in zip(es.positive_user, es.positive_pin_row, strict=True)
    ]
    assert es.repeat.tolist() == want
    assert 0 < es.repeat.sum() < len(es.repeat)
    distinct = max(
        len(set(es.history.pin_row[es.history.offsets[u] : es.history.offsets[u + 1]]))
        for u in range(es.history.n_users)
    )
    k = distinct + 1  # every item of the user's history is in their top k ...
    assert k < len(es.index_rows)  # ... and a new positive ties with too many zeros to hit
    m = evaluate_score_rows(
        history_scores(es.history, len(tiny_catalog)),
        es.positive_user,
        es.positive_pin_row,
        es.index_rows,
        None,
        index_positions(es.index_rows, es.positive_pin_row),
        k=k,
    )
    assert (m.recall_on(~es.repeat) == 0).all()
    assert (m.recall_on(es.repeat) == 1).all()
    assert len(m.recall_on(es.repeat)) == len(np.unique(es.positive_user[es.repeat]))


def test_pooled_windows_are_each_windows_eval_set_side_by_side(
    tiny_world: WorldConfig, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """Window k is exactly `build_eval_set` at t + k * horizon, its users renumbered after the
    earlier windows'; one window is the paper's eval set itself; every positive knows its t."""
    from model_core.evaluation.paper_protocol import pooled_eval_set

    cfg = EvalConfig(horizon_days=3, remove_seen=True)
    split = split_timestamp(tiny_world.dates[-10], 3)
    one = pooled_eval_set(tiny_timelines, tiny_catalog, split, cfg, 1)
    alone = build_eval_set(tiny_timelines, tiny_catalog, split, cfg)
    np.testing.assert_array_equal(one.positive_pin_row, alone.positive_pin_row)
    pooled = pooled_eval_set(tiny_timelines, tiny_catalog, split, cfg, 3)
    parts = [
        build_eval_set(tiny_timelines, tiny_catalog, split + k * 3 * 86_400, cfg) for k in range(3)
    ]
    assert pooled.history.n_users == sum(p.history.n_users for p in parts)
    assert np.unique(pooled.origin_ts).tolist() == [split + k * 3 * 86_400 for k in range(3)]
    start = 0
    for k, part in enumerate(parts):
        mine = pooled.origin_ts == split + k * 3 * 86_400
        np.testing.assert_array_equal(pooled.positive_user[mine] - start, part.positive_user)
        np.testing.assert_array_equal(pooled.positive_pin_row[mine], part.positive_pin_row)
        assert (
            pooled.history.ts[
                pooled.history.offsets[start] : pooled.history.offsets[start + part.history.n_users]
            ].max()
            <= split + k * 3 * 86_400
        )
        start += part.history.n_users
    assert pooled.seen is not None
    assert len(pooled.seen.offsets) == pooled.history.n_users + 1
    assert pooled.split_ts == split


def test_pooled_validation_windows_validate_on_more_users(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog, tiny_world: WorldConfig
) -> None:
    """`windows` validation windows before the split: more held-out (user, window) units than
    one window, the same training users, and no training action after the split."""
    from model_core.training.validation import paper_split

    split = split_timestamp(tiny_world.dates[-1], 14.0)
    train = training_timelines(tiny_timelines, split, RecipeConfig())
    one = paper_split(train, tiny_catalog, split, horizon_days=3.0)
    three = paper_split(train, tiny_catalog, split, horizon_days=3.0, windows=3)
    assert three.n_users > one.n_users
    np.testing.assert_array_equal(three.train.user_ids, one.train.user_ids)
    assert three.train.ts.max() <= split

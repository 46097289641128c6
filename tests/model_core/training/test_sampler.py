"""Training examples: labels come only from the future K days, never from the input window."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest

from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.features.actions import FeatureConfig
from model_core.training.sampler import OBJECTIVES, SamplerConfig, SequenceSampler

K_DAYS = 3.0


@pytest.fixture(scope="module", params=OBJECTIVES)
def sampler(
    request: pytest.FixtureRequest, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> SequenceSampler:
    cfg = SamplerConfig(
        objective=request.param, max_len=16, window_days=K_DAYS, max_positives=5, dense_positions=5
    )
    return SequenceSampler(tiny_timelines, tiny_catalog, cfg, seed=3)


def test_labels_are_future_positives_within_k_days(sampler: SequenceSampler) -> None:
    tl = sampler.tl
    for step in range(3):
        b = sampler.batch(step, 32)
        lengths = b.seq.lengths.numpy()
        ends = b.seq.ts.numpy()
        label = b.label_row.numpy()
        pair_b, pair_pos = b.pair_b.numpy(), b.pair_pos.numpy()
        assert len(label) > 0
        assert tl.positive[label].all(), "only positive engagement is ever a label"
        emb_ts = ends[pair_b, pair_pos]
        assert (tl.ts[label] > emb_ts).all(), "labels strictly after the predicting position"
        assert (tl.ts[label] <= emb_ts + K_DAYS * 86400).all(), "labels within K days"
        assert (pair_pos < lengths[pair_b]).all()
        # the label belongs to the same user as its window
        owner = np.searchsorted(tl.offsets, label, side="right") - 1
        assert (tl.user_ids[owner] == b.user_id.numpy()).all()
        assert (tl.pin_row[label] == b.pin_row.numpy()).all()
        if sampler.config.objective in ("next_action", "all_action"):
            # the sequence's latest action predicts: labels lie after the whole input window
            assert (pair_pos == lengths[pair_b] - 1).all()
            assert (tl.ts[label] > ends[pair_b, lengths[pair_b] - 1]).all()


def test_objective_shapes(sampler: SequenceSampler) -> None:
    b = sampler.batch(0, 32)
    per_emb = np.unique(b.emb_key.numpy(), return_counts=True)[1]
    per_window = np.bincount(b.pair_b.numpy(), minlength=32)
    objective = sampler.config.objective
    if objective == "next_action":
        assert (per_window == 1).all()
    elif objective == "all_action":
        assert per_window.max() <= 5
        assert (per_emb == per_window[per_window > 0]).all()
    elif objective == "dense_all_action":
        assert (per_emb == 1).all()
        assert per_window.max() <= 5
    else:  # sasrec: one label per position that has a next positive
        assert (per_emb == 1).all()
        assert per_window.max() > 1


def test_batches_are_deterministic_per_step(sampler: SequenceSampler) -> None:
    again = SequenceSampler(sampler.tl, sampler.catalog, sampler.config, seed=3)
    a, b = sampler.batch(7, 16), again.batch(7, 16)
    assert np.array_equal(a.label_row.numpy(), b.label_row.numpy())
    assert np.array_equal(a.seq.ts.numpy(), b.seq.ts.numpy())


def test_knobs_need_no_data_regeneration(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    base = SamplerConfig(max_len=8, sequence_fraction=1.0, max_sequences_per_user=1_000_000)
    s_full = SequenceSampler(tiny_timelines, tiny_catalog, base)
    s_frac = SequenceSampler(
        tiny_timelines, tiny_catalog, dataclasses.replace(base, sequence_fraction=0.1)
    )
    s_cap = SequenceSampler(
        tiny_timelines, tiny_catalog, dataclasses.replace(base, max_sequences_per_user=2)
    )
    assert s_full.sequences_per_epoch == len(s_full.eligible)
    assert s_frac.sequences_per_epoch < 0.2 * s_full.sequences_per_epoch
    pool = s_cap.epoch_pool(0)
    owners = s_cap.owner[pool]
    assert np.bincount(owners).max() <= 2
    assert len(np.unique(pool)) == len(pool)
    assert s_full.batch(0, 8).seq.ts.shape[1] <= 8  # max_len honoured


def test_tiled_windows_cover_each_users_history_once_from_the_latest(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    cfg = SamplerConfig(objective="sasrec", max_len=4, window_ends="tiled")
    s = SequenceSampler(tiny_timelines, tiny_catalog, cfg, seed=1)
    pool = s.epoch_pool(0)
    assert len(pool) == s.sequences_per_epoch
    assert len(np.unique(pool)) == len(pool)
    for user in np.unique(s.owner[s.eligible]):
        mine = s.eligible[s.owner[s.eligible] == user]
        ends = np.sort(pool[s.owner[pool] == user])[::-1]
        assert ends[0] == mine.max(), "the latest window ends at the user's last labelled row"
        assert (np.diff(ends) == -4).all(), "back-to-back windows of max_len rows"
        n = min((mine.max() - mine.min()) // 4 + 1, cfg.max_sequences_per_user)
        assert len(ends) == n
    # With the sasrec objective the tiles' pairs train each labelled row of an uncapped user
    # exactly once.
    b, pos, _ = s.pairs(pool, np.random.default_rng(0))
    starts = np.maximum(s.tl.offsets[s.owner[pool]], pool - 3)
    trained = starts[b] + pos
    assert len(np.unique(trained)) == len(trained)
    uncapped = s.quota < cfg.max_sequences_per_user
    assert set(trained.tolist()) >= set(s.eligible[uncapped[s.owner[s.eligible]]].tolist())
    assert not np.array_equal(pool, s.epoch_pool(1)), "the order is shuffled every epoch"
    assert np.array_equal(np.sort(pool), np.sort(s.epoch_pool(1)))


def test_latest_windows_add_each_users_latest_to_the_random_ones(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    cfg = SamplerConfig(max_len=8, window_ends="latest")
    s = SequenceSampler(tiny_timelines, tiny_catalog, cfg, seed=2)
    plain = SequenceSampler(tiny_timelines, tiny_catalog, SamplerConfig(max_len=8), seed=2)
    latest = set(s._last_eligible().tolist())
    for epoch in range(2):
        pool = s.epoch_pool(epoch)
        assert len(pool) == s.sequences_per_epoch  # every batch of the epoch is full
        assert len(np.unique(pool)) == len(pool)
        assert latest <= set(pool.tolist())  # every user's latest window, every epoch
    assert s.sequences_per_epoch <= plain.sequences_per_epoch + len(latest)
    assert s.sequences_per_epoch > plain.sequences_per_epoch


def actions_frame(rows: list[tuple[int, int, int, str, str, float]]) -> pl.DataFrame:
    return pl.DataFrame(
        rows,
        schema=["user_id", "ts_s", "pin_id", "action_type", "surface", "duration_s"],
        orient="row",
    ).with_columns(pl.from_epoch("ts_s", time_unit="s").dt.replace_time_zone("UTC").alias("ts"))


def test_oov_rows_are_dropped_and_counted() -> None:
    catalog = PinCatalog(np.array([10, 11]), np.eye(2, dtype=np.float32), np.array([0, 1]))
    df = actions_frame(
        [
            (1, 100, 10, "repin", "home_feed", 1.0),
            (1, 200, 11, "teleport", "home_feed", 1.0),  # unknown action type
            (1, 300, 10, "click", "tv", 20.0),  # unknown surface
            (2, 100, 99, "click", "home_feed", 20.0),  # unknown pin
            (2, 150, 11, "click", "home_feed", 20.0),
        ]
    )
    tl, drops = Timelines.from_actions(df, catalog, FeatureConfig(content_dim=2))
    assert (drops.unknown_action_type, drops.unknown_surface, drops.unknown_pin) == (1, 1, 1)
    assert tl.n_users == 2
    assert list(tl.lengths) == [1, 1]


def test_positive_rule_is_the_papers_and_configurable() -> None:
    rule = PositiveRule()
    types = np.array(["repin", "closeup", "closeup", "click", "click", "hide", "repin"])
    surf = np.array(["home_feed"] * 6 + ["search"])
    dur = np.array([1.0, 10.0, 10.5, 11.0, 3.0, 60.0, 60.0])
    assert rule.mask(types, surf, dur).tolist() == [True, False, True, True, False, False, False]
    everywhere = PositiveRule(surfaces=("home_feed", "search"))
    assert everywhere.mask(types, surf, dur)[-1]


def test_positive_rule_sql_matches_the_numpy_rule() -> None:
    import duckdb

    rule = PositiveRule()
    types = ["repin", "closeup", "closeup", "click", "click", "hide", "repin"]
    surf = ["home_feed"] * 6 + ["search"]
    dur = [1.0, 10.0, 10.5, 11.0, 3.0, 60.0, 60.0]
    con = duckdb.connect()
    con.register("rows", pl.DataFrame({"action_type": types, "surface": surf, "duration_s": dur}))
    got = con.sql(f"SELECT {rule.sql()} AS p FROM rows").pl()["p"].to_list()
    assert got == rule.mask(np.array(types), np.array(surf), np.array(dur)).tolist()


def test_label_counts_are_what_the_first_epoch_draws(sampler: SequenceSampler) -> None:
    """logQ's frequencies come from the labels the sampler actually draws (heavy users capped,
    objectives weighting positions differently), not from every positive of the log."""
    counts = sampler.label_counts(batch_size=32)
    drawn = np.zeros(len(sampler.catalog), dtype=np.int64)
    for step in range(sampler.steps_per_epoch(32)):
        rows = sampler.batch(step, 32).pin_row.numpy()
        drawn += np.bincount(rows, minlength=len(sampler.catalog))
    np.testing.assert_array_equal(counts, drawn)


def test_row_order_labels_see_same_second_positives_and_no_window() -> None:
    """Leave-one-out logs tie timestamps (a day's reviews share one midnight): in row order the
    next row's positive is a label; in time order it is not (not strictly later)."""
    n = 4
    tl = Timelines(
        user_ids=np.array([1]),
        offsets=np.array([0, n]),
        ts=np.array([0, 0, 0, 400 * 86_400]),  # three on one day, one a year later
        pin_row=np.arange(n),
        pin_id=np.arange(n),
        action=np.ones(n, np.int64),
        surface=np.ones(n, np.int64),
        duration=np.zeros(n, np.float32),
        positive=np.ones(n, bool),
    )
    catalog = PinCatalog(np.arange(n), np.zeros((n, 2), np.float32), np.full(n, -1))
    by_time = SequenceSampler(tl, catalog, SamplerConfig(objective="sasrec"))
    by_rows = SequenceSampler(
        tl, catalog, SamplerConfig(objective="sasrec", window_days=None, label_order="rows")
    )
    assert by_time.n_labels.tolist() == [0, 0, 0, 0]
    assert by_rows.n_labels.tolist() == [3, 2, 1, 0]
    _, pos, label = by_rows.pairs(np.array([3]), np.random.default_rng(0))
    assert pos.tolist() == [0, 1, 2]
    assert label.tolist() == [1, 2, 3]

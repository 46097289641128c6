"""Properties of the synthetic world: the §4 contract, determinism and behavioural structure."""

from __future__ import annotations

import dataclasses
import datetime
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from model_core.data.synthetic import (
    ACTION_TYPES,
    SURFACES,
    WorldConfig,
    generate_day,
    generate_range,
    pin_features,
)

CONTRACT = {
    "event_date": pl.Date,
    "ts": pl.Datetime("us", "UTC"),
    "user_id": pl.Int64,
    "pin_id": pl.Int64,
    "action_type": pl.String,
    "surface": pl.String,
    "duration_s": pl.Float64,
}


def _is_positive() -> pl.Expr:
    """The paper's rule: repin, or closeup/click > 10 s, on the home feed."""
    long_look = pl.col("action_type").is_in(["closeup", "click"]) & (pl.col("duration_s") > 10)
    return (pl.col("surface") == "home_feed") & ((pl.col("action_type") == "repin") | long_look)


@pytest.fixture(scope="module")
def config() -> WorldConfig:
    return WorldConfig.tiny()


@pytest.fixture(scope="module")
def world(config: WorldConfig) -> pl.DataFrame:
    """Every day of the tiny world, joined with the pins' topics."""
    days = pl.concat(generate_range(config, config.dates[0], config.dates[-1]))
    topics = pin_features(config).select("pin_id", "topic")
    return days.join(topics, on="pin_id", how="left").with_columns(positive=_is_positive())


def test_day_matches_contract(config: WorldConfig) -> None:
    day = config.dates[3]
    df = generate_day(config, day)
    assert dict(df.schema) == CONTRACT
    assert df.height > 0
    assert df.null_count().sum_horizontal().item() == 0
    assert (df["event_date"] == day).all()
    start = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
    assert df["ts"].min() >= start
    assert df["ts"].max() < start + datetime.timedelta(days=1)
    assert (df["duration_s"] >= 0).all()
    assert df["duration_s"].is_finite().all()
    assert set(df["action_type"].unique()) == set(ACTION_TYPES)
    assert set(df["surface"].unique()) == set(SURFACES)
    assert df.equals(df.sort("user_id", "ts"))


def test_every_pin_exists_and_ids_are_not_row_indices(
    config: WorldConfig, world: pl.DataFrame
) -> None:
    assert world["topic"].null_count() == 0
    assert world["user_id"].min() >= config.user_id_base
    assert world["user_id"].max() < config.user_id_base + config.n_users


def test_empty_day_keeps_the_contract() -> None:
    config = dataclasses.replace(
        WorldConfig.tiny(), n_users=3, activity_median=1e-9, activity_sigma=0.0
    )
    df = generate_day(config, config.start_date)
    assert df.height == 0
    assert dict(df.schema) == CONTRACT


def test_same_day_twice_is_identical(config: WorldConfig) -> None:
    assert generate_day(config, config.dates[5]).equals(generate_day(config, config.dates[5]))


def test_day_does_not_depend_on_days_generated_before(config: WorldConfig) -> None:
    target = config.dates[10]
    alone = generate_day(config, target)
    for day in (config.dates[11], config.dates[0], config.dates[9]):
        generate_day(config, day)
    assert generate_day(config, target).equals(alone)
    in_range = list(generate_range(config, config.dates[8], config.dates[10]))
    assert len(in_range) == 3
    assert in_range[-1].equals(alone)


def test_day_is_identical_in_a_fresh_process(config: WorldConfig, tmp_path: Path) -> None:
    target = config.dates[20]
    out = tmp_path / "day.parquet"
    code = (
        "import datetime; from model_core.data.synthetic import WorldConfig, generate_day; "
        f"generate_day(WorldConfig.tiny(), datetime.date.fromordinal({target.toordinal()}))"
        f".write_parquet({str(out)!r})"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert pl.read_parquet(out).equals(generate_day(config, target))


def test_different_seeds_give_different_worlds(config: WorldConfig) -> None:
    other = WorldConfig.tiny(seed=1)
    assert not generate_day(config, config.dates[0]).equals(generate_day(other, other.dates[0]))
    emb = pin_features(config)["embedding"].to_numpy()
    assert not np.allclose(emb, pin_features(other)["embedding"].to_numpy())


def test_generate_range_yields_one_frame_per_day_inclusive(config: WorldConfig) -> None:
    frames = list(generate_range(config, config.dates[0], config.dates[2]))
    assert [f["event_date"][0] for f in frames] == config.dates[:3]


def test_days_outside_the_default_range_are_valid(config: WorldConfig) -> None:
    day = config.dates[-1] + datetime.timedelta(days=30)
    df = generate_day(config, day)
    assert df.height > 0
    assert (df["event_date"] == day).all()


def test_dates_property(config: WorldConfig) -> None:
    assert len(config.dates) == config.n_days
    assert config.dates[0] == config.start_date
    assert config.dates[-1] - config.dates[0] == datetime.timedelta(days=config.n_days - 1)


def test_positive_fraction_is_realistic(world: pl.DataFrame) -> None:
    assert 0.2 <= world["positive"].mean() <= 0.4  # type: ignore[operator]


def test_positives_concentrate_on_few_topics(config: WorldConfig, world: pl.DataFrame) -> None:
    counts = world.filter("positive").group_by("user_id", "topic").len()
    entropy = (
        counts.with_columns(p=pl.col("len") / pl.col("len").sum().over("user_id"))
        .group_by("user_id")
        .agg(h=-(pl.col("p") * pl.col("p").log()).sum(), n=pl.col("len").sum())
        .filter(pl.col("n") >= 30)
    )
    assert entropy.height >= 50
    assert entropy["h"].median() < 0.6 * math.log(config.n_topics)  # type: ignore[operator]


def _with_top_topic(world: pl.DataFrame) -> pl.DataFrame:
    """Flag actions on the topic each user engages with most (a proxy for their main interest)."""
    top = (
        world.group_by("user_id", "topic")
        .len()
        .sort("len", "topic", descending=True)
        .group_by("user_id")
        .first()
        .select("user_id", top_topic="topic")
    )
    return world.join(top, on="user_id").with_columns(on_top=pl.col("topic") == pl.col("top_topic"))


def test_hides_fall_on_pins_outside_the_users_interests(world: pl.DataFrame) -> None:
    rates = (
        _with_top_topic(world).group_by("on_top").agg(hide=(pl.col("action_type") == "hide").mean())
    )
    rate = dict(zip(rates["on_top"], rates["hide"], strict=True))
    assert rate[False] > 3 * rate[True]


def test_matching_pins_get_longer_looks_and_more_repins(world: pl.DataFrame) -> None:
    flagged = _with_top_topic(world)
    closeups = flagged.filter(pl.col("action_type") == "closeup")
    med = dict(closeups.group_by("on_top").agg(pl.col("duration_s").median()).iter_rows())
    assert med[True] > 1.3 * med[False]
    repin = dict(
        flagged.group_by("on_top").agg((pl.col("action_type") == "repin").mean()).iter_rows()
    )
    assert repin[True] > 1.3 * repin[False]


def test_active_users_differ_between_days(config: WorldConfig, world: pl.DataFrame) -> None:
    active = world.group_by("event_date").agg(pl.col("user_id").unique()).sort("event_date")
    a, b = set(active["user_id"][0]), set(active["user_id"][1])
    assert 0.02 * config.n_users < len(a) < 0.5 * config.n_users
    assert len(a & b) / len(a | b) < 0.5


def test_activity_is_heavy_tailed(config: WorldConfig, world: pl.DataFrame) -> None:
    days_active = world.group_by("user_id").agg(pl.col("event_date").n_unique())["event_date"]
    assert days_active.median() <= 0.15 * config.n_days  # type: ignore[operator]
    assert days_active.max() >= 0.7 * config.n_days  # type: ignore[operator]


def test_actions_cluster_in_sessions(world: pl.DataFrame) -> None:
    gaps = world.select(gap=pl.col("ts").diff().over("user_id", "event_date").dt.total_seconds())
    gaps = gaps.drop_nulls()["gap"]
    assert gaps.median() < 120  # type: ignore[operator]
    assert (gaps > 3600).mean() > 0.01  # type: ignore[operator]


def test_interests_drift_over_weeks(config: WorldConfig, world: pl.DataFrame) -> None:
    """Heavy users' topic mix moves more between distant weeks than between interleaved days."""
    day_index = (pl.col("event_date") - pl.lit(config.start_date)).dt.total_days()

    def median_total_variation(split: pl.Expr) -> float:
        parts = world.with_columns(part=split).drop_nulls("part")
        n = parts.group_by("user_id", "part").len().pivot("part", index="user_id", values="len")
        heavy = n.filter((pl.col("a") >= 100) & (pl.col("b") >= 100))["user_id"]
        assert heavy.len() >= 20
        dist = (
            parts.filter(pl.col("user_id").is_in(heavy.implode()))
            .group_by("user_id", "part", "topic")
            .len()
            .with_columns(p=pl.col("len") / pl.col("len").sum().over("user_id", "part"))
            .pivot("part", index=["user_id", "topic"], values="p")
            .fill_null(0.0)
        )
        tv = dist.group_by("user_id").agg(tv=0.5 * (pl.col("a") - pl.col("b")).abs().sum())
        return float(tv["tv"].median())  # type: ignore[arg-type]

    first, last = day_index < 10, day_index >= config.n_days - 10
    early_late = pl.when(first).then(pl.lit("a")).when(last).then(pl.lit("b"))
    interleaved = pl.when(~first & ~last).then(
        pl.when(day_index % 2 == 0).then(pl.lit("a")).otherwise(pl.lit("b"))
    )
    drift, noise = median_total_variation(early_late), median_total_variation(interleaved)
    assert drift > noise + 0.05, (drift, noise)


def test_pin_features(config: WorldConfig) -> None:
    pins = pin_features(config)
    assert dict(pins.schema) == {
        "pin_id": pl.Int64,
        "embedding": pl.Array(pl.Float32, config.content_dim),
        "topic": pl.Int32,
    }
    assert pins.height == config.n_pins
    assert pins["pin_id"].n_unique() == config.n_pins
    assert pins["topic"].min() == 0
    assert pins["topic"].max() == config.n_topics - 1
    emb = pins["embedding"].to_numpy()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    assert pins.equals(pin_features(config))


def test_embeddings_reveal_topics_only_roughly(config: WorldConfig) -> None:
    pins = pin_features(config)
    emb = pins["embedding"].to_numpy()
    topic = pins["topic"].to_numpy()
    sim = emb @ emb.T
    same = topic[:, None] == topic[None, :]
    np.fill_diagonal(same, False)
    within, across = sim[same].mean(), sim[~same].mean()
    assert within > across + 0.2
    assert within < 0.9  # noisy: a content embedding is not a topic label


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(AssertionError, match="surface_probs"):
        WorldConfig(surface_probs=(0.5, 0.5, 0.5))
    with pytest.raises(AssertionError, match="n_pins"):
        WorldConfig(n_pins=10)

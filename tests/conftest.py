"""Shared fixtures: a tiny synthetic world, built once per session."""

from __future__ import annotations

import polars as pl
import pytest

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig


@pytest.fixture(scope="session")
def tiny_world() -> synthetic.WorldConfig:
    return synthetic.WorldConfig.tiny()


@pytest.fixture(scope="session")
def tiny_catalog(tiny_world: synthetic.WorldConfig) -> PinCatalog:
    return PinCatalog.from_frame(synthetic.pin_features(tiny_world))


@pytest.fixture(scope="session")
def tiny_actions(tiny_world: synthetic.WorldConfig) -> pl.DataFrame:
    days = tiny_world.dates
    return pl.concat(list(synthetic.generate_range(tiny_world, days[0], days[-1])))


@pytest.fixture(scope="session")
def tiny_timelines(
    tiny_world: synthetic.WorldConfig, tiny_actions: pl.DataFrame, tiny_catalog: PinCatalog
) -> Timelines:
    timelines, _ = Timelines.from_actions(
        tiny_actions, tiny_catalog, FeatureConfig(content_dim=tiny_world.content_dim)
    )
    return timelines

"""Shared fixtures: a tiny synthetic world, built once per session.

Under pytest-xdist (`make test` runs one worker per core) each worker, and every process it
starts (the torchrun workers read OMP_NUM_THREADS), computes with its share of the cores, so the
workers do not oversubscribe them.
"""

from __future__ import annotations

import os

import polars as pl
import pytest
import torch

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig

if os.environ.get("PYTEST_XDIST_WORKER"):
    _cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    _threads = max(1, (_cpus or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)
    torch.set_num_threads(_threads)


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

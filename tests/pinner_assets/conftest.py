"""A real Dagster instance, DuckDB file and LanceDB directory per test, on the tiny world."""

import datetime
import shutil
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster_duckdb import DuckDBResource

from pinner_assets.definitions import ASSETS, build_definitions
from pinner_assets.defs.automation.schedules import TRAINING_ASSETS
from pinner_assets.lib.promotion import PromotionPolicy
from pinner_assets.lib.resources import (
    ActionSource,
    ComputeResource,
    EvaluationSplit,
    PinnerStorage,
)

DAY0 = datetime.date(2026, 1, 1)
TRAIN_END = "2026-01-05"
# A few steps of a small model: behaviour, not quality, is under test here.
TRAIN_CONFIG = {
    "ops": {
        "trained_model": {
            "config": {"steps": 8, "batch_size": 32, "hidden": 32, "out_dim": 16, "n_layers": 1}
        }
    }
}


RELAXED_PROMOTION = PromotionPolicy(
    validation_days=2, max_recall_drop_vs_serving=1.0, min_recall_ratio_vs_popularity=0.0
)


def day(i: int) -> str:
    return (DAY0 + datetime.timedelta(days=i)).isoformat()


def make_resources(data_dir: Path, source: ActionSource | None = None) -> dict[str, object]:
    storage = PinnerStorage(data_dir=str(data_dir))
    return {
        "storage": storage,
        "duckdb": DuckDBResource(database=storage.warehouse),
        "source": source or ActionSource(world="tiny"),
        "compute": ComputeResource(device="cpu", inference_shards=1),  # in process: quick
        "split": EvaluationSplit(train_end_date=TRAIN_END, index_size=100_000),
        # behaviour, not quality, is under test: a few-step model is promoted. The gate itself is
        # tested with the default policy (test_promotion.py).
        "promotion": RELAXED_PROMOTION,
    }


class Pipeline:
    """Drives materialisations the way the UI, the schedule or a backfill would."""

    def __init__(self, resources: dict[str, object], instance: dg.DagsterInstance) -> None:
        self.resources = resources
        self.instance = instance
        self.defs = build_definitions(resources)

    def run(
        self,
        selection: list[str],
        first: str | None = None,
        last: str | None = None,
        run_config: dict | None = None,
        raise_on_error: bool = True,
    ) -> dg.ExecuteInProcessResult:
        tags = {}
        if first is not None:
            tags = {
                "dagster/asset_partition_range_start": first,
                "dagster/asset_partition_range_end": last or first,
            }
        return dg.materialize(
            ASSETS,
            selection=selection,
            resources=self.resources,
            instance=self.instance,
            tags=tags,
            run_config=run_config or {},
            raise_on_error=raise_on_error,
        )

    def warehouse(self):  # -> context manager of a DuckDB connection
        """The pipeline's own DuckDB resource (same connection config as the assets)."""
        return self.resources["duckdb"].get_connection()  # type: ignore[attr-defined]

    def days(self, first: str, last: str) -> None:
        self.run(["raw_actions", "user_timelines"], first, last)

    def train(self, run_config: dict | None = None) -> None:
        self.run(
            TRAINING_ASSETS,
            run_config=run_config or TRAIN_CONFIG,
        )


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    (tmp_path / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield Pipeline(make_resources(tmp_path / "data"), instance)


TRAINED_DAYS = (day(0), day(5))  # the promotion gate validates on the days after training


@pytest.fixture(scope="session")
def trained_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One pipeline ingested over TRAINED_DAYS and trained (TRAIN_CONFIG, through the same
    torchrun + Pipes path as every run), built once per session: its data directory and its
    Dagster instance. `trained_pipeline` hands each test a copy."""
    root = tmp_path_factory.mktemp("trained_template")
    (root / "dagster_home").mkdir()
    with dg.instance_for_test(temp_dir=str(root / "dagster_home")) as instance:
        p = Pipeline(make_resources(root / "data"), instance)
        p.days(*TRAINED_DAYS)
        p.train()
    return root


@pytest.fixture
def trained_pipeline(trained_template: Path, tmp_path: Path) -> Iterator[Pipeline]:
    """A pipeline with TRAINED_DAYS ingested and a served model, its run history included: a
    copy of `trained_template`, for tests that need a trained model, not the training itself."""
    shutil.copytree(trained_template, tmp_path, dirs_exist_ok=True)
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield Pipeline(make_resources(tmp_path / "data"), instance)

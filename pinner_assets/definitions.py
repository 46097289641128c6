"""The Dagster code location: assembles assets, checks, jobs, schedules, sensors, resources.

The definitions live by domain under `pinner_assets/defs/` (ingest, timelines, training, serving,
evaluation, automation); reusable code that is not a definition lives in `pinner_assets/lib/`.
This module only chooses the resources and assembles; `dg list defs` and `workspace.yaml` load
`defs` from here.
"""

import dagster as dg
from dagster_duckdb import DuckDBResource

from pinner_assets.defs.automation.schedules import (
    daily_pipeline_job,
    daily_pipeline_schedule,
    evaluation_job,
    ingest_job,
    training_job,
    user_embeddings_job,
)
from pinner_assets.defs.automation.sensors import automation_sensor
from pinner_assets.defs.evaluation.assets import embedding_drift, evaluation_report
from pinner_assets.defs.ingest.assets import pin_features, raw_actions
from pinner_assets.defs.ingest.sensors import daily_files_sensor, raw_actions_job
from pinner_assets.defs.serving.assets import pin_embeddings, pin_index, user_embeddings
from pinner_assets.defs.timelines.assets import training_timelines, user_timelines
from pinner_assets.defs.training.assets import count_min_sketch, trained_model
from pinner_assets.lib.promotion import PromotionPolicy
from pinner_assets.lib.resources import (
    ActionSource,
    ComputeResource,
    EvaluationSplit,
    PinnerStorage,
)

ASSETS = [
    raw_actions,
    pin_features,
    user_timelines,
    training_timelines,
    count_min_sketch,
    trained_model,
    user_embeddings,
    pin_embeddings,
    pin_index,
    evaluation_report,
    embedding_drift,
]


def default_resources() -> dict[str, object]:
    """The resources of the code location and of `pinner demo`, configured from the environment:
    PINNER_DATA_DIR, PINNER_SOURCE / PINNER_SOURCE_PATH / PINNER_SOURCE_OPTIONS and
    PINNER_TRAIN_END_DATE (the partition range: PINNER_START_DATE / PINNER_END_DATE, partitions.py).
    Unset, they give the synthetic world."""
    storage = PinnerStorage()
    return {
        "storage": storage,
        "duckdb": DuckDBResource(database=storage.warehouse),
        "source": ActionSource.from_env(),
        "compute": ComputeResource(),
        "split": EvaluationSplit.from_env(),
        "promotion": PromotionPolicy(),
    }


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        jobs=[
            daily_pipeline_job,
            training_job,
            raw_actions_job,
            ingest_job,
            user_embeddings_job,
            evaluation_job,
        ],
        schedules=[daily_pipeline_schedule],
        sensors=[automation_sensor, daily_files_sensor],
        resources=resources or default_resources(),
    )


defs = build_definitions()

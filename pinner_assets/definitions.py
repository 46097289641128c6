"""The Dagster code location: assembles assets, checks, jobs, schedules, sensors, resources."""

import dagster as dg

from pinner_assets.automation import automation_sensor
from pinner_assets.checks import freshness_checks
from pinner_assets.embeddings import pin_embeddings, pin_index, user_embeddings
from pinner_assets.evaluation import embedding_drift, evaluation_report
from pinner_assets.ingest import pin_features, raw_actions
from pinner_assets.resources import default_resources
from pinner_assets.schedules import daily_pipeline_job, daily_pipeline_schedule, training_job
from pinner_assets.sensors import daily_files_sensor, freshness_sensor, raw_actions_job
from pinner_assets.timelines import training_timelines, user_timelines
from pinner_assets.training import count_min_sketch, trained_model

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


def build_definitions(resources: dict[str, object] | None = None) -> dg.Definitions:
    return dg.Definitions(
        assets=ASSETS,
        asset_checks=freshness_checks,
        jobs=[daily_pipeline_job, training_job, raw_actions_job],
        schedules=[daily_pipeline_schedule],
        sensors=[automation_sensor, daily_files_sensor, freshness_sensor],
        resources=resources or default_resources(),
    )


defs = build_definitions()

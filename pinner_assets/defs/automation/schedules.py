"""The daily job and its schedule: each night, the day that just ended, end to end."""

import dagster as dg

daily_pipeline_job = dg.define_asset_job(
    "daily_pipeline_job",
    selection=dg.AssetSelection.assets(
        "raw_actions", "user_timelines", "user_embeddings", "embedding_drift"
    ),
    # evaluation_report[D] needs the labels of D + 1 .. D + 14: automation materialises it when
    # they are stored, 14 days later, never this run.
    description="Ingest a day, rebuild its timelines, infer, merge and publish embeddings, "
    "measure their drift.",
)

# 01:30 UTC targets the previous (complete) day's partition.
daily_pipeline_schedule = dg.build_schedule_from_partitioned_job(
    daily_pipeline_job,
    hour_of_day=1,
    minute_of_hour=30,
    name="daily_pipeline_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

# Everything a (re)train rebuilds, in dependency order.
TRAINING_ASSETS = [
    "pin_features",
    "training_timelines",
    "count_min_sketch",
    "trained_model",
    "pin_embeddings",
    "pin_index",
]

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets(*TRAINING_ASSETS),
    description="(Re)train the model and rebuild the pin side. Launched on purpose, not daily.",
)

# The stages of a backfill (and of `pinner demo`), each a named job so that the UI's run list
# says which stage a run was.
ingest_job = dg.define_asset_job(
    "ingest_job",
    selection=dg.AssetSelection.assets("raw_actions", "user_timelines"),
    description="Ingest a range of days and rebuild their timelines (one run, days in order).",
)
user_embeddings_job = dg.define_asset_job(
    "user_embeddings_job",
    selection=dg.AssetSelection.assets("user_embeddings"),
    description="Infer and merge the daily user embeddings over a range (the self-dependent "
    "chain, in order, in one run).",
)
evaluation_job = dg.define_asset_job(
    "evaluation_job",
    selection=dg.AssetSelection.assets("evaluation_report"),
    description="The paper's metrics on held-out users for days whose 14 days of labels exist.",
)

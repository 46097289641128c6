"""Ingest a day when its file lands in the files source."""

import datetime
import json

import dagster as dg

from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import ActionSource

raw_actions_job = dg.define_asset_job(
    "raw_actions_job",
    selection=dg.AssetSelection.assets("raw_actions"),
    description="Ingest (or re-ingest) one day of raw_actions; automation builds what reads it.",
)


@dg.sensor(
    name="daily_files_sensor",
    job=raw_actions_job,
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="kind=files: materialises raw_actions[D] when D's file appears in the source "
    "directory, and again whenever it changes (a repaired or re-exported day).",
)
def daily_files_sensor(context: dg.SensorEvaluationContext, source: ActionSource):
    """The cursor maps each day to the (size, mtime) of the file last requested, so a file
    that is rewritten (a repair, or a transfer that was still in progress) is ingested again."""
    if source.kind != "files":
        return dg.SkipReason(f"the source is {source.kind!r}, not a directory of daily files")
    seen: dict[str, str] = json.loads(context.cursor) if context.cursor else {}
    requests = []
    for key in daily_partitions.get_partition_keys():
        path = source.day_file(datetime.date.fromisoformat(key))
        if path is None:
            continue
        stat = path.stat()
        stamp = f"{stat.st_size}:{stat.st_mtime_ns}"
        if seen.get(key) != stamp:
            requests.append(dg.RunRequest(run_key=f"{key}:{stamp}", partition_key=key))
            seen[key] = stamp
    return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

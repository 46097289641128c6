"""The files sensor requests a day when its file lands and again when it is rewritten."""

import datetime
import os
from pathlib import Path

import dagster as dg
import polars as pl

from model_core.data import synthetic
from pinner_assets.defs.ingest.sensors import daily_files_sensor
from pinner_assets.lib.resources import ActionSource


def tick(instance: dg.DagsterInstance, source: ActionSource, cursor: str | None):
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"source": source}
    )
    result = daily_files_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return [r.partition_key for r in result.run_requests or []], result.cursor


def test_files_sensor_ingests_arrivals_and_rewrites(tmp_path: Path) -> None:
    world = synthetic.WorldConfig.tiny()
    source = ActionSource(kind="files", path=str(tmp_path))
    days = [world.start_date + datetime.timedelta(days=i) for i in range(3)]
    with dg.instance_for_test() as instance:
        requested, cursor = tick(instance, source, None)
        assert requested == []  # nothing has arrived
        for d in days[:2]:
            synthetic.generate_day(world, d).write_parquet(tmp_path / f"{d}.parquet")
        requested, cursor = tick(instance, source, cursor)
        assert requested == [days[0].isoformat(), days[1].isoformat()]
        requested, cursor = tick(instance, source, cursor)
        assert requested == []  # already requested, unchanged
        synthetic.generate_day(world, days[2]).write_parquet(tmp_path / f"{days[2]}.parquet")
        path = tmp_path / f"{days[0]}.parquet"
        pl.read_parquet(path).head(10).write_parquet(path)  # a re-export of day 0
        os.utime(path, ns=(1, 1))  # a distinct mtime even on coarse-grained file systems
        requested, cursor = tick(instance, source, cursor)
        assert requested == [days[0].isoformat(), days[2].isoformat()]


def test_files_sensor_skips_other_sources() -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, resources={"source": ActionSource()})
        assert isinstance(daily_files_sensor(context), dg.SkipReason)

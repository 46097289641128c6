"""Faults a production run meets: two runs and a notebook reader at once; a process killed with
SIGKILL in the middle of a write. Real processes, one DuckDB file, one Dagster instance."""

import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pytest

from model_core.data import synthetic
from pinner_assets.lib.resources import ActionSource
from pinner_assets.lib.warehouse import connect_read_only
from tests.pinner_assets.conftest import Pipeline, day, make_resources

ROOT = Path(__file__).resolve().parents[2]


def write_days(directory: Path, n: int) -> ActionSource:
    world = synthetic.WorldConfig.tiny()
    directory.mkdir(parents=True)
    synthetic.pin_features(world).write_parquet(directory / "pin_features.parquet")
    for i in range(n):
        d = world.start_date + datetime.timedelta(days=i)
        synthetic.generate_day(world, d).write_parquet(directory / f"{d.isoformat()}.parquet")
    return ActionSource(kind="files", path=str(directory))


def worker(
    data: Path, files: Path, home: Path, first: int, last: int, assets: str
) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "tests.pinner_assets.fault_worker"]
    with (home / f"worker_{first}_{last}.log").open("wb") as log:  # a pipe could fill up
        return subprocess.Popen(
            [*cmd, str(data), str(files), str(home), str(first), str(last), assets],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=log,
        )


def init_instance(home: Path) -> None:
    """Create the Dagster instance's storage once, as a deployment has it before any run (two
    processes creating a fresh SQLite schema at once would race)."""
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        instance.get_run_records(limit=1)


def consistent_days(database: str) -> dict[str, int]:
    """Days in the ledger, after checking that every stored day is whole: the ledger's row count
    equals the rows stored, and no day has rows without a ledger entry (and vice versa)."""
    con = connect_read_only(database)
    try:
        ledger = dict(
            con.execute("SELECT event_date::VARCHAR, n_rows FROM raw_action_partitions").fetchall()
        )
        stored = dict(
            con.execute(
                "SELECT event_date::VARCHAR, count(*) FROM raw_actions GROUP BY 1"
            ).fetchall()
        )
        timelines = {
            r[0]
            for r in con.execute("SELECT as_of::VARCHAR FROM user_timeline_partitions").fetchall()
        }
        rows = {
            r[0]
            for r in con.execute("SELECT DISTINCT as_of::VARCHAR FROM user_timelines").fetchall()
        }
    finally:
        con.close()
    assert ledger == stored
    assert rows <= timelines
    return ledger


@pytest.mark.slow
def test_two_runs_and_a_reader_at_once(tmp_path: Path) -> None:
    files = tmp_path / "files"
    write_days(files, 16)
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    init_instance(home)
    database = str(data / "warehouse.duckdb")
    # two ingestion runs at once (e.g. the schedule and a backfill), each a DuckDB writer
    runs = [
        worker(data, files, home, 0, 7, "raw_actions"),
        worker(data, files, home, 8, 15, "raw_actions"),
    ]
    reads, errors = 0, []
    while any(r.poll() is None for r in runs):  # a notebook polling the warehouse meanwhile
        try:
            con = connect_read_only(database, attempts=1)
        except Exception as err:  # noqa: BLE001 - a lock error with no retry counts as one retry
            if "lock" not in str(err).lower() and "does not exist" not in str(err):
                errors.append(repr(err))
            time.sleep(0.05)
            continue
        try:
            con.execute("SELECT count(*) FROM raw_action_partitions").fetchone()
            reads += 1
        except Exception as err:  # noqa: BLE001
            if "does not exist" not in str(err):
                errors.append(repr(err))
        finally:
            con.close()
        time.sleep(0.05)
    logs = [(home / f"worker_{a}_{b}.log").read_text()[-3000:] for a, b in ((0, 7), (8, 15))]
    assert [r.returncode for r in runs] == [0, 0], logs
    assert errors == []
    assert reads > 0
    assert sorted(consistent_days(database)) == [day(i) for i in range(16)]  # nothing lost
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        built = instance.get_materialized_partitions(dg.AssetKey("raw_actions"))
    assert built == {day(i) for i in range(16)}


@pytest.mark.slow
def test_kill_9_mid_write_leaves_no_partial_day(tmp_path: Path) -> None:
    n = 30
    files = tmp_path / "files"
    source = write_days(files, n)
    data, home = tmp_path / "data", tmp_path / "home"
    data.mkdir()
    init_instance(home)
    run = worker(data, files, home, 0, n - 1, "raw_actions,user_timelines")
    deadline = time.monotonic() + 300
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        while time.monotonic() < deadline and run.poll() is None:
            records = instance.get_run_records()
            evaluations = sum(
                1
                for r in records
                for e in instance.all_logs(r.dagster_run.run_id)
                if e.dagster_event is not None
                and e.dagster_event.event_type_value == "ASSET_CHECK_EVALUATION"
            )
            if evaluations >= 3 * 10:  # three days checked (ten rules each): mid-range
                os.kill(run.pid, signal.SIGKILL)
                break
            time.sleep(0.05)
        run.wait(timeout=60)
        assert run.returncode == -signal.SIGKILL, "the run finished before it could be killed"
        database = str(data / "warehouse.duckdb")
        survived = consistent_days(database)  # whole days only
        assert 0 < len(survived) < n
        # what a re-run (the operator's retry) makes of it: every day, exactly once
        p = Pipeline(make_resources(data, source), instance)
        p.run(["raw_actions", "user_timelines"], day(0), day(n - 1))
        assert sorted(consistent_days(database)) == [day(i) for i in range(n)]
        assert instance.get_materialized_partitions(dg.AssetKey("user_timelines")) == {
            day(i) for i in range(n)
        }

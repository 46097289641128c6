"""The code location loads; every job, schedule and sensor resolves; the schedule targets the
day that just ended; automation and pools are wired as docs/DESIGN.md §7 requires."""

import datetime
import os
import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg

from pinner_assets.definitions import defs
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import EvaluationSplit


def test_definitions_resolve() -> None:
    graph = defs.resolve_asset_graph()
    names = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert names == {
        "raw_actions",
        "pin_features",
        "user_timelines",
        "training_timelines",
        "count_min_sketch",
        "trained_model",
        "user_embeddings",
        "pin_embeddings",
        "pin_index",
        "evaluation_report",
        "embedding_drift",
    }
    for job in ("daily_pipeline_job", "training_job"):
        assert defs.resolve_job_def(job) is not None
    assert defs.resolve_schedule_def("daily_pipeline_schedule") is not None
    sensor = defs.resolve_sensor_def("automation_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    files_sensor = defs.resolve_sensor_def("daily_files_sensor")
    assert files_sensor.default_status == dg.DefaultSensorStatus.RUNNING
    # freshness is a policy on the asset itself (no checks, no sensor)
    for key, policy in [
        (
            "user_embeddings",
            dg.FreshnessPolicy.cron(
                deadline_cron="0 4 * * *", lower_bound_delta=datetime.timedelta(hours=2, minutes=30)
            ),
        ),
        (
            "evaluation_report",
            dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(days=2)),
        ),
    ]:
        assert graph.get(dg.AssetKey(key)).freshness_policy == policy
    checks = {(k.asset_key.to_user_string(), k.name) for k in graph.asset_check_keys}
    assert ("trained_model", "promotion_gate") in checks
    # the nightly run never builds a report whose labels cannot exist yet
    daily = defs.resolve_job_def("daily_pipeline_job")
    assert "evaluation_report" not in {n.name for n in daily.nodes_in_topological_order}


def test_schedule_targets_the_previous_day() -> None:
    schedule = defs.resolve_schedule_def("daily_pipeline_schedule")
    with dg.instance_for_test() as instance:
        tick = datetime.datetime(2026, 2, 10, 1, 30, tzinfo=datetime.timezone.utc)
        data = schedule.evaluate_tick(
            dg.build_schedule_context(instance=instance, scheduled_execution_time=tick)
        )
    assert [r.partition_key for r in data.run_requests or []] == ["2026-02-09"]


def test_pools_tags_and_policies() -> None:
    assets = {a.key.to_user_string(): a for a in defs.assets}  # type: ignore[union-attr]
    # every warehouse reader/writer is in the one-slot duckdb pool and retries a lost lock
    for name in (
        "raw_actions",
        "user_timelines",
        "user_embeddings",
        "pin_embeddings",
        "pin_index",
        "evaluation_report",
        "embedding_drift",
    ):
        assert assets[name].op.pool == "duckdb", name
        assert assets[name].op.retry_policy is not None, name
    trained = assets["trained_model"]
    assert trained.op.pool == "gpu"
    assert "nvidia.com/gpu" in trained.op.tags["dagster-k8s/config"]
    for name in ("raw_actions", "user_timelines", "user_embeddings", "evaluation_report"):
        assert assets[name].backfill_policy == dg.BackfillPolicy.single_run()
        assert assets[name].partitions_def == daily_partitions
    # a retrain does not replay history: the daily conditions ignore what a retrain touches
    for name in ("user_embeddings", "evaluation_report", "embedding_drift"):
        condition = str(assets[name].automation_conditions_by_key[dg.AssetKey(name)])
        for retrained in ("trained_model", "pin_embeddings", "pin_index", "pin_features"):
            assert retrained in condition, (name, retrained)
    # declared reads: the report's forward label window, training's window up to the split
    graph = defs.resolve_asset_graph()
    report = graph.get(dg.AssetKey("evaluation_report")).partition_mappings
    window = report[dg.AssetKey("raw_actions")]
    assert isinstance(window, dg.TimeWindowPartitionMapping)
    assert window.end_offset == 14
    training = graph.get(dg.AssetKey("training_timelines")).partition_mappings
    keys = training[dg.AssetKey("raw_actions")].partition_keys  # type: ignore[attr-defined]
    assert max(keys) == EvaluationSplit.from_env().train_end_date
    for name in ("raw_actions", "user_timelines", "user_embeddings", "pin_embeddings"):
        assert "dagster/column_schema" in assets[name].specs_by_key[dg.AssetKey(name)].metadata
        assert assets[name].specs_by_key[dg.AssetKey(name)].owners, name
    # every check says what it checks
    for check in defs.resolve_asset_graph().asset_check_keys:
        spec = defs.resolve_asset_graph().get(check)
        assert spec.description, check


def test_workspace_and_instance_config_validate(tmp_path: Path) -> None:
    """What `make ui` loads: workspace.yaml's code location with dagster_home/dagster.yaml."""
    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "dagster_home" / "dagster.yaml", tmp_path / "dagster.yaml")
    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "dagster"),
            "definitions",
            "validate",
            "-w",
            str(root / "workspace.yaml"),
        ],
        cwd=root,
        env={**os.environ, "DAGSTER_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All code locations passed validation" in out.stdout + out.stderr


def test_ui_listens_on_localhost_only() -> None:
    """`make ui` binds the webserver to the loopback interface; exposing it is a deliberate
    change (UI_HOST=0.0.0.0 behind an authenticating proxy, docs/OPERATIONS.md)."""
    makefile = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    assert "UI_HOST ?= 127.0.0.1" in makefile
    assert "dg dev --host $(UI_HOST)" in makefile

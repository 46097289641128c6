"""trained_model launches torchrun through Dagster Pipes: 2 gloo ranks end to end, resume after a
kill, and the Kubernetes pod spec (built without a cluster)."""

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import psutil
import pytest
import torch

from pinner_assets.lib.launch import CompleteLineMessageReader, k8s_pod, torchrun_command
from pinner_assets.lib.models import load_latest_model
from pinner_assets.lib.resources import ComputeResource, PinnerStorage
from tests.pinner_assets.conftest import TRAIN_CONFIG, Pipeline, day, make_resources


@contextmanager
def pipeline_with(tmp_path: Path, compute: ComputeResource) -> Iterator[Pipeline]:
    (tmp_path / "dagster_home").mkdir(parents=True)
    resources = make_resources(tmp_path / "data")
    resources["compute"] = compute
    with dg.instance_for_test(temp_dir=str(tmp_path / "dagster_home")) as instance:
        yield Pipeline(resources, instance)


def training_metadata(p: Pipeline) -> dict[str, object]:
    event = p.instance.get_latest_materialization_event(dg.AssetKey("trained_model"))
    assert event is not None
    assert event.asset_materialization is not None
    return {k: v.value for k, v in event.asset_materialization.metadata.items()}


def test_two_gloo_ranks_train_through_pipes(tmp_path: Path) -> None:
    with pipeline_with(tmp_path, ComputeResource(device="cpu", nproc_per_node=2)) as p:
        p.days(day(0), day(5))
        p.train()
        meta = training_metadata(p)
        assert meta["launcher"] == "torchrun"
        assert meta["world_size"] == 2
        assert meta["backend"] == "gloo"
        steps = TRAIN_CONFIG["ops"]["trained_model"]["config"]["steps"]
        curve = str(meta["training_curve"])  # a table the UI renders, reported by rank 0
        assert curve.splitlines()[-1].startswith(f"| {steps} | ")
        assert str(meta["loss_curve"]).startswith("```")  # a text plot, not a JSON blob
        assert meta["sequences_per_s"] > 0
        assert meta["sequences_per_s_per_rank"] > 0
        # the worker's log lines reached the run through Pipes, not only its stderr
        run_id = p.instance.get_latest_materialization_event(dg.AssetKey("trained_model")).run_id
        messages = [e.user_message for e in p.instance.all_logs(run_id)]
        assert any("[model_core.training.trainer] step" in m for m in messages), messages[-20:]
        assert any("rank 0/2 (gloo)" in m for m in messages)
        model, version = load_latest_model(p.resources["storage"])  # type: ignore[arg-type]
        assert version == meta["model_version"]
        p.run(["user_embeddings"], day(0))  # the launched model serves


def _kill_worker_after_first_checkpoint(data_dir: Path, stop: threading.Event) -> list[int]:
    """Watch for the run's first checkpoint, then SIGKILL the training processes this test
    started (as a preempted node would). Returns the pids it killed."""
    killed: list[int] = []
    while not stop.is_set():
        if any(data_dir.glob("training_runs/*/checkpoint.pt")):
            for child in psutil.Process().children(recursive=True):
                try:
                    if "pinner_assets.lib.pipes_worker" in " ".join(child.cmdline()):
                        child.kill()
                        killed.append(child.pid)
                except psutil.NoSuchProcess:
                    pass
            return killed
        time.sleep(0.005)
    return killed


def test_killed_training_resumes_to_the_same_weights(tmp_path: Path) -> None:
    # 60 steps, a checkpoint every 10: the watcher kills the worker right after the first one.
    config = {**TRAIN_CONFIG["ops"]["trained_model"]["config"], "steps": 60}
    run_config = {"ops": {"trained_model": {"config": config}}}
    compute = ComputeResource(device="cpu", checkpoint_every=10)
    with pipeline_with(tmp_path / "straight", compute) as p:
        p.days(day(0), day(5))
        p.train(run_config)
        straight = training_metadata(p)
        straight_model, _ = load_latest_model(p.resources["storage"])  # type: ignore[arg-type]
    assert straight["resumed_from_step"] == 0

    with pipeline_with(tmp_path / "killed", compute) as p:
        p.days(day(0), day(5))
        data_dir = Path(p.resources["storage"].data_dir)  # type: ignore[attr-defined]
        stop, killed = threading.Event(), []
        watcher = threading.Thread(
            target=lambda: killed.extend(_kill_worker_after_first_checkpoint(data_dir, stop))
        )
        watcher.start()
        try:
            first = p.run(["pin_features", "training_timelines", "count_min_sketch"])
            assert first.success
            result = p.run(["trained_model"], run_config=run_config, raise_on_error=False)
        finally:
            stop.set()
            watcher.join()
        assert killed, "the watcher never saw a checkpoint"
        assert not result.success  # the kill failed the step
        (ckpt,) = data_dir.glob("training_runs/*/checkpoint.pt")
        at_kill = torch.load(ckpt, weights_only=False)["step"]
        assert 0 < at_kill < 60
        p.run(["trained_model"], run_config=run_config)  # re-materialise: resumes
        resumed = training_metadata(p)
        resumed_model, _ = load_latest_model(p.resources["storage"])  # type: ignore[arg-type]
    assert resumed["resumed_from_step"] >= at_kill
    assert resumed["model_version"] == straight["model_version"]  # bit-identical weights
    for (name, a), (_, b) in zip(
        straight_model.state_dict().items(), resumed_model.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)


def test_k8s_pod_spec_requests_gpus_without_a_cluster(tmp_path: Path) -> None:
    pytest.importorskip("dagster_k8s")
    compute = ComputeResource(launcher="k8s", nproc_per_node=4, k8s_image="registry/pinner:1")
    storage = PinnerStorage(data_dir=str(tmp_path / "data"))
    pod = k8s_pod(compute, storage, job_path=f"{storage.data_dir}/training_runs/abc/job.json")
    (container,) = pod.spec.containers
    assert container.image == "registry/pinner:1"
    assert container.command == torchrun_command(
        4, f"{storage.data_dir}/training_runs/abc/job.json", python="python"
    )
    assert container.command[container.command.index("--nproc-per-node") + 1] == "4"
    assert container.resources.requests["nvidia.com/gpu"] == "4"
    assert container.resources.limits["nvidia.com/gpu"] == "4"
    assert {m.mount_path for m in container.volume_mounts} == {storage.data_dir, "/dev/shm"}
    claims = [v.persistent_volume_claim for v in pod.spec.volumes if v.persistent_volume_claim]
    assert [c.claim_name for c in claims] == ["pinner-data"]
    assert pod.spec.restart_policy == "Never"
    assert any(t.key == "nvidia.com/gpu" for t in pod.spec.tolerations)
    assert {"name": "PINNER_DATA_DIR", "value": storage.data_dir} in [
        {"name": e.name, "value": e.value} for e in container.env
    ]


class _Handler:
    def __init__(self) -> None:
        self.messages: list[dict] = []
        self.errors: list[object] = []

    def handle_message(self, message: dict) -> None:
        self.messages.append(message)

    def report_pipes_framework_exception(self, origin: str, exc_info: object) -> None:
        self.errors.append(exc_info)


def test_message_reader_waits_for_whole_lines(tmp_path: Path) -> None:
    """Regression: Dagster's reader parsed a Pipes message the worker was still writing (a
    JSONDecodeError in the reader thread under load); a killed worker leaves a partial line."""
    path = tmp_path / "messages"
    path.write_text("")
    handler, done = _Handler(), threading.Event()
    reader = CompleteLineMessageReader(str(path))
    thread = threading.Thread(target=reader._reader_thread, args=(handler, done))
    thread.start()
    with path.open("a") as f:
        f.write('{"method": "log", "par')
        f.flush()
        time.sleep(0.1)  # the reader sees the partial line here
        f.write('ams": {"message": "step 1"}}\n{"method": "lo')  # then the rest, and a cut line
        f.flush()
        time.sleep(0.1)
    done.set()
    thread.join()
    assert handler.errors == []
    assert handler.messages == [{"method": "log", "params": {"message": "step 1"}}]

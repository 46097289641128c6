"""Launching training outside the Dagster step: torchrun through Dagster Pipes.

trained_model exports its training data as Parquet shards (model_core.data.shards) under the
storage root or any fsspec URL, writes a TrainJob, and starts

    torchrun --standalone --nproc-per-node N -m pinner_assets.lib.pipes_worker --job <job.json>

either as a local subprocess (PipesSubprocessClient) or as a Kubernetes pod that requests
`nvidia.com/gpu` (PipesK8sClient). Rank 0 streams logs and reports the curves and metrics back
through Pipes; the model artefact comes back as a file.

Resume: a run's directory is keyed by (data fingerprint, recipe, world size), so re-materialising
after a killed run finds its last checkpoint and continues; the trainer's schedule and sampling
are pure functions of the step, so the result equals an uninterrupted run.
"""

import dataclasses
import hashlib
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dagster as dg
import torch

from model_core.data.shards import fingerprint, is_complete, write_training_data
from model_core.data.timelines import PinCatalog, Timelines
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.recipe import Fitted, RecipeConfig
from model_core.training.sketch import CountMinSketch
from model_core.training.worker import TrainJob, load_result
from pinner_assets.lib.resources import ComputeResource, PinnerStorage

ENTRY_MODULE = "pinner_assets.lib.pipes_worker"
# Fields that change how often the run reports, not what it computes: not part of the run key.
_NOT_IN_RUN_KEY = ("log_every", "checkpoint_every")


def torchrun_command(nproc_per_node: int, job_url: str, python: str | None = None) -> list[str]:
    """`torchrun` as a module of the given interpreter (the step's own by default), so the
    worker runs in the same environment; `--standalone` picks a free rendezvous port."""
    launcher = [python or sys.executable, "-m", "torch.distributed.run"]
    return [
        *launcher,
        "--standalone",
        "--nproc-per-node",
        str(nproc_per_node),
        "-m",
        ENTRY_MODULE,
        "--job",
        job_url,
    ]


def run_key(data_fingerprint: str, recipe: RecipeConfig, world_size: int) -> str:
    """The identity of a training run: same data, same recipe, same world ⇒ same run (resume)."""
    train = {k: v for k, v in dataclasses.asdict(recipe.train).items() if k not in _NOT_IN_RUN_KEY}
    payload = {
        "data": data_fingerprint,
        "recipe": {**dataclasses.asdict(recipe), "train": train},
        "world_size": world_size,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[
        :16
    ]


def data_url(storage: PinnerStorage, compute: ComputeResource, fp: str) -> str:
    root = compute.training_data_url or str(storage.path("training_data"))
    return f"{root.rstrip('/')}/{fp}"


def prepare_job(
    storage: PinnerStorage,
    compute: ComputeResource,
    timelines: Timelines,
    catalog: PinCatalog,
    sketch: CountMinSketch,
    recipe: RecipeConfig,
) -> tuple[TrainJob, Path]:
    """Export the data (once per content fingerprint) and write the job; returns it and its path."""
    fp = fingerprint(timelines, catalog, sketch)
    url = data_url(storage, compute, fp)
    if not is_complete(url):
        write_training_data(url, timelines, catalog, sketch)
    if compute.checkpoint_every > 0:
        recipe = dataclasses.replace(
            recipe,
            train=dataclasses.replace(recipe.train, checkpoint_every=compute.checkpoint_every),
        )
    run_dir = storage.root / "training_runs" / run_key(fp, recipe, compute.nproc_per_node)
    run_dir.mkdir(parents=True, exist_ok=True)
    job = TrainJob(
        data_url=url,
        recipe=dataclasses.asdict(recipe),
        checkpoint=str(run_dir / "checkpoint.pt"),
        output=str(run_dir / "output"),
    )
    path = run_dir / "job.json"
    job.save(str(path))
    return job, path


def k8s_pod_spec(
    compute: ComputeResource, storage: PinnerStorage, claim_name: str = "pinner-data"
) -> dict[str, Any]:
    """base_pod_spec for PipesK8sClient: one GPU per rank, the data directory on a shared volume
    at the same path as in the step (job, checkpoints, artefact), /dev/shm in memory for NCCL."""
    gpus = str(compute.nproc_per_node)
    return {
        "containers": [
            {
                "name": "trainer",
                "resources": {
                    "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": gpus},
                    "limits": {"memory": "64Gi", "nvidia.com/gpu": gpus},
                },
                "volume_mounts": [
                    {"name": "data", "mount_path": storage.data_dir},
                    {"name": "dshm", "mount_path": "/dev/shm"},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistent_volume_claim": {"claim_name": claim_name}},
            {"name": "dshm", "empty_dir": {"medium": "Memory"}},
        ],
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        "restart_policy": "Never",
    }


def k8s_pod(
    compute: ComputeResource, storage: PinnerStorage, job_path: str, pod_name: str = "trainer"
) -> Any:
    """The V1Pod that PipesK8sClient would create (built without a cluster)."""
    from dagster_k8s.pipes import build_pod_body

    return build_pod_body(
        pod_name=pod_name,
        image=compute.k8s_image,
        command=torchrun_command(compute.nproc_per_node, job_path, python="python"),
        env_vars={"PINNER_DATA_DIR": storage.data_dir},
        base_pod_meta={"labels": {"app.kubernetes.io/component": "pinner-training"}},
        base_pod_spec=k8s_pod_spec(compute, storage),
    )


class CompleteLineMessageReader(dg.PipesFileMessageReader):
    """Dagster's file reader tails the messages file with readline() and parses whatever it
    gets, so under load it can read a message the worker is still writing (a partial JSON line
    and an error in the reader thread); a worker killed mid-write leaves one too. This reader
    parses a line only once its newline has arrived and drops a partial last line."""

    def _reader_thread(self, handler: Any, is_resource_complete: threading.Event) -> None:
        try:
            with open(self._path, encoding="utf-8") as messages:
                pending = ""
                while True:
                    piece = messages.readline()
                    if piece:
                        pending += piece
                        if pending.endswith("\n"):
                            handler.handle_message(json.loads(pending))
                            pending = ""
                    elif is_resource_complete.is_set():
                        break
                    else:
                        time.sleep(0.01)
        except Exception:
            handler.report_pipes_framework_exception(
                f"{self.__class__.__name__} reader thread", sys.exc_info()
            )
            raise


class TempFileLineMessageReader(dg.PipesMessageReader):
    """PipesTempFileMessageReader with complete-line parsing (CompleteLineMessageReader)."""

    @contextmanager
    def read_messages(self, handler: Any) -> Iterator[Mapping[str, Any]]:
        with tempfile.TemporaryDirectory() as tempdir:
            reader = CompleteLineMessageReader(os.path.join(tempdir, "messages"))
            with reader.read_messages(handler) as params:
                yield params

    def no_messages_debug_text(self) -> str:
        return "Attempted to read messages from a local temporary file."

    @property
    def expected_writer_count(self) -> int:
        """One writer: rank 0 reports (the base class's answer too, but its property is marked
        preview and warns on every launch)."""
        return 1


def _subprocess_env(nproc: int) -> dict[str, str]:
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // nproc))
    return {"OMP_NUM_THREADS": threads, "PYTHONUNBUFFERED": "1"}


def launch_training(
    context: dg.AssetExecutionContext,
    storage: PinnerStorage,
    compute: ComputeResource,
    timelines: Timelines,
    catalog: PinCatalog,
    sketch: CountMinSketch,
    recipe: RecipeConfig,
) -> tuple[Fitted, dict[str, Any]]:
    """Train through Pipes; returns the fit (model on the CPU) and the run's metadata."""
    job, job_path = prepare_job(storage, compute, timelines, catalog, sketch, recipe)
    n = compute.nproc_per_node
    context.log.info(
        f"launching torchrun ({compute.launcher}, {n} rank(s)) on {job.data_url}; "
        f"checkpoint {job.checkpoint}"
    )
    if compute.launcher == "k8s":
        from dagster_k8s import PipesK8sClient

        invocation = PipesK8sClient().run(
            context=context,
            image=compute.k8s_image,
            command=torchrun_command(n, str(job_path), python="python"),
            namespace=compute.k8s_namespace or None,
            env={"PINNER_DATA_DIR": storage.data_dir},
            base_pod_spec=k8s_pod_spec(compute, storage),
        )
    else:
        client = dg.PipesSubprocessClient(
            env=_subprocess_env(n), message_reader=TempFileLineMessageReader()
        )
        invocation = client.run(context=context, command=torchrun_command(n, str(job_path)))
    reported: dict[str, Any] = {}
    for result in invocation.get_results():
        reported.update(getattr(result, "metadata", None) or {})
    summary, train_result = load_result(job.output)
    state = torch.load(Path(job.output) / "model.pt", map_location="cpu", weights_only=True)
    model = PinnerFormer(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    fitted = Fitted(
        model, sketch, train_result, summary["n_train_users"], summary["n_sequences_per_epoch"]
    )
    metadata = {
        **reported,
        "launcher": "torchrun",
        "world_size": summary["world_size"],
        "backend": summary["backend"],
        "resumed_from_step": summary["resumed_from_step"],
        "training_run": dg.MetadataValue.path(str(Path(job.checkpoint).parent)),
    }
    return fitted, metadata

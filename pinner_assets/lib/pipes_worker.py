"""The training worker as the pipeline starts it: `model_core.training.worker` inside a Dagster
Pipes session.

`torchrun --nproc-per-node N -m pinner_assets.lib.pipes_worker --job URL` runs the model_core
worker unchanged; rank 0, when a Pipes client (PipesSubprocessClient, PipesK8sClient) started it,
also opens the Pipes session: the trainer's log lines stream to the Dagster run as they happen,
and the summary, curves and metrics come back as the materialisation's metadata. Other ranks, or
a start by hand, only log.
"""

import logging
import os
from pathlib import Path
from typing import Any

from dagster_pipes import PipesContext, open_dagster_pipes

from model_core.training import worker
from model_core.training.recipe import Fitted
from pinner_assets.lib.models import curve_markdown

PIPES_CONTEXT_ENV = "DAGSTER_PIPES_CONTEXT"  # set by every Dagster Pipes client


class PipesLogHandler(logging.Handler):
    """Forwards log records to the Dagster run through the Pipes context."""

    def __init__(self, pipes: PipesContext) -> None:
        super().__init__(logging.INFO)
        self.pipes = pipes

    def emit(self, record: logging.LogRecord) -> None:
        self.pipes.log.info(f"[{record.name}] {record.getMessage()}")


def materialization_metadata(job: worker.TrainJob, fitted: Fitted) -> dict[str, Any]:
    """What the finished run reports to Dagster: the worker's summary (result.json) and curves."""
    summary, result = worker.load_result(job.output)
    world = summary["world_size"]
    history = result.history
    return {
        "launcher": "torchrun",
        "world_size": world,
        "backend": summary["backend"],
        "device": result.device,
        "resumed_from_step": summary["resumed_from_step"],
        "steps": result.steps,
        "stop_reason": result.stop_reason,
        # -1: no validation split (early stopping off, or too little data)
        "best_validation_recall_at_10": -1.0 if result.best_score is None else result.best_score,
        "best_step": -1 if result.best_step is None else result.best_step,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "sequences_per_s": result.sequences_per_s,
        "sequences_per_s_per_rank": result.sequences_per_s / world,
        "training_curve": {"raw_value": curve_markdown(history), "type": "md"},
        "data_url": {"raw_value": job.data_url, "type": "url"},
        "artefact": {"raw_value": str(Path(job.output) / "model.pt"), "type": "path"},
    }


def run(job: worker.TrainJob) -> Fitted | None:
    """`worker.run`, reporting through Pipes on rank 0 when a Pipes client started it."""
    if int(os.environ.get("RANK", "0")) != 0 or not os.environ.get(PIPES_CONTEXT_ENV):
        return worker.run(job)
    with open_dagster_pipes() as pipes:
        handler = PipesLogHandler(pipes)
        root = logging.getLogger("model_core")
        root.addHandler(handler)
        root.propagate = False  # the run's log shows each line once, not also the raw stderr
        try:
            fitted = worker.run(job)
        finally:
            root.removeHandler(handler)
            root.propagate = True
        if fitted is not None:
            pipes.report_asset_materialization(metadata=materialization_metadata(job, fitted))
        return fitted


def main(argv: list[str] | None = None) -> None:
    worker.main(argv, runner=run)


if __name__ == "__main__":
    main()

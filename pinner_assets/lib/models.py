"""Trained models on disk: their version (a hash of the weights), the latest and the served one,
and the loss curve drawn as text for the UI."""

import hashlib
import io
import json
from pathlib import Path

import dagster as dg
import torch
from dagster_duckdb import DuckDBResource

from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from pinner_assets.lib.promotion import (
    SERVING_MODEL,
    serving_version,
)
from pinner_assets.lib.resources import ActionSource, PinnerStorage
from pinner_assets.lib.timelines import load_catalog, to_timelines
from pinner_assets.lib.warehouse import read_only

SKETCH_FILE = ("sketch", "count_min_sketch.npz")


LATEST_MODEL = ("models", "latest.json")


def load_training_timelines(
    duckdb: DuckDBResource, source: ActionSource
):  # -> (Timelines, PinCatalog)
    """The training timelines in the source's vocabulary, positives by the source's rule."""
    with read_only(duckdb) as con:  # readers take no write lock (trained_model is in "gpu")
        catalog = load_catalog(con)
        rows = con.execute("SELECT * FROM training_timelines ORDER BY user_id").pl()
    return to_timelines(rows, catalog, source.feature_config(), source.rule()), catalog


def model_version(model: PinnerFormer) -> str:
    """Content hash of the weights: the same training run gives the same version."""
    buf = io.BytesIO()
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buf)
    return "pf-" + hashlib.sha256(buf.getvalue()).hexdigest()[:12]


def load_latest_model(storage: PinnerStorage) -> tuple[PinnerFormer, str]:
    """The newest TRAINED model (a candidate until the promotion gate passes it)."""
    path: Path = storage.path(*LATEST_MODEL)
    if not path.exists():
        raise dg.Failure(f"no trained model: materialise trained_model first ({path} missing)")
    latest = json.loads(path.read_text())
    return load_model(storage, latest["version"]), latest["version"]


def load_model(storage: PinnerStorage, version: str) -> PinnerFormer:
    """models/<version>/model.pt, loaded with weights_only=True (no pickled code runs)."""
    path = storage.path("models", version, "model.pt")
    if not path.exists():
        raise dg.Failure(f"model {version} not found at {path}", allow_retries=False)
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = PinnerFormer(ModelConfig.from_dict(state["model_config"]))
    model.load_state_dict(state["model"])
    return model.eval()


def load_serving_model(storage: PinnerStorage) -> tuple[PinnerFormer, str]:
    """The model that passed the promotion gate last (models/serving.json): what is served."""
    version = serving_version(storage)
    if version is None:
        raise dg.Failure(
            "no served model: no trained_model has passed its promotion_gate check yet "
            f"({storage.path(*SERVING_MODEL)} missing); see docs/OPERATIONS.md",
            allow_retries=False,
        )
    return load_model(storage, version), version


def loss_plot(history: list[dict[str, float]], width: int = 60, height: int = 12) -> str:
    """The loss curve as a Markdown text plot (the UI renders it in the metadata panel)."""
    if not history:
        return "no steps"
    losses = [r["loss"] for r in history]
    lo, hi = min(losses), max(losses)
    cols = [losses[round(i * (len(losses) - 1) / max(1, width - 1))] for i in range(width)]
    grid = [[" "] * width for _ in range(height)]
    for x, v in enumerate(cols):
        y = 0 if hi == lo else round((v - lo) / (hi - lo) * (height - 1))
        grid[height - 1 - y][x] = "*"
    lines = [f"{hi:8.4f} |" + "".join(grid[0])]
    lines += ["         |" + "".join(row) for row in grid[1:-1]]
    lines += [
        f"{lo:8.4f} |" + "".join(grid[-1]),
        f"          step {history[0]['step']:.0f} .. {history[-1]['step']:.0f}",
    ]
    return "```\n" + "\n".join(lines) + "\n```"


def curve_markdown(history: list[dict[str, float]]) -> str:
    """The training curve as a Markdown table (the UI renders it)."""
    return "\n".join(
        ["| step | loss | lr | tau | seq/s |", "|---|---|---|---|---|"]
        + [
            f"| {r['step']:.0f} | {r['loss']:.4f} | {r['lr']:.2e} | {r['temperature']:.3f} "
            f"| {r['sequences_per_s']:.0f} |"
            for r in history
        ]
    )

"""`pinner compare`: train and evaluate on the synthetic world with model_core alone.

Trains the paper's content-only model and (beyond the paper) one that also learns item ids
(`model_core.features.item_ids`), then scores both and the baselines with the §4.1 protocol. No
Dagster involved; `pinner demo` runs the same recipe through the pipeline. The command line is
`pinner_assets.cli`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import polars as pl

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.metrics import RetrievalMetrics
from model_core.evaluation.paper_protocol import build_eval_set, evaluate, popularity_counts
from model_core.features.actions import FeatureConfig
from model_core.training.config import TrainConfig
from model_core.training.recipe import (
    ItemOptions,
    RecipeConfig,
    build_recipe,
    fit,
    split_timestamp,
    training_timelines,
)
from model_core.training.sampler import SamplerConfig

log = logging.getLogger("pinner")


def data_dir() -> Path:
    return Path(os.environ.get("PINNER_DATA_DIR", "data")).resolve()


def compare(
    quick: bool = False,
    steps: int | None = None,
    objective: str = "dense_all_action",
    item_ids: str = "auto",
) -> dict[str, Any]:
    """Train both models, score them and the baselines; write data/compare/metrics.json.
    Returns {"metrics": scorer → metric dict, "summary": a line about the run}."""
    world = synthetic.WorldConfig.tiny() if quick else synthetic.WorldConfig()
    t0 = time.perf_counter()
    actions = pl.concat(list(synthetic.generate_range(world, world.dates[0], world.dates[-1])))
    catalog = PinCatalog.from_frame(synthetic.pin_features(world))
    features = FeatureConfig(content_dim=world.content_dim)
    timelines, drops = Timelines.from_actions(actions, catalog, features)
    log.info(
        "world: %d users, %d pins, %d days, %d actions (%d dropped) in %.1fs",
        world.n_users,
        world.n_pins,
        world.n_days,
        len(actions),
        drops.total,
        time.perf_counter() - t0,
    )
    steps = steps or (200 if quick else 1000)

    def recipe(ids: str) -> RecipeConfig:
        return build_recipe(
            features,
            len(catalog),
            items=ItemOptions(ids=ids, tokens="none", graph="none"),
            sampler=SamplerConfig(objective=objective),  # type: ignore[arg-type]
            train=TrainConfig(steps=steps, log_every=max(1, steps // 10)),
        )

    cfg = recipe("none")
    split_ts = split_timestamp(world.dates[-1], cfg.eval.horizon_days)
    train_tl = training_timelines(timelines, split_ts, cfg)
    out_dir = data_dir() / "compare"
    eval_set = build_eval_set(timelines, catalog, split_ts, cfg.eval)
    popularity = popularity_counts(train_tl, len(catalog))
    # The paper's content-only pin tower, then (beyond the paper) one that also learns item ids.
    variants = {"pinnerformer": "none", "pinnerformer+ids": item_ids}
    results: dict[str, RetrievalMetrics] = {}
    for name, mode in variants.items():
        if name != "pinnerformer" and mode == "none":
            continue
        variant = recipe(mode)
        log.info("training %s (%d steps)", name, steps)
        fitted = fit(train_tl, catalog, variant, checkpoint_path=None)
        scored = evaluate(fitted.model, eval_set, catalog, popularity)
        results[name] = scored.pop("pinnerformer")
        results.update(scored)
    table = {name: m.as_dict() for name, m in results.items()}
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(
        json.dumps(
            {
                "world": dataclasses.asdict(world),
                "train_users": fitted.n_train_users,
                "eval_users": eval_set.history.n_users,
                "steps": steps,
                "sequences_per_s": fitted.result.sequences_per_s,
                "metrics": table,
            },
            indent=2,
            default=str,
        )
    )
    summary = (
        f"trained {steps} steps on {fitted.n_train_users} users "
        f"({fitted.result.sequences_per_s:.0f} sequences/s on {fitted.result.device}); "
        f"evaluated on {eval_set.history.n_users} held-out users, "
        f"{len(eval_set.positive_user)} positives, index of {len(eval_set.index_rows)} pins; "
        f"metrics in {out_dir / 'metrics.json'} ({time.perf_counter() - t0:.0f}s)"
    )
    return {"metrics": table, "summary": summary}

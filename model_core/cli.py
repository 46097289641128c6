"""`pinner compare`: train and evaluate on the synthetic world with model_core alone.

Trains the paper's model and (beyond the paper) one whose pin tower also learns hashed pin-id
embeddings, then scores both and the baselines with the §4.1 protocol. No Dagster involved;
`pinner demo` (pinner_assets.cli) runs the same recipe through the pipeline.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import time
from pathlib import Path

import polars as pl

from model_core import synthetic
from model_core.evaluation import build_eval_set, evaluate, popularity_counts
from model_core.features import FeatureConfig
from model_core.metrics import RetrievalMetrics
from model_core.model import ModelConfig
from model_core.recipe import (
    RecipeConfig,
    fit,
    split_timestamp,
    training_timelines,
)
from model_core.sampler import SamplerConfig
from model_core.timelines import PinCatalog, Timelines
from model_core.trainer import TrainConfig

log = logging.getLogger("pinner")


def data_dir() -> Path:
    return Path(os.environ.get("PINNER_DATA_DIR", "data")).resolve()


def compare(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    world = synthetic.WorldConfig.tiny() if args.quick else synthetic.WorldConfig()
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
    steps = args.steps or (200 if args.quick else 1000)
    cfg = RecipeConfig(
        model=ModelConfig(features=features),
        sampler=SamplerConfig(objective=args.objective),
        train=TrainConfig(steps=steps, log_every=max(1, steps // 10)),
    )
    split_ts = split_timestamp(world.dates[-1], cfg.eval.horizon_days)
    train_tl = training_timelines(timelines, split_ts, cfg)
    out_dir = data_dir() / "compare"
    eval_set = build_eval_set(timelines, catalog, split_ts, cfg.eval)
    popularity = popularity_counts(train_tl, len(catalog))
    # The paper's content-only pin tower, then (beyond the paper) one with learnable pin ids.
    variants = {"pinnerformer": 0, "pinnerformer+ids": args.pin_id_buckets}
    results: dict[str, RetrievalMetrics] = {}
    for name, buckets in variants.items():
        if name != "pinnerformer" and buckets == 0:
            continue
        variant = dataclasses.replace(
            cfg, model=dataclasses.replace(cfg.model, pin_id_buckets=buckets)
        )
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
    print(
        f"\ntrained {steps} steps on {fitted.n_train_users} users "
        f"({fitted.result.sequences_per_s:.0f} sequences/s on {fitted.result.device}); "
        f"evaluated on {eval_set.history.n_users} held-out users, "
        f"{len(eval_set.positive_user)} positives, index of {len(eval_set.index_rows)} pins\n"
    )
    print_table(table)
    print(f"\nmetrics written to {out_dir / 'metrics.json'} ({time.perf_counter() - t0:.0f}s)")
    return table


def print_table(rows: dict[str, dict[str, float]]) -> None:
    """scorer → {recall_at_10, p90_coverage_at_10, interest_entropy_at_50} as aligned columns."""
    print(f"{'scorer':<18}{'Recall@10':>11}{'P90 cov@10':>12}{'entropy@50':>12}")
    for name, m in rows.items():
        print(
            f"{name:<18}{m['recall_at_10']:>11.4f}{m['p90_coverage_at_10']:>12.4f}"
            f"{m['interest_entropy_at_50']:>12.3f}"
        )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="test-sized world, a few seconds")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps")
    p.add_argument(
        "--objective",
        default="dense_all_action",
        choices=["next_action", "sasrec", "all_action", "dense_all_action"],
    )
    p.add_argument(
        "--pin-id-buckets",
        type=int,
        default=65_536,
        help="beyond the paper: also train a model whose pin tower adds learnable hashed pin-id "
        "embeddings (this many buckets; 0 = skip it)",
    )

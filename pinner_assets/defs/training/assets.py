"""count_min_sketch and trained_model: the training half of the graph (thin wrappers)."""

import datetime
import json
import math
from typing import Literal

import dagster as dg
import numpy as np
import torch
from dagster_duckdb import DuckDBResource
from pydantic import Field

from model_core.features.actions import FeatureConfig
from model_core.training.checkpoint import save_checkpoint
from model_core.training.config import TrainConfig, resolve_device
from model_core.training.loss import LossConfig
from model_core.training.recipe import ItemOptions, RecipeConfig, build_recipe, label_sketch
from model_core.training.sampler import SamplerConfig, SequenceSampler
from model_core.training.sketch import CountMinSketch
from pinner_assets.lib.launch import launch_training
from pinner_assets.lib.models import (
    LATEST_MODEL,
    SKETCH_FILE,
    curve_markdown,
    load_model,
    load_training_timelines,
    loss_plot,
    model_version,
)
from pinner_assets.lib.promotion import (
    PromotionPolicy,
    promote,
    promotion_check,
    serving_version,
    validation_slice,
)
from pinner_assets.lib.resources import (
    ActionSource,
    ComputeResource,
    EvaluationSplit,
    PinnerStorage,
)
from pinner_assets.lib.timelines import MAX_LEN, model_features
from pinner_assets.lib.warehouse import read_only

# Kubernetes: the training step asks for a GPU node (applies with the k8s_job_executor).
GPU_TAGS = {
    "dagster-k8s/config": {
        "container_config": {
            "resources": {
                "requests": {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
                "limits": {"memory": "32Gi", "nvidia.com/gpu": "1"},
            }
        },
        "pod_spec_config": {
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        },
    }
}


class SketchConfig(dg.Config):
    width: int = Field(default=2**16, description="Counters per row; error ε = e / width.")
    depth: int = Field(default=4, description="Rows; failure probability δ = exp(-depth).")


@dg.asset(deps=["training_timelines", "pin_features"], group_name="training")
def count_min_sketch(
    config: SketchConfig, duckdb: DuckDBResource, storage: PinnerStorage, source: ActionSource
) -> dg.MaterializeResult:
    """Count-min sketch of how often each pin is drawn as a training label (feeds logQ): one
    epoch of the default sampler over the training timelines, positives by the source's rule.
    logQ must correct for what the in-batch pool holds, which differs from the pins' share of
    positives (heavy users are capped, positions are sampled)."""
    timelines, catalog = load_training_timelines(duckdb, source)
    sampler = SequenceSampler(timelines, catalog, SamplerConfig(max_len=MAX_LEN))
    sketch = label_sketch(
        sampler, RecipeConfig(sketch_width=config.width, sketch_depth=config.depth)
    )
    sketch.save(storage.path(*SKETCH_FILE))
    return dg.MaterializeResult(
        metadata={
            "sampled_labels": sketch.total,
            "width": config.width,
            "depth": config.depth,
            "error_bound": f"+{math.e / config.width * sketch.total:.1f} counts "
            f"with probability {1 - math.exp(-config.depth):.3f}",
            "path": dg.MetadataValue.path(str(storage.path(*SKETCH_FILE))),
        }
    )


class ModelTraining(dg.Config):
    """Run config of trained_model; converted to model_core dataclasses at the boundary."""

    objective: Literal["next_action", "sasrec", "all_action", "dense_all_action"] = Field(
        default="dense_all_action", description="Training objective (paper §3.4, Table 3)."
    )
    negatives: Literal["in_batch", "random", "mixed", "catalog"] = Field(
        default="mixed",
        description="Negative pool (paper §3.3, Table 4). catalog = every pin, the exact "
        "softmax (beyond the paper; one [pairs, pins] matmul a step, for catalogues up to ~1e5).",
    )
    logq: bool = Field(default=True, description="Apply the logQ correction to every logit.")
    steps: int = Field(
        default=1000, description="Optimizer steps at most (the cosine schedule's length)."
    )
    early_stopping: bool = Field(
        default=True,
        description="Hold out 10% of the training users; score Recall@10 on their last 14 days "
        "once an epoch, stop after `patience` epochs without improvement and keep the best "
        "weights (only when at least 500 held-out users have positives to score: fewer "
        "measure too coarsely). Off: train all `steps` on every user.",
    )
    patience: int = Field(default=3, description="Epochs without improvement before stopping.")
    batch_size: int = Field(default=128, description="Sequences per step per device.")
    lr: float = Field(default=2e-3, description="Peak learning rate (warmup + cosine).")
    hidden: int = Field(default=64, description="Transformer width H.")
    n_layers: int = Field(default=2, description="Transformer blocks L.")
    out_dim: int = Field(default=64, description="Embedding dimension D.")
    window_days: float = Field(default=28.0, description="Label window K in days.")
    seed: int = Field(default=0, description="Seed for init, sampling and negatives.")
    item_ids: Literal["auto", "table", "hashed", "none"] = Field(
        default="auto",
        description="Beyond the paper: learnable item-id embeddings shared by the pin tower and "
        "the user tower's input (model_core.features.item_ids). auto = a full table of the "
        "catalogue's ids up to 1M pins, hashed beyond; none = the paper's content-only tower. On "
        "by default: when content embeddings carry no engagement signal (public logs, the "
        "synthetic world), the paper's tower cannot rank popular pins above unpopular ones of "
        "the same topic. `pinner compare` measures both.",
    )
    item_tokens: Literal["auto", "none"] = Field(
        default="auto",
        description="Beyond the paper: with a full id table, also learn a vector per metadata "
        "token of the pins (pin_features.tokens: topic, words of the text) and add their mean "
        "to each pin's id vector (model_core.features.item_ids). auto = where the pins carry "
        "tokens; none = ids alone.",
    )
    item_graph: Literal["auto", "none"] = Field(
        default="auto",
        description="Beyond the paper: with a full id table, each pin also averages in the id "
        "vectors of its 10 strongest co-engagement neighbours in the training timelines, and "
        "theirs (two graph-propagation steps, the role of the paper's PinSage vectors; "
        "model_core.features.item_graph)."
        " none = no graph layer.",
    )
    ema_epochs: float = Field(
        default=TrainConfig.ema_epochs,
        ge=0.0,
        description="Beyond the paper: validation and the published model use an exponential "
        "moving average of the weights with a memory of this many epochs "
        "(model_core.training.trainer). 0 = the last step's weights.",
    )
    latest_pin: Literal["auto", "none"] = Field(
        default="none",
        description="Beyond the paper: auto = wherever ids are learned, the user embedding adds "
        "a learned share of the embedding of the user's latest pin (ModelConfig.latest_pin; the "
        "default of `pinner experiment`, where it wins on next-item logs). Off here by default: "
        "on the synthetic world's 14-day task a short run scored below popularity with it and "
        "above without (tests/pinner_assets/test_promotion.py), and on Taobao's dense-all-action "
        "rows its gain is inside the interval. none = the paper's user tower alone.",
    )

    def recipe(
        self,
        features: FeatureConfig,
        device: str,
        n_items: int,
        tokens: np.ndarray | None = None,
    ) -> RecipeConfig:
        """`features`: the source's vocabulary with the pin features' content width;
        `n_items`: the catalogue size (the id table's); `tokens`: its pins' token codes."""
        items = ItemOptions(self.item_ids, self.item_tokens, self.item_graph, self.latest_pin)
        return build_recipe(
            features,
            n_items,
            tokens,
            items,
            model={
                "max_len": MAX_LEN,
                "hidden": self.hidden,
                "n_layers": self.n_layers,
                "out_dim": self.out_dim,
            },
            sampler=SamplerConfig(
                objective=self.objective, max_len=MAX_LEN, window_days=self.window_days
            ),
            loss=LossConfig(negatives=self.negatives, logq=self.logq),
            train=TrainConfig(
                batch_size=self.batch_size,
                steps=self.steps,
                lr=self.lr,
                seed=self.seed,
                device=device,
                log_every=max(1, self.steps // 20),
                patience=self.patience,
                ema_epochs=self.ema_epochs,
            ),
            validation_fraction=0.1 if self.early_stopping else 0.0,
        )


@dg.asset(
    deps=["training_timelines", "count_min_sketch", "pin_features"],
    group_name="training",
    pool="gpu",
    op_tags=GPU_TAGS,
    kinds={"pytorch"},
    owners=["team:ml-platform"],
    check_specs=[
        dg.AssetCheckSpec(
            "promotion_gate",
            asset="trained_model",
            blocking=True,
            description="Recall@10 on a validation slice (held-out users, the last days of the "
            "training period) at least the serving model's and the popularity baseline's "
            "(PromotionPolicy). Only a model that passes is served (models/serving.json).",
        )
    ],
)
def trained_model(
    context: dg.AssetExecutionContext,
    config: ModelTraining,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
    compute: ComputeResource,
    source: ActionSource,
    split: EvaluationSplit,
    promotion: PromotionPolicy,
) -> dg.MaterializeResult:
    """PinnerFormer trained on the training timelines; checkpoint + config + curves.

    The model's action-type and surface vocabularies are the source's (they travel in the
    checkpoint), labels follow the source's positive rule. Runs on CUDA (bf16 autocast) when one
    is present, else the CPU. Writes models/<version>/model.pt and points models/latest.json at it.
    """
    timelines, catalog = load_training_timelines(duckdb, source)
    sketch = CountMinSketch.load(storage.path(*SKETCH_FILE))
    device = str(resolve_device(compute.device))
    features = model_features(source.feature_config(), catalog)
    recipe = config.recipe(features, device, len(catalog), catalog.tokens)
    # torchrun through Dagster Pipes (pinner_assets.lib.launch): logs stream in, resumes when killed
    fitted, launch_metadata = launch_training(
        context, storage, compute, timelines, catalog, sketch, recipe
    )
    model = fitted.model.cpu()
    version = model_version(model)
    ckpt = storage.path("models", version, "model.pt")
    opt = torch.optim.AdamW(model.parameters())  # the checkpoint format carries an optimizer
    save_checkpoint(ckpt, model, opt, fitted.result.steps, fitted.result.history)
    latest = {
        "version": version,
        "path": str(ckpt),
        "trained_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "config": config.model_dump(),
        "device": fitted.result.device,
    }
    path = storage.path(*LATEST_MODEL)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(latest, indent=2))
    tmp.replace(path)
    # the gate: scored in memory before models/serving.json may move
    served_now = serving_version(storage)
    with read_only(duckdb) as con:
        data = validation_slice(con, split, promotion, source.rule(), source.feature_config())
    serving = (load_model(storage, served_now), served_now) if served_now else None
    gate = promotion_check(model, version, serving, data, promotion)
    if gate.passed:
        promote(
            storage,
            version,
            str(ckpt),
            {k: getattr(v, "value", v) for k, v in gate.metadata.items()},
        )
    context.log.info(f"promotion_gate for {version}: {gate.description}")
    history = fitted.result.history
    # the throughput of the run that made these weights (a run resumed at its last step trains
    # no step itself: its own rate is 0)
    seq_per_s = fitted.result.sequences_per_s or (
        history[-1]["sequences_per_s"] if history else 0.0
    )
    return dg.MaterializeResult(
        data_version=dg.DataVersion(version),  # the weights' content hash
        check_results=[gate],
        metadata={
            **launch_metadata,  # the worker's report; the figures below take precedence
            "model_version": version,
            "serving_version": serving_version(storage) or "none",
            "loss_curve": dg.MetadataValue.md(loss_plot(history)),
            "device": fitted.result.device,
            "train_users": fitted.n_train_users,
            "sequences_per_epoch": fitted.n_sequences_per_epoch,
            "final_loss": history[-1]["loss"] if history else float("nan"),
            "sequences_per_s": seq_per_s,
            "training_curve": dg.MetadataValue.md(curve_markdown(history)),
            "checkpoint": dg.MetadataValue.path(str(ckpt)),
        },
    )

"""The recipe: options → `RecipeConfig` (`build_recipe`, the one place flags become a config) and
timelines → sketch → trained model (`fit`, the one way into training). The pipeline's worker, the
experiments and `pinner compare` all go through both, so they train identically.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.paper_protocol import EvalConfig, is_eval_user
from model_core.features.actions import FeatureConfig
from model_core.features.item_graph import co_engagement_neighbors
from model_core.features.item_ids import id_fields, neighbor_fields, shared_tokens, token_fields
from model_core.model.pinnerformer import ModelConfig, PinnerFormer, latest_pin_on
from model_core.training.config import TrainConfig, TrainResult, config_from_dict
from model_core.training.loss import LossConfig
from model_core.training.sampler import SamplerConfig, SequenceSampler
from model_core.training.sketch import CountMinSketch
from model_core.training.trainer import train
from model_core.training.validation import Validate


@dataclass(frozen=True)
class RecipeConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    sketch_width: int = 2**16  # ε = e/w ≈ 4e-5 of all positives: far below a popular pin's share
    sketch_depth: int = 4  # δ = e^-4 ≈ 2% chance a key exceeds the bound
    # The training pipeline's early stopping: this share of the training users is held out and
    # scored (Recall@10 on their last 14 days, `validation.paper_split`) once an epoch; 0 = none.
    validation_fraction: float = 0.0

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RecipeConfig:
        """The config `dataclasses.asdict` wrote (a training job's JSON)."""
        return config_from_dict(cls, data)


@dataclass(frozen=True)
class ItemOptions:
    """Beyond the paper: how items are represented besides their content vector. Each is a mode
    a user picks (`pinner experiment --item-ids ...`, trained_model's run config)."""

    ids: str = (
        "auto"  # learned ids: auto (a table up to 1M items, hashed beyond), table, hashed, none
    )
    tokens: str = "auto"  # with a full id table, vectors of the items' metadata tokens; none
    graph: str = "auto"  # with a full id table, the co-engagement graph layer; none
    latest_pin: str = "none"  # auto: the user embedding adds a share of its latest pin's
    id_dropout: float = 0.0  # with learned ids, `ModelConfig.item_id_dropout`

    def model_fields(self, n_items: int, tokens: np.ndarray | None) -> dict[str, Any]:
        """ModelConfig fields for a catalogue of `n_items` whose items carry `tokens`."""
        return {
            **id_fields(n_items, self.ids),
            **token_fields(tokens, n_items, self.ids, self.tokens),
            **neighbor_fields(n_items, self.ids, self.graph),
            "latest_pin": latest_pin_on(self.latest_pin, self.ids),
            "item_id_dropout": self.id_dropout if self.ids != "none" else 0.0,
        }


def build_recipe(
    features: FeatureConfig,
    n_items: int,
    tokens: np.ndarray | None = None,
    items: ItemOptions = ItemOptions(),
    model: Mapping[str, Any] | None = None,
    **parts: Any,
) -> RecipeConfig:
    """The recipe for a catalogue of `n_items` (its items' metadata `tokens`, if any) with the
    action vocabulary `features`: the item options resolved into model fields, `model` the other
    ModelConfig fields (hidden, n_layers, dropout, ...), `parts` the other RecipeConfig fields
    (sampler, loss, train, eval, validation_fraction, sketch sizes)."""
    model_cfg = ModelConfig(
        features=features, **(model or {}), **items.model_fields(n_items, tokens)
    )
    return RecipeConfig(model=model_cfg, **parts)


def split_timestamp(end_date: datetime.date, horizon_days: float) -> int:
    """The Unix second t such that (t, t + horizon] are the last `horizon_days` days of data."""
    end = datetime.datetime.combine(end_date, datetime.time(), tzinfo=datetime.timezone.utc)
    return int(end.timestamp()) + 86_400 - int(horizon_days * 86_400)


def training_timelines(timelines: Timelines, split_ts: int, cfg: RecipeConfig) -> Timelines:
    """Training users only (disjoint from evaluation users), actions up to the split."""
    train_users = ~is_eval_user(timelines.user_ids, cfg.eval.eval_fraction, cfg.eval.seed)
    return timelines.select_users(train_users).before(split_ts)


def label_sketch(sampler: SequenceSampler, cfg: RecipeConfig) -> CountMinSketch:
    """Count-min sketch of how often each item is DRAWN as a label by the sampler over one epoch
    (feeds logQ): what the in-batch pool actually holds, not the items' share of positives."""
    counts = sampler.label_counts(cfg.train.batch_size)
    drawn = np.flatnonzero(counts)
    sketch = CountMinSketch(cfg.sketch_width, cfg.sketch_depth, seed=cfg.train.seed)
    sketch.add(sampler.catalog.pin_ids[drawn], counts[drawn])
    return sketch


@dataclass
class Fitted:
    model: PinnerFormer
    sketch: CountMinSketch
    result: TrainResult
    n_train_users: int
    n_sequences_per_epoch: int


def fit(
    train_tl: Timelines,
    catalog: PinCatalog,
    cfg: RecipeConfig,
    checkpoint_path: Path | None = None,
    sketch: CountMinSketch | None = None,
    validate: Validate | None = None,
) -> Fitted:
    """Train a PinnerFormer on `train_tl`. sketch: label frequencies for logQ (default: counted
    from what the sampler draws); validate: model → held-out metric for early stopping
    (`model_core.training.validation`)."""
    assert cfg.sampler.max_len <= cfg.model.max_len, "sampler.max_len must fit the model's max_len"
    assert cfg.model.features.content_dim == catalog.embeddings.shape[1], (
        f"model content_dim {cfg.model.features.content_dim} != catalogue "
        f"embedding dim {catalog.embeddings.shape[1]}"
    )
    assert cfg.model.item_id_vocab in (0, len(catalog)), (
        f"item_id_vocab {cfg.model.item_id_vocab} must be the catalogue size {len(catalog)} "
        "(fit narrows it to the items the training data shows)"
    )
    sampler = SequenceSampler(train_tl, catalog, cfg.sampler, seed=cfg.train.seed)
    sketch = sketch if sketch is not None else label_sketch(sampler, cfg)
    torch.manual_seed(cfg.train.seed)
    vocab = tokens = neighbors = None
    if cfg.model.item_id_vocab:
        # Only the items the training data shows get an id row; any other item keeps the zero
        # row and is its content alone. A row it never trains would stay a random vector that
        # the whole-catalogue softmax can only push down, burying every item new since training.
        rows = np.unique(train_tl.pin_row)
        vocab = catalog.pin_ids[rows]
        n_tokens = per_item = 0
        if cfg.model.item_token_vocab and catalog.tokens is not None:
            tokens = shared_tokens(catalog.tokens[rows])
            if tokens.any():
                n_tokens, per_item = int(tokens.max()), tokens.shape[1]
            else:
                tokens = None  # no token is shared by two known items: ids alone
        if cfg.model.item_neighbors:
            neighbors = co_engagement_neighbors(train_tl, rows, cfg.model.item_neighbors)
        model_cfg = dataclasses.replace(
            cfg.model,
            item_id_vocab=len(vocab),
            item_token_vocab=n_tokens,
            item_tokens_per_item=per_item,
            item_neighbors=0 if neighbors is None else neighbors.shape[1],
        )
        cfg = dataclasses.replace(cfg, model=model_cfg)
    model = PinnerFormer(cfg.model, vocab, tokens, neighbors)
    result = train(model, sampler, sketch, cfg.loss, cfg.train, checkpoint_path, validate=validate)
    return Fitted(model, sketch, result, train_tl.n_users, sampler.sequences_per_epoch)

"""The end-to-end recipe on in-memory data: timelines → sketch → model → metrics.

Shared by the `pinner` command and the Dagster assets, so both train and evaluate identically.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from model_core.evaluation import EvalConfig, is_eval_user
from model_core.item_graph import co_engagement_neighbors
from model_core.item_ids import shared_tokens
from model_core.loss import LossConfig
from model_core.model import ModelConfig, PinnerFormer
from model_core.sampler import SamplerConfig, SequenceSampler
from model_core.sketch import CountMinSketch
from model_core.timelines import PinCatalog, Timelines
from model_core.trainer import TrainConfig, TrainResult, train
from model_core.validation import Validate


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
    (`model_core.validation`)."""
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

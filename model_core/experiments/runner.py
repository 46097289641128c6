"""`pinner experiment`: the paper's tables re-run on a log, under one of two protocols.

A *variant* is a RecipeConfig change (objective, negatives, loss, features, item representation)
and, for Table 5, a change of which positives are labels; a *table* groups variants the way the
paper does:

- objectives (Table 3), negatives (Table 4), features (Table 6), bce (Table 10: the original
  SASRec loss, BCE with one random negative, vs sampled softmax);
- inference (Table 2): SASRec vs dense all action, each trained once and scored with embeddings
  computed once at t, daily, or in realtime (`model_core.evaluation.inference_frequency`); paper
  protocol;
- multitask (Table 5): one model trained on ALL positive action types vs one per type, each scored
  on every type (paper protocol; only logs with several positive types: synthetic, Taobao);
- item_ids (beyond the paper): the paper's content-only item tower vs learned item ids (a full
  table, or hashed);
- peers: the reference SASRecs (`model_core.model.sasrec`), original BCE recipe and full
cross-entropy.

Every model trains to convergence: epochs over the sampler's sequences, scored after each on a
validation split of the TRAINING data (`model_core.training.validation`: each user's second-to-last
positive for leave-one-out, held-out training users' last days before t for the paper protocol),
early stopping after `Budget.patience` epochs without improvement, best weights restored, at most
`Budget.max_minutes` per variant. Every variant is trained from scratch per seed and scored on the
same evaluation set as the baselines (popularity, mean of recent content, PinnerSage). With
`item_tokens="validated"` (the default) each PinnerFormer variant's first seed also trains without
the items' metadata-token vectors, and the better validation score decides for every seed. The
protocols:

- protocol "paper" (§4.1): global split time t, evaluation users disjoint from training users,
  positives in (t, t + 14 days], index = the catalogue (up to 1M random items), Recall@10 with a
  95% bootstrap interval over users, P90 coverage@10, interest entropy@50;
- protocol "leave_one_out": each user's last positive held out, full ranking over the catalogue,
  HR@10 and NDCG@10 with the user's already-seen items removed (the standard protocol) and
  unfiltered (`*_unfiltered`), each with a 95% bootstrap interval over users.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from model_core.evaluation.leave_one_out import leave_one_out
from model_core.evaluation.paper_protocol import EvalConfig, pooled_eval_set
from model_core.experiments.data import Data, load
from model_core.experiments.history_rows import Blend, chosen_history_scorers
from model_core.experiments.rows import (
    loo_baselines,
    loo_history_rows,
    loo_rows,
    paper_baselines,
    paper_history_rows,
    paper_rows,
)
from model_core.experiments.tables import PAPER_ONLY, TABLES, Variant, with_labels
from model_core.model.sasrec import SASRecConfig
from model_core.training.config import TrainConfig, amp_dtype
from model_core.training.loss import LossConfig
from model_core.training.recipe import (
    ItemOptions,
    RecipeConfig,
    build_recipe,
    fit,
    training_timelines,
)
from model_core.training.reference import fit_sasrec
from model_core.training.sampler import SamplerConfig
from model_core.training.validation import Split, leave_one_out_split, paper_split

SMALL_LOG_ACTIONS = 1_000_000  # below this, dropout 0.2 (the SASRec setting for small logs)
# Up to this many items the negatives are the whole catalogue (the exact softmax, one [N, K]
# matmul a step: ~0.1 s on 2 CPU cores at 1k pairs x 1e5 items); beyond it, the paper's mixed
# sampled pool with logQ.
EXACT_SOFTMAX_MAX_ITEMS = 100_000
# An epoch of one pass per user (a reference SASRec's, or PinnerFormer's on tiled windows) is a
# quarter or less of a random-window PinnerFormer epoch (up to 8 windows per user): it gets this
# many times the budget's epochs and patience.
ONE_PASS_EPOCHS = 4


@dataclass(frozen=True)
class Budget:
    """How long each variant may train: early stopping usually ends it first."""

    max_epochs: int = 50  # PinnerFormer epochs draw up to 8 windows per user; SASRec's draw 1
    max_minutes: float | None = None
    patience: int = 5  # validation epochs without improvement


@dataclass(frozen=True)
class RecipeOptions:
    """The `pinner experiment` flags that shape every PinnerFormer variant (`base_recipe`)."""

    item_ids: str = "auto"
    negatives: Literal["auto", "catalog", "mixed"] = "auto"
    remove_seen: bool = False
    windows: Literal["auto", "random", "tiled", "latest"] = "auto"
    item_tokens: Literal["validated", "auto", "none"] = "validated"
    amp: Literal["auto", "on", "off"] = "auto"
    item_graph: Literal["auto", "none"] = "auto"
    latest_pin: Literal["auto", "none"] = "auto"
    ema_epochs: float = TrainConfig.ema_epochs
    item_id_dropout: float = 0.0


def base_recipe(
    data: Data,
    seed: int,
    budget: Budget,
    protocol: str = "paper",
    options: RecipeOptions = RecipeOptions(),
) -> RecipeConfig:
    """The recipe every variant changes: the paper's model with learned item ids (beyond the
    paper; `item_ids="none"` is the paper's content-only tower), dropout on small logs. Under
    leave-one-out, whose target is the next positive in ROW order, labels follow row order and
    are not limited in time except by the K-day variants (a Sports user reviews a handful of
    items over years, often several on one day), and `windows="auto"` tiles each user's history
    from the latest action for the SASRec objective (`SamplerConfig.window_ends`: every
    position, the most recent always, trains once an epoch; on Amazon's validation split the
    paper's random windows scored about a fifth lower); under the paper protocol "auto" is the
    paper's random windows. `item_tokens="auto"` (beyond the paper) also learns a vector per
    metadata token of the items (brand, category, genre, title word) where the catalogue has
    tokens and the ids are a full table (`model_core.features.item_ids`); "validated" is the same
    recipe, and the `FitCache` keeps the vectors only where they win on the validation split;
    "none": ids alone. `item_graph="auto"` (beyond the paper) also averages each item's
    co-engagement neighbours into its id vector (`model_core.features.item_graph`) with a full id
    table; "none": no graph. `latest_pin="auto"` (beyond the paper) adds a learned share of the
    latest pin's embedding to the user embedding wherever ids are learned
    (`ModelConfig.latest_pin`); "none" and the content-only tower: the paper's user tower alone.
    `ema_epochs`: validation and the scored model use a moving average of the weights
    (`TrainConfig.ema_epochs`; 0 = off). `amp`: PinnerFormer's bf16 autocast (`TrainConfig.amp`; the
    reference SASRecs train in fp32). The names are `options`' fields."""
    o = options
    small = len(data.timelines.ts) < SMALL_LOG_ACTIONS
    exact = o.negatives == "catalog" or (
        o.negatives == "auto" and len(data.catalog) <= EXACT_SOFTMAX_MAX_ITEMS
    )
    loo = protocol == "leave_one_out"
    ends = "random" if o.windows == "auto" and not loo else o.windows
    items = ItemOptions(
        ids=o.item_ids,
        tokens="auto" if o.item_tokens == "validated" else o.item_tokens,
        graph=o.item_graph,
        latest_pin=o.latest_pin,
        id_dropout=o.item_id_dropout,
    )
    return build_recipe(
        data.features,
        len(data.catalog),
        data.catalog.tokens,
        items,
        model={"dropout": 0.2 if small else 0.0},
        sampler=SamplerConfig(
            window_days=None if loo else 28.0,
            label_order="rows" if loo else "time",
            window_ends=ends,
        ),
        train=TrainConfig(
            epochs=budget.max_epochs,
            patience=budget.patience,
            max_minutes=budget.max_minutes,
            seed=seed,
            log_every=50,
            amp=o.amp,
            ema_epochs=o.ema_epochs,
        ),
        loss=LossConfig(negatives="catalog" if exact else "mixed"),
        eval=EvalConfig(seed=0, remove_seen=o.remove_seen),
    )


def sasrec_config(
    data: Data, loss: Literal["bce", "ce"], seed: int, budget: Budget, ema_epochs: float
) -> SASRecConfig:
    """The reference recipe: max length 200 on MovieLens (long histories), 50 elsewhere. Its
    epoch is one sequence per user, a quarter or less of a PinnerFormer epoch (up to 8 windows
    per user), so it may run 4x as many epochs and wait 4x as many for an improvement. It gets
    PinnerFormer's training affordances: the same learning-rate schedule fitted to the same
    cap, and the same moving average of the weights (`ema_epochs`, PinnerFormer's)."""
    return SASRecConfig(
        loss=loss,
        max_len=200 if data.name.startswith("movielens") else 50,
        seed=seed,
        max_epochs=ONE_PASS_EPOCHS * budget.max_epochs,
        patience=ONE_PASS_EPOCHS * budget.patience,
        max_minutes=budget.max_minutes,
        affordances=True,
        ema_epochs=ema_epochs,
    )


class FitCache:
    """Fits a (variant, seed) once per file on the validation split's training part: tables share
    variants (Table 2's and Table 10's SASRec is Table 3's; the default recipe recurs as
    mixed+logq, all features, ...), so a repeated one reuses the model and its statistics."""

    def __init__(
        self, data: Data, split: Split, budget: Budget, validate_tokens: bool = False
    ) -> None:
        self.data, self.split, self.budget = data, split, budget
        self.validate_tokens = validate_tokens
        self._fitted: dict[str, tuple[Any, dict[str, Any]]] = {}
        self._token_choice: dict[str, dict[str, Any]] = {}

    def __call__(self, variant: Variant, recipe: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        """The variant fitted with `recipe`. With `validate_tokens`, a PinnerFormer recipe with
        item-token vectors is fitted with and without them for the first seed it meets, and that
        seed's better validation score decides for every seed (`--item-tokens validated`)."""
        if not (self.validate_tokens and variant.peer is None and recipe.model.item_token_vocab):
            return self._fit(variant, recipe)
        ids_alone = dataclasses.replace(
            recipe,
            model=dataclasses.replace(recipe.model, item_token_vocab=0, item_tokens_per_item=0),
        )
        any_seed = dataclasses.replace(recipe, train=dataclasses.replace(recipe.train, seed=0))
        key = repr((any_seed, variant.label_action))
        if key not in self._token_choice:
            scores = [self._fit(variant, r)[1]["validation"] for r in (recipe, ids_alone)]
            with_tokens, without = (-math.inf if v is None else v for v in scores)
            self._token_choice[key] = {
                "seed": recipe.train.seed,
                "with": scores[0],
                "without": scores[1],
                "kept": with_tokens > without,
            }
        choice = self._token_choice[key]
        model, stats = self._fit(variant, recipe if choice["kept"] else ids_alone)
        return model, {**stats, "token_choice": choice}

    def _fit(self, variant: Variant, recipe: RecipeConfig) -> tuple[Any, dict[str, Any]]:
        key = repr((recipe, variant.label_action, variant.peer))
        if key in self._fitted:
            return self._fitted[key]
        tl = with_labels(self.split.train, self.data, variant.label_action)
        model: Any
        if variant.peer is not None:
            cfg = sasrec_config(
                self.data, variant.peer, recipe.train.seed, self.budget, recipe.train.ema_epochs
            )
            model, res = fit_sasrec(tl, self.data.catalog, cfg, self.split.validate)
            stats: dict[str, Any] = {
                "train_seconds": res.seconds,
                "epochs": res.epochs,
                "best_epoch": res.best_epoch,
                "validation": res.best_score,
                "stop_reason": res.stop_reason,
                "sequences_per_s": res.sequences_per_s,
                # the training affordances PinnerFormer gets (schedule, weight average)
                "affordances": cfg.affordances,
            }
        else:
            if recipe.sampler.windows == "tiled":
                train = recipe.train  # a tiled epoch is one pass over each user's history
                epochs = None if train.epochs is None else ONE_PASS_EPOCHS * train.epochs
                patience = ONE_PASS_EPOCHS * train.patience
                recipe = dataclasses.replace(
                    recipe, train=dataclasses.replace(train, epochs=epochs, patience=patience)
                )
            fitted = fit(tl, self.data.catalog, recipe, validate=self.split.validate)
            model, r = fitted.model, fitted.result
            spe = max(1, fitted.n_sequences_per_epoch // recipe.train.batch_size)
            stats = {
                "train_seconds": r.seconds,
                "epochs": r.steps / spe,
                "best_epoch": (r.best_step or r.steps) / spe,
                "validation": r.best_score,
                "stop_reason": r.stop_reason,
                "sequences_per_s": r.sequences_per_s,
                "windows": recipe.sampler.windows,
                # learned vectors for the items' metadata tokens (fit's narrowed config)
                "item_tokens": model.config.item_token_vocab > 0,
                # the graph layer's neighbours per item (fit's narrowed config; 0 = none)
                "item_neighbors": model.config.item_neighbors,
                "bf16": amp_dtype(next(model.parameters()).device, recipe.train.amp)
                == torch.bfloat16,
            }
        stats["seconds_per_epoch"] = stats["train_seconds"] / max(stats["epochs"], 1e-9)
        self._fitted[key] = (model, stats)
        return self._fitted[key]


def run(
    source: str,
    path: str | None,
    tables: list[str],
    protocol: str,
    seeds: list[int],
    quick: bool,
    seeded_tables: tuple[str, ...] = ("objectives", "peers"),
    budget: Budget | None = None,
    options: RecipeOptions = RecipeOptions(),
    only: list[str] | None = None,
    item_engagement: Literal["positive", "all"] = "all",
    eval_windows: int = 1,
    **columns: Any,
) -> dict[str, Any]:
    """Every table in `tables` (only the variants in `only`, when given); the tables in
    `seeded_tables` (the headline comparisons) run with every seed in `seeds`, the others with
    seeds[0] only. Baselines are scored once. `quick`: a smoke run of a few minutes.
    `eval_windows` (paper protocol): consecutive 14-day windows after the one training cut,
    pooled (`model_core.evaluation.paper_protocol.pooled_eval_set`)."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; choose from {list(TABLES)}")
    if protocol != "paper" and any(t in PAPER_ONLY for t in tables):
        raise ValueError(f"tables {list(PAPER_ONLY)} need --protocol paper (got {protocol!r})")
    if budget is None:
        budget = Budget(max_epochs=3, max_minutes=0.5, patience=2) if quick else Budget()
    data = load(source, path, quick, protocol, item_engagement, eval_windows, **columns)

    base = functools.partial(base_recipe, data, budget=budget, protocol=protocol, options=options)

    rows: list[dict[str, Any]] = []
    if protocol == "paper":
        cfg0 = base(seeds[0])
        train_tl = training_timelines(data.timelines, data.split_ts, cfg0)
        es = pooled_eval_set(data.timelines, data.catalog, data.split_ts, cfg0.eval, eval_windows)
        rows += paper_baselines(data, es, train_tl)
        split = paper_split(train_tl, data.catalog, data.split_ts, windows=eval_windows)
        chosen = chosen_history_scorers(data, split)
        rows += paper_history_rows(data, es, chosen)
    else:
        loo = leave_one_out(data.timelines)
        rows += loo_baselines(data, loo)
        split = leave_one_out_split(loo.history, data.catalog, data.validation_users)
        chosen = chosen_history_scorers(data, split)
        rows += loo_history_rows(loo, chosen)
    blend = Blend(data.catalog, chosen["history"][0], split)
    fits = FitCache(data, split, budget, validate_tokens=options.item_tokens == "validated")
    for table in tables:
        table_seeds = seeds if table in seeded_tables else seeds[:1]
        if protocol == "paper":
            rows += paper_rows(data, table, base, table_seeds, es, fits, only, blend)
        else:
            rows += loo_rows(data, table, base, table_seeds, loo, fits, only, blend)
    settings = {
        **dataclasses.asdict(options),
        "negatives": base(seeds[0]).loss.negatives,
        "remove_seen": options.remove_seen if protocol == "paper" else None,
        "eval_windows": eval_windows if protocol == "paper" else None,
        "item_engagement": item_engagement if source != "synthetic" else None,
    }
    return _result(data, protocol, budget, settings, split.n_users, rows)


def _result(
    data: Data,
    protocol: str,
    budget: Budget,
    options: dict[str, Any],
    validation_users: int,
    rows: list[dict[str, Any]],
) -> dict[str, Any]:
    """The results file: what ran, on what, and its rows."""
    split_time = datetime.datetime.fromtimestamp(data.split_ts, datetime.timezone.utc)
    return {
        "dataset": data.name,
        "protocol": protocol,
        "budget": dataclasses.asdict(budget),
        **options,
        "split": split_time.isoformat() if protocol == "paper" else None,
        "users": int(data.timelines.n_users),
        "items": len(data.catalog),
        "actions": int(len(data.timelines.ts)),
        "validation_users": validation_users,
        "rows": rows,
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

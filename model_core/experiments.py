"""`pinner experiment`: the paper's tables re-run on a log, under one of two protocols.

A *variant* is a RecipeConfig change (objective, negatives, loss, features, pin tower) and, for
Table 5, a change of which positives are labels; a *table* groups variants the way the paper does:

- objectives (Table 3), negatives (Table 4), features (Table 6), bce (Table 10: the original
  SASRec loss, BCE with one random negative, vs sampled softmax), pin_ids (beyond the paper);
- inference (Table 2): SASRec vs dense all action, each trained once and scored with embeddings
  computed once at t, daily, or in realtime (`model_core.inference_frequency`); paper protocol;
- multitask (Table 5): one model trained on ALL positive action types vs one per type, each scored
  on every type (paper protocol; only logs with several positive types: synthetic, Taobao).

Every variant is trained from scratch per seed and scored on the same evaluation set as the
baselines (popularity, mean of recent content, and PinnerSage-style multi-embedding users,
`model_core.pinnersage`):

- protocol "paper" (§4.1): global split time t, evaluation users disjoint from training users,
  positives in (t, t + 14 days], index = the catalogue (up to 1M random items), Recall@10 with a
  95% bootstrap interval over users, P90 coverage@10, interest entropy@50;
- protocol "leave_one_out": each user's last positive held out, full ranking over the catalogue,
  HR@10 and NDCG@10 (`model_core.leave_one_out`).

For real logs the split time t is the 80th percentile of action times (so a sizeable share of
users has evaluation positives) and item content vectors are built from metadata and
co-engagement strictly before t (`model_core.item_features`); for leave-one-out the cutoff is the
earliest held-out action, so no target reaches the item vectors either.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from model_core import synthetic
from model_core.adapters import read_source
from model_core.embed import embed_pins, embed_users
from model_core.evaluation import (
    EvalConfig,
    EvalSet,
    baseline_metrics,
    build_eval_set,
    model_metrics_by,
    popularity_counts,
    recent_mean,
)
from model_core.features import FeatureConfig
from model_core.inference_frequency import MODES, inference_frequency_metrics
from model_core.item_features import item_content_embeddings
from model_core.leave_one_out import LeaveOneOut, full_ranks, leave_one_out
from model_core.metrics import RetrievalMetrics, bootstrap_ci, hit_and_ndcg_per_user
from model_core.model import ModelConfig, PinnerFormer
from model_core.pinnersage import PinnerSageConfig, pinnersage_loo_ranks, pinnersage_metrics
from model_core.recipe import RecipeConfig, fit, training_timelines
from model_core.sampler import SamplerConfig
from model_core.timelines import PinCatalog, PositiveRule, Timelines
from model_core.trainer import TrainConfig

Change = Callable[[RecipeConfig], RecipeConfig]
Base = Callable[[int], RecipeConfig]  # seed → the recipe a variant changes


def _sampler(**kw: Any) -> Change:
    return lambda r: dataclasses.replace(r, sampler=dataclasses.replace(r.sampler, **kw))


def _loss(**kw: Any) -> Change:
    return lambda r: dataclasses.replace(r, loss=dataclasses.replace(r.loss, **kw))


def _features(**kw: Any) -> Change:
    def change(r: RecipeConfig) -> RecipeConfig:
        feats = dataclasses.replace(r.model.features, **kw)
        return dataclasses.replace(r, model=dataclasses.replace(r.model, features=feats))

    return change


def _both(a: Change, b: Change) -> Change:
    return lambda r: b(a(r))


def _pin_ids(buckets: int) -> Change:
    return lambda r: dataclasses.replace(
        r, model=dataclasses.replace(r.model, pin_id_buckets=buckets)
    )


TABLES: dict[str, dict[str, Change]] = {
    "objectives": {  # paper Table 3
        "next_action": _sampler(objective="next_action"),
        "sasrec": _sampler(objective="sasrec"),
        "all_action": _sampler(objective="all_action"),
        "dense_all_action_k14": _sampler(objective="dense_all_action", window_days=14.0),
        "dense_all_action_k28": _sampler(objective="dense_all_action", window_days=28.0),
    },
    "negatives": {  # paper Table 4
        f"{neg}{'+logq' if logq else ''}": _loss(negatives=neg, logq=logq)
        for neg in ("in_batch", "random", "mixed")
        for logq in (False, True)
    },
    "features": {  # paper Table 6
        "all": _features(),
        "no_content": _features(use_content=False),
        "no_action_type": _features(use_action_type=False),
        "no_surface": _features(use_surface=False),
        "no_duration": _features(use_duration=False),
        "no_time": _features(use_absolute_time=False, use_relative_time=False),
    },
    "bce": {  # paper Table 10
        "sasrec_sampled_softmax": _sampler(objective="sasrec"),
        "sasrec_bce_one_negative": _both(_sampler(objective="sasrec"), _loss(kind="bce")),
        "dense_all_action": _sampler(objective="dense_all_action"),
    },
    "inference": {  # paper Table 2; each model is scored once per inference frequency
        "sasrec": _sampler(objective="sasrec"),
        "dense_all_action": _sampler(objective="dense_all_action"),
    },
    "multitask": {},  # paper Table 5; variants depend on the log's positive types (`variants`)
    "pin_ids": {  # beyond the paper
        "content_only": _pin_ids(0),
        "content+ids": _pin_ids(65_536),
    },
}
PAPER_ONLY = ("inference", "multitask")  # need time-stamped positives in (t, t + 14 days]


@dataclass(frozen=True)
class Data:
    name: str
    timelines: Timelines
    catalog: PinCatalog
    features: FeatureConfig
    split_ts: int

    @property
    def positive_types(self) -> tuple[str, ...]:
        """The action types that occur as positives in this log (Table 5's tasks)."""
        codes = np.unique(self.timelines.action[self.timelines.positive])
        return tuple(self.features.action_types[c - 1] for c in codes)


def load(
    source: str,
    path: str | None,
    quick: bool,
    protocol: str,
    item_engagement: Literal["positive", "all"] = "positive",
    **columns: Any,
) -> Data:
    """Any supported source → timelines + a catalogue built without evaluation-period data.

    item_engagement: which pre-cutoff actions build the items' co-engagement vectors — positives
    only, or every action (for logs where positives are rare, e.g. Taobao's views vs
    cart/fav/buy, so that most items get a vector at all).
    """
    if source == "synthetic":
        world = synthetic.WorldConfig.tiny() if quick else synthetic.WorldConfig()
        actions = pl.concat(list(synthetic.generate_range(world, world.dates[0], world.dates[-1])))
        catalog = PinCatalog.from_frame(synthetic.pin_features(world))
        features = FeatureConfig(content_dim=world.content_dim)
        timelines, _ = Timelines.from_actions(actions, catalog, features)
        end = datetime.datetime.combine(world.dates[-1], datetime.time(), datetime.timezone.utc)
        split = int(end.timestamp()) + 86_400 - 14 * 86_400
        return Data("synthetic", timelines, catalog, features, split)
    assert path is not None, f"--path is required for source {source}"
    log = read_source(source, path, **columns)
    split = choose_split(log.actions, log.rule)
    features = log.feature_config()
    cutoff = split
    if protocol == "leave_one_out":
        # Item vectors may use every interaction except the held-out ones and what follows them
        # (the standard setup): drop each user's last positive and everything at or after it.
        acts = log.actions.with_columns(pl.Series("positive", log.rule.frame_mask(log.actions)))
        last = (
            acts.filter(pl.col("positive")).group_by("user_id").agg(pl.col("ts").max().alias("t"))
        )
        kept = acts.join(last, on="user_id", how="left").filter(
            pl.col("t").is_null() | (pl.col("ts") < pl.col("t"))
        )
        log = dataclasses.replace(log, actions=kept.select(log.actions.columns))
        cutoff = int(log.actions["ts"].dt.epoch("s").to_numpy().max()) + 1
    cutoff_dt = datetime.datetime.fromtimestamp(cutoff, datetime.timezone.utc)
    pins = item_content_embeddings(
        log, cutoff_dt, dim=features.content_dim, engagement=item_engagement
    )
    catalog = PinCatalog.from_frame(pins)
    full = read_source(source, path, **columns) if protocol == "leave_one_out" else log
    timelines, _ = Timelines.from_actions(full.actions, catalog, features, full.rule)
    return Data(log.name, timelines, catalog, features, split)


def choose_split(actions: pl.DataFrame, rule: PositiveRule, horizon_days: int = 14) -> int:
    """The global split time t for the paper protocol on a real log.

    Public logs are bursty (a MovieLens user rates for a day or two and leaves), so a fixed
    quantile can leave a handful of users with both history before t and positives in
    (t, t + 14 days]. Candidates are midnights on a weekly grid between the 50th and 95th
    percentiles of action time; the one with the most such users wins. Only WHO is active is
    looked at, never what they engage with, so no model is favoured.
    """
    ts = actions["ts"].dt.epoch("s").to_numpy()
    users = actions["user_id"].to_numpy()
    positive = rule.frame_mask(actions)
    lo, hi = np.quantile(ts, [0.5, 0.95])
    candidates = np.arange(lo - lo % 86_400, hi, 7 * 86_400, dtype=np.int64)
    best, best_n = int(np.quantile(ts, 0.8)), -1
    for t in candidates:
        before = set(users[ts <= t].tolist())
        after = users[positive & (ts > t) & (ts <= t + horizon_days * 86_400)]
        n = len(before.intersection(after.tolist()))
        if n > best_n:
            best, best_n = int(t), n
    return best


def base_recipe(data: Data, steps: int, seed: int, pin_id_buckets: int = 0) -> RecipeConfig:
    """The recipe every variant changes: the paper's model, or (pin_id_buckets > 0, beyond the
    paper) one whose pin tower also learns hashed pin-id embeddings."""
    return RecipeConfig(
        model=ModelConfig(features=data.features, pin_id_buckets=pin_id_buckets),
        sampler=SamplerConfig(),
        train=TrainConfig(steps=steps, seed=seed, log_every=max(1, steps // 5)),
        eval=EvalConfig(seed=0),
    )


@dataclass(frozen=True)
class Variant:
    change: Change
    label_action: str | None = None  # Table 5 single task: only this action type is a label


def variants(table: str, data: Data) -> dict[str, Variant]:
    if table != "multitask":
        return {name: Variant(change) for name, change in TABLES[table].items()}
    if len(data.positive_types) < 2:
        raise ValueError(
            f"table multitask needs a log with several positive action types; {data.name} has "
            f"{list(data.positive_types)}"
        )
    out = {"multi_task": Variant(_same)}
    out.update({f"only_{a}": Variant(_same, a) for a in data.positive_types})
    return out


def _same(r: RecipeConfig) -> RecipeConfig:
    return r


def with_labels(tl: Timelines, data: Data, action: str | None) -> Timelines:
    """Keep only `action` positives as labels (inputs unchanged); None keeps every positive."""
    if action is None:
        return tl
    code = data.features.action_types.index(action) + 1
    return dataclasses.replace(tl, positive=tl.positive & (tl.action == code))


def _score(table: str, model: Any, es: EvalSet, data: Data) -> dict[str | None, RetrievalMetrics]:
    """scored_on → metrics: an inference frequency (Table 2), an action type (Table 5), or None
    for the standard evaluation (embeddings at t, every positive)."""
    if table == "inference":
        freq = inference_frequency_metrics(model, es, data.catalog, MODES)
        return {mode: m for mode, m in freq.items()}
    subsets: dict[str | None, np.ndarray | None] = {None: None}
    if table == "multitask":
        for action in data.positive_types:
            code = data.features.action_types.index(action) + 1
            subsets[action] = es.positive_action == code
    return model_metrics_by(model, es, data.catalog, subsets)


class Trainer:
    """Fits a (recipe, label action) once per file: tables share variants (Table 2's and Table
    10's SASRec is Table 3's; the default recipe recurs as mixed+logq, all features, ...), so a
    repeated one reuses the model, and its row reports the original training time."""

    def __init__(self, data: Data, timelines: Timelines) -> None:
        self.data, self.timelines = data, timelines
        self._fitted: dict[str, tuple[PinnerFormer, float]] = {}

    def __call__(self, recipe: RecipeConfig, label_action: str | None) -> tuple[Any, float]:
        key = repr((recipe, label_action))
        if key not in self._fitted:
            t0 = time.perf_counter()
            tl = with_labels(self.timelines, self.data, label_action)
            model = fit(tl, self.data.catalog, recipe).model
            self._fitted[key] = (model, time.perf_counter() - t0)
        return self._fitted[key]


def paper_rows(
    data: Data, table: str, base: Base, seeds: list[int], es: EvalSet, trainer: Trainer
) -> list[dict[str, Any]]:
    rows = []
    for name, variant in variants(table, data).items():
        scored: dict[str | None, list[RetrievalMetrics]] = {}
        seconds = 0.0
        for seed in seeds:
            model, took = trainer(variant.change(base(seed)), variant.label_action)
            seconds += took / len(seeds)
            for on, m in _score(table, model, es, data).items():
                scored.setdefault(on, []).append(m)
        for on, metrics in scored.items():
            rows.append(_paper_row(table, name, metrics, seeds, seconds, on))
    return rows


def paper_baselines(data: Data, es: EvalSet, train_tl: Timelines) -> list[dict[str, Any]]:
    popularity = popularity_counts(train_tl, len(data.catalog))
    recent = recent_mean(es.history, data.catalog, SamplerConfig().max_len)
    found = baseline_metrics(
        recent, es.positive_user, es.positive_pin_row, es.index_rows, data.catalog, popularity
    )
    found.update(
        pinnersage_metrics(
            es.history,
            data.catalog,
            es.positive_user,
            es.positive_pin_row,
            es.index_rows,
            PinnerSageConfig(),
        )
    )
    return [_paper_row("baselines", name, [m], [0], 0.0) for name, m in found.items()]


def _paper_row(
    table: str,
    variant: str,
    metrics: list[RetrievalMetrics],
    seeds: list[int],
    seconds: float,
    scored_on: str | None = None,
) -> dict[str, Any]:
    """One row; with several seeds the metrics are seed means, the interval is a bootstrap over
    users of the per-user recall averaged over seeds (same users every seed)."""
    per_user = np.mean([m.per_user_recall for m in metrics], axis=0)
    lo, hi = bootstrap_ci(per_user)
    row = {
        "table": table,
        "variant": variant,
        "recall_at_10": float(np.mean([m.recall_at_k for m in metrics])),
        "recall_at_10_ci": [lo, hi],
        "recall_at_10_seed_std": float(np.std([m.recall_at_k for m in metrics])),
        "p90_coverage_at_10": float(np.mean([m.p90_coverage_at_k for m in metrics])),
        "interest_entropy_at_50": float(np.mean([m.interest_entropy_at_k for m in metrics])),
        "seeds": seeds,
        "eval_users": metrics[0].n_users,
        "eval_positives": metrics[0].n_positives,
        "index_size": metrics[0].index_size,
        "train_seconds": round(seconds, 1),
    }
    if scored_on is not None:
        row["scored_on"] = scored_on
    return row


def loo_rows(
    data: Data, table: str, base: Base, seeds: list[int], loo: LeaveOneOut, trainer: Trainer
) -> list[dict[str, Any]]:
    rows = []
    for name, variant in variants(table, data).items():
        ranks = []
        seconds = 0.0
        for seed in seeds:
            model, took = trainer(variant.change(base(seed)), variant.label_action)
            seconds += took / len(seeds)
            users = embed_users(model, loo.history, data.catalog)
            items = embed_pins(model, data.catalog.embeddings, data.catalog.pin_ids)
            ranks.append(full_ranks(users, items, loo.target_pin_row))
        rows.append(_loo_row(table, name, ranks, seeds, seconds))
    return rows


def loo_baselines(data: Data, loo: LeaveOneOut) -> list[dict[str, Any]]:
    pop = np.log1p(popularity_counts(loo.history, len(data.catalog))).astype(np.float32)[:, None]
    ones = np.ones((loo.history.n_users, 1), dtype=np.float32)
    content = data.catalog.embeddings
    recent = recent_mean(loo.history, data.catalog, SamplerConfig().max_len)
    scorers = {"popularity": (ones, pop), "recent_mean": (recent, content)}
    ranks = {name: full_ranks(u, items, loo.target_pin_row) for name, (u, items) in scorers.items()}
    ranks.update(
        pinnersage_loo_ranks(loo.history, data.catalog, loo.target_pin_row, PinnerSageConfig())
    )
    return [_loo_row("baselines", name, [r], [0], 0.0) for name, r in ranks.items()]


def _loo_row(
    table: str, variant: str, ranks: list[np.ndarray], seeds: list[int], seconds: float
) -> dict[str, Any]:
    """One row from each seed's [U] ranks: seed means, seed spread, and 95% bootstrap intervals
    over users of the per-user hit / NDCG averaged over seeds."""
    per_seed = [hit_and_ndcg_per_user(r) for r in ranks]
    hr = [float(h.mean()) for h, _ in per_seed]
    ndcg = [float(n.mean()) for _, n in per_seed]
    return {
        "table": table,
        "variant": variant,
        "hr_at_10": float(np.mean(hr)),
        "hr_at_10_ci": list(bootstrap_ci(np.mean([h for h, _ in per_seed], axis=0))),
        "hr_at_10_seed_std": float(np.std(hr)),
        "ndcg_at_10": float(np.mean(ndcg)),
        "ndcg_at_10_ci": list(bootstrap_ci(np.mean([n for _, n in per_seed], axis=0))),
        "ndcg_at_10_seed_std": float(np.std(ndcg)),
        "seeds": seeds,
        "eval_users": int(len(ranks[0])),
        "train_seconds": round(seconds, 1),
    }


def run(
    source: str,
    path: str | None,
    tables: list[str],
    protocol: str,
    steps: int,
    seeds: list[int],
    quick: bool,
    seeded_tables: tuple[str, ...] = ("objectives",),
    pin_id_buckets: int = 0,
    item_engagement: Literal["positive", "all"] = "positive",
    **columns: Any,
) -> dict[str, Any]:
    """Every table in `tables`; the tables in `seeded_tables` (the headline comparisons) run with
    every seed in `seeds`, the others with seeds[0] only. Baselines are scored once."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; choose from {list(TABLES)}")
    if protocol != "paper" and any(t in PAPER_ONLY for t in tables):
        raise ValueError(f"tables {list(PAPER_ONLY)} need --protocol paper (got {protocol!r})")
    data = load(source, path, quick, protocol, item_engagement, **columns)

    def base(seed: int) -> RecipeConfig:
        return base_recipe(data, steps, seed, pin_id_buckets)

    rows: list[dict[str, Any]] = []
    if protocol == "paper":
        cfg0 = base(seeds[0])
        train_tl = training_timelines(data.timelines, data.split_ts, cfg0)
        es = build_eval_set(data.timelines, data.catalog, data.split_ts, cfg0.eval)
        rows += paper_baselines(data, es, train_tl)
        trainer = Trainer(data, train_tl)
        for table in tables:
            table_seeds = seeds if table in seeded_tables else seeds[:1]
            rows += paper_rows(data, table, base, table_seeds, es, trainer)
    else:
        loo = leave_one_out(data.timelines)
        rows += loo_baselines(data, loo)
        trainer = Trainer(data, loo.history)
        for table in tables:
            table_seeds = seeds if table in seeded_tables else seeds[:1]
            rows += loo_rows(data, table, base, table_seeds, loo, trainer)
    return {
        "dataset": data.name,
        "protocol": protocol,
        "steps": steps,
        "pin_id_buckets": pin_id_buckets,
        "item_engagement": item_engagement if source != "synthetic" else None,
        "split": datetime.datetime.fromtimestamp(data.split_ts, datetime.timezone.utc).isoformat()
        if protocol == "paper"
        else None,
        "users": int(data.timelines.n_users),
        "items": len(data.catalog),
        "actions": int(len(data.timelines.ts)),
        "rows": rows,
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))

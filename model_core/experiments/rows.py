"""How `pinner experiment` turns trained models into result rows, per protocol.

A row is one variant of one table (or one baseline) with its metrics averaged over seeds, the
seed spread, 95% bootstrap intervals over users of the per-user metric averaged over seeds (the
same users every seed), and the training statistics (`stats`) of its fits:

- paper protocol (§4.1): Recall@10, P90 coverage@10 and interest entropy@50 on the evaluation set
  (`model_core.evaluation.paper_protocol`), per inference frequency (Table 2) or action type (Table
  5) where the table asks;
- leave-one-out: HR@10 / NDCG@10 by full ranking, with the user's seen items removed and
  unfiltered (`*_unfiltered`), plus each seed's top-10 ranks for paired comparisons
  (`model_core.evaluation.statistics`).

`fit` is whatever trains a (variant, recipe) once and returns (model, stats) —
`experiments.runner.FitCache` — so this module scores and never trains.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from model_core.data.timelines import Timelines
from model_core.evaluation.index import index_positions
from model_core.evaluation.inference_frequency import MODES, inference_frequency_metrics
from model_core.evaluation.leave_one_out import LeaveOneOut, full_ranks, score_ranks
from model_core.evaluation.metrics import RetrievalMetrics, bootstrap_ci, hit_and_ndcg_per_user
from model_core.evaluation.paper_protocol import (
    EvalSet,
    baseline_metrics,
    model_metrics_by,
    popularity_counts,
    recent_mean,
)
from model_core.evaluation.pinnersage import PinnerSageConfig
from model_core.evaluation.pinnersage_scoring import pinnersage_loo_ranks, pinnersage_metrics
from model_core.evaluation.score_rows import evaluate_score_rows
from model_core.evaluation.seen import Seen
from model_core.evaluation.statistics import encode_ranks
from model_core.experiments.data import Data
from model_core.experiments.history_rows import BLENDED_TABLES, Blend, HistoryScorer
from model_core.experiments.tables import Base, Variant, variants
from model_core.inference.embed import user_item_vectors
from model_core.training.recipe import RecipeConfig
from model_core.training.sampler import SamplerConfig

Fit = Callable[[Variant, RecipeConfig], tuple[Any, dict[str, Any]]]
log = logging.getLogger(__name__)


def _report(row: dict[str, Any]) -> dict[str, Any]:
    """Log a row's test figures as soon as it is scored; returns it."""
    metric, name, unit = ("ndcg_at_10", "NDCG@10", "targets")
    if "ndcg_at_10" not in row:
        metric, name, unit = ("recall_at_10", "Recall@10", "positives")
    lo, hi = row[f"{metric}_ci"]
    figures = f"{name} {row[metric]:.4f} [{lo:.3f}, {hi:.3f}]"
    if row.get("repeat_users") is not None:

        def part(which: str) -> str:
            value = row[f"{metric}_{which}"]
            return "n/a" if value is None else f"{value:.4f}"

        figures += (
            f"; repeat {unit} {part('repeat')} ({row['repeat_users']} users), "
            f"new {part('new')} ({row['new_users']})"
        )
    on = f" on {row['scored_on']}" if row.get("scored_on") else ""
    log.info(
        "test %s/%s%s: %s, %d users", row["table"], row["variant"], on, figures, row["eval_users"]
    )
    return row


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


def _fitted(
    data: Data, table: str, base: Base, seeds: list[int], fit: Fit, only: list[str] | None
) -> Iterator[tuple[str, list[tuple[Any, dict[str, Any]]]]]:
    """Each variant of `table` (only those in `only`, when given) with its (model, stats) per
    seed."""
    for name, variant in variants(table, data, only).items():
        yield name, [fit(variant, variant.change(base(seed))) for seed in seeds]


def _mean_stats(stats: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {
        k: round(float(np.mean([s[k] for s in stats])), 3)
        for k in ("train_seconds", "epochs", "best_epoch", "seconds_per_epoch", "sequences_per_s")
    }
    out["stop_reasons"] = sorted({s["stop_reason"] for s in stats})
    scores = [s["validation"] for s in stats if s.get("validation") is not None]
    if scores:  # the early-stopping score at the kept weights (validation NDCG@10 or Recall@10)
        out["validation"] = round(float(np.mean(scores)), 5)
    keys = ("windows", "item_tokens", "item_neighbors", "bf16", "token_choice", "affordances")
    for key in keys:  # PinnerFormer rows; `affordances`: the reference SASRecs
        if key in stats[0]:
            out[key] = stats[0][key]
    return out


def paper_rows(
    data: Data,
    table: str,
    base: Base,
    seeds: list[int],
    es: EvalSet,
    fit: Fit,
    only: list[str] | None = None,
    blend: Blend | None = None,
) -> list[dict[str, Any]]:
    """The table's rows; with `blend` (`history_blend`), each model of a table in
    `BLENDED_TABLES` also gets a `<variant>+history` row in table "with_history"."""
    rows = []
    repeat = es.repeat
    for name, fitted in _fitted(data, table, base, seeds, fit, only):
        scored: dict[str | None, list[RetrievalMetrics]] = {}
        for model, _ in fitted:
            for on, m in _score(table, model, es, data).items():
                scored.setdefault(on, []).append(m)
        stats = _mean_stats([st for _, st in fitted])
        for on, metrics in scored.items():
            rows.append(
                _paper_row(table, name, metrics, seeds, stats, on, repeat if on is None else None)
            )
        if blend is not None and table in BLENDED_TABLES:
            blended = [blend.paper(model, es) for model, _ in fitted]
            weights = {"history_weight": [w for _, w in blended]}
            metrics = [m for m, _ in blended]
            rows.append(
                _paper_row(
                    "with_history",
                    f"{name}+history",
                    metrics,
                    seeds,
                    stats | weights,
                    repeat=repeat,
                )  # fmt: skip
            )
    return rows


# Scorers that read the target (PinnerSage's oracle keeps the best of the user's clusters for
# each positive): upper bounds, reported in their own table and never as a baseline to beat.
UPPER_BOUNDS = frozenset({"pinnersage_oracle"})


def baseline_table(name: str) -> str:
    """The table a non-learned scorer's row goes in: "upper_bounds" or "baselines"."""
    return "upper_bounds" if name in UPPER_BOUNDS else "baselines"


def paper_baselines(data: Data, es: EvalSet, train_tl: Timelines) -> list[dict[str, Any]]:
    popularity = popularity_counts(train_tl, len(data.catalog))
    recent = recent_mean(es.history, data.catalog, SamplerConfig().max_len)
    found = baseline_metrics(
        recent,
        es.positive_user,
        es.positive_pin_row,
        es.index_rows,
        data.catalog,
        popularity,
        es.seen,
    )
    found.update(
        pinnersage_metrics(
            es.history,
            data.catalog,
            es.positive_user,
            es.positive_pin_row,
            es.index_rows,
            PinnerSageConfig(),
            seen=es.seen,
        )
    )
    return [
        _paper_row(baseline_table(name), name, [m], [0], {}, repeat=es.repeat)
        for name, m in found.items()
    ]


def _paper_row(
    table: str,
    variant: str,
    metrics: list[RetrievalMetrics],
    seeds: list[int],
    stats: dict[str, Any],
    scored_on: str | None = None,
    repeat: np.ndarray | None = None,
) -> dict[str, Any]:
    """One row; with several seeds the metrics are seed means, the interval is a bootstrap over
    users of the per-user recall averaged over seeds (same users every seed). With `repeat`
    ([P] bool per positive: an item its user had acted on up to t), Recall@10 apart on the
    repeated positives and on the new ones, each over the users who have such positives."""
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
        **stats,
    }
    if scored_on is None:  # for paired comparisons (every row of a file has the same users)
        row["per_user_recall"] = np.round(per_user, 4).tolist()
    if scored_on is not None:
        row["scored_on"] = scored_on
    if repeat is not None:
        for part, subset in (("repeat", repeat), ("new", ~repeat)):
            recall = np.mean([m.recall_on(subset) for m in metrics], axis=0)
            row[f"recall_at_10_{part}"] = float(recall.mean()) if len(recall) else None
            row[f"recall_at_10_{part}_ci"] = list(bootstrap_ci(recall)) if len(recall) else None
            row[f"{part}_users"] = len(recall)
            row[f"{part}_positives"] = int(subset.sum())
    return _report(row)


def loo_rows(
    data: Data,
    table: str,
    base: Base,
    seeds: list[int],
    loo: LeaveOneOut,
    fit: Fit,
    only: list[str] | None = None,
    blend: Blend | None = None,
) -> list[dict[str, Any]]:
    """The table's rows; with `blend`, as `paper_rows`."""
    seen = Seen.of(loo.history)
    rows = []
    for name, fitted in _fitted(data, table, base, seeds, fit, only):
        ranks: dict[str, list[np.ndarray]] = {"": [], "_unfiltered": []}
        for model, _ in fitted:
            users, items = user_item_vectors(model, loo.history, data.catalog)
            ranks[""].append(full_ranks(users, items, loo.target_pin_row, seen))
            ranks["_unfiltered"].append(full_ranks(users, items, loo.target_pin_row))
        stats = _mean_stats([st for _, st in fitted])
        rows.append(_loo_row(table, name, ranks, seeds, stats, loo.repeat))
        if blend is not None and table in BLENDED_TABLES:
            blended = [blend.loo(model, loo, seen) for model, _ in fitted]
            both = {suffix: [r[suffix] for r, _ in blended] for suffix in ranks}
            weights = {"history_weight": [w for _, w in blended]}
            rows.append(
                _loo_row(
                    "with_history", f"{name}+history", both, seeds, stats | weights, loo.repeat
                )
            )
    return rows


def loo_baselines(data: Data, loo: LeaveOneOut) -> list[dict[str, Any]]:
    pop = np.log1p(popularity_counts(loo.history, len(data.catalog))).astype(np.float32)[:, None]
    ones = np.ones((loo.history.n_users, 1), dtype=np.float32)
    content = data.catalog.embeddings
    recent = recent_mean(loo.history, data.catalog, SamplerConfig().max_len)
    scorers = {"popularity": (ones, pop), "recent_mean": (recent, content)}
    seen = Seen.of(loo.history)
    ranks: dict[str, dict[str, list[np.ndarray]]] = {
        name: {
            "": [full_ranks(u, items, loo.target_pin_row, seen)],
            "_unfiltered": [full_ranks(u, items, loo.target_pin_row)],
        }
        for name, (u, items) in scorers.items()
    }
    cfg = PinnerSageConfig()
    filtered = pinnersage_loo_ranks(loo.history, data.catalog, loo.target_pin_row, cfg, seen=seen)
    plain = pinnersage_loo_ranks(loo.history, data.catalog, loo.target_pin_row, cfg)
    for name in filtered:
        ranks[name] = {"": [filtered[name]], "_unfiltered": [plain[name]]}
    return [
        _loo_row(baseline_table(name), name, r, [0], {}, loo.repeat) for name, r in ranks.items()
    ]


def loo_history_rows(
    loo: LeaveOneOut, chosen: dict[str, tuple[HistoryScorer, dict[str, Any]]]
) -> list[dict[str, Any]]:
    seen = Seen.of(loo.history)
    rows = []
    for name, (scorer, stats) in chosen.items():
        scores = scorer(loo.history)
        ranks = {
            "": [score_ranks(scores, loo.target_pin_row, seen)],
            "_unfiltered": [score_ranks(scores, loo.target_pin_row)],
        }
        rows.append(_loo_row("baselines", name, ranks, [0], stats, loo.repeat))
    return rows


def paper_history_rows(
    data: Data, es: EvalSet, chosen: dict[str, tuple[HistoryScorer, dict[str, Any]]]
) -> list[dict[str, Any]]:
    in_index = index_positions(es.index_rows, es.positive_pin_row)
    topics = data.catalog.topics[es.index_rows]
    rows = []
    for name, (scorer, stats) in chosen.items():
        m = evaluate_score_rows(
            scorer(es.history), es.positive_user, es.positive_pin_row, es.index_rows, topics,
            in_index, seen=es.seen,
        )  # fmt: skip
        rows.append(_paper_row("baselines", name, [m], [0], stats, repeat=es.repeat))
    return rows


def _loo_row(
    table: str,
    variant: str,
    ranks: dict[str, list[np.ndarray]],
    seeds: list[int],
    stats: dict[str, Any],
    repeat: np.ndarray,
) -> dict[str, Any]:
    """One row from each seed's [U] ranks, seen items removed ("") and unfiltered: seed means,
    seed spread, and 95% bootstrap intervals over users of the per-user hit / NDCG averaged over
    seeds; each seed's seen-removed ranks, capped at 10, for paired comparisons (`paired`); and
    NDCG@10 (seen removed) apart on the users whose target is a `repeat` ([U] bool: an item
    they had acted on before) and on those whose target is new."""
    row: dict[str, Any] = {"table": table, "variant": variant}
    for suffix, per in ranks.items():
        per_seed = [hit_and_ndcg_per_user(r) for r in per]
        for i, metric in enumerate(("hr_at_10", "ndcg_at_10")):
            values = [float(p[i].mean()) for p in per_seed]
            row[f"{metric}{suffix}"] = float(np.mean(values))
            row[f"{metric}{suffix}_ci"] = list(
                bootstrap_ci(np.mean([p[i] for p in per_seed], axis=0))
            )
            row[f"{metric}{suffix}_seed_std"] = float(np.std(values))
    row.update({"seeds": seeds, "eval_users": int(len(ranks[""][0])), **stats})
    row["top10_ranks"] = [encode_ranks(r) for r in ranks[""]]  # for paired comparisons
    ndcg = np.mean([hit_and_ndcg_per_user(r)[1] for r in ranks[""]], axis=0)
    for part, users in (("repeat", repeat), ("new", ~repeat)):
        row[f"ndcg_at_10_{part}"] = float(ndcg[users].mean()) if users.any() else None
        row[f"ndcg_at_10_{part}_ci"] = list(bootstrap_ci(ndcg[users])) if users.any() else None
        row[f"{part}_users"] = int(users.sum())
    return _report(row)

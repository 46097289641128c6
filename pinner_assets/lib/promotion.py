"""The promotion gate: a trained model is served only if it is good enough on a validation slice.

`models/latest.json` names the newest TRAINED model (a candidate); `models/serving.json` names
the SERVED one, and only `trained_model`'s blocking `promotion_gate` check moves it. The slice is
taken from before the end of training and from held-out users only, so it never reads the
evaluation period: the split time is `train_end - validation_days`, positives are the held-out
users' positive engagements in (split, train_end].
"""

import dataclasses
import datetime
import json

import dagster as dg
import duckdb
import numpy as np
import polars as pl
from pydantic import Field

from model_core.data.timelines import PinCatalog, PositiveRule
from model_core.evaluation.index import index_positions, random_index
from model_core.evaluation.metrics import evaluate_retrieval
from model_core.evaluation.paper_protocol import baseline_metrics, is_eval_user, recent_mean
from model_core.features.actions import FeatureConfig
from model_core.inference.embed import embed_pins, embed_users
from model_core.model.pinnerformer import PinnerFormer
from pinner_assets.lib.resources import EvaluationSplit, PinnerStorage
from pinner_assets.lib.timelines import (
    LOOKBACK_DAYS,
    MAX_LEN,
    load_catalog,
    query_last_actions,
    to_timelines,
)

SERVING_MODEL = ("models", "serving.json")
NO_LABELS = PositiveRule(surfaces=(), always=(), min_duration_s={})


class PromotionPolicy(dg.ConfigurableResource):
    """When a trained model may replace the serving one (trained_model's `promotion_gate`)."""

    validation_days: int = Field(
        default=7,
        description="Length of the validation slice, the last days of the training period.",
    )
    max_recall_drop_vs_serving: float = Field(
        default=0.0,
        description="The candidate's recall@10 may be at most this much below the serving "
        "model's on the same slice (0: never worse).",
    )
    min_recall_ratio_vs_popularity: float = Field(
        default=1.0,
        description="The candidate's recall@10 must be at least this many times the popularity "
        "baseline's (1: at least as good as recommending the most popular pins).",
    )
    index_size: int = Field(default=100_000, description="Random pins in the validation index.")


@dataclasses.dataclass(frozen=True)
class ValidationSlice:
    """Held-out users' history up to `split` and their positives in (split, train_end]."""

    split: datetime.date
    history: pl.DataFrame  # one row per user: query_last_actions' list columns
    positives: pl.DataFrame  # user_id, pin_id of positive engagements
    catalog: PinCatalog
    popularity: np.ndarray  # [N] positives per catalogue row in the lookback before `split`
    index_rows: np.ndarray  # [I] int64 catalogue rows of the random index


def validation_slice(
    con: duckdb.DuckDBPyConnection,
    split: EvaluationSplit,
    policy: PromotionPolicy,
    rule: PositiveRule,
    vocab: FeatureConfig,
) -> ValidationSlice:
    """The slice every candidate and the serving model are scored on (deterministic)."""
    t = split.train_end - datetime.timedelta(days=policy.validation_days)
    lookback = t - datetime.timedelta(days=LOOKBACK_DAYS)
    users = con.execute(
        "SELECT DISTINCT user_id FROM raw_actions WHERE event_date <= ? AND event_date > ? "
        "ORDER BY 1",
        [t, lookback],
    ).fetchnumpy()["user_id"]
    held = np.asarray(users, dtype=np.int64)
    held = held[is_eval_user(held, split.eval_fraction)]
    con.register("_val_users", pl.DataFrame({"user_id": held}).to_arrow())
    try:
        future = con.execute(
            "SELECT user_id, pin_id, action_type, surface, duration_s FROM raw_actions "
            "WHERE event_date > ? AND event_date <= ? "
            "AND user_id IN (SELECT user_id FROM _val_users) ORDER BY user_id, ts, pin_id",
            [t, split.train_end],
        ).pl()
        history = query_last_actions(con, t, "SELECT user_id FROM _val_users", vocab, MAX_LEN)
    finally:
        con.unregister("_val_users")
    catalog = load_catalog(con)
    positives = future.filter(pl.Series(rule.frame_mask(future)))
    positives = positives.filter(
        pl.Series(catalog.rows(positives["pin_id"].to_numpy()) >= 0)
        & pl.col("user_id").is_in(history["user_id"].to_list())
    ).select("user_id", "pin_id")
    counts = con.execute(
        f"SELECT pin_id, count(*) AS n FROM raw_actions WHERE event_date <= ? "
        f"AND event_date > ? AND {rule.sql()} GROUP BY pin_id",
        [t, lookback],
    ).pl()
    popularity = np.zeros(len(catalog), dtype=np.float64)
    known = catalog.rows(counts["pin_id"].to_numpy())
    popularity[known[known >= 0]] = counts["n"].to_numpy()[known >= 0]
    rng = np.random.default_rng([1, t.toordinal()])
    index = random_index(len(catalog), policy.index_size, rng)
    return ValidationSlice(t, history, positives, catalog, popularity, index)


def recall_on_slice(model: PinnerFormer, data: ValidationSlice) -> float:
    """Recall@10 of `model`'s users and pins on the slice."""
    timelines = to_timelines(data.history, data.catalog, model.config.features, NO_LABELS)
    users = timelines.user_ids
    pos = data.positives.filter(pl.col("user_id").is_in(users.tolist()))
    if pos.height == 0:
        return float("nan")
    user_emb = embed_users(model, timelines, data.catalog)
    pin_emb = embed_pins(model, data.catalog.embeddings, data.catalog.pin_ids)
    rows = data.catalog.rows(pos["pin_id"].to_numpy())
    pos_user = np.searchsorted(users, pos["user_id"].to_numpy())
    in_index = index_positions(data.index_rows, rows)  # a positive never counts against itself
    m = evaluate_retrieval(
        user_emb, pos_user, pin_emb[rows], pin_emb[data.index_rows], None, in_index
    )
    return float(m.recall_at_k)


def popularity_recall(data: ValidationSlice, vocab_model: PinnerFormer) -> float:
    timelines = to_timelines(data.history, data.catalog, vocab_model.config.features, NO_LABELS)
    users = timelines.user_ids
    pos = data.positives.filter(pl.col("user_id").is_in(users.tolist()))
    if pos.height == 0:
        return float("nan")
    rows = data.catalog.rows(pos["pin_id"].to_numpy())
    pos_user = np.searchsorted(users, pos["user_id"].to_numpy())
    recent = recent_mean(timelines, data.catalog, MAX_LEN)
    base = baseline_metrics(recent, pos_user, rows, data.index_rows, data.catalog, data.popularity)
    return float(base["popularity"].recall_at_k)


def promotion_check(
    candidate: PinnerFormer,
    candidate_version: str,
    serving: tuple[PinnerFormer, str] | None,
    data: ValidationSlice,
    policy: PromotionPolicy,
) -> dg.AssetCheckResult:
    """The blocking `promotion_gate` result: passes only if the candidate is measurably usable and
    no worse than the serving model (within the policy) and the popularity baseline."""
    cand = recall_on_slice(candidate, data)
    pop = popularity_recall(data, candidate)
    reasons = []
    meta: dict[str, object] = {
        "candidate_version": candidate_version,
        "candidate_recall_at_10": cand,
        "popularity_recall_at_10": pop,
        "validation_split": data.split.isoformat(),
        "validation_positives": data.positives.height,
    }
    if not np.isfinite(cand):
        reasons.append(f"the validation slice ending {data.split} has no positives to score")
    elif cand < policy.min_recall_ratio_vs_popularity * pop:
        reasons.append(
            f"recall@10 {cand:.4f} < {policy.min_recall_ratio_vs_popularity} x popularity {pop:.4f}"
        )
    if serving is not None and serving[1] != candidate_version:
        served = recall_on_slice(serving[0], data)
        meta |= {"serving_version": serving[1], "serving_recall_at_10": served}
        if np.isfinite(cand) and cand < served - policy.max_recall_drop_vs_serving:
            reasons.append(
                f"recall@10 {cand:.4f} < serving {serving[1]}'s {served:.4f} "
                f"- {policy.max_recall_drop_vs_serving}"
            )
    meta["verdict"] = "; ".join(reasons) or "promoted"
    return dg.AssetCheckResult(
        check_name="promotion_gate",
        passed=not reasons,
        metadata=meta,  # type: ignore[arg-type]
        description=meta["verdict"],  # type: ignore[arg-type]
    )


def serving_version(storage: PinnerStorage) -> str | None:
    path = storage.path(*SERVING_MODEL)
    return json.loads(path.read_text())["version"] if path.exists() else None


def promote(storage: PinnerStorage, version: str, checkpoint: str, evidence: dict) -> None:
    """Point models/serving.json at `version` in one atomic rename."""
    path = storage.path(*SERVING_MODEL)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(
        json.dumps(
            {
                "version": version,
                "path": checkpoint,
                "promoted_at": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "evidence": evidence,
            },
            indent=2,
            default=str,
        )
    )
    tmp.replace(path)

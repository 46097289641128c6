"""The logs an experiment runs on: any supported source → timelines + a catalogue whose item
vectors never see evaluation-period data.

For real logs the split time t (paper protocol) is chosen among weekly midnights to maximise the
users with history before t and positives in (t, t + 14 days]; item content vectors are built from
metadata and co-engagement strictly before t (`model_core.features.item_content`), from the
training users only; for leave-one-out, from each user's actions before their validation target
(or their held-out positive when they have none). Either way the vectors read exactly the
interactions the models train on (`item_vector_actions`, `paper_item_vector_actions`). `quick`
keeps a few hundred users of a real log (a stable hash of the id) so a smoke run takes minutes.
"""

from __future__ import annotations

import dataclasses
import datetime
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import polars as pl

from model_core.data import synthetic
from model_core.data.sources import RawLog, read_source
from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.evaluation.paper_protocol import EvalConfig, is_eval_user
from model_core.features.actions import FeatureConfig
from model_core.features.item_content import item_content_embeddings
from model_core.training.validation import (
    paper_validation_users,
    validation_users,
)

QUICK_USERS = 400  # users a --quick run keeps from a real log
ITEM_DIM = 64  # real logs' item vectors: 32 metadata + 32 co-engagement dimensions


@dataclass(frozen=True)
class Data:
    name: str
    timelines: Timelines
    catalog: PinCatalog
    features: FeatureConfig
    split_ts: int
    validation_users: np.ndarray  # leave-one-out's validation users (`validation_users`)

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
    item_engagement: Literal["positive", "all"] = "all",
    eval_windows: int = 1,
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
        split = int(end.timestamp()) + 86_400 - 14 * eval_windows * 86_400
        return Data(
            "synthetic", timelines, catalog, features, split, validation_users(timelines.user_ids)
        )
    assert path is not None, f"--path is required for source {source}"
    log = _quick(read_source(source, path, **columns), quick)
    split = choose_split(log.actions, log.rule, 14 * eval_windows)
    features = log.feature_config(content_dim=ITEM_DIM)
    # Every item stays in the catalogue, even one that only actions the vectors may not read
    # touched (its vector is then metadata alone).
    engaged = log.actions.select("pin_id").unique()
    items = pl.concat([log.items, engaged], how="diagonal_relaxed")
    if protocol == "leave_one_out":
        actions = item_vector_actions(log.actions, log.rule)
        cutoff = int(actions["ts"].dt.epoch("s").to_numpy().max()) + 1
    else:
        actions, cutoff = paper_item_vector_actions(log.actions, split), split
    vector_log = dataclasses.replace(log, actions=actions, items=items)
    cutoff_dt = datetime.datetime.fromtimestamp(cutoff, datetime.timezone.utc)
    pins = item_content_embeddings(
        vector_log, cutoff_dt, dim=features.content_dim, engagement=item_engagement
    )
    catalog = PinCatalog.from_frame(pins)
    timelines, _ = Timelines.from_actions(log.actions, catalog, features, log.rule)
    return Data(log.name, timelines, catalog, features, split, validation_users(timelines.user_ids))


def paper_item_vector_actions(actions: pl.DataFrame, split_ts: int) -> pl.DataFrame:
    """The actions the paper protocol's item vectors may read, besides being before t (which
    `item_content_embeddings` enforces): exactly the training users' that the models train on
    (`validation.paper_split`'s train) — no evaluation user's (`EvalConfig`'s stable hash) and
    no held-out validation user's. The vectors then know no more about the users than any
    model does."""
    users = actions["user_id"].to_numpy().astype(np.int64)
    cfg = EvalConfig()
    trained = ~is_eval_user(users, cfg.eval_fraction, cfg.seed) & ~paper_validation_users(users)
    return actions.filter(pl.Series(trained))


def item_vector_actions(actions: pl.DataFrame, rule: PositiveRule) -> pl.DataFrame:
    """The actions leave-one-out's item vectors may read: exactly what the models train on
    (`validation.leave_one_out_split`'s train). Every user is cut before their held-out
    positive; a user with a validation target (a positive before that one, with an action
    before it) is cut before the validation positive too, so that neither the test nor the
    early-stopping label, nor anything between them, reaches the vectors. (Cuts are by time:
    an action in the same second as a cut is dropped with it.)"""
    acts = actions.with_columns(pl.Series("_positive", rule.frame_mask(actions)))
    first = acts.group_by("user_id").agg(pl.col("ts").min().alias("_first"))
    pos = (
        acts.filter(pl.col("_positive"))
        .group_by("user_id")
        .agg(pl.col("ts").sort(descending=True).head(2).alias("_last2"))
        .join(first, on="user_id")
        .with_columns(
            pl.col("_last2").list.get(0).alias("_test"),
            pl.col("_last2").list.get(1, null_on_oob=True).alias("_val"),
        )
    )
    # the validation target needs an action before it (leave_one_out's "needs a history")
    cut = pos.with_columns(
        pl.when(pl.col("_val").is_not_null() & (pl.col("_val") > pl.col("_first")))
        .then(pl.col("_val"))
        .otherwise(pl.col("_test"))
        .alias("_cut")
    ).select("user_id", "_cut")
    kept = acts.join(cut, on="user_id", how="left").filter(
        pl.col("_cut").is_null() | (pl.col("ts") < pl.col("_cut"))
    )
    return kept.select(actions.columns)


def choose_split(actions: pl.DataFrame, rule: PositiveRule, horizon_days: int = 14) -> int:
    """The global split time t for the paper protocol on a real log (`horizon_days`: all the
    evaluation windows after it, `paper_protocol.pooled_eval_set`).

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


def _quick(log: RawLog, quick: bool) -> RawLog:
    """`quick`: about QUICK_USERS users of the log, chosen by a stable hash of the user id."""
    if not quick:
        return log
    users = np.unique(log.actions["user_id"].to_numpy())
    keep = users[is_eval_user(users, min(1.0, QUICK_USERS / max(1, len(users))), seed=5)]
    return dataclasses.replace(log, actions=log.actions.filter(pl.col("user_id").is_in(keep)))

"""How often must user embeddings be recomputed? The paper's Table 2 (§4.2).

The model is trained once, on data up to the split t. What changes is WHEN an evaluation user's
embedding is computed, i.e. which of their actions it may read, for a positive engagement at time
τ in (t, t + 14 days]:

- "once":     the embedding computed at t (history <= t), as in every other table;
- "daily":    the daily batch of §3.6: the embedding computed at the start of τ's UTC day from
              every action before that day (never earlier than t);
- "realtime": the embedding computed just before τ, from every action strictly before τ.

The paper's finding is that a model trained for a long horizon (dense all action) loses little when
updated daily instead of in realtime, while a next-action model (SASRec) loses more: that is what
makes daily batch inference good enough. Recall@10 keeps the paper's definition — per user, the
share of their positives retrieved by the embedding in effect at that positive's time, averaged
over users — so "once" equals `model_core.evaluation.paper_protocol.evaluate`'s PinnerFormer
Recall@10.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.index import index_positions
from model_core.evaluation.metrics import (
    RetrievalMetrics,
    exact_topk,
    interest_entropy,
    p90_coverage,
    per_user_recall,
    positive_hits,
    positive_scores,
)
from model_core.evaluation.paper_protocol import EvalSet
from model_core.evaluation.seen import Seen
from model_core.inference.embed import embed_pins, embed_windows
from model_core.model.pinnerformer import PinnerFormer

Mode = Literal["once", "daily", "realtime"]
MODES: tuple[Mode, ...] = ("once", "daily", "realtime")
DAY_S = 86_400


def cutoff_times(positive_ts: np.ndarray, split_ts: int | np.ndarray, mode: Mode) -> np.ndarray:
    """[P] int64: the embedding for a positive at τ reads the actions with ts <= this value;
    split_ts: the split time t of the positive's window, one for all or [P]."""
    ts = np.asarray(positive_ts, dtype=np.int64)
    if mode == "once":
        return np.broadcast_to(np.asarray(split_ts, dtype=np.int64), ts.shape).copy()
    if mode == "daily":
        return np.maximum(split_ts, ts - ts % DAY_S - 1)
    if mode == "realtime":
        return ts - 1
    raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def window_ends(timelines: Timelines, user: np.ndarray, cutoff: np.ndarray) -> np.ndarray:
    """[S] flat rows: each (user row, cutoff) state's last action with ts <= cutoff.

    Every user must have an action at or before their cutoff (evaluation users have history).
    """
    owner = np.repeat(np.arange(timelines.n_users), timelines.lengths)
    t0 = int(min(timelines.ts.min(), cutoff.min()))
    key = (owner.astype(np.int64) << 33) + (timelines.ts - t0)  # sorted: by user, then time
    ends = np.searchsorted(key, (user.astype(np.int64) << 33) + (cutoff - t0), side="right") - 1
    if (ends < timelines.offsets[user]).any():
        raise ValueError("a state has no action at or before its cutoff")
    return ends


def state_seen(es: EvalSet, user: np.ndarray, ends: np.ndarray) -> Seen:
    """The index positions each embedding state ([S] user rows of es.timelines, [S] flat rows of
    their last readable action) has seen: every item of the user's timeline up to that action,
    so that with `EvalConfig.remove_seen` a state's ranking leaves out what its user had
    engaged with by then, as the evaluation at t leaves out the history up to t."""
    tl = es.timelines
    starts = tl.offsets[user]
    counts = ends - starts + 1
    owner = np.repeat(np.arange(len(user)), counts)
    rows = np.arange(counts.sum()) + np.repeat(starts - (np.cumsum(counts) - counts), counts)
    pairs = np.unique(np.stack([owner, tl.pin_row[rows]], axis=1), axis=0)
    return Seen.from_pairs(pairs[:, 0], pairs[:, 1], len(user)).in_index(es.index_rows)


def inference_frequency_metrics(
    model: PinnerFormer,
    eval_set: EvalSet,
    catalog: PinCatalog,
    modes: tuple[Mode, ...] = MODES,
    k: int = 10,
    entropy_k: int = 50,
) -> dict[Mode, RetrievalMetrics]:
    """Recall@k (plus P90 coverage@k and interest entropy@entropy_k over the embedding states) of
    one trained model under each inference frequency."""
    es = eval_set
    pin_emb = embed_pins(model, catalog.embeddings, catalog.pin_ids)
    index_vecs = pin_emb[es.index_rows]
    topics = catalog.topics[es.index_rows]
    n_users = es.history.n_users
    out: dict[Mode, RetrievalMetrics] = {}
    for mode in modes:
        cutoff = cutoff_times(es.positive_ts, es.origin_ts, mode)
        states, state_of_positive = np.unique(
            np.stack([es.positive_user, cutoff], axis=1), axis=0, return_inverse=True
        )
        state_of_positive = state_of_positive.reshape(-1)
        ends = window_ends(es.timelines, states[:, 0], states[:, 1])
        state_vecs = embed_windows(model, es.timelines, catalog, ends)
        seen = None if es.seen is None else state_seen(es, states[:, 0], ends)
        top_s, top_i = exact_topk(state_vecs, index_vecs, max(k + 1, entropy_k), exclude=seen)
        pos_s = positive_scores(state_vecs, state_of_positive, pin_emb[es.positive_pin_row])
        # Each state is a "user" with one positive; recall is averaged per real user after.
        hit = positive_hits(
            np.arange(len(pos_s)),
            pos_s,
            top_s[state_of_positive],
            k,
            top_i[state_of_positive],
            index_positions(es.index_rows, es.positive_pin_row),
        )
        per_user = per_user_recall(es.positive_user, hit, n_users)
        per_user = per_user[~np.isnan(per_user)]
        out[mode] = RetrievalMetrics(
            recall_at_k=float(per_user.mean()),
            p90_coverage_at_k=p90_coverage(top_i[:, :k], len(es.index_rows)),
            interest_entropy_at_k=interest_entropy(top_i[:, :entropy_k], topics),
            per_user_recall=per_user,
            n_users=len(per_user),
            n_positives=int(len(es.positive_user)),
            index_size=int(len(es.index_rows)),
            k=k,
            coverage_k=k,
            entropy_k=entropy_k,
        )
    return out

"""A seeded, stateless synthetic Pinterest-like world: the project's embedded default data source.

The world has the structure PinnerFormer is meant to exploit, and nothing tuned for one model:

- **Pins** belong to one of ``n_topics`` topics (topic sizes Zipf-ish) and to one of
  ``n_subclusters`` sub-clusters inside it. A pin's content embedding is the L2-normalised sum of
  its topic centre, its sub-cluster offset and Gaussian noise: a noisy "PinSage" stand-in. Within a
  topic, pin popularity is Zipf.
- **Users** hold a sparse long-term interest mixture over 2-5 "core" topics (drawn by topic
  size; a repeat draw merges into one interest) that drifts slowly: every ``drift_period_days`` a
  fresh anchor mixture is drawn (a Dirichlet re-weighting of the core topics plus, sometimes, an
  emerging topic) and a user's interest on a day is the linear interpolation between the two
  anchors around it (each user's epochs are offset by a random phase, so users do not all shift on
  the same day). Activity is heavy-tailed (log-normal daily activity probability): most users are
  sporadic, a few are heavy.
- **Sessions**: an active user has 1..few sessions a day, started at a diurnal time of day. Each
  session has a short-term focus (a topic from the current interests, sometimes exploration, and a
  sub-cluster); actions in it are seconds to minutes apart, mostly on the focus, pins drawn by
  popularity. Home-feed sessions also inject exploration items from random topics.
- **Actions**: surface (home_feed / search / related) and type (repin / closeup / click / hide)
  depend on how well the pin matches the user's interests: matching pins are repinned more, hidden
  less and looked at longer (log-normal durations with a per-user speed offset). About 30% of
  actions are "positive" under the paper's rule (repin, or closeup/click > 10 s, on the home feed).

Determinism: nothing is stateful. Pins derive from ``(seed, PINS)``; a user block's static
parameters from ``(seed, USERS, block)``; its drift anchors from ``(seed, ANCHOR, block, epoch)``;
its actions on a day from ``(seed, DAY, day.toordinal(), block)``. So ``generate_day(config, D)``
depends only on ``(config, D)``, and memory per day is bounded by the day's rows plus one block.
"""

from __future__ import annotations

import datetime
import functools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import polars as pl

from model_core.data.world import ACTION_TYPES, SURFACES, WorldConfig

USER_BLOCK_SIZE = 8192  # users simulated together; part of the RNG stream key, so fixed
_TAG_PINS, _TAG_USERS, _TAG_ANCHOR, _TAG_DAY = 1, 2, 3, 4  # RNG stream tags
_SECONDS_PER_DAY = 86_400
_REPIN, _CLOSEUP, _CLICK, _HIDE = range(4)
_HOME_FEED = 0


@dataclass(frozen=True)
class _PinWorld:
    """Static pin tables. ``*_cdf`` hold ``group + within-group cumulative popularity``."""

    topic: np.ndarray  # [N] int32
    embedding: np.ndarray  # [N, d] float32, unit norm
    topic_order: np.ndarray  # [N] int64: pin indices sorted by topic
    topic_cdf: np.ndarray  # [N] float64, aligned with topic_order
    group_order: np.ndarray  # [N] int64: pin indices sorted by topic * S + sub-cluster
    group_cdf: np.ndarray  # [N] float64, aligned with group_order
    topic_prob: np.ndarray  # [T] float64: topic size distribution


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _grouped_cdf(groups: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort items by group; return (order, cdf) with cdf = group + within-group cumulative mass."""
    order = np.argsort(groups, kind="stable")
    g, w = groups[order], weights[order]
    cum = np.cumsum(w)
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    base = np.repeat(cum[starts] - w[starts], ends - starts)
    total = np.repeat(cum[ends - 1] - (cum[starts] - w[starts]), ends - starts)
    cdf = g + (cum - base) / total
    cdf[ends - 1] = g[ends - 1] + 1.0  # exact group boundaries despite rounding
    return order.astype(np.int64), cdf


def _sample_in_groups(
    order: np.ndarray, cdf: np.ndarray, groups: np.ndarray, u: np.ndarray
) -> np.ndarray:
    """Draw one item per entry of ``groups`` [A] by popularity, using uniforms ``u`` [A]."""
    target = groups + np.minimum(u, 1.0 - 1e-9)
    return order[np.searchsorted(cdf, target, side="right")]


@functools.lru_cache(maxsize=8)
def _pin_world(config: WorldConfig) -> _PinWorld:
    rng = np.random.default_rng([config.seed, _TAG_PINS])
    n, t, s, d = config.n_pins, config.n_topics, config.n_subclusters, config.content_dim
    topic_prob = 1.0 / np.arange(1, t + 1) ** config.topic_zipf
    topic_prob /= topic_prob.sum()
    # Every (topic, sub-cluster) pair gets at least one pin; the rest follow the topic sizes.
    group = np.r_[np.arange(t * s), rng.choice(t, n - t * s, p=topic_prob) * s]
    group[t * s :] += rng.integers(0, s, n - t * s)
    group = group[rng.permutation(n)]
    topic = group // s
    centres = _normalise(rng.standard_normal((t, d)))
    offsets = rng.standard_normal((t * s, d)) * (config.subcluster_scale / math.sqrt(d))
    noise = rng.standard_normal((n, d)) * (config.embedding_noise / math.sqrt(d))
    embedding = _normalise(centres[topic] + offsets[group] + noise).astype(np.float32)
    # Zipf popularity by a random rank within the topic.
    by_topic = np.lexsort((rng.random(n), topic))
    sorted_topic = topic[by_topic]
    first = np.searchsorted(sorted_topic, sorted_topic, side="left")
    rank = np.empty(n, dtype=np.int64)
    rank[by_topic] = np.arange(n) - first
    popularity = 1.0 / (rank + 1.0) ** config.pin_popularity_zipf
    topic_order, topic_cdf = _grouped_cdf(topic, popularity)
    group_order, group_cdf = _grouped_cdf(group, popularity)
    return _PinWorld(
        topic.astype(np.int32), embedding, topic_order, topic_cdf, group_order, group_cdf,
        topic_prob,
    )  # fmt: skip


def pin_features(config: WorldConfig) -> pl.DataFrame:
    """Content features of every pin (docs/DESIGN.md §4 ``pin_features``).

    Returns ``n_pins`` rows: pin_id Int64, embedding Array(Float32, content_dim) (unit norm),
    topic Int32. Deterministic from ``config`` alone.
    """
    pins = _pin_world(config)
    return pl.DataFrame(
        {
            "pin_id": pl.Series(config.pin_id_base + np.arange(config.n_pins), dtype=pl.Int64),
            "embedding": pl.Series(pins.embedding),
            "topic": pl.Series(pins.topic, dtype=pl.Int32),
        }
    )


@dataclass(frozen=True)
class _UserBlock:
    """Static parameters of one block of users, drawn from ``(seed, USERS, block)``."""

    activity: np.ndarray  # [n] daily active probability
    extra_sessions: np.ndarray  # [n] Poisson mean of extra sessions on an active day
    core: np.ndarray  # [n, K] int64 core topics (first n_core columns valid)
    mask: np.ndarray  # [n, K] bool
    base: np.ndarray  # [n, K] float64 static interest weights over core topics
    phase: np.ndarray  # [n] float64 in [0, 1): offset of the user's drift epochs
    duration_bias: np.ndarray  # [n] float64 log-duration offset


def _user_block(config: WorldConfig, block: int, n: int, topic_prob: np.ndarray) -> _UserBlock:
    rng = np.random.default_rng([config.seed, _TAG_USERS, block])
    k = config.max_core_topics
    activity = np.minimum(
        rng.lognormal(math.log(config.activity_median), config.activity_sigma, n),
        config.max_active_prob,
    )
    extra = config.extra_sessions_mean * np.sqrt(np.minimum(activity / config.activity_median, 9))
    # Core topics: i.i.d. draws favouring big topics (a repeat merges into one interest).
    topic_cdf = np.cumsum(topic_prob**config.interest_popularity_bias)
    core = np.searchsorted(topic_cdf / topic_cdf[-1], rng.random((n, k)), side="right")
    core = np.minimum(core, len(topic_prob) - 1)
    n_core = rng.integers(config.min_core_topics, k + 1, n)
    mask = np.arange(k)[None, :] < n_core[:, None]
    base = rng.gamma(config.interest_concentration, size=(n, k)) * mask
    base /= base.sum(axis=1, keepdims=True)
    phase = rng.random(n)
    bias = rng.normal(0.0, config.user_duration_noise, n)
    return _UserBlock(activity, extra, core.astype(np.int64), mask, base, phase, bias)


def _anchor(
    config: WorldConfig, block: int, epoch: int, users: _UserBlock
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interest anchor of epoch ``epoch``: (core weights [n, K], emerging topic [n], weight [n])."""
    rng = np.random.default_rng([config.seed, _TAG_ANCHOR, block, epoch])
    n, k = users.mask.shape
    w = rng.gamma(config.interest_concentration, size=(n, k)) * users.mask
    w /= w.sum(axis=1, keepdims=True)
    emerging = rng.random(n) < config.emerging_interest_prob
    topic = np.asarray(rng.integers(0, config.n_topics, size=n))
    e_w: np.ndarray = np.where(emerging, config.emerging_interest_weight, 0.0)
    core = ((1 - config.drift_strength) * users.base + config.drift_strength * w) * (1 - e_w)[
        :, None
    ]
    return core, topic, e_w


def _interests(
    config: WorldConfig, block: int, day: datetime.date, users: _UserBlock, idx: np.ndarray
) -> np.ndarray:
    """Current interest mixtures [len(idx), T] of the block's users ``idx`` on ``day``."""
    t_u = day.toordinal() / config.drift_period_days + users.phase[idx]
    epoch = np.floor(t_u).astype(np.int64)
    frac = t_u - epoch
    k0 = day.toordinal() // config.drift_period_days
    n_t = config.n_topics
    rows = np.arange(len(idx))
    dense = np.zeros(len(idx) * n_t)
    for e in range(k0, k0 + 3):  # phase < 1, so epochs k0 .. k0 + 2 cover every user
        core, topic, e_w = _anchor(config, block, e, users)
        coef = np.where(epoch == e, 1 - frac, 0.0) + np.where(epoch + 1 == e, frac, 0.0)
        flat = (rows[:, None] * n_t + users.core[idx]).ravel()
        dense += np.bincount(flat, (core[idx] * coef[:, None]).ravel(), len(dense))
        dense += np.bincount(rows * n_t + topic[idx], e_w[idx] * coef, len(dense))
    return dense.reshape(len(idx), n_t)


def _categorical(probs: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Row-wise categorical draw: ``probs`` [A, T] (unnormalised), ``u`` [A] uniforms -> [A]."""
    cum = np.cumsum(probs, axis=1)
    return np.minimum((cum < (u * cum[:, -1])[:, None]).sum(axis=1), probs.shape[1] - 1)


def _simulate_block(
    config: WorldConfig, day: datetime.date, block: int, pins: _PinWorld
) -> dict[str, np.ndarray] | None:
    """One block's actions on ``day`` as numpy columns sorted by (user, ts); None if nobody acts."""
    lo = block * USER_BLOCK_SIZE
    n = min(USER_BLOCK_SIZE, config.n_users - lo)
    users = _user_block(config, block, n, pins.topic_prob)
    rng = np.random.default_rng([config.seed, _TAG_DAY, day.toordinal(), block])
    boost = config.weekend_boost if day.weekday() >= 5 else 1.0
    idx = np.flatnonzero(rng.random(n) < np.minimum(users.activity * boost, config.max_active_prob))
    if len(idx) == 0:
        return None
    interests = _interests(config, block, day, users, idx)  # (U, T)
    match_norm = interests.max(axis=1)  # (U,)

    # Sessions: count, focus topic / sub-cluster, length, start time.
    n_sess = 1 + np.minimum(rng.poisson(users.extra_sessions[idx]), config.max_sessions - 1)
    sess_user = np.repeat(np.arange(len(idx)), n_sess)  # (S,)
    n_s = len(sess_user)
    focus = _categorical(interests[sess_user], rng.random(n_s))
    focus = np.where(
        rng.random(n_s) < config.explore_session_prob, rng.integers(0, config.n_topics, n_s), focus
    )
    focus_group = focus * config.n_subclusters + rng.integers(0, config.n_subclusters, n_s)
    log_len = rng.lognormal(
        math.log(config.session_actions_median), config.session_actions_sigma, n_s
    )
    length = np.clip(np.ceil(log_len), 1, config.max_session_actions).astype(np.int64)
    start = _session_starts(config, rng, n_s)

    # Actions: surface, topic, pin.
    a_sess = np.repeat(np.arange(n_s), length)  # (A,)
    a_user = sess_user[a_sess]
    n_a = len(a_sess)
    surface = rng.choice(len(SURFACES), n_a, p=np.asarray(config.surface_probs))
    r = rng.random(n_a)
    off_focus = r < config.off_focus_prob
    explore = (
        (surface == _HOME_FEED)
        & ~off_focus
        & (r < config.off_focus_prob + config.feed_explore_prob)
    )
    topic = np.where(explore, rng.integers(0, config.n_topics, n_a), focus[a_sess])
    u_off = rng.random(n_a)
    topic[off_focus] = _categorical(interests[a_user[off_focus]], u_off[off_focus])
    in_group = ~off_focus & ~explore & (rng.random(n_a) < config.subcluster_focus_prob)
    u = rng.random(n_a)
    pin = np.empty(n_a, dtype=np.int64)
    g = focus_group[a_sess[in_group]]
    pin[in_group] = _sample_in_groups(pins.group_order, pins.group_cdf, g, u[in_group])
    t = topic[~in_group]
    pin[~in_group] = _sample_in_groups(pins.topic_order, pins.topic_cdf, t, u[~in_group])

    # Action type and duration depend on the match between the pin's topic and the user.
    match = interests[a_user, pins.topic[pin]] / match_norm[a_user]  # (A,) in [0, 1]
    p_hide = config.hide_prob_min + (config.hide_prob_max - config.hide_prob_min) * (1 - match)
    p_repin = config.repin_prob_base + config.repin_prob_gain * match
    r = rng.random(n_a)
    p_closeup = p_hide + p_repin + (1 - p_hide - p_repin) * config.closeup_share
    action = np.select(
        [r < p_hide, r < p_hide + p_repin, r < p_closeup], [_HIDE, _REPIN, _CLOSEUP], _CLICK
    )
    log_median = (
        np.log(np.asarray(config.duration_medians_s))[action] + users.duration_bias[idx][a_user]
    )
    log_median += config.duration_match_gain * match * ((action == _CLOSEUP) | (action == _CLICK))
    duration = np.exp(log_median + config.duration_sigma * rng.standard_normal(n_a))

    ts_us = _timestamps(config, rng, duration, length, a_sess, start)
    order = np.lexsort((ts_us, a_user))
    return {
        "ts_us": ts_us[order],
        "user_id": (config.user_id_base + lo + idx[a_user])[order].astype(np.int64),
        "pin_id": (config.pin_id_base + pin)[order].astype(np.int64),
        "action": action[order].astype(np.uint32),
        "surface": surface[order].astype(np.uint32),
        "duration_s": duration[order],
    }


def _session_starts(config: WorldConfig, rng: np.random.Generator, n: int) -> np.ndarray:
    """[n] float64 seconds into the day each session starts: an hour drawn from the diurnal
    curve, then a uniform offset within it."""
    hours = np.arange(24)
    hour_p = 1 + config.diurnal_amplitude * np.cos(2 * np.pi * (hours - config.peak_hour_utc) / 24)
    return (rng.choice(24, n, p=hour_p / hour_p.sum()) + rng.random(n)) * 3600.0


def _timestamps(
    config: WorldConfig,
    rng: np.random.Generator,
    duration: np.ndarray,
    length: np.ndarray,
    a_sess: np.ndarray,
    start: np.ndarray,
) -> np.ndarray:
    """[A] int64 microseconds into the day of each action ([A] duration and session a_sess,
    [S] session length and start): within a session each action starts after the previous one
    plus a gap, and a session that would run past midnight starts earlier."""
    step = duration + rng.lognormal(math.log(config.gap_median_s), config.gap_sigma, len(a_sess))
    excl = np.cumsum(step) - step
    first = np.cumsum(length) - length
    rel = excl - excl[first][a_sess]
    span = rel[first + length - 1]
    start = np.maximum(np.minimum(start, _SECONDS_PER_DAY - 1 - span), 0.0)
    return np.clip(((start[a_sess] + rel) * 1e6).astype(np.int64), 0, _SECONDS_PER_DAY * 10**6 - 1)


def _empty_day() -> dict[str, np.ndarray]:
    return {
        "ts_us": np.zeros(0, np.int64),
        "user_id": np.zeros(0, np.int64),
        "pin_id": np.zeros(0, np.int64),
        "action": np.zeros(0, np.uint32),
        "surface": np.zeros(0, np.uint32),
        "duration_s": np.zeros(0, np.float64),
    }


def generate_day(config: WorldConfig, day: datetime.date) -> pl.DataFrame:
    """All actions of ``day`` (docs/DESIGN.md §4 ``raw_actions``), sorted by (user_id, ts).

    Columns: event_date Date, ts Datetime("us", "UTC"), user_id Int64, pin_id Int64,
    action_type Utf8, surface Utf8, duration_s Float64 (>= 0). Every ts lies inside ``day`` (UTC).
    Depends only on ``(config, day)``; any day is valid, not only ``config.dates``.
    """
    pins = _pin_world(config)
    n_blocks = -(-config.n_users // USER_BLOCK_SIZE)
    parts = [p for b in range(n_blocks) if (p := _simulate_block(config, day, b, pins)) is not None]
    cols = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else _empty_day()
    parts.clear()
    day_start_us = (
        (day.toordinal() - datetime.date(1970, 1, 1).toordinal()) * _SECONDS_PER_DAY * 10**6
    )
    n = len(cols["ts_us"])
    return pl.DataFrame(
        {
            "event_date": pl.repeat(day, n, dtype=pl.Date, eager=True),
            "ts": pl.Series(cols["ts_us"] + day_start_us, dtype=pl.Int64).cast(
                pl.Datetime("us", "UTC")
            ),
            "user_id": pl.Series(cols["user_id"], dtype=pl.Int64),
            "pin_id": pl.Series(cols["pin_id"], dtype=pl.Int64),
            "action_type": pl.Series(ACTION_TYPES, dtype=pl.String).gather(cols["action"]),
            "surface": pl.Series(SURFACES, dtype=pl.String).gather(cols["surface"]),
            "duration_s": pl.Series(cols["duration_s"], dtype=pl.Float64),
        }
    )


def generate_range(
    config: WorldConfig, start: datetime.date, end: datetime.date
) -> Iterator[pl.DataFrame]:
    """Yield ``generate_day`` for each day from ``start`` to ``end`` INCLUSIVE, one at a time."""
    for i in range((end - start).days + 1):
        yield generate_day(config, start + datetime.timedelta(days=i))

"""The synthetic world's knobs (`model_core.data.synthetic` simulates it): sizes, the interest
drift, sessions, action probabilities and durations. Two equal configs generate identical data."""

from __future__ import annotations

import datetime
from dataclasses import dataclass

ACTION_TYPES: tuple[str, ...] = ("repin", "closeup", "click", "hide")
SURFACES: tuple[str, ...] = ("home_feed", "search", "related")


@dataclass(frozen=True)
class WorldConfig:
    """All knobs of the synthetic world. Two equal configs generate identical data."""

    seed: int = 0  # the whole world is a function of (config, day)
    n_users: int = 20_000  # ~2.5k active users, ~50k actions a day: trains on a laptop CPU
    n_pins: int = 50_000  # a corpus far larger than one user's history, small enough for exact kNN
    n_topics: int = 48  # enough topics that a sparse interest mixture is clearly non-uniform
    content_dim: int = 32  # a small stand-in for PinSage's 256-d; 48 topic centres fit easily
    start_date: datetime.date = datetime.date(2026, 1, 1)
    n_days: int = 70  # 28 d training window + 14 d evaluation window + history before them
    user_id_base: int = 100_000_000  # ids are offsets so they never look like row indices
    pin_id_base: int = 1_000_000
    # pins
    topic_zipf: float = 0.8  # topic sizes: a few big topics (food, home) and a long tail
    pin_popularity_zipf: float = 1.0  # within a topic a few pins take most engagement
    n_subclusters: int = 4  # finer intents inside a topic (e.g. "vegan desserts" in food)
    subcluster_scale: float = 0.6  # sub-cluster offset norm relative to the unit topic centre
    embedding_noise: float = 0.7  # noise norm: content embeddings only roughly reveal topics
    # users
    min_core_topics: int = 2  # real users have a handful of long-term interests, not one
    max_core_topics: int = 5
    interest_concentration: float = 0.7  # Dirichlet alpha < 1: one or two interests dominate
    interest_popularity_bias: float = 1.0  # exponent on topic size when choosing core topics
    drift_period_days: int = 21  # interests move over weeks, visibly within a 70-day world
    drift_strength: float = 0.5  # share of an anchor re-drawn per epoch (rest is the static base)
    emerging_interest_prob: float = 0.3  # chance an epoch brings a new topic into a user's mix
    emerging_interest_weight: float = 0.25  # its weight in the anchor mixture
    activity_median: float = 0.06  # median user is active ~4 days in 70: sporadic majority
    activity_sigma: float = 1.3  # log-normal spread: a heavy tail of near-daily users
    max_active_prob: float = 0.95
    weekend_boost: float = 1.2  # more browsing on Saturdays and Sundays
    # sessions
    extra_sessions_mean: float = 0.6  # Poisson extra sessions, scaled up for heavy users
    max_sessions: int = 6
    session_actions_median: float = 6.0  # log-normal session length in actions
    session_actions_sigma: float = 0.8
    max_session_actions: int = 80
    peak_hour_utc: float = 20.0  # diurnal activity peaks in the evening
    diurnal_amplitude: float = 0.6  # peak-to-mean ratio of the hour-of-day profile is 1 + this
    gap_median_s: float = 20.0  # seconds between one action ending and the next starting
    gap_sigma: float = 1.0
    explore_session_prob: float = 0.1  # sessions whose focus is a random topic (curiosity)
    off_focus_prob: float = 0.2  # actions on another of the user's interests within a session
    feed_explore_prob: float = 0.15  # home-feed exploration items from a random topic
    subcluster_focus_prob: float = 0.5  # focus actions that stay in the session's sub-cluster
    # actions
    surface_probs: tuple[float, float, float] = (0.6, 0.25, 0.15)  # home_feed, search, related
    hide_prob_min: float = 0.005  # hides of pins the user likes are rare
    hide_prob_max: float = 0.2  # ... and common for pins far from the user's interests
    repin_prob_base: float = 0.04
    repin_prob_gain: float = 0.2  # repin probability rises with the pin's interest match
    closeup_share: float = 0.65  # of non-repin, non-hide actions, closeups vs click-throughs
    duration_medians_s: tuple[float, float, float, float] = (4.0, 6.0, 4.0, 1.5)  # per type
    duration_sigma: float = 1.0  # log-normal: many glances, some long looks
    duration_match_gain: float = 1.0  # log-duration bonus of closeups/clicks on matching pins
    user_duration_noise: float = 0.3  # per-user log-duration offset: slow and fast scrollers

    def __post_init__(self) -> None:
        assert self.seed >= 0, f"seed must be >= 0, got {self.seed}"
        assert self.n_users > 0, f"n_users must be positive, got {self.n_users}"
        assert self.n_days > 0, f"n_days must be positive, got {self.n_days}"
        assert self.n_pins >= self.n_topics * self.n_subclusters, (
            f"n_pins={self.n_pins} must cover every (topic, sub-cluster) pair "
            f"({self.n_topics} x {self.n_subclusters})"
        )
        assert 1 <= self.min_core_topics <= self.max_core_topics <= self.n_topics, (
            "need 1 <= min_core_topics <= max_core_topics <= n_topics"
        )
        assert abs(sum(self.surface_probs) - 1.0) < 1e-9, "surface_probs must sum to 1"
        assert len(self.duration_medians_s) == len(ACTION_TYPES), "one median per action type"
        assert self.drift_period_days > 0, "drift_period_days must be positive"

    @classmethod
    def tiny(cls, seed: int = 0) -> WorldConfig:
        """A test-sized world (2k users, 3k pins, 42 days): all days generate in well under 2 s."""
        return cls(
            seed=seed,
            n_users=2_000,
            n_pins=3_000,
            n_topics=12,
            content_dim=16,
            n_days=42,
            max_core_topics=4,
            drift_period_days=14,
        )

    @property
    def dates(self) -> list[datetime.date]:
        """The world's default date range, ``start_date`` .. ``start_date + n_days - 1``."""
        return [self.start_date + datetime.timedelta(days=i) for i in range(self.n_days)]

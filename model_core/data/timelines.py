"""One row per user: the whole action timeline, in flat (ragged) numpy arrays (paper §3.5).

Training examples are sampled from these on the fly (`model_core.training.sampler`), so changing the
sequence length, the sampling fraction or the number of positives needs no data regeneration.

Also here: the pin catalogue (content embeddings by pin id) and the positive-engagement rule (§3).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from model_core.features.actions import FeatureConfig

ACTION_COLUMNS = ("ts", "user_id", "pin_id", "action_type", "surface", "duration_s")


@dataclass(frozen=True)
class PositiveRule:
    """Which actions are positive engagement, i.e. may be a label (§3).

    An action is positive when its surface is in `surfaces` and its type is in `always`, or its type
    has a duration threshold in `min_duration_s` and its duration exceeds it. Everything else is
    model input but never a label.
    """

    surfaces: tuple[str, ...] = ("home_feed",)  # the paper labels home-feed engagement only
    always: tuple[str, ...] = ("repin",)  # a save is explicit intent whatever the duration
    min_duration_s: Mapping[str, float] = field(
        default_factory=lambda: {"closeup": 10.0, "click": 10.0}  # a 10 s dwell filters mis-taps
    )

    def sql(self) -> str:
        """The same rule as a SQL predicate over columns action_type, surface, duration_s."""

        def quoted(names: tuple[str, ...] | list[str]) -> str:
            return ", ".join("'" + n.replace("'", "''") + "'" for n in names)

        typed = [f"action_type IN ({quoted(self.always)})"] if self.always else []
        typed += [
            f"(action_type = {quoted([name])} AND duration_s > {float(t)!r})"
            for name, t in self.min_duration_s.items()
        ]
        return f"(surface IN ({quoted(self.surfaces)}) AND ({' OR '.join(typed) or 'FALSE'}))"

    def mask(
        self, action_type: np.ndarray, surface: np.ndarray, duration: np.ndarray
    ) -> np.ndarray:
        """[n] object/str arrays and float durations → [n] bool."""
        typed = np.isin(action_type, list(self.always))
        for name, threshold in self.min_duration_s.items():
            typed |= (action_type == name) & (duration > threshold)
        return typed & np.isin(surface, list(self.surfaces))

    def frame_mask(self, actions: pl.DataFrame) -> np.ndarray:
        """[n] bool for the rows of a frame with columns action_type, surface, duration_s."""
        return self.mask(
            actions["action_type"].to_numpy().astype(str),
            actions["surface"].to_numpy().astype(str),
            actions["duration_s"].to_numpy(),
        )


@dataclass(frozen=True)
class PinCatalog:
    """Content embeddings by pin id.

    pin_ids:    [N] int64, sorted ascending
    embeddings: [N, C] float32
    topics:     [N] int64, -1 when unknown
    tokens:     [N, A] int64 codes of each item's metadata tokens (0 = none), or None; the codes
                are this catalogue's own (1 + position among its distinct tokens)
    """

    pin_ids: np.ndarray
    embeddings: np.ndarray
    topics: np.ndarray
    tokens: np.ndarray | None = None

    @classmethod
    def from_frame(cls, df: pl.DataFrame) -> PinCatalog:
        """From the `pin_features` contract: pin_id, embedding (list/array of float), topic, and
        optionally tokens (list of str: the item's metadata tokens)."""
        df = df.sort("pin_id")
        emb = np.asarray(df["embedding"].to_list(), dtype=np.float32)
        assert emb.ndim == 2, "pin embeddings must all have the same dimension"
        topics = df["topic"].fill_null(-1).to_numpy().astype(np.int64) if "topic" in df else None
        ids = df["pin_id"].to_numpy().astype(np.int64)
        assert np.all(np.diff(ids) > 0), "pin_id must be unique"
        return cls(
            ids,
            emb,
            topics if topics is not None else np.full(len(ids), -1, np.int64),
            _token_codes(df["tokens"]) if "tokens" in df else None,
        )

    def __len__(self) -> int:
        return len(self.pin_ids)

    def rows(self, pin_ids: np.ndarray) -> np.ndarray:
        """[n] int64 pin ids → [n] int64 rows into `embeddings`, -1 for unknown pins."""
        pos = np.searchsorted(self.pin_ids, pin_ids)
        pos = np.minimum(pos, len(self.pin_ids) - 1)
        return np.where(self.pin_ids[pos] == pin_ids, pos, -1)


def _token_codes(tokens: pl.Series) -> np.ndarray:
    """A list-of-str column → [N, A] int64 codes (1 + position among the distinct tokens,
    0 = padding; A = the most tokens of one item, at least 1)."""
    lengths = tokens.list.len().fill_null(0).to_numpy().astype(np.int64)
    flat = tokens.explode().drop_nulls().to_numpy().astype(str)
    out = np.zeros((len(lengths), max(1, int(lengths.max(initial=0)))), dtype=np.int64)
    if len(flat):
        _, codes = np.unique(flat, return_inverse=True)
        row = np.repeat(np.arange(len(lengths)), lengths)
        col = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        out[row, col] = codes + 1
    return out


@dataclass(frozen=True)
class DropCounts:
    """Rows dropped while building timelines, by reason (the paper drops OOV rows)."""

    unknown_action_type: int = 0
    unknown_surface: int = 0
    unknown_pin: int = 0

    @property
    def total(self) -> int:
        return self.unknown_action_type + self.unknown_surface + self.unknown_pin


@dataclass(frozen=True)
class Timelines:
    """All users' timelines, flat. User u owns rows offsets[u]:offsets[u+1], sorted by time.

    user_ids: [U] int64       offsets: [U+1] int64
    ts:       [T] int64 Unix seconds
    pin_row:  [T] int64 row in the PinCatalog     pin_id: [T] int64
    action:   [T] int64 vocab index (>= 1)        surface: [T] int64 vocab index (>= 1)
    duration: [T] float32 seconds                 positive: [T] bool
    """

    user_ids: np.ndarray
    offsets: np.ndarray
    ts: np.ndarray
    pin_row: np.ndarray
    pin_id: np.ndarray
    action: np.ndarray
    surface: np.ndarray
    duration: np.ndarray
    positive: np.ndarray

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @classmethod
    def from_actions(
        cls,
        actions: pl.DataFrame,
        catalog: PinCatalog,
        features: FeatureConfig,
        rule: PositiveRule | None = None,
    ) -> tuple[Timelines, DropCounts]:
        """From rows in the docs/DESIGN.md §4 contract (any order); out-of-vocabulary rows are
        dropped and counted."""
        missing = [c for c in ACTION_COLUMNS if c not in actions.columns]
        if missing:
            raise ValueError(f"actions are missing columns {missing}; need {list(ACTION_COLUMNS)}")
        rule = rule or PositiveRule()
        df = actions.select(ACTION_COLUMNS).sort(["user_id", "ts"], maintain_order=True)
        action_type = df["action_type"].to_numpy().astype(str)
        surface = df["surface"].to_numpy().astype(str)
        duration = df["duration_s"].to_numpy().astype(np.float32)
        action_idx = _vocab_index(action_type, features.action_types)
        surface_idx = _vocab_index(surface, features.surfaces)
        pin_id = df["pin_id"].to_numpy().astype(np.int64)
        pin_row = catalog.rows(pin_id)
        drops = DropCounts(
            unknown_action_type=int((action_idx == 0).sum()),
            unknown_surface=int(((surface_idx == 0) & (action_idx > 0)).sum()),
            unknown_pin=int(((pin_row < 0) & (action_idx > 0) & (surface_idx > 0)).sum()),
        )
        keep = (action_idx > 0) & (surface_idx > 0) & (pin_row >= 0)
        ts = df["ts"].dt.epoch("s").to_numpy().astype(np.int64)
        users = df["user_id"].to_numpy().astype(np.int64)[keep]
        user_ids, starts = np.unique(users, return_index=True)
        offsets = np.append(starts, len(users)).astype(np.int64)
        positive = rule.mask(action_type[keep], surface[keep], duration[keep])
        return (
            cls(
                user_ids=user_ids,
                offsets=offsets,
                ts=ts[keep],
                pin_row=pin_row[keep],
                pin_id=pin_id[keep],
                action=action_idx[keep],
                surface=surface_idx[keep],
                duration=duration[keep],
                positive=positive,
            ),
            drops,
        )

    @classmethod
    def concat(cls, parts: Sequence[Timelines]) -> Timelines:
        """Every part's users in order; a user id may then occur more than once (e.g. one user's
        history at several split times), each occurrence its own user row."""
        lengths = np.concatenate([p.lengths for p in parts])
        return cls(
            user_ids=np.concatenate([p.user_ids for p in parts]),
            offsets=np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
            **{f: np.concatenate([getattr(p, f) for p in parts]) for f in _ROW_FIELDS},
        )

    def select_rows(self, keep: np.ndarray) -> Timelines:
        """Keep the flat rows where `keep` ([T] bool) is True; users left with no rows disappear."""
        owner = np.repeat(np.arange(self.n_users), self.lengths)[keep]
        counts = np.bincount(owner, minlength=self.n_users)
        alive = counts > 0
        offsets = np.concatenate([[0], np.cumsum(counts[alive])]).astype(np.int64)
        return Timelines(
            user_ids=self.user_ids[alive],
            offsets=offsets,
            **{f: getattr(self, f)[keep] for f in _ROW_FIELDS},
        )

    def select_users(self, user_mask: np.ndarray) -> Timelines:
        """Keep the users where `user_mask` ([U] bool) is True."""
        return self.select_rows(np.repeat(user_mask, self.lengths))

    def before(self, t: int) -> Timelines:
        """History up to and including Unix second `t`."""
        return self.select_rows(self.ts <= t)


_ROW_FIELDS = ("ts", "pin_row", "pin_id", "action", "surface", "duration", "positive")


def _vocab_index(values: np.ndarray, vocab: tuple[str, ...]) -> np.ndarray:
    """Strings → 1-based vocabulary index, 0 when out of vocabulary."""
    out = np.zeros(len(values), dtype=np.int64)
    for i, name in enumerate(vocab, start=1):
        out[values == name] = i
    return out

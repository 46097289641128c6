"""Training examples sampled on the fly from one-row-per-user timelines (paper §3.4, §3.5).

A *sequence* is a window of at most M consecutive actions of one user ending at an action e. The
four objectives differ only in which positions of the window emit an embedding and which
positives they must predict:

- next_action:      the latest position predicts the user's next positive after e;
- sasrec:           every position i predicts the next positive after i;
- all_action:       the latest position predicts up to `max_positives` positives sampled from the
                    K days after e;
- dense_all_action: up to `dense_positions` random positions s_i each predict ONE random positive
                    from the K days after s_i.

A label is always a positive action strictly later than the position that predicts it and at most K
days later (`window_days=None`: no limit). "Later" is in time by default; `label_order="rows"`
makes it later in the log's row order, for logs whose timestamps tie (a day's reviews share one
midnight) under a protocol that is defined by order (leave-one-out). Which sequences exist per
epoch is governed by the §3.5 knobs (`sequence_fraction`, `max_sequences_per_user`); everything
is a pure function of (seed, step), so training resumes exactly from a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.data.windows import window_batch
from model_core.features.actions import SeqBatch

Objective = Literal["next_action", "sasrec", "all_action", "dense_all_action"]
OBJECTIVES: tuple[Objective, ...] = ("next_action", "sasrec", "all_action", "dense_all_action")
DAY_S = 86_400


@dataclass(frozen=True)
class SamplerConfig:
    objective: Objective = "dense_all_action"  # Table 3: the paper's best for 14-day engagement
    max_len: int = 64  # M, the window length; must not exceed the model's max_len
    window_days: float | None = 28.0  # K for labels (§3.4: 28 days; eval uses 14); None = any
    label_order: Literal["time", "rows"] = "time"  # "rows": later in row order counts as later
    sequence_fraction: float = 0.25  # share of a user's possible sequences drawn per epoch
    max_sequences_per_user: int = 8  # caps heavy users so they do not dominate an epoch
    max_positives: int = 32  # all_action: positives per sequence (§3.4: 32)
    dense_positions: int = 8  # dense_all_action: positions per window; each costs a softmax row
    # "random": windows end at random actions (§3.5, the two knobs above); "tiled": every epoch
    # the user's history is cut into back-to-back windows from their latest action with a label
    # backwards (at most max_sequences_per_user), so every position is trained once an epoch and
    # the most recent one always: SASRec's training examples, without its truncation; "latest":
    # the random windows plus each user's latest one. "auto": tiled for the SASRec objective
    # (whose every position predicts its next positive, so a tile trains each such pair once),
    # random for the others.
    window_ends: Literal["auto", "random", "tiled", "latest"] = "random"

    def __post_init__(self) -> None:
        assert self.objective in OBJECTIVES, f"objective must be one of {OBJECTIVES}"
        assert 0 < self.sequence_fraction <= 1, "sequence_fraction must be in (0, 1]"

    @property
    def windows(self) -> Literal["random", "tiled", "latest"]:
        """`window_ends` with "auto" resolved for this objective."""
        if self.window_ends == "auto":
            return "tiled" if self.objective == "sasrec" else "random"
        return self.window_ends


@dataclass
class TrainBatch:
    """seq: the windows. One row per (embedding, positive) pair:

    pair_b:   [N] int64  batch row of the embedding
    pair_pos: [N] int64  position of the embedding in its window
    label_row: [N] int64 flat timeline row of the positive
    pin_row:  [N] int64  catalogue row of the positive     pin_id: [N] int64
    user_id:  [N] int64  the pair's user
    """

    seq: SeqBatch
    pair_b: torch.Tensor
    pair_pos: torch.Tensor
    label_row: torch.Tensor
    pin_row: torch.Tensor
    pin_id: torch.Tensor
    user_id: torch.Tensor

    @property
    def emb_key(self) -> torch.Tensor:
        return self.pair_b * self.seq.ts.shape[1] + self.pair_pos


class SequenceSampler:
    """Draws TrainBatches from timelines; batch(step) is deterministic in (seed, step)."""

    def __init__(
        self, timelines: Timelines, catalog: PinCatalog, config: SamplerConfig, seed: int = 0
    ) -> None:
        tl = timelines
        self.tl, self.catalog, self.config, self.seed = tl, catalog, config, seed
        self.owner = np.repeat(np.arange(tl.n_users), tl.lengths)  # (T,)
        # Composite key (user, time) so that one searchsorted finds a row's label range.
        t0 = int(tl.ts.min()) if len(tl.ts) else 0
        key = (self.owner.astype(np.int64) << 33) + (tl.ts - t0)
        self.pos_rows = np.flatnonzero(tl.positive)  # (P,) flat rows of positives, sorted
        pos_key = key[self.pos_rows]
        if config.label_order == "rows":  # the first positive in a later row
            self.label_lo = np.searchsorted(self.pos_rows, np.arange(len(key)), side="right")
        else:  # the first positive strictly later in time
            self.label_lo = np.searchsorted(pos_key, key, side="right")
        if config.window_days is None:  # up to the user's last positive
            user_end = tl.offsets[self.owner + 1]
            self.label_hi = np.searchsorted(self.pos_rows, user_end, side="left")
        else:
            horizon = int(config.window_days * DAY_S)
            self.label_hi = np.searchsorted(pos_key, key + horizon, side="right")
        self.n_labels = np.maximum(self.label_hi - self.label_lo, 0)  # (T,)
        self.eligible = np.flatnonzero(self.n_labels > 0)
        per_user = np.bincount(self.owner[self.eligible], minlength=tl.n_users)
        self.quota = np.minimum(
            config.max_sequences_per_user,
            np.ceil(per_user * config.sequence_fraction).astype(np.int64),
        )
        # Every epoch holds the `_fixed` window ends plus `_random_quota` random ones per user
        # drawn from `_candidates`: tiled = tiles only, latest = each user's latest plus random
        # ones among the rest, random = random ones only.
        self._fixed = np.empty(0, dtype=np.int64)
        self._candidates = self.eligible
        if config.windows == "tiled":
            self._fixed, self._candidates = self._tiled_ends(), self._fixed
            self.quota = np.zeros_like(self.quota)
        elif config.windows == "latest":
            self._fixed = self._last_eligible()
            self._candidates = np.setdiff1d(self.eligible, self._fixed, assume_unique=True)
            self.quota = np.minimum(self.quota, np.maximum(per_user - 1, 0))
        self._random_quota = self.quota
        self.quota = self.quota + np.bincount(self.owner[self._fixed], minlength=tl.n_users)
        self._pool_epoch = -1
        self._pool = np.empty(0, dtype=np.int64)

    @property
    def sequences_per_epoch(self) -> int:
        return int(self.quota.sum())

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.sequences_per_epoch // batch_size)

    def epoch_pool(self, epoch: int) -> np.ndarray:
        """The epoch's sequence ends ([S] int64 flat rows), shuffled."""
        if epoch != self._pool_epoch:
            rng = np.random.default_rng([self.seed, 1, epoch])
            cand = self._candidates
            order = np.lexsort((rng.random(len(cand)), self.owner[cand]))
            cand = cand[order]  # grouped by user, random within user
            owners = self.owner[cand]
            first = np.searchsorted(owners, owners, side="left")
            rank = np.arange(len(cand)) - first
            chosen = np.concatenate([cand[rank < self._random_quota[owners]], self._fixed])
            self._pool = chosen[rng.permutation(len(chosen))]
            self._pool_epoch = epoch
        return self._pool

    def _last_eligible(self) -> np.ndarray:
        """[users with a label] int64: each user's last row with a label."""
        owners = self.owner[self.eligible]  # eligible rows are sorted, so grouped by user
        return self.eligible[np.flatnonzero(np.append(owners[1:] != owners[:-1], True))]

    def _tiled_ends(self) -> np.ndarray:
        """[S] int64 window ends: each user's last eligible row, then every max_len rows back
        while an eligible row remains, at most max_sequences_per_user per user."""
        M, cap = self.config.max_len, self.config.max_sequences_per_user
        owners = self.owner[self.eligible]  # eligible rows are sorted, so grouped by user
        last = self._last_eligible()
        first = self.eligible[np.searchsorted(owners, self.owner[last])]
        n = np.minimum((last - first) // M + 1, cap)  # tiles per user
        back = np.arange(int(n.max()) if len(n) else 0)
        ends = last[:, None] - M * back[None, :]
        return ends[back[None, :] < n[:, None]]

    def batch(self, step: int, batch_size: int) -> TrainBatch:
        if len(self.eligible) == 0:
            raise ValueError("no user has a positive within the label window: nothing to train on")
        spe = self.steps_per_epoch(batch_size)
        pool = self.epoch_pool(step // spe)
        i = (step % spe) * batch_size
        ends = pool[i : i + batch_size]
        return self.build(ends, np.random.default_rng([self.seed, 2, step]))

    def build(self, ends: np.ndarray, rng: np.random.Generator) -> TrainBatch:
        """Windows ending at `ends` plus their (embedding, positive) pairs for the objective."""
        seq = window_batch(self.tl, self.catalog, ends, self.config.max_len)
        b, pos, label = self.pairs(ends, rng)
        return TrainBatch(
            seq=seq,
            pair_b=torch.from_numpy(b.astype(np.int64)),
            pair_pos=torch.from_numpy(pos.astype(np.int64)),
            label_row=torch.from_numpy(label.astype(np.int64)),
            pin_row=torch.from_numpy(self.tl.pin_row[label]),
            pin_id=torch.from_numpy(self.tl.pin_id[label]),
            user_id=torch.from_numpy(self.tl.user_ids[self.owner[ends[b]]]),
        )

    def pairs(
        self, ends: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The objective's (window, position, label row) triples for windows ending at `ends`,
        without building the windows: [N] int64 each."""
        starts = np.maximum(self.tl.offsets[self.owner[ends]], ends - self.config.max_len + 1)
        lengths = ends - starts + 1
        objective = self.config.objective
        if objective in ("next_action", "all_action"):
            b = np.arange(len(ends))
            pos = lengths - 1
            if objective == "next_action":
                return b, pos, self.pos_rows[self.label_lo[ends]]
            return self._sample_many(ends, b, pos, rng)
        grid = np.arange(int(lengths.max()) if len(ends) else 1)
        valid = grid[None, :] < lengths[:, None]
        rows = np.where(valid, starts[:, None] + grid[None, :], 0)
        has_label = valid & (self.n_labels[rows] > 0)  # (B, M)
        if objective == "dense_all_action":
            # Random eligible positions: rank random keys, keep the first dense_positions.
            keys = np.where(has_label, rng.random(has_label.shape), np.inf)
            rank = np.argsort(np.argsort(keys, axis=1), axis=1)
            has_label &= rank < self.config.dense_positions
        b, pos = np.nonzero(has_label)
        r = rows[b, pos]
        if objective == "sasrec":
            return b, pos, self.pos_rows[self.label_lo[r]]
        pick = (rng.random(len(r)) * self.n_labels[r]).astype(np.int64)
        return b, pos, self.pos_rows[self.label_lo[r] + pick]

    def label_counts(self, batch_size: int, steps: int | None = None) -> np.ndarray:
        """[N catalogue rows] int64: how often each item is drawn as a label over the first
        `steps` batches (default: one epoch) — the frequency that logQ must correct for, which
        differs from the items' share of positives (heavy users are capped, objectives weight
        positions differently)."""
        spe = self.steps_per_epoch(batch_size)
        counts = np.zeros(len(self.catalog), dtype=np.int64)
        for step in range(min(spe, steps or spe)):
            pool = self.epoch_pool(0)
            ends = pool[step * batch_size : (step + 1) * batch_size]
            _, _, label = self.pairs(ends, np.random.default_rng([self.seed, 2, step]))
            counts += np.bincount(self.tl.pin_row[label], minlength=len(self.catalog))
        return counts

    def _sample_many(
        self, ends: np.ndarray, b: np.ndarray, pos: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """all_action: up to max_positives distinct positives from each window's K-day future."""
        P = self.config.max_positives
        out_b, out_pos, out_label = [], [], []
        for j, e in enumerate(ends):
            lo, n = int(self.label_lo[e]), int(self.n_labels[e])
            take = np.arange(n) if n <= P else rng.choice(n, size=P, replace=False)
            out_b.append(np.full(len(take), b[j]))
            out_pos.append(np.full(len(take), pos[j]))
            out_label.append(self.pos_rows[lo + take])
        return np.concatenate(out_b), np.concatenate(out_pos), np.concatenate(out_label)

"""Training the reference SASRec (`model_core.model.sasrec`) with the same affordances as
PinnerFormer: a warmup + cosine learning-rate schedule fitted to the wall-clock cap, a moving
average of the weights that validation, early stopping and the returned model read, early
stopping on the same validation split, the same budget. `SASRecConfig.affordances=False` is the
original recipe (a constant learning rate, the raw weights)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

from model_core.data.timelines import PinCatalog, Timelines
from model_core.model.sasrec import SASRec, SASRecConfig, left_padded
from model_core.training.config import TrainConfig
from model_core.training.schedule import fitted_schedule, lr_at
from model_core.training.weight_average import averaged

log = logging.getLogger(__name__)


def next_positive_labels(tl: Timelines) -> np.ndarray:
    """[T] int64: for every flat row, the catalogue row + 1 of the user's next positive action
    strictly after it (0 when there is none)."""
    owner = np.repeat(np.arange(tl.n_users), tl.lengths)
    pos_rows = np.flatnonzero(tl.positive)
    nxt = np.searchsorted(pos_rows, np.arange(len(owner)), side="right")  # first positive > row
    label = np.zeros(len(owner), dtype=np.int64)
    ok = nxt < len(pos_rows)
    ok[ok] &= owner[pos_rows[nxt[ok]]] == owner[ok]
    label[ok] = tl.pin_row[pos_rows[nxt[ok]]] + 1
    return label


def _negatives(
    users: np.ndarray,
    shape: tuple[int, ...],
    seen: np.ndarray,
    n_items: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Uniform item indices in [1, n_items] that user `users[b]` never interacted with
    (`seen`: sorted keys user * (n_items + 1) + item), by rejection (a few rounds suffice)."""
    neg = rng.integers(1, n_items + 1, size=shape)
    for _ in range(10):
        keys = users.reshape(-1, *([1] * (len(shape) - 1))) * (n_items + 1) + neg
        pos = np.minimum(np.searchsorted(seen, keys), len(seen) - 1)
        clash = seen[pos] == keys
        if not clash.any():
            break
        neg[clash] = rng.integers(1, n_items + 1, size=int(clash.sum()))
    return neg


@dataclass
class SASRecResult:
    epochs: int
    best_epoch: int
    best_score: float
    seconds: float
    sequences_per_s: float
    stop_reason: str


def fit_sasrec(
    train_tl: Timelines,
    catalog: PinCatalog,
    cfg: SASRecConfig,
    validate: Callable[[SASRec], float] | None = None,
) -> tuple[SASRec, SASRecResult]:
    """Train on `train_tl` (one sequence per user per epoch: the newest max_len actions with a
    next positive), early-stopping on `validate` (best weights restored). With
    `cfg.affordances` the learning rate follows PinnerFormer's warmup + cosine schedule, fitted
    to `max_minutes` as it goes, and validation reads a moving average of the weights over
    `cfg.ema_epochs` epochs (`model_core.training.trainer` does both the same way)."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 11])
    n_items = len(catalog)
    model = SASRec(n_items, cfg)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=cfg.betas)
    labels = next_positive_labels(train_tl)
    owner = np.repeat(np.arange(train_tl.n_users), train_tl.lengths)
    has_label = np.flatnonzero(labels > 0)
    # Each user's training window ends at their last row that still has a next positive.
    last = np.full(train_tl.n_users, -1)
    np.maximum.at(last, owner[has_label], has_label)
    users = np.flatnonzero(last >= 0)
    seen = np.unique(owner * (n_items + 1) + train_tl.pin_row + 1)
    steps_per_epoch = max(1, math.ceil(len(users) / cfg.batch_size))
    n_steps = cfg.max_epochs * steps_per_epoch
    sched = TrainConfig(lr=cfg.lr, steps=n_steps)  # warmup + cosine as PinnerFormer's
    ema = averaged(model, cfg.ema_epochs * steps_per_epoch, n_steps) if cfg.affordances else None
    served = model if ema is None else cast(SASRec, ema.module)
    deadline = None if cfg.max_minutes is None else time.monotonic() + 60 * cfg.max_minutes
    best: Best = (-math.inf, 0, {k: v.clone() for k, v in served.state_dict().items()})
    t0, seqs, epoch, stop, step, schedule = time.perf_counter(), 0, 0, "max_epochs", 0, n_steps
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = rng.permutation(users)
        total = 0.0
        for i in range(steps_per_epoch):
            if cfg.affordances:
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, sched, schedule)
            batch_users = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            loss = _batch_loss(model, train_tl, batch_users, last, labels, seen, cfg, rng)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if ema is not None:
                ema.update_parameters(model)
            step += 1
            total += float(loss.item())
            seqs += len(batch_users)
        elapsed = time.perf_counter() - t0
        if epoch % cfg.log_every_epochs == 0:
            log.info(
                "sasrec-%s epoch %d loss %.4f %.0f seq/s", cfg.loss, epoch,
                total / steps_per_epoch, seqs / elapsed,
            )  # fmt: skip
        if validate is not None and epoch % cfg.eval_every_epochs == 0:
            eta = elapsed / epoch * (cfg.max_epochs - epoch)
            if deadline is not None:
                eta = min(eta, max(0.0, deadline - time.monotonic()))
            best = _validated(served, validate, epoch, best, cfg, eta)
            if epoch - best[1] >= cfg.patience * cfg.eval_every_epochs:
                stop = "early_stopping"
                break
        if deadline is not None and cfg.affordances:
            schedule = fitted_schedule(step, 0, time.perf_counter() - t0, deadline, n_steps)
        if deadline is not None and time.monotonic() > deadline:
            stop = "max_minutes"
            break
    if validate is not None:
        model.load_state_dict(best[2])
    elif ema is not None:
        model.load_state_dict(served.state_dict())
    seconds = time.perf_counter() - t0
    model.eval()
    return model, SASRecResult(epoch, best[1], best[0], seconds, seqs / seconds, stop)


Best = tuple[float, int, dict[str, torch.Tensor]]  # score, epoch, the weights that scored it


def _validated(
    served: SASRec,
    validate: Callable[[SASRec], float],
    epoch: int,
    best: Best,
    cfg: SASRecConfig,
    eta: float,
) -> Best:
    """Score `served` after `epoch`; the best so far, these weights when they beat it."""
    served.eval()
    score = float(validate(served))
    if score > best[0]:
        best = (score, epoch, {k: v.clone() for k, v in served.state_dict().items()})
    log.info(
        "sasrec-%s epoch %d validation %.4f (best %.4f at epoch %d) eta <= %.0fs",
        cfg.loss, epoch, score, best[0], best[1], eta,
    )  # fmt: skip
    return best


def _batch_loss(
    model: SASRec,
    train_tl: Timelines,
    batch_users: np.ndarray,
    last: np.ndarray,
    labels: np.ndarray,
    seen: np.ndarray,
    cfg: SASRecConfig,
    rng: np.random.Generator,
) -> torch.Tensor:
    """The batch's loss: full cross-entropy ("ce") or BCE against one unseen negative ("bce")."""
    items, rows = left_padded(train_tl, last[batch_users], cfg.max_len)
    target = np.where(rows >= 0, labels[np.maximum(rows, 0)], 0)  # (B, L), 0 = no label
    h = model(torch.from_numpy(items))  # (B, L, d)
    t = torch.from_numpy(target)
    mask = t > 0
    if cfg.loss == "ce":
        logits = h[mask] @ model.item_emb.weight[1:].T  # (n, N)
        return F.cross_entropy(logits, t[mask] - 1)
    n_items = model.item_emb.num_embeddings - 1
    neg = torch.from_numpy(_negatives(batch_users, target.shape, seen, n_items, rng))
    pos_logit = (h * model.item_emb(t)).sum(-1)[mask]
    neg_logit = (h * model.item_emb(neg)).sum(-1)[mask]
    return F.binary_cross_entropy_with_logits(
        pos_logit, torch.ones_like(pos_logit)
    ) + F.binary_cross_entropy_with_logits(neg_logit, torch.zeros_like(neg_logit))

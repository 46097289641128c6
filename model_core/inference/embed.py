"""Batched inference: user embeddings from each user's last M actions, pin embeddings (§3.6)."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.data.windows import window_batch
from model_core.model.pinnerformer import PinnerFormer

# Users per inference batch. On a CPU, glibc hands a freed block over 32 MiB back to the OS, so a
# batch whose largest activation (the FFN's [tokens, 4H] float32) is bigger page-faults all of it
# back in on every batch: 1024 users of 64 actions at H=64 (64 MiB) ran 1.6x slower than 256
# (16 MiB), with 270k page faults a pass against none. Raise it on a GPU.
INFERENCE_BATCH_SIZE = 256


@torch.no_grad()
def embed_users(
    model: PinnerFormer,
    timelines: Timelines,
    catalog: PinCatalog,
    batch_size: int = INFERENCE_BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """[U, D] float32: for every user in `timelines`, the embedding at their latest action."""
    return embed_windows(model, timelines, catalog, timelines.offsets[1:] - 1, batch_size, device)


@torch.no_grad()
def embed_windows(
    model: PinnerFormer,
    timelines: Timelines,
    catalog: PinCatalog,
    ends: np.ndarray,
    batch_size: int = INFERENCE_BATCH_SIZE,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """[S, D] float32: the embedding of the window of at most M actions ending at each flat row
    `ends` ([S] int64), i.e. the user's embedding as of that action."""
    model.eval().to(device)
    out = np.empty((len(ends), model.config.out_dim), dtype=np.float32)
    for i in range(0, len(ends), batch_size):
        seq = window_batch(timelines, catalog, ends[i : i + batch_size], model.config.max_len)
        out[i : i + batch_size] = model.user_embedding(seq.to(device)).float().cpu().numpy()
    return out


@torch.no_grad()
def embed_pins(
    model: PinnerFormer,
    content: np.ndarray,
    pin_ids: np.ndarray,
    batch_size: int = 65_536,
    device: torch.device | str = "cpu",
) -> np.ndarray:
    """content [N, C] float32, pin_ids [N] int64 → [N, D] float32 unit-norm pin embeddings."""
    model.eval().to(device)
    out = np.empty((len(content), model.config.out_dim), dtype=np.float32)
    for i in range(0, len(content), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(content[i : i + batch_size])).to(device)
        ids = torch.from_numpy(np.ascontiguousarray(pin_ids[i : i + batch_size])).to(device)
        out[i : i + batch_size] = model.pin_tower(chunk, ids).float().cpu().numpy()
    return out


def user_item_vectors(
    model: torch.nn.Module,
    history: Timelines,
    catalog: PinCatalog,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Any scorer that ranks items by dot product: (users [U, D], items [N catalogue rows, D]).

    PinnerFormer embeds through its two towers on `device` (None: where the model already is, so
    a validation pass in the middle of GPU training never moves it); other models (the reference
    SASRec) provide a `vectors(history, catalog)` method.
    """
    if isinstance(model, PinnerFormer):
        device = device or next(model.parameters()).device
        users = embed_users(model, history, catalog, device=device)
        return users, embed_pins(model, catalog.embeddings, catalog.pin_ids, device=device)
    vectors = cast(Callable[[Timelines, PinCatalog], tuple[np.ndarray, np.ndarray]], model.vectors)
    return vectors(history, catalog)

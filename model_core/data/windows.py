"""A user's recent actions as model input: right-padded windows of a timeline, batched."""

from __future__ import annotations

import numpy as np
import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import SeqBatch


def window_batch(tl: Timelines, catalog: PinCatalog, ends: np.ndarray, max_len: int) -> SeqBatch:
    """Right-padded windows of at most `max_len` actions ending at flat rows `ends` ([B] int64)."""
    owner = np.searchsorted(tl.offsets, ends, side="right") - 1
    starts = np.maximum(tl.offsets[owner], ends - max_len + 1)
    lengths = ends - starts + 1
    M = int(lengths.max()) if len(ends) else 1
    pos = np.arange(M)
    valid = pos[None, :] < lengths[:, None]
    idx = np.where(valid, starts[:, None] + pos[None, :], 0)  # (B, M)
    content = catalog.embeddings[tl.pin_row[idx]] * valid[..., None]
    return SeqBatch(
        content=torch.from_numpy(np.ascontiguousarray(content, dtype=np.float32)),
        action=torch.from_numpy(np.where(valid, tl.action[idx], 0)),
        surface=torch.from_numpy(np.where(valid, tl.surface[idx], 0)),
        duration=torch.from_numpy(np.where(valid, tl.duration[idx], 0).astype(np.float32)),
        ts=torch.from_numpy(np.where(valid, tl.ts[idx], 0)),
        lengths=torch.from_numpy(lengths.astype(np.int64)),
        pin_id=torch.from_numpy(np.where(valid, tl.pin_id[idx], 0)),
    )

"""The DDP idiom in one place: who this rank is, and rank 0's value broadcast to every rank."""

from __future__ import annotations

import torch
import torch.distributed as dist


def world() -> tuple[int, int]:
    """(rank, world size); (0, 1) without a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_rank0() -> bool:
    return world()[0] == 0


def from_rank0(value: int, device: torch.device) -> int:
    """`value` as rank 0 has it (every rank calls this at the same step); itself without DDP.
    `device`: the rank's training device (NCCL broadcasts CUDA tensors only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return value
    t = torch.tensor([value], dtype=torch.int64, device=device)
    dist.broadcast(t, src=0)
    return int(t.item())

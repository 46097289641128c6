"""Run a function in N gloo processes on this machine (CPU DDP tests)."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

import torch.multiprocessing as mp


def spawn_gloo(worker: Callable[..., None], tmp_path: Path, nprocs: int = 2) -> None:
    """worker(rank, init_file, out_dir) in `nprocs` processes; each calls init_process_group."""
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        os.environ.setdefault("MASTER_PORT", str(s.getsockname()[1]))
    mp.spawn(worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=nprocs, join=True)

"""The sampled-softmax loss (forward + backward), before and after, in ONE run.

    .venv/bin/python benchmarks/bench_loss.py [--commit REV] [--threads N]

"before" is `model_core/training/loss.py` at REV (default BASELINE_COMMIT: the loss before its
exclusions became sparse (row, candidate) pairs), imported from `git show`; "after" is the
working tree in fp32 and with its negative matmuls in bf16 (what autocast uses). Shapes are the
training steps' on 2 cores: the SASRec objective with the mixed pool (8,192 pairs, 64 per user,
~7k candidates) and the whole catalogue as negatives (1,024 pairs x 18,357 items: Amazon Sports;
8,192 x 9,724: MovieLens; 1,024 x 55,233: the Taobao sample). The machine is shared: read the
ratios.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

import torch
import torch.nn.functional as F

BASELINE_COMMIT = "26e7fdf"
ROOT = Path(__file__).resolve().parents[1]
SHAPES = (
    (8192, 2048, "mixed"),
    (1024, 18357, "catalog"),
    (8192, 9724, "catalog"),
    (1024, 55233, "catalog"),
)


def load_loss(rev: str, tmp: Path) -> ModuleType:
    """The loss module as of `rev` (model_core/training/loss.py; model_core/loss.py before the
    stage subpackages)."""
    for name in ("model_core/training/loss.py", "model_core/loss.py"):
        show = subprocess.run(["git", "show", f"{rev}:{name}"], cwd=ROOT, capture_output=True)
        if show.returncode == 0:
            break
    show.check_returncode()
    source = show.stdout
    path = tmp / "loss_before.py"
    path.write_bytes(source)
    spec = importlib.util.spec_from_file_location("loss_before", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loss_before"] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def seconds(mod: ModuleType, n: int, k: int, negatives: str, extra: tuple, repeat: int) -> float:
    """Best of `repeat` forward + backward passes of one step's loss."""
    g = torch.Generator().manual_seed(0)
    user = F.normalize(torch.randn(n, 64, generator=g), dim=1).requires_grad_()
    items = F.normalize(torch.randn(k, 64, generator=g), dim=1).requires_grad_()
    users = torch.arange(n) // 64  # 64 pairs per user, as in a SASRec-objective window
    ids = torch.randint(0, k, (n,), generator=g)
    cfg = mod.LossConfig(negatives=negatives)
    best = float("inf")
    for _ in range(repeat):
        positives = mod.Candidates(items[ids], ids, users, torch.zeros(n))
        pool = mod.Candidates(items, torch.arange(k), torch.full((k,), -1), torch.zeros(k))
        t0 = time.perf_counter()
        loss = mod.sampled_softmax_loss(
            user, positives, torch.arange(n), torch.tensor(0.05), cfg, pool, *extra
        )
        loss.backward()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--commit", default=BASELINE_COMMIT, help="the 'before' revision")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from model_core.training import loss as after

    with tempfile.TemporaryDirectory() as tmp:
        before = load_loss(args.commit, Path(tmp))
        print(f"# loss forward + backward, {args.threads} thread(s), before = {args.commit}")
        print(
            f"{'pairs':>6} {'pool':>6} {'negatives':<9} {'before s':>9} {'fp32 s':>8} "
            f"{'x':>5} {'bf16 s':>8} {'x':>5}"
        )
        for n, k, negatives in SHAPES:
            t_before = seconds(before, n, k, negatives, (), args.repeat)
            t_fp32 = seconds(after, n, k, negatives, (), args.repeat)
            t_bf16 = seconds(after, n, k, negatives, (torch.bfloat16,), args.repeat)
            print(
                f"{n:>6} {k:>6} {negatives:<9} {t_before:>9.3f} {t_fp32:>8.3f} "
                f"{t_before / t_fp32:>5.2f} {t_bf16:>8.3f} {t_before / t_bf16:>5.2f}"
            )


if __name__ == "__main__":
    main()

"""Training throughput of both headline objectives, before and after, in ONE run.

    make bench            # or: .venv/bin/python benchmarks/bench_training.py [--quick]

"before" is this repository at BASELINE_COMMIT (the code before the learning-quality work),
extracted with `git archive` and timed in a subprocess on the same data and sizes; "after" is the
working tree, in fp32 and with bf16 autocast. Each row trains `fit` for a fixed number of steps
(B = 128, M = 64, H = 64, L = 2) on the synthetic world and reports sequences/s, after
`--warmup` untimed steps on other batches (a training run's steady state: a fresh process's first
steps pay one-off costs, such as oneDNN compiling a bf16 kernel for each new shape); the step's
achieved GFLOP/s (FLOPs counted by torch's FlopCounterMode on one step) is printed next to what
this machine's 1024² matmul reaches in fp32 and bf16. The machine is shared: every run is
repeated `--rounds` times, interleaved (before, after fp32, after bf16, before, ...), and the table
gives each run's median sequences/s and the median of its per-round ratios to "before".
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

BASELINE_COMMIT = "8ec3c79"
ROOT = Path(__file__).resolve().parents[1]

# Runs in a fresh interpreter against either tree: only APIs both share, feature-tested.
SNIPPET = r"""
import dataclasses, json, sys, time
import polars as pl, torch
torch.set_num_threads(int(sys.argv[3]))
try:  # the stage subpackages
    from model_core.data import synthetic
    from model_core.features.actions import FeatureConfig
    from model_core.model.pinnerformer import ModelConfig
    from model_core.training.recipe import RecipeConfig, fit
    from model_core.training.sampler import SamplerConfig, SequenceSampler
    from model_core.data.timelines import PinCatalog, Timelines
    from model_core.training.config import TrainConfig
except ImportError:  # the flat layout before them
    from model_core import synthetic
    from model_core.features import FeatureConfig
    from model_core.model import ModelConfig
    from model_core.recipe import RecipeConfig, fit
    from model_core.sampler import SamplerConfig, SequenceSampler
    from model_core.timelines import PinCatalog, Timelines
    from model_core.trainer import TrainConfig
objective, steps, amp = sys.argv[1], int(sys.argv[2]), sys.argv[4]
world = synthetic.WorldConfig.tiny() if sys.argv[5] == "quick" else synthetic.WorldConfig()
days = world.dates[:28]
actions = pl.concat(list(synthetic.generate_range(world, days[0], days[-1])))
catalog = PinCatalog.from_frame(synthetic.pin_features(world))
features = FeatureConfig(content_dim=world.content_dim)
tl, _ = Timelines.from_actions(actions, catalog, features)
train_kw = dict(steps=steps, log_every=steps)
if "amp" in TrainConfig.__dataclass_fields__:
    train_kw["amp"] = amp
cfg = RecipeConfig(
    model=ModelConfig(features=features),
    sampler=SamplerConfig(objective=objective),
    train=TrainConfig(**train_kw),
)
warm = int(sys.argv[6])
if warm:  # a different seed: other batches, so the timed run meets shapes of its own
    warm_train = dataclasses.replace(cfg.train, steps=warm, seed=1)
    fit(tl, catalog, dataclasses.replace(cfg, train=warm_train))
fitted = fit(tl, catalog, cfg)
flops = None
try:
    from torch.utils.flop_counter import FlopCounterMode
    sampler = SequenceSampler(tl, catalog, cfg.sampler)
    b = sampler.batch(0, 128)
    n = len(b.pin_row)
    rows = torch.cat([b.pin_row, torch.randint(len(catalog), (cfg.loss.n_random,))])
    emb = torch.from_numpy(catalog.embeddings)[rows]
    ids = torch.from_numpy(catalog.pin_ids)[rows]
    model = fitted.model.train()
    with FlopCounterMode(display=False) as counter:
        u, p = model(b.seq, b.pair_b, b.pair_pos, emb, ids)
        (u @ p.T).logsumexp(1).sum().backward()  # the loss's [N, K] matmul and its gradient
    flops = counter.get_total_flops()
except Exception as exc:  # a FLOP count is a nice-to-have; the throughput is the figure
    print("flop count failed:", exc, file=sys.stderr)
print(json.dumps({"seq_per_s": fitted.result.sequences_per_s, "step_flops": flops}))
"""


def matmul_gflops(dtype: torch.dtype, n: int = 1024, repeat: int = 20) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    t0 = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - t0) / 1e9


def measure(
    tree: Path, objective: str, steps: int, threads: int, amp: str, size: str, warm: int
) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, "-c", SNIPPET, objective, str(steps), str(threads), amp, size, str(warm)],
        env=env,
        cwd=tree,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="tiny world, few steps")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repeats of every run")
    parser.add_argument(
        "--warmup", type=int, default=10, help="untimed steps (other batches) before the timing"
    )
    parser.add_argument("--before", default=BASELINE_COMMIT, help="the commit 'before' is timed at")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    steps = 10 if args.quick else 40
    size = "quick" if args.quick else "full"
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
    print(f"# {args.threads} thread(s); 1024² matmul: fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f}")
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(
            ["git", "archive", args.before, "model_core"], cwd=ROOT, capture_output=True
        )
        subprocess.run(["tar", "-x", "-C", tmp], input=archive.stdout, check=True)
        runs = (
            ("before", Path(tmp), "off"),
            ("after fp32", ROOT, "off"),
            ("after bf16", ROOT, "on"),
        )
        print(
            f"\n## training step, B=128 M=64 H=64 L=2, {steps} steps after {args.warmup} "
            f"warm-up steps, median of {args.rounds} rounds (before = {args.before})"
        )
        print(f"{'objective':<18}{'run':<12}{'seq/s':>8}{'x before':>10}{'GFLOP/s':>10}")
        for objective in ("dense_all_action", "sasrec"):
            got: dict[str, list[dict]] = {name: [] for name, _, _ in runs}
            for _ in range(args.rounds):
                for name, tree, amp in runs:
                    got[name].append(
                        measure(tree, objective, steps, args.threads, amp, size, args.warmup)
                    )
            for name, _, _ in runs:
                rates = [r["seq_per_s"] for r in got[name]]
                ratio = statistics.median(
                    r / b["seq_per_s"] for r, b in zip(rates, got["before"], strict=True)
                )
                flops = got[name][0]["step_flops"]
                seq_s = statistics.median(rates)
                gflops = f"{flops * seq_s / 128 / 1e9:.1f}" if flops else ""
                print(f"{objective:<18}{name:<12}{seq_s:>8.0f}{ratio:>10.2f}{gflops:>10}")


if __name__ == "__main__":
    main()

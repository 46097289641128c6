"""Speed and memory of the model's hot paths, as ratios against baselines measured in the same run.

    make bench            # or: .venv/bin/python benchmarks/bench_model.py [--quick]

Prints, on this machine's device (CUDA when present):
- training step (forward + backward + AdamW) of the user tower at several window lengths M,
  and fused SDPA attention vs the same attention written out by hand (the baseline);
- the sampled-softmax loss at several pool sizes, against the in-batch-only pool;
- the on-the-fly sampler's batch build vs the training step it feeds;
- batched inference throughput (users/s), against the full tower read at the last action (the
  last block for the last actions only: `UserTower.latest`), and peak RSS.
The machine is shared and noisy: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import math
import resource
import time
from collections.abc import Callable

import numpy as np
import polars as pl
import torch
import torch.nn.functional as F

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig, SeqBatch
from model_core.inference.embed import embed_users
from model_core.model.packing import Packing
from model_core.model.pinnerformer import CausalSelfAttention, ModelConfig, PinnerFormer, UserTower
from model_core.training.loss import Candidates, LossConfig, sampled_softmax_loss
from model_core.training.sampler import SamplerConfig, SequenceSampler


def timeit(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds per call after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def manual_attention(self: CausalSelfAttention, x: torch.Tensor, packing: Packing) -> torch.Tensor:
    """The baseline: causal attention written out (softmax over a masked score matrix) on the
    whole padded batch."""
    (B, M), H = packing.shape, x.shape[1]
    qkv = packing.pad(self.qkv(x)).view(B, M, 3, self.n_heads, H // self.n_heads)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mask = torch.ones(M, M, dtype=torch.bool, device=x.device).tril()
    y = F.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1) @ v
    return self.proj(y.transpose(1, 2).reshape(B * M, H)[packing.tokens])


def random_seq(B: int, M: int, C: int, device: torch.device) -> SeqBatch:
    return SeqBatch(
        content=torch.randn(B, M, C),
        action=torch.randint(1, 5, (B, M)),
        surface=torch.randint(1, 4, (B, M)),
        duration=torch.rand(B, M) * 30,
        ts=1_760_000_000 + torch.randint(1, 600, (B, M)).cumsum(1),
        lengths=torch.full((B,), M),
    ).to(device)


def bench_step(device: torch.device, quick: bool) -> None:
    print("\n## training step of the user tower (B=128, H=64, L=2, 8 pairs per window)")
    print(f"{'M':>5}{'SDPA ms':>10}{'manual ms':>11}{'manual/SDPA':>13}{'seq/s (SDPA)':>14}")
    for M in (32, 64) if quick else (32, 64, 128, 256):
        cfg = ModelConfig(features=FeatureConfig(content_dim=32), max_len=M)
        model = PinnerFormer(cfg).to(device)
        opt = torch.optim.AdamW(model.parameters())
        seq = random_seq(128, M, 32, device)
        pair_b = torch.arange(128, device=device).repeat_interleave(8)
        pair_pos = torch.randint(0, M, (len(pair_b),), device=device)
        items = torch.randn(len(pair_b) + 2048, 32, device=device)
        ids = torch.arange(len(items), device=device)

        def step() -> None:
            u, p = model(seq, pair_b, pair_pos, items, ids)
            (u.sum() + p.sum()).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        fused = timeit(step, 3 if quick else 5)
        original = CausalSelfAttention.forward
        CausalSelfAttention.forward = manual_attention  # type: ignore[method-assign]
        try:
            manual = timeit(step, 3 if quick else 5)
        finally:
            CausalSelfAttention.forward = original  # type: ignore[method-assign]
        print(
            f"{M:>5}{fused * 1e3:>10.1f}{manual * 1e3:>11.1f}{manual / fused:>13.2f}"
            f"{128 / fused:>14.0f}"
        )


def bench_loss(device: torch.device, quick: bool) -> None:
    print("\n## sampled-softmax loss, forward + backward (D=64)")
    print(f"{'pairs':>7}{'random':>8}{'ms':>9}{'x in-batch only':>17}")
    for n in (1024,) if quick else (1024, 4096, 8192):  # 8192: SASRec pairs per batch
        u = F.normalize(torch.randn(n, 64, device=device), dim=-1).requires_grad_()
        pos = Candidates(
            F.normalize(torch.randn(n, 64, device=device), dim=-1).requires_grad_(),
            torch.randint(0, 50_000, (n,), device=device),
            torch.randint(0, n // 4, (n,), device=device),
            torch.full((n,), -3.0, device=device),
        )
        key = torch.arange(n, device=device)
        base = None
        for n_random in (0, 2048, 8192):
            rnd = Candidates(
                F.normalize(torch.randn(n_random, 64, device=device), dim=-1),
                torch.randint(0, 50_000, (n_random,), device=device),
                torch.full((n_random,), -1, device=device),
                torch.full((n_random,), -2.0, device=device),
            )
            cfg = LossConfig(negatives="mixed" if n_random else "in_batch", n_random=n_random)

            def run(rnd: Candidates = rnd, cfg: LossConfig = cfg) -> None:
                sampled_softmax_loss(u, pos, key, torch.tensor(0.05), cfg, rnd).backward()

            t = timeit(run, 3)
            base = base or t
            print(f"{n:>7}{n_random:>8}{t * 1e3:>9.1f}{t / base:>17.2f}")


def bench_sampler_and_inference(device: torch.device, quick: bool) -> None:
    world = synthetic.WorldConfig.tiny() if quick else synthetic.WorldConfig()
    days = world.dates[:28]
    actions = pl.concat(list(synthetic.generate_range(world, days[0], days[-1])))
    catalog = PinCatalog.from_frame(synthetic.pin_features(world))
    features = FeatureConfig(content_dim=world.content_dim)
    t0 = time.perf_counter()
    timelines, _ = Timelines.from_actions(actions, catalog, features)
    build = time.perf_counter() - t0
    print(f"\n## data: {len(actions)} actions → {timelines.n_users} timelines in {build:.2f}s")
    sampler = SequenceSampler(timelines, catalog, SamplerConfig())
    steps = iter(range(10_000))
    t_batch = timeit(lambda: sampler.batch(next(steps), 128), 10)
    print(
        f"sampler: {t_batch * 1e3:.1f} ms per batch of 128 sequences "
        f"({128 / t_batch:.0f} sequences/s, to compare with the training step above)"
    )
    model = PinnerFormer(ModelConfig(features=features)).to(device)
    t0 = time.perf_counter()
    embed_users(model, timelines, catalog, device=device)
    dt = time.perf_counter() - t0
    # the baseline: every block on every action, the output read at the last one
    latest = UserTower.latest
    UserTower.latest = full_tower_at_last  # type: ignore[method-assign]
    try:
        t0 = time.perf_counter()
        embed_users(model, timelines, catalog, device=device)
        full = time.perf_counter() - t0
    finally:
        UserTower.latest = latest  # type: ignore[method-assign]
    print(
        f"inference: {timelines.n_users / dt:.0f} users/s ({timelines.n_users} users, M=64); "
        f"{full / dt:.2f}x the full tower read at the last action"
    )


def full_tower_at_last(self: UserTower, batch: SeqBatch) -> torch.Tensor:
    rows = torch.arange(len(batch.lengths), device=batch.lengths.device)
    return self.at(batch, rows, batch.lengths - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, a few seconds")
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"# device: {device}, torch {torch.__version__}, threads {torch.get_num_threads()}")
    bench_step(device, args.quick)
    bench_loss(device, args.quick)
    bench_sampler_and_inference(device, args.quick)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\npeak RSS: {rss:.0f} MiB")


if __name__ == "__main__":
    main()

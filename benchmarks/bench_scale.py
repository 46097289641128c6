"""Cost of one daily partition at scale, by the share of users active that day.

    make bench     # bench_model.py, then this
    .venv/bin/python benchmarks/bench_scale.py [--users 1000000] [--quick]

The synthetic world scaled to --users users (and users/5 pins) provides a week of history, ingested
into a DuckDB warehouse with the pipeline's own write path, and yesterday's user_embeddings
partition holds a vector for every known user. Then three days follow with 1%, 10% and 100% of
all users active (nested sets chosen by a stable hash, 1 + Poisson(4) actions each). For each day
it times, and samples the peak RSS of, the stages of the daily path exactly as the assets run
them:

- ingest      replace_day(raw_actions) of the day (one transaction);
- timelines   write_user_timelines, as user_timelines runs it: the last M actions within the
              lookback, INSERT … SELECT inside DuckDB per chunk of active users, one transaction;
- inference   to_timelines + embed_users_sharded over S shards in worker processes;
- merge       write_partition: the day's rows plus every other user carried over, one
              transaction.

Fixed overhead = the intercept of a least-squares line of cost against active users. Training
throughput: torchrun with 1 and 2 gloo ranks on a sample of the world's users, through the same
worker entry point trained_model launches (model_core.training.worker), reported per rank.
The machine is shared: read the shape of the curves, not the third digit.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import polars as pl
import psutil
import torch

from model_core.data import synthetic
from model_core.data.shards import user_shard, write_training_data
from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.features.actions import FeatureConfig
from model_core.inference.sharded import embed_users_sharded, shared_pool
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.config import TrainConfig
from model_core.training.loss import LossConfig
from model_core.training.recipe import RecipeConfig
from model_core.training.sampler import SamplerConfig
from model_core.training.sketch import CountMinSketch
from model_core.training.worker import TrainJob
from pinner_assets.defs.timelines.assets import CHUNK_USERS, write_user_timelines
from pinner_assets.lib.embedding_store import NO_LABELS, write_partition
from pinner_assets.lib.launch import torchrun_command
from pinner_assets.lib.timelines import MAX_LEN, load_catalog, to_timelines
from pinner_assets.lib.warehouse import ensure_tables, replace_day, to_naive_utc

GB = 1024**3


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Samples this process's RSS plus its children's every 10 ms; yields {'peak_gb': ...}."""
    me = psutil.Process()
    out = {"peak_gb": 0.0}
    stop = threading.Event()

    def rss() -> int:
        total = me.memory_info().rss
        for child in me.children(recursive=True):
            try:
                total += child.memory_info().rss
            except psutil.NoSuchProcess:
                pass
        return total

    def sample() -> None:
        while not stop.is_set():
            out["peak_gb"] = max(out["peak_gb"], rss() / GB)
            time.sleep(0.01)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()
        out["peak_gb"] = max(out["peak_gb"], rss() / GB)


def measure(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS GiB)."""
    with peak_rss() as mem:
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
    return result, seconds, mem["peak_gb"]


def active_day(
    world: synthetic.WorldConfig, catalog: PinCatalog, day: datetime.date, fraction: float
) -> pl.DataFrame:
    """A day on which `fraction` of all users act: nested sets (1% ⊂ 10% ⊂ 100%) by a stable
    hash, 1 + Poisson(4) actions per user at uniform times, pins by Zipf popularity."""
    rng = np.random.default_rng(day.toordinal())
    users = world.user_id_base + np.arange(world.n_users, dtype=np.int64)
    users = users[user_shard(users, 10_000) < round(fraction * 10_000)]
    counts = 1 + rng.poisson(4, len(users))
    n = int(counts.sum())
    popularity = 1.0 / np.arange(1, len(catalog) + 1)
    pins = catalog.pin_ids[rng.permutation(len(catalog))][
        np.minimum(
            np.searchsorted(np.cumsum(popularity) / popularity.sum(), rng.random(n)),
            len(catalog) - 1,
        )
    ]
    start = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
    ts_us = int(start.timestamp()) * 10**6 + rng.integers(0, 86_400 * 10**6, n)
    return pl.DataFrame(
        {
            "event_date": pl.repeat(day, n, dtype=pl.Date, eager=True),
            "ts": pl.Series(ts_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "user_id": np.repeat(users, counts),
            "pin_id": pins,
            "action_type": pl.Series(synthetic.ACTION_TYPES).gather(
                rng.choice(4, n, p=[0.1, 0.5, 0.3, 0.1])
            ),
            "surface": pl.Series(synthetic.SURFACES).gather(
                rng.choice(3, n, p=list(world.surface_probs))
            ),
            "duration_s": rng.lognormal(1.5, 1.0, n),
        }
    )


def seed_previous_embeddings(
    con: duckdb.DuckDBPyConnection, day: datetime.date, version: str, dim: int
) -> int:
    """user_embeddings[day] with a unit vector for every user seen so far (what a long-running
    pipeline holds), and its ledger row."""
    users = con.execute("SELECT DISTINCT user_id FROM raw_actions ORDER BY 1").fetchnumpy()[
        "user_id"
    ]
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(len(users), dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    df = pl.DataFrame(
        {
            "as_of": pl.repeat(day, len(users), dtype=pl.Date, eager=True),
            "user_id": users,
            "embedding": pl.Series(list(emb), dtype=pl.List(pl.Float32)),
            "model_version": pl.repeat(version, len(users), eager=True),
            "updated_on": pl.repeat(day, len(users), dtype=pl.Date, eager=True),
        }
    )
    replace_day(con, "user_embeddings", "as_of", day, df)
    con.execute(
        "INSERT INTO user_embedding_partitions VALUES (?, ?, ?, ?, ?)",
        [day, version, len(users), len(users), False],
    )
    return len(users)


def daily_stages(
    con: duckdb.DuckDBPyConnection,
    model: PinnerFormer,
    version: str,
    catalog: PinCatalog,
    day: datetime.date,
    actions: pl.DataFrame,
    shards: int,
    chunk_users: int,
) -> dict[str, Any]:
    vocab = FeatureConfig(content_dim=catalog.embeddings.shape[1])
    row: dict[str, Any] = {"day": str(day), "actions": actions.height}

    def ingest() -> None:
        replace_day(con, "raw_actions", "event_date", day, to_naive_utc(actions))
        con.execute("CHECKPOINT")  # each write stage pays for its own durable write

    _, row["ingest_s"], row["ingest_gb"] = measure(ingest)

    def timelines() -> int:
        n_users = write_user_timelines(con, day, vocab, chunk_users)
        con.execute("CHECKPOINT")
        return n_users

    row["active_users"], row["timelines_s"], row["timelines_gb"] = measure(timelines)

    def inference() -> pl.DataFrame:
        rows = con.execute(
            "SELECT * FROM user_timelines WHERE as_of = ? ORDER BY user_id", [day]
        ).pl()
        tl = to_timelines(rows, catalog, vocab, NO_LABELS)
        del rows
        emb = embed_users_sharded(model, tl, catalog, shards, pool=shared_pool(shards))
        return pl.DataFrame(
            {
                "as_of": pl.repeat(day, tl.n_users, dtype=pl.Date, eager=True),
                "user_id": tl.user_ids,
                "embedding": pl.Series(list(emb), dtype=pl.List(pl.Float32)),
                "model_version": pl.repeat(version, tl.n_users, eager=True),
                "updated_on": pl.repeat(day, tl.n_users, dtype=pl.Date, eager=True),
            }
        )

    new, row["inference_s"], row["inference_gb"] = measure(inference)
    stats = {"n_inferred": new.height, "full_reinference": False, "has_previous": True}

    def merge() -> int:
        n = write_partition(con, day, new, version, stats)
        con.execute("CHECKPOINT")
        return n

    row["users_after_merge"], row["merge_s"], row["merge_gb"] = measure(merge)
    row["total_s"] = sum(row[f"{s}_s"] for s in ("ingest", "timelines", "inference", "merge"))
    return row


def training_throughput(
    con: duckdb.DuckDBPyConnection, catalog: PinCatalog, work: Path, n_users: int, steps: int
) -> list[dict[str, float]]:
    """sequences/s per rank of torchrun + model_core.training.worker with 1 and 2 gloo ranks."""
    users = con.execute("SELECT DISTINCT user_id FROM raw_actions").fetchnumpy()["user_id"]
    sample = users[user_shard(users, 1_000_000) < n_users * 1_000_000 // max(1, len(users))]
    con.register("_sample", pl.DataFrame({"user_id": sample}).to_arrow())
    actions = con.execute(
        "SELECT * FROM raw_actions WHERE user_id IN (SELECT user_id FROM _sample)"
    ).pl()
    actions = actions.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))
    features = FeatureConfig(content_dim=catalog.embeddings.shape[1])
    timelines, _ = Timelines.from_actions(actions, catalog, features, PositiveRule())
    sketch = CountMinSketch(2**16, 4, seed=0)
    sketch.add(timelines.pin_id[timelines.positive])
    data_url = f"file://{work}/training_data"
    write_training_data(data_url, timelines, catalog, sketch)
    out = []
    cores = os.cpu_count() or 1
    for world, threads in ((1, cores), (1, 1), (2, max(1, cores // 2))):
        recipe = RecipeConfig(
            model=ModelConfig(features=features, max_len=MAX_LEN),
            sampler=SamplerConfig(max_len=MAX_LEN),
            loss=LossConfig(),
            train=TrainConfig(batch_size=64, steps=steps, device="cpu", log_every=steps),
        )
        run = work / f"train_world{world}_threads{threads}"
        job = TrainJob(
            data_url, dataclasses.asdict(recipe), str(run / "ckpt.pt"), str(run / "output")
        )
        run.mkdir(parents=True)
        job.save(str(run / "job.json"))
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        t0 = time.perf_counter()
        subprocess.run(
            torchrun_command(world, str(run / "job.json")),
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wall = time.perf_counter() - t0
        summary = json.loads((run / "output" / "result.json").read_text())
        total = summary["result"]["sequences_per_s"]
        out.append(
            {
                "world_size": world,
                "threads_per_rank": threads,
                "train_users": timelines.n_users,
                "sequences_per_s": total,
                "sequences_per_s_per_rank": total / world,
                "wall_s_incl_startup": wall,
            }
        )
    return out


def fixed_overhead(rows: list[dict[str, Any]], key: str) -> tuple[float, float]:
    """Least squares cost = a + b * active_users: (a seconds, b microseconds per active user)."""
    x = np.array([r["active_users"] for r in rows], dtype=np.float64)
    y = np.array([r[key] for r in rows], dtype=np.float64)
    b, a = np.polyfit(x, y, 1)
    return float(a), float(b * 1e6)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--users",
        type=int,
        default=200_000,
        help="200k: the largest world whose 100%% day fits a few minutes on 2 cores",
    )
    parser.add_argument("--history-days", type=int, default=7)
    parser.add_argument("--fractions", default="0,0.01,0.1,1.0")
    parser.add_argument("--shards", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--train-users", type=int, default=20_000, help="0 skips the training measurement"
    )
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument(
        "--chunk-users",
        type=int,
        default=CHUNK_USERS,
        help="active users per user_timelines query (the asset's CHUNK_USERS by default)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs of each day up to 10%% active")
    parser.add_argument("--quick", action="store_true", help="20k users, 3 history days")
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.users, args.history_days, args.train_users, args.train_steps = 20_000, 3, 2_000, 10
    t_start = time.perf_counter()
    world = synthetic.WorldConfig(n_users=args.users, n_pins=max(50_000, args.users // 5))
    work = Path(tempfile.mkdtemp(prefix="bench_scale_"))
    con = duckdb.connect(str(work / "warehouse.duckdb"))
    con.execute(f"SET threads = {os.cpu_count() or 1}")
    ensure_tables(con)
    pins = synthetic.pin_features(world)
    con.register("_pins", pins.to_arrow())
    con.execute(
        f"CREATE TABLE pin_features AS SELECT pin_id, embedding::FLOAT[{world.content_dim}] "
        "AS embedding, topic FROM _pins"
    )
    catalog = load_catalog(con)
    print(
        f"world: {args.users:,} users, {len(catalog):,} pins, {args.history_days} history days; "
        f"inference shards S={args.shards}; torch threads {torch.get_num_threads()}",
        flush=True,
    )
    history = world.dates[: args.history_days]
    t_gen = t_ing = 0.0
    n_hist = 0
    for day in history:
        t0 = time.perf_counter()
        df = synthetic.generate_day(world, day)
        t_gen += time.perf_counter() - t0
        _, s, _ = measure(
            lambda: replace_day(con, "raw_actions", "event_date", day, to_naive_utc(df))
        )  # noqa: B023
        t_ing += s
        n_hist += df.height
    known = seed_previous_embeddings(con, history[-1], "bench", 64)
    con.execute("CHECKPOINT")  # setup's writes are not charged to the first measured day
    print(
        f"history: {n_hist:,} actions generated in {t_gen:.1f}s, ingested in {t_ing:.1f}s "
        f"({n_hist / max(t_ing, 1e-9):,.0f} rows/s); {known:,} known users seeded",
        flush=True,
    )
    torch.manual_seed(0)
    model = PinnerFormer(
        ModelConfig(features=FeatureConfig(content_dim=world.content_dim), max_len=MAX_LEN)
    ).eval()
    # the shard workers start once per process (spawn + import torch): a fixed cost, apart
    warm = Timelines.from_actions(
        synthetic.generate_day(world, history[-1]).head(2_000),
        catalog,
        FeatureConfig(content_dim=world.content_dim),
    )[0]
    _, t_pool, _ = measure(
        lambda: embed_users_sharded(
            model, warm, catalog, args.shards, 64, pool=shared_pool(args.shards)
        )
    )
    print(f"shard worker pool (S={args.shards}) started in {t_pool:.1f}s", flush=True)
    rows = []
    for i, fraction in enumerate(float(f) for f in args.fractions.split(",")):
        day = history[-1] + datetime.timedelta(days=1 + i)
        actions = active_day(world, catalog, day, fraction)
        # a shared machine is noisy: cheap days run `--repeat` times (stages are idempotent:
        # each replaces the day), the median time and the largest peak are kept
        repeat = args.repeat if fraction <= 0.1 else 1
        runs = [
            daily_stages(con, model, "bench", catalog, day, actions, args.shards, args.chunk_users)
            for _ in range(repeat)
        ]
        row = {"fraction": fraction, "repeats": repeat, **runs[0]}
        for key in row:
            if key.endswith("_s"):
                row[key] = float(np.median([r[key] for r in runs]))
            elif key.endswith("_gb"):
                row[key] = max(r[key] for r in runs)
        rows.append(row)
        print(
            f"  {fraction:>5.0%}: {row['active_users']:>9,} active, total {row['total_s']:.1f}s",
            flush=True,
        )
    header = (
        "| active | users | actions | ingest s | timelines s | inference s | merge s | total s "
        "| peak RSS GiB (ingest/timelines/inference/merge) |"
    )
    lines = [header, "|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        lines.append(
            f"| {r['fraction']:.0%} | {r['active_users']:,} | {r['actions']:,} | "
            f"{r['ingest_s']:.2f} | {r['timelines_s']:.2f} | {r['inference_s']:.2f} | "
            f"{r['merge_s']:.2f} | {r['total_s']:.2f} | {r['ingest_gb']:.1f} / "
            f"{r['timelines_gb']:.1f} / {r['inference_gb']:.1f} / {r['merge_gb']:.1f} |"
        )
    print("\n" + "\n".join(lines))
    fits = {
        k: fixed_overhead(rows, k)
        for k in ("ingest_s", "timelines_s", "inference_s", "merge_s", "total_s")
    }
    print("\nfixed overhead a and marginal cost b of cost = a + b * active users:")
    for k, (a, b) in fits.items():
        print(f"  {k[:-2]:<10} a = {a:7.2f} s   b = {b:8.2f} µs/user")
    by_fraction = {r["fraction"]: r for r in rows}
    if 0.01 in by_fraction and 1.0 in by_fraction:
        small, full = by_fraction[0.01]["total_s"], by_fraction[1.0]["total_s"]
        # the fixed overhead: the measured 0% day when there is one, else the fitted intercept
        fixed = by_fraction[0.0]["total_s"] if 0.0 in by_fraction else fits["total_s"][0]
        print(
            f"\n1% day {small:.2f}s vs 100% day {full:.2f}s: {small / full:.1%} of it; "
            f"<= 3% x {full:.2f} + fixed {fixed:.2f} = {0.03 * full + fixed:.2f}s: "
            f"{'yes' if small <= 0.03 * full + fixed else 'no'}"
        )
    train = (
        training_throughput(con, catalog, work, args.train_users, args.train_steps)
        if args.train_users > 0
        else []
    )
    print("\ntraining (torchrun + model_core.training.worker, gloo on CPU):")
    print(
        "| ranks | threads per rank | train users | sequences/s | sequences/s per rank "
        "| wall s incl. startup |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for t in train:
        print(
            f"| {t['world_size']} | {t['threads_per_rank']} | {t['train_users']:,} | "
            f"{t['sequences_per_s']:.0f} | "
            f"{t['sequences_per_s_per_rank']:.0f} | {t['wall_s_incl_startup']:.1f} |"
        )
    total = time.perf_counter() - t_start
    con.close()
    shutil.rmtree(work)
    print(f"\nbenchmark wall time {total:.0f}s")
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "users": args.users,
                    "shards": args.shards,
                    "pool_start_s": t_pool,
                    "days": rows,
                    "fits": fits,
                    "training": train,
                    "wall_s": total,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    sys.exit(main())

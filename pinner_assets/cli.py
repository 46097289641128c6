"""`pinner`: the command line.

`pinner demo` materialises the whole asset graph over the partition range through Dagster
itself (a real instance under $DAGSTER_HOME, the same assets the UI shows), then prints the
headline metrics and where everything is. By default that is the synthetic world's 70 days; the
same environment the code location reads selects a real log instead (PINNER_SOURCE,
PINNER_SOURCE_PATH, PINNER_START_DATE, PINNER_END_DATE, PINNER_TRAIN_END_DATE; see
docs/REAL_DATA.md). `pinner compare` trains and scores with model_core alone
(`model_core.experiments.compare`); `pinner experiment` re-runs the paper's tables and the reference
SASRecs on any log (`model_core.experiments.runner`; its options live in
`pinner_assets.experiment_command`); `pinner results` renders their JSON into docs/RESULTS.md.
"""

import argparse
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

import dagster as dg

from pinner_assets.definitions import build_definitions, default_resources
from pinner_assets.experiment_command import add_experiment, experiment
from pinner_assets.lib.partitions import daily_partitions

DEMO_STEPS = 600  # keeps `make demo` within 5 minutes on 2 cores
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}  # no per-event DEBUG lines


def _range(first: str, last: str) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": first,
        "dagster/asset_partition_range_end": last,
    }


def demo(args: argparse.Namespace) -> dict[str, object]:
    resources = default_resources()
    storage = resources["storage"]
    split = resources["split"]
    keys = daily_partitions.get_partition_keys()
    train_end = split.train_end_date  # type: ignore[attr-defined]
    if not keys or train_end not in keys:
        raise SystemExit(
            f"the training end {train_end} (PINNER_TRAIN_END_DATE) is not one of the daily "
            f"partitions {keys[0] if keys else '?'} .. {keys[-1] if keys else '?'} "
            "(PINNER_START_DATE / PINNER_END_DATE): set both for the source's dates"
        )
    source = resources["source"]
    print(
        f"source: {source.kind}{' ' + source.path if source.path else ''}, "  # type: ignore[attr-defined]
        f"partitions {keys[0]} .. {keys[-1]}, training up to {train_end}",
        flush=True,
    )
    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else None
    instance = instance or dg.DagsterInstance.ephemeral()
    run_config = {"ops": {"trained_model": {"config": {"steps": args.steps}}}}
    # Each stage is a named job of the code location, so `make ui` lists the runs by stage.
    stages: list[tuple[str, str, dict[str, str], dict]] = [
        ("ingest + timelines", "ingest_job", _range(keys[0], keys[-1]), {}),
        ("train + pin side", "training_job", {}, run_config),
        ("user embeddings (daily chain)", "user_embeddings_job", _range(keys[0], keys[-1]), {}),
        ("evaluation at the split", "evaluation_job", _range(train_end, train_end), {}),
        (
            "one daily partition, as the schedule runs it (latest day again)",
            "daily_pipeline_job",
            {"dagster/partition": keys[-1]},
            {},
        ),
    ]
    defs = build_definitions(resources)
    timings = {}
    for name, job, tags, config in stages:
        t0 = time.perf_counter()
        print(f"== {name}: {job} ...", flush=True)
        defs.resolve_job_def(job).execute_in_process(
            instance=instance, tags=tags, run_config={**config, **QUIET}
        )
        timings[name] = round(time.perf_counter() - t0, 1)
        print(f"   done in {timings[name]}s", flush=True)
    root = storage.root  # type: ignore[attr-defined]
    metrics = json.loads((root / "reports" / train_end / "metrics.json").read_text())
    print(
        f"\nHeld-out users at the split ({train_end}): {metrics['eval_users']}, positives in the "
        f"next {split.horizon_days} days: {metrics.get('eval_positives')}, "  # type: ignore[attr-defined]
        f"index: {metrics['index_size']} pins, model {metrics['model_version']}"
    )
    print_table({"pinnerformer": metrics["pinnerformer"], **metrics["baselines"]})
    print(
        f"\nwall time per stage (s): {timings}\n"
        f"reports:   {root / 'reports'}/<day>/report.html and metrics.json\n"
        f"warehouse: {root / 'warehouse.duckdb'}\n"
        f"LanceDB:   {root / 'lancedb'} (tables users__<version> and pins__<version>; "
        "published.json names the pair notebooks read)\n"
        f"HNSW:      {root / 'index'}\n"
        f"Dagster:   {instance.root_directory if not instance.is_ephemeral else 'ephemeral'}"
        " — `make ui` shows these runs"
    )
    return {"metrics": metrics, "timings": timings}


def compare(args: argparse.Namespace) -> None:
    from model_core.experiments.compare import compare as run_compare

    out = run_compare(args.quick, args.steps, args.objective, args.item_ids)
    print(f"\n{out['summary']}\n")
    print_table(out["metrics"])


def print_table(rows: dict[str, dict[str, float]]) -> None:
    """scorer → {recall_at_10, p90_coverage_at_10, interest_entropy_at_50} as aligned columns."""
    print(f"{'scorer':<18}{'Recall@10':>11}{'P90 cov@10':>12}{'entropy@50':>12}")
    for name, m in rows.items():
        print(
            f"{name:<18}{m['recall_at_10']:>11.4f}{m['p90_coverage_at_10']:>12.4f}"
            f"{m['interest_entropy_at_50']:>12.3f}"
        )


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="materialise the whole pipeline on the configured source (the synthetic world "
        "unless PINNER_SOURCE says otherwise)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEMO_STEPS,
        help="training steps (trained_model's own default is 1000; the demo's validation "
        "Recall@10 peaked near step 600 of a 1000-step run)",
    )


def _add_compare(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("compare", help="model_core only: paper vs +item ids vs baselines")
    c.add_argument("--quick", action="store_true", help="test-sized world, a few seconds")
    c.add_argument("--steps", type=int, default=None, help="optimizer steps")
    c.add_argument(
        "--objective",
        default="dense_all_action",
        choices=["next_action", "sasrec", "all_action", "dense_all_action"],
    )
    c.add_argument(
        "--item-ids",
        default="auto",
        choices=["auto", "table", "hashed", "none"],
        help="beyond the paper: the second model also learns item ids (none = skip it)",
    )


def _add_results(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser(
        "results",
        help="render results/current/*.json into docs/RESULTS.md, the README's headline and "
        "results/INDEX.md",
    )
    r.add_argument("files", nargs="*", help="results files (default results/current/*.json)")
    r.add_argument("--archive", default="results/archive", help="directory of archived files")
    r.add_argument("--out", default="docs/RESULTS.md")
    r.add_argument("--index", default="results/INDEX.md")
    r.add_argument("--readme", default="README.md", help="its headline block is replaced")


README_BEGIN, README_END = "<!-- headline:begin -->", "<!-- headline:end -->"


def results(args: argparse.Namespace) -> None:
    from model_core.experiments.publish import index_lines, render_files

    files = [Path(f) for f in args.files] or sorted(Path("results/current").glob("*.json"))
    archive = sorted(Path(args.archive).glob("*.json"))
    commands = sorted({json.loads(f.read_text()).get("command", "") for f in files})
    headline = render_files(files, Path(args.out), commands)
    Path(args.index).write_text("\n".join(index_lines(files, archive)) + "\n")
    readme = Path(args.readme)
    text = readme.read_text()
    if README_BEGIN in text and README_END in text:
        head, rest = text.split(README_BEGIN, 1)
        tail = rest.split(README_END, 1)[1]
        readme.write_text(f"{head}{README_BEGIN}\n{headline}\n{README_END}{tail}")
    print(f"wrote {args.out}, {args.index} and the headline of {readme}")


COMMANDS = {"demo": demo, "compare": compare, "experiment": experiment, "results": results}


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="pinner", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (_add_demo, _add_compare, add_experiment, _add_results):
        add(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)  # a new instance's schema steps
    COMMANDS[args.command](args)


if __name__ == "__main__":
    main()

"""`pinner experiment`: its options and its run (the paper's tables and the reference SASRecs on
any log, `model_core.experiments.runner`), kept apart from the rest of the command line."""

import argparse
import subprocess
from pathlib import Path

from model_core.training.config import TrainConfig


def experiment(args: argparse.Namespace) -> None:
    from model_core.experiments.runner import Budget, RecipeOptions, run, write

    code = code_version()  # the code that runs: read before a long run, not after it
    columns = {}
    if args.source in ("csv", "parquet"):
        columns = {
            "user": args.user_col,
            "item": args.item_col,
            "time": args.time_col,
            "action_type": args.action_type_col,
            "surface": args.surface_col,
            "duration": args.duration_col,
            "time_unit": args.time_unit,
        }
    budget = None
    if not args.quick or args.max_minutes is not None or args.max_epochs is not None:
        default = Budget(max_epochs=3, max_minutes=0.5, patience=2) if args.quick else Budget()
        budget = Budget(
            max_epochs=args.max_epochs or default.max_epochs,
            max_minutes=args.max_minutes if args.max_minutes is not None else default.max_minutes,
            patience=args.patience or default.patience,
        )
    options = RecipeOptions(
        item_ids=args.item_ids,
        negatives=args.negatives,
        remove_seen=args.remove_seen,
        windows=args.windows,
        item_tokens=args.item_tokens,
        amp=args.amp,
        item_graph=args.item_graph,
        latest_pin=args.latest_pin,
        ema_epochs=args.ema_epochs,
        item_id_dropout=args.item_id_dropout,
    )
    result = run(
        args.source,
        args.path,
        args.tables.split(","),
        args.protocol,
        [int(s) for s in args.seeds.split(",")],
        args.quick,
        seeded_tables=tuple(args.seeded_tables.split(",")),
        budget=budget,
        options=options,
        only=args.variants.split(",") if args.variants else None,
        item_engagement=args.item_engagement,
        eval_windows=args.eval_windows,
        **columns,
    )
    path = f" --path {args.path}" if args.path else ""
    flags = "".join(
        f" --{name.replace('_', '-')} {getattr(args, name)}"
        for name in ("variants", "max_epochs", "max_minutes", "patience")
        if getattr(args, name) is not None
    )
    result["command"] = (
        f"pinner experiment --source {args.source}{path} --tables {args.tables} "
        f"--protocol {args.protocol} --seeds {args.seeds} --seeded-tables {args.seeded_tables}"
        f" --item-ids {args.item_ids} --item-tokens {args.item_tokens}"
        f" --item-graph {args.item_graph} --latest-pin {args.latest_pin}"
        f" --ema-epochs {args.ema_epochs:g} --item-id-dropout {args.item_id_dropout:g}"
        f" --amp {args.amp}"
        f" --item-engagement {args.item_engagement}"
        f" --negatives {args.negatives} --windows {args.windows}{flags}"
        f"{' --remove-seen' if args.remove_seen else ''}"
        f"{f' --eval-windows {args.eval_windows}' if args.eval_windows != 1 else ''}"
        f"{' --quick' if args.quick else ''} --out {args.out}"
    )
    result["code"] = code
    write(result, Path(args.out))
    print(f"wrote {args.out}: {len(result['rows'])} rows")


def code_version() -> str:
    """The commit the experiment ran (with "+changes" when the tree differs from it), or
    "unknown" outside a git checkout: a result file says which code produced it."""
    root = Path(__file__).resolve().parents[1]

    def git(*cmd: str) -> str:
        out = subprocess.run(["git", *cmd], cwd=root, capture_output=True, text=True)
        return out.stdout.strip() if out.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown"
    return commit + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def add_experiment(sub: argparse._SubParsersAction) -> None:
    e = sub.add_parser("experiment", help="re-run the paper's tables on a log (model_core only)")
    e.add_argument(
        "--source",
        required=True,
        choices=["synthetic", "movielens", "taobao", "amazon", "csv", "parquet"],
    )
    e.add_argument("--path", default=None, help="dataset directory or file (not for synthetic)")
    e.add_argument(
        "--tables",
        default="objectives",
        help="comma list of objectives (Table 3), negatives (4), features (6), bce (10), "
        "inference (2), multitask (5), item_ids (beyond the paper), peers (reference SASRecs)",
    )
    e.add_argument(
        "--variants", default=None, help="comma list: run only these variants of the tables"
    )
    e.add_argument("--protocol", default="paper", choices=["paper", "leave_one_out"])
    e.add_argument("--seeds", default="0", help="comma list of seeds")
    e.add_argument(
        "--seeded-tables",
        default="objectives,peers",
        help="comma list: the headline tables that run with every seed; the rest use the first",
    )
    e.add_argument(
        "--max-epochs",
        type=int,
        default=None,
        help="epochs per variant at most (default 200; early stopping usually ends it first)",
    )
    e.add_argument(
        "--max-minutes", type=float, default=None, help="wall-clock cap per variant and seed"
    )
    e.add_argument(
        "--patience", type=int, default=None, help="validation epochs without improvement (5)"
    )
    _add_recipe_options(e)
    _add_experiment_outputs(e)


def _add_recipe_options(e: argparse.ArgumentParser) -> None:
    """How every PinnerFormer variant of an experiment is built and trained."""
    e.add_argument(
        "--item-ids",
        default="auto",
        choices=["auto", "table", "hashed", "none"],
        help="how every PinnerFormer variant represents items beyond content: auto = a full id "
        "table up to 1M items, hashed beyond; none = the paper's content-only tower",
    )
    e.add_argument(
        "--item-tokens",
        default="validated",
        choices=["validated", "auto", "none"],
        help="beyond the paper: auto = with a full id table, also learn a vector per metadata "
        "token of the items (brand, category, genre, title word) where the log has metadata; "
        "validated = train each PinnerFormer variant with and without them (first seed) and "
        "keep the better on the validation split; none = item ids alone",
    )
    e.add_argument(
        "--item-graph",
        default="auto",
        choices=["auto", "none"],
        help="beyond the paper: auto = with a full id table, each item also averages in the id "
        "vectors of its 10 strongest co-engagement neighbours in the training timelines, and "
        "theirs (two graph-propagation steps, PinSage's role); none = no graph layer",
    )
    e.add_argument(
        "--latest-pin",
        default="auto",
        choices=["auto", "none"],
        help="beyond the paper: auto = wherever ids are learned, the user embedding adds a "
        "learned share of the embedding of the user's latest pin; none = the paper's user tower "
        "alone",
    )
    e.add_argument(
        "--ema-epochs",
        type=float,
        default=TrainConfig.ema_epochs,
        help="beyond the paper: validation, early stopping and the scored model use an "
        "exponential moving average of PinnerFormer's weights with a memory of this many epochs "
        "(decay per step 1 - 1 / (epochs x steps per epoch)); 0 = the raw weights",
    )
    e.add_argument(
        "--item-id-dropout",
        type=float,
        default=0.0,
        help="beyond the paper: with learned ids, drop each item's id vector from its "
        "embedding with this probability in training, so that the content path alone places "
        "items new since training; 0 = never",
    )
    e.add_argument(
        "--amp",
        default="auto",
        choices=["auto", "on", "off"],
        help="PinnerFormer's bf16 autocast: auto = on CUDA only; on = also on a CPU (fast where "
        "it has bf16 matrix units); off = fp32. The reference SASRecs train in fp32",
    )
    e.add_argument(
        "--item-engagement",
        default="all",
        choices=["positive", "all"],
        help="real logs: build item co-engagement vectors from positives only or every action",
    )
    e.add_argument(
        "--negatives",
        default="auto",
        choices=["auto", "catalog", "mixed"],
        help="every PinnerFormer variant's negatives: catalog = the whole catalogue (the exact "
        "softmax), mixed = the paper's in-batch + random pool with logQ; auto = catalog up to "
        "100k items, mixed beyond",
    )
    e.add_argument(
        "--windows",
        default="auto",
        choices=["auto", "random", "tiled", "latest"],
        help="PinnerFormer's training windows: random = the paper's (ending at random actions), "
        "tiled = each user's history cut into back-to-back windows from the latest action, "
        "latest = the random ones plus each user's latest; auto = tiled for the SASRec "
        "objective under leave-one-out, random otherwise",
    )


def _add_experiment_outputs(e: argparse.ArgumentParser) -> None:
    """What an experiment scores, how quickly, where it writes, and which columns it reads."""
    e.add_argument(
        "--remove-seen",
        action="store_true",
        help="paper protocol: leave each user's already-engaged pins out of their ranking "
        "(leave-one-out always reports both)",
    )
    e.add_argument(
        "--eval-windows",
        type=int,
        default=1,
        help="paper protocol: score this many consecutive 14-day windows after the one training "
        "cut, pooled (each user once per window they have positives in; more users for the "
        "same log, nothing after the cut reaches any model or baseline); 1 = the paper's one "
        "window",
    )
    e.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run of a few minutes on any source: a tiny world or ~400 users of a real "
        "log, 3 epochs and 30 s per variant",
    )
    e.add_argument("--out", required=True, help="results JSON path")
    for col in ("user", "item", "time", "action-type", "surface", "duration"):
        e.add_argument(f"--{col}-col", default=None, help=f"csv/parquet: the {col} column")
    e.add_argument("--time-unit", default="auto", choices=["s", "ms", "iso", "auto"])

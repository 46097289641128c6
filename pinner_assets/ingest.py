"""raw_actions (daily) and pin_features: the pipeline's inputs, validated before they are stored.

A day that breaks a blocking rule is never written: its rows go to
`quarantine/raw_actions/<day>/`, every rule's result is recorded as a check on THAT partition, and
the materialisation fails with the rule, the column, an example row and the quarantine path. The
partition therefore stays missing (or keeps its previous, good rows), and nothing downstream of it
is built until it is repaired (DESIGN §7: returning a result would mark it materialised).
"""

import dataclasses
import datetime
import hashlib
import shutil
import statistics
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

from model_core.contract import ContractError, RuleResult, conform, validate_actions
from model_core.features import FeatureConfig
from pinner_assets.partitions import daily_partitions
from pinner_assets.resources import ActionSource, EvaluationSplit, PinnerStorage, item_cutoff
from pinner_assets.warehouse import LOCK_RETRY, ensure_tables, replace_day, to_naive_utc, utc_now

# Blocking rules, in the order they are reported; each is a check on every raw_actions partition.
RAW_RULES: dict[str, str] = {
    "readable": "the day's input exists and can be read (a truncated or corrupt file fails here)",
    "contract": "every DESIGN §4 column is present and castable to its type (schema drift, "
    "wrong types)",
    "not_empty": "the day has at least one row",
    "ids_not_null": "user_id, pin_id, ts, action_type and surface are never null",
    "duration_valid": "duration_s is finite and >= 0",
    "ts_inside_partition": "every ts lies inside the partition's UTC day and event_date = the day",
    "ts_not_in_future": "no ts is later than the time of ingestion",
    "oov_rate": "at most max_oov_rate of rows have an action type or surface outside the "
    "source's vocabulary",
    "volume": "the day has at most max_volume_ratio x the median row count of the previous 7 "
    "stored days",
}
WARN_RULES: dict[str, str] = {
    "no_duplicates": "no exact duplicate rows (duplicates are dropped on write)",
}
RAW_CHECKS = tuple(RAW_RULES)  # kept for callers that list the blocking checks
VOLUME_HISTORY_DAYS = 7
CLOCK_SKEW = datetime.timedelta(minutes=5)


class RawActionsConfig(dg.Config):
    """Thresholds of the raw_actions rules (run config; the defaults suit daily logs)."""

    max_oov_rate: float = Field(
        default=0.05,
        description="Share of rows with an out-of-vocabulary action type or surface above which "
        "a day is rejected (a logging bug that renames values), rather than dropped row by row.",
    )
    max_volume_ratio: float = Field(
        default=5.0,
        description="A day with more rows than this many times the median of the previous 7 "
        "stored days is rejected (a replayed or duplicated export). 0 turns the rule off; raise "
        "it for a day that is really that large (a sale, a launch).",
    )


@dataclasses.dataclass
class DayVerdict:
    """What ingestion decided about one day."""

    key: str
    results: list[RuleResult]
    rows: pl.DataFrame | None = None  # the conformed, de-duplicated rows when accepted
    quarantine: str | None = None

    @property
    def accepted(self) -> bool:
        return self.rows is not None and not self.failed

    @property
    def failed(self) -> list[RuleResult]:
        return [r for r in self.results if r.blocking and not r.passed]


def _rule(name: str, passed: bool, n_bad: int = 0, example: dict | None = None, note: str = ""):
    description = RAW_RULES.get(name) or WARN_RULES[name]
    return RuleResult(
        name,
        passed,
        name in RAW_RULES,
        description + (f" ({note})" if note else ""),
        n_bad,
        example or {},
    )


def content_hash(df: pl.DataFrame) -> str:
    """A fingerprint of the day's stored rows (sorted, de-duplicated)."""
    digest = hashlib.sha256()
    for col in df.columns:
        digest.update(col.encode())
        digest.update(df[col].hash(seed=0).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def recent_volume(con: duckdb.DuckDBPyConnection, day: datetime.date) -> float | None:
    """Median row count of the stored days in the week before `day`; None without history."""
    rows = con.execute(
        "SELECT n_rows FROM raw_action_partitions WHERE event_date < ? AND event_date >= ?",
        [day, day - datetime.timedelta(days=VOLUME_HISTORY_DAYS)],
    ).fetchall()
    return float(statistics.median(r[0] for r in rows)) if rows else None


def inspect_day(
    raw: pl.DataFrame,
    day: datetime.date,
    vocab: FeatureConfig,
    config: RawActionsConfig,
    usual_rows: float | None,
    now: datetime.datetime,
) -> DayVerdict:
    """Every rule on one day's raw frame; the rows to store when no blocking rule fails."""
    key = day.isoformat()
    try:
        df = conform(raw)
    except ContractError as err:
        failed = _rule("contract", False, raw.height, {"error": str(err)})
        return DayVerdict(key, [_rule("readable", True), failed])
    results = [_rule("readable", True), _rule("contract", True)]
    results.append(_rule("not_empty", df.height > 0, int(df.height == 0)))
    checked = validate_actions(df, day, vocab.action_types, vocab.surfaces, config.max_oov_rate)
    future = df.filter(pl.col("ts") > now + CLOCK_SKEW)
    results.append(
        _rule(
            "ts_not_in_future",
            future.height == 0,
            future.height,
            {k: str(v) for k, v in future.row(0, named=True).items()} if future.height else {},
            note=f"ingested at {now.isoformat(timespec='seconds')}",
        )
    )
    ratio = df.height / usual_rows if usual_rows else 0.0
    over = config.max_volume_ratio > 0 and ratio > config.max_volume_ratio
    results.append(
        _rule(
            "volume",
            not over,
            df.height if over else 0,
            {"rows": df.height, "usual_rows": usual_rows, "ratio": round(ratio, 2)} if over else {},
            note=f"max_volume_ratio={config.max_volume_ratio}",
        )
    )
    results += checked
    verdict = DayVerdict(key, results)
    if not verdict.failed:
        verdict.rows = df.unique(maintain_order=True).sort(
            "user_id", "ts", "pin_id", maintain_order=True
        )
    else:
        verdict.rows = df  # kept for the quarantine file only
    return verdict


def _quarantine(storage: PinnerStorage, key: str, df: pl.DataFrame | None, file: Path | None):
    """The rejected input under quarantine/raw_actions/<day>/<time>.parquet (or the unreadable
    file itself, copied byte for byte). Returns the path."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    if df is None:
        assert file is not None
        path = storage.path("quarantine", "raw_actions", key, f"{stamp}{file.suffix}")
        shutil.copyfile(file, path)
    else:
        path = storage.path("quarantine", "raw_actions", key, f"{stamp}.parquet")
        df.write_parquet(path)
    return str(path)


def _evaluations(verdict: DayVerdict):
    """One check evaluation per rule on the day's own partition."""
    by_name = {r.name: r for r in verdict.results}
    for name in (*RAW_RULES, *WARN_RULES):
        r = by_name.get(name)
        meta: dict[str, object] = {"partition": verdict.key}
        if r is None:
            meta["skipped"] = "an earlier rule rejected the day before this one could run"
        else:
            meta |= {"rule": r.description, "bad_rows": r.n_bad}
            if r.example:
                meta["example"] = dg.MetadataValue.json({k: str(v) for k, v in r.example.items()})
        if verdict.quarantine:
            meta["quarantined_at"] = dg.MetadataValue.path(verdict.quarantine)
        yield dg.AssetCheckEvaluation(
            asset_key=dg.AssetKey("raw_actions"),
            check_name=name,
            passed=r is not None and r.passed,
            metadata=meta,  # type: ignore[arg-type]
            severity=dg.AssetCheckSeverity.ERROR
            if name in RAW_RULES
            else dg.AssetCheckSeverity.WARN,
            blocking=name in RAW_RULES,
            partition=verdict.key,
        )


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def rejection_message(verdict: DayVerdict, stored: tuple | None) -> str:
    kept = (
        f"the stored day ({stored[0]} rows, ingested {stored[1]}) was left untouched"
        if stored
        else "nothing was stored for the day"
    )
    rules = "; ".join(r.message() for r in verdict.failed)
    where = (
        f"the input is quarantined at {verdict.quarantine}"
        if verdict.quarantine
        else "there was no input to quarantine"
    )
    return (
        f"raw_actions[{verdict.key}] rejected: {rules}. {kept}; {where}. Fix the source and "
        f"re-materialise raw_actions[{verdict.key}]: everything downstream of this day waits "
        "for it (docs/OPERATIONS.md)."
    )


# A multi_asset with can_subset: its check outputs are optional, so each rule is reported on each
# day's own partition (AssetCheckEvaluation) instead of once for the whole range of a run.
@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "raw_actions",
            description="One day of engagement (DESIGN §4 contract), checked before it is stored.",
            group_name="ingest",
            kinds={"duckdb", "polars"},
            owners=["team:data-platform"],
            code_version="raw_actions-2",
            partitions_def=daily_partitions,
            metadata={
                "partition_expr": "event_date",
                "dagster/column_schema": dg.TableSchema(
                    columns=[
                        dg.TableColumn("event_date", "DATE", description="partition (UTC day)"),
                        dg.TableColumn("ts", "TIMESTAMP", description="UTC, inside the day"),
                        dg.TableColumn("user_id", "BIGINT"),
                        dg.TableColumn("pin_id", "BIGINT"),
                        dg.TableColumn("action_type", "VARCHAR", description="source vocabulary"),
                        dg.TableColumn("surface", "VARCHAR", description="source vocabulary"),
                        dg.TableColumn("duration_s", "DOUBLE", description=">= 0, finite"),
                    ]
                ),
            },
            skippable=True,
        )
    ],
    check_specs=[
        dg.AssetCheckSpec(
            name,
            asset="raw_actions",
            blocking=True,
            description=description,
            partitions_def=daily_partitions,
        )
        for name, description in RAW_RULES.items()
    ]
    + [
        dg.AssetCheckSpec(name, asset="raw_actions", description=d, partitions_def=daily_partitions)
        for name, d in WARN_RULES.items()
    ],
    can_subset=True,
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    pool="duckdb",
    retry_policy=LOCK_RETRY,
)
def raw_actions(
    context: dg.AssetExecutionContext,
    config: RawActionsConfig,
    source: ActionSource,
    duckdb: DuckDBResource,
    storage: PinnerStorage,
):
    """One day of engagement (DESIGN §4 contract) from the configured source.

    Every day is checked BEFORE it is written, against the source's own vocabulary (action types,
    surfaces), its recent volume and the clock. A day that breaks a blocking rule is quarantined,
    its stored rows (if any) stay as they were, and the materialisation fails naming the rule, an
    example row and the quarantine path; the other days of a range are still stored.
    """
    vocab = source.feature_config()
    span = source.date_span()
    verdicts: list[DayVerdict] = []
    stored_before: dict[str, tuple | None] = {}
    with duckdb.get_connection() as con:
        ensure_tables(con)
        for key in context.partition_keys:
            day = datetime.date.fromisoformat(key)
            if span is not None and not span[0] <= day <= span[1]:
                context.log.warning(
                    f"raw_actions[{key}]: the {source.kind} log spans {span[0]} .. {span[1]}, not "
                    "this day; set PINNER_START_DATE / PINNER_END_DATE to its dates "
                    "(docs/REAL_DATA.md)"
                )
            stored_before[key] = con.execute(
                "SELECT n_rows, ingested_at FROM raw_action_partitions WHERE event_date = ?",
                [day],
            ).fetchone()
            file = source.day_file(day)
            try:
                raw = source.load_day(day)
            except FileNotFoundError as err:
                verdict = DayVerdict(key, [_rule("readable", False, 0, {"error": str(err)})])
            except (OSError, pl.exceptions.PolarsError, ValueError) as err:
                verdict = DayVerdict(
                    key, [_rule("readable", False, 0, {"file": str(file), "error": str(err)})]
                )
                if file is not None:
                    verdict.quarantine = _quarantine(storage, key, None, file)
            else:
                verdict = inspect_day(raw, day, vocab, config, recent_volume(con, day), _now())
                if verdict.failed:
                    verdict.quarantine = _quarantine(
                        storage, key, raw if verdict.rows is None else verdict.rows, None
                    )
            if verdict.accepted:
                assert verdict.rows is not None
                n, digest = verdict.rows.height, content_hash(verdict.rows)
                replace_day(
                    con,
                    "raw_actions",
                    "event_date",
                    day,
                    to_naive_utc(verdict.rows),
                    ledger=("raw_action_partitions", [day, n, digest, utc_now()]),
                )
            else:
                context.log.error(rejection_message(verdict, stored_before[key]))
            yield from _evaluations(verdict)
            verdicts.append(verdict)

    rejected = [v for v in verdicts if not v.accepted]
    for v in verdicts:
        if v.accepted:
            assert v.rows is not None
            meta = {
                "dagster/row_count": v.rows.height,
                "active_users": v.rows["user_id"].n_unique(),
                "source": source.kind,
                "content_hash": content_hash(v.rows),
                "duplicates_dropped": next(
                    (r.n_bad for r in v.results if r.name == "no_duplicates"), 0
                ),
            }
            if rejected:  # the step fails below: record the days that were stored all the same
                yield dg.AssetMaterialization("raw_actions", partition=v.key, metadata=meta)
            else:
                context.add_asset_metadata(meta, partition_key=v.key)
    if rejected:
        raise dg.Failure(
            description="\n".join(rejection_message(v, stored_before[v.key]) for v in rejected),
            metadata={
                "rejected_days": [v.key for v in rejected],
                "rules": sorted({r.name for v in rejected for r in v.failed}),
                "quarantine": [v.quarantine or "" for v in rejected],
            },
            allow_retries=False,
        )
    yield dg.MaterializeResult(asset_key="raw_actions")


@dg.asset(
    pool="duckdb",
    group_name="ingest",
    kinds={"duckdb"},
    owners=["team:data-platform"],
    retry_policy=LOCK_RETRY,
    check_specs=[
        dg.AssetCheckSpec(
            "embeddings_finite",
            asset="pin_features",
            blocking=True,
            description="Every content embedding is finite and every pin_id appears once; "
            "checked before the table is replaced (a failure leaves the stored table as it was).",
        )
    ],
)
def pin_features(
    source: ActionSource, split: EvaluationSplit, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """Item content embeddings (the PinSage stand-in): pin_id, embedding FLOAT[d], topic, and the
    item's metadata tokens VARCHAR[] (empty without metadata), which the model may learn vectors
    for (`model_core.item_ids`).

    For a real log they are built from its metadata and co-engagement strictly before 00:00 UTC
    of the day after split.train_end_date (the last training day), so nothing from the
    evaluation period leaks into an item vector (ActionSource.load_pins).
    """
    pins = source.load_pins(split.train_end)
    no_tokens = pl.lit([], dtype=pl.List(pl.Utf8))  # sources without metadata (synthetic)
    df = pins.select(
        pl.col("pin_id").cast(pl.Int64),
        pl.col("embedding").cast(pl.List(pl.Float32)),
        pl.col("topic").cast(pl.Int32),
        (pl.col("tokens") if "tokens" in pins.columns else no_tokens).alias("tokens"),
    )
    emb = np.asarray(df["embedding"].to_list(), dtype=np.float32)
    finite = bool(np.isfinite(emb).all()) and emb.ndim == 2
    dim = int(emb.shape[1]) if emb.ndim == 2 else -1
    if finite and df["pin_id"].n_unique() == df.height:
        with duckdb.get_connection() as con:
            ensure_tables(con)
            con.execute("BEGIN TRANSACTION")
            con.execute("DROP TABLE IF EXISTS pin_features")
            con.register("_pins", df.to_arrow())
            con.execute(
                f"CREATE TABLE pin_features AS SELECT pin_id, "
                f"embedding::FLOAT[{dim}] AS embedding, topic, tokens FROM _pins"
            )
            con.execute("COMMIT")
    return dg.MaterializeResult(
        metadata={
            "pins": df.height,
            "dim": dim,
            "source": source.kind,
            "cutoff": str(item_cutoff(split.train_end)) if source.is_log else "none",
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="embeddings_finite",
                passed=finite and df["pin_id"].n_unique() == df.height,
                metadata={"unique_ids": df["pin_id"].n_unique() == df.height, "finite": finite},
            )
        ],
    )

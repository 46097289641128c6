"""The blocking rules a day of raw_actions must pass before it is stored (docs/DESIGN.md §4), the
verdict on a day, and what a rejected day leaves behind (a quarantined copy, a message that names
the column, the rule and an example)."""

import dataclasses
import datetime
import hashlib
import shutil
import statistics
from pathlib import Path
from typing import Any

import dagster as dg
import duckdb
import polars as pl
from pydantic import Field

from model_core.data.contract import ContractError, RuleResult, conform, validate_actions
from model_core.features.actions import FeatureConfig
from pinner_assets.lib.resources import ActionSource, PinnerStorage

# Blocking rules, in the order they are reported; each is a check on every raw_actions partition.
RAW_RULES: dict[str, str] = {
    "readable": "the day's input exists and can be read (a truncated or corrupt file fails here)",
    "contract": "every docs/DESIGN.md §4 column is present and castable to its type (schema drift, "
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


RAW_CHECKS = tuple(RAW_RULES)  # kept for callers that list the blocking checks


VOLUME_HISTORY_DAYS = 7


CLOCK_SKEW = datetime.timedelta(minutes=5)


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


def rule_result(
    name: str, passed: bool, n_bad: int = 0, example: dict | None = None, note: str = ""
):
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
        failed = rule_result("contract", False, raw.height, {"error": str(err)})
        return DayVerdict(key, [rule_result("readable", True), failed])
    results = [rule_result("readable", True), rule_result("contract", True)]
    results.append(rule_result("not_empty", df.height > 0, int(df.height == 0)))
    checked = validate_actions(df, day, vocab.action_types, vocab.surfaces, config.max_oov_rate)
    future = df.filter(pl.col("ts") > now + CLOCK_SKEW)
    results.append(
        rule_result(
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
        rule_result(
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


def quarantine(storage: PinnerStorage, key: str, df: pl.DataFrame | None, file: Path | None):
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


def check_evaluations(verdict: DayVerdict):
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


def judge_day(
    source: ActionSource,
    storage: PinnerStorage,
    day: datetime.date,
    vocab: FeatureConfig,
    config: RawActionsConfig,
    usual_rows: float | None,
) -> DayVerdict:
    """Read one day from the source and judge it; a day that fails is quarantined (its file
    when it cannot be read, its rows otherwise)."""
    key = day.isoformat()
    file = source.day_file(day)
    try:
        raw = source.load_day(day)
    except FileNotFoundError as err:
        return DayVerdict(key, [rule_result("readable", False, 0, {"error": str(err)})])
    except (OSError, pl.exceptions.PolarsError, ValueError) as err:
        example = {"file": str(file), "error": str(err)}
        verdict = DayVerdict(key, [rule_result("readable", False, 0, example)])
        if file is not None:
            verdict.quarantine = quarantine(storage, key, None, file)
        return verdict
    now = datetime.datetime.now(datetime.timezone.utc)
    verdict = inspect_day(raw, day, vocab, config, usual_rows, now)
    if verdict.failed:
        rows = raw if verdict.rows is None else verdict.rows
        verdict.quarantine = quarantine(storage, key, rows, None)
    return verdict


def day_metadata(verdict: DayVerdict) -> dict[str, Any]:
    """What the UI shows for a stored day."""
    assert verdict.rows is not None
    return {
        "dagster/row_count": verdict.rows.height,
        "active_users": verdict.rows["user_id"].n_unique(),
        "content_hash": content_hash(verdict.rows),
        "duplicates_dropped": next(
            (r.n_bad for r in verdict.results if r.name == "no_duplicates"), 0
        ),
    }

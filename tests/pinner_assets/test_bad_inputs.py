"""Eleven kinds of bad input, each against a day that is already stored correctly.

Every bad kind must fail raw_actions[D] with a message naming the rule (and so the column) and an
example, put the input under quarantine, record the failed check on partition D, and leave the
stored day exactly as it was. Duplicates are the one kind that is repaired instead (dropped on
write, reported by a WARN check).
"""

import datetime
from collections.abc import Callable, Iterator
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from tests.pinner_assets.conftest import Pipeline, day, make_resources
from tests.pinner_assets.test_recovery import write_world

D = 4  # days 0..3 are history (the volume rule's median), day 4 is stored, then broken


def _shift_ts(df: pl.DataFrame, delta: datetime.timedelta) -> pl.DataFrame:
    return df.with_columns(
        pl.when(pl.int_range(pl.len()) % 10 == 0)
        .then(pl.col("ts") + delta)
        .otherwise(pl.col("ts"))
        .alias("ts")
    )


def _ten_times(df: pl.DataFrame) -> pl.DataFrame:
    copies = [df.with_columns(pl.col("user_id") + k * 1_000_000) for k in range(10)]
    return pl.concat(copies)


BAD: dict[str, tuple[Callable[[pl.DataFrame], pl.DataFrame] | None, str, str]] = {
    # kind: (how the day's frame is broken, the rule that must reject it, text of the message)
    "schema_drift": (lambda df: df.rename({"surface": "surface_name"}), "contract", "surface"),
    "wrong_types": (
        lambda df: df.with_columns(pl.format("u{}", pl.col("user_id")).alias("user_id")),
        "contract",
        "user_id",
    ),
    "null_ids": (
        lambda df: df.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(None)
            .otherwise(pl.col("pin_id"))
            .alias("pin_id")
        ),
        "ids_not_null",
        "pin_id",
    ),
    "ts_outside_day": (
        lambda df: _shift_ts(df, datetime.timedelta(days=1)),
        "ts_inside_partition",
        "ts lies in",
    ),
    "future_ts": (
        lambda df: _shift_ts(df, datetime.timedelta(days=3650)),
        "ts_not_in_future",
        "no ts is later",
    ),
    "negative_duration": (
        lambda df: df.with_columns(pl.col("duration_s") - 1e6),
        "duration_valid",
        "duration_s",
    ),
    "nan_duration": (
        lambda df: df.with_columns(pl.lit(float("nan")).alias("duration_s")),
        "duration_valid",
        "duration_s",
    ),
    "oov_surge": (
        lambda df: df.with_columns(pl.col("surface").str.to_uppercase()),
        "oov_rate",
        "surface",
    ),
    "empty_day": (lambda df: df.head(0), "not_empty", "at least one row"),
    "ten_times_volume": (_ten_times, "volume", "max_volume_ratio"),
    "truncated_file": (None, "readable", "truncated"),
}


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Pipeline, Path]]:
    tmp = tmp_path_factory.mktemp("bad_inputs")
    files = tmp / "files"
    source = write_world(files)
    (tmp / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp / "home")) as instance:
        p = Pipeline(make_resources(tmp / "data", source), instance)
        p.run(["raw_actions"], day(0), day(D))
        yield p, files


def stored_day(p: Pipeline) -> tuple[tuple, list]:
    with p.warehouse() as con:
        ledger = con.execute(
            "SELECT n_rows, content_hash, ingested_at FROM raw_action_partitions "
            "WHERE event_date = ?",
            [day(D)],
        ).fetchone()
        rows = con.execute(
            "SELECT * FROM raw_actions WHERE event_date = ? ORDER BY user_id, ts, pin_id, "
            "action_type",
            [day(D)],
        ).fetchall()
    assert ledger is not None
    return ledger, rows


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_day_is_rejected_and_nothing_good_is_overwritten(
    stored: tuple[Pipeline, Path], kind: str
) -> None:
    p, files = stored
    path = files / f"{day(D)}.parquet"
    good_bytes = path.read_bytes()
    before = stored_day(p)
    breaker, rule, text = BAD[kind]
    if breaker is None:  # a transfer cut short
        path.write_bytes(good_bytes[: len(good_bytes) // 2])
    else:
        breaker(pl.read_parquet(path)).write_parquet(path)
    try:
        result = p.run(["raw_actions"], day(D), raise_on_error=False)
    finally:
        path.write_bytes(good_bytes)
    assert not result.success, kind
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data)
    assert f"raw_actions[{day(D)}] rejected: {rule}" in message, message
    assert text in message, message
    assert "the stored day (" in message, message
    assert "left untouched" in message, message
    assert "quarantined at" in message, message
    failed = {
        (e.check_name, e.partition) for e in result.get_asset_check_evaluations() if not e.passed
    }
    assert (rule, day(D)) in failed
    assert stored_day(p) == before  # same rows, same ledger entry: nothing good overwritten
    quarantine = p.resources["storage"].root / "quarantine" / "raw_actions" / day(D)  # type: ignore[attr-defined]
    assert any(quarantine.iterdir())


def test_duplicates_are_dropped_with_a_warning(stored: tuple[Pipeline, Path]) -> None:
    p, files = stored
    path = files / f"{day(D)}.parquet"
    good_bytes = path.read_bytes()
    _, rows = stored_day(p)
    df = pl.read_parquet(path)
    pl.concat([df, df.head(50)]).write_parquet(path)
    try:
        result = p.run(["raw_actions"], day(D))
    finally:
        path.write_bytes(good_bytes)
    (warn,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "no_duplicates"]
    assert not warn.passed
    assert warn.severity == dg.AssetCheckSeverity.WARN
    assert warn.metadata["bad_rows"].value == 100  # both copies of 50 rows are flagged
    assert stored_day(p)[1] == rows  # stored once each


def test_day_not_arrived_fails_without_touching_anything(stored: tuple[Pipeline, Path]) -> None:
    p, files = stored
    path = files / f"{day(D)}.parquet"
    moved = path.with_suffix(".later")
    before = stored_day(p)
    path.rename(moved)
    try:
        result = p.run(["raw_actions"], day(D), raise_on_error=False)
    finally:
        moved.rename(path)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "rejected: readable" in str(failure.event_specific_data)
    assert "no input to quarantine" in str(failure.event_specific_data)
    assert stored_day(p) == before

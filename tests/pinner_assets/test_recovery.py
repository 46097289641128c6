"""Corruption recovery, end to end, through declarative automation (docs/DESIGN.md §3).

A day arrives corrupted → its blocking checks stop propagation → the fixed day is re-ingested →
automation ticks recompute that day and every later day of the self-dependent chain → the
embeddings equal those of a run that never saw the corruption.
"""

import datetime
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from model_core.data import synthetic
from pinner_assets.lib.resources import ActionSource
from tests.pinner_assets.conftest import Pipeline, day, make_resources

ORDER = ["raw_actions", "user_timelines", "user_embeddings", "embedding_drift", "evaluation_report"]
LAST = 7  # days 0..7; training ends on day 4
BAD = 5  # the corrupted day


def write_world(directory: Path) -> ActionSource:
    """The tiny world as a directory of daily Parquet files (the `files` source)."""
    world = synthetic.WorldConfig.tiny()
    directory.mkdir(parents=True)
    synthetic.pin_features(world).write_parquet(directory / "pin_features.parquet")
    for i in range(LAST + 1):
        d = world.start_date + datetime.timedelta(days=i)
        synthetic.generate_day(world, d).write_parquet(directory / f"{d.isoformat()}.parquet")
    return ActionSource(kind="files", path=str(directory))


def corrupt(directory: Path, i: int, how: str) -> pl.DataFrame:
    """Overwrite day i's file; return the good rows so the test can restore them."""
    path = directory / f"{day(i)}.parquet"
    good = pl.read_parquet(path)
    if how == "scrambled_action_types":  # a logging bug that renames action types
        bad = good.with_columns(pl.col("action_type").str.to_uppercase())
    else:  # "shuffled_pins": passes every check, silently wrong
        bad = good.with_columns(pl.col("pin_id").shuffle(seed=1))
    bad.write_parquet(path)
    return good


def all_embeddings(p: Pipeline, first: int) -> dict[str, dict[int, np.ndarray]]:
    out = {}
    with p.warehouse() as con:
        for i in range(first, LAST + 1):
            rows = con.execute(
                "SELECT user_id, embedding FROM user_embeddings WHERE as_of = ?", [day(i)]
            ).fetchall()
            out[day(i)] = {r[0]: np.asarray(r[1], dtype=np.float32) for r in rows}
    return out


def tick(p: Pipeline, cursor: object) -> tuple[object, dict[str, list[str]]]:
    """One evaluation of the automation sensor: the new cursor and what it requested."""
    result = dg.evaluate_automation_conditions(defs=p.defs, instance=p.instance, cursor=cursor)
    requested = {key: sorted(result.get_requested_partitions(dg.AssetKey(key))) for key in ORDER}
    return result.cursor, {k: v for k, v in requested.items() if v}


def run_requests(p: Pipeline, requested: dict[str, list[str]]) -> None:
    """Like the sensor: each asset's requested partitions in one run (single-run backfill policy,
    so a range runs in order), upstream assets first."""
    for key in ORDER:
        if key in requested:
            p.run([key], requested[key][0], requested[key][-1])


def tick_until_settled(p: Pipeline, cursor: object, max_ticks: int = 12) -> list[dict]:
    """Evaluate automation like the sensor would, executing each tick's requests in order."""
    ticks = []
    for _ in range(max_ticks):
        cursor, requested = tick(p, cursor)
        if not requested:
            return ticks
        ticks.append(requested)
        run_requests(p, requested)
    raise AssertionError(f"automation did not settle in {max_ticks} ticks: {ticks}")


def settle(p: Pipeline, cursor: object, max_ticks: int = 12) -> object:
    """tick_until_settled that returns the cursor, for a test that keeps ticking afterwards."""
    for _ in range(max_ticks):
        cursor, requested = tick(p, cursor)
        if not requested:
            return cursor
        run_requests(p, requested)
    raise AssertionError(f"automation did not settle in {max_ticks} ticks")


def assert_walks_forward(ticks: list[dict]) -> None:
    """The self-dependent chain is recomputed from BAD to LAST, and nothing before BAD is touched
    except the day before it (Dagster's request for a self-dependent partition also names the
    partition it reads)."""
    recomputed = {part for t in ticks for part in t.get("user_embeddings", [])}
    assert {day(i) for i in range(BAD, LAST + 1)} <= recomputed
    assert min(recomputed) >= day(BAD - 1)


def build(p: Pipeline, upto: int) -> None:
    p.days(day(0), day(4))
    p.train()
    if upto > 4:
        p.days(day(5), day(upto))
    p.run(["user_embeddings"], day(0), day(upto))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[int, np.ndarray]]:
    """The run that never saw the corruption (built once for the module's tests)."""
    tmp_path = tmp_path_factory.mktemp("reference")
    source = write_world(tmp_path / "clean_files")
    (tmp_path / "clean_home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "clean_home")) as instance:
        p = Pipeline(make_resources(tmp_path / "clean", source), instance)
        build(p, LAST)
        return all_embeddings(p, BAD)


def assert_same(got: dict, want: dict) -> None:
    assert got.keys() == want.keys()
    for d in want:
        assert got[d].keys() == want[d].keys(), d
        for uid, emb in want[d].items():
            np.testing.assert_array_equal(got[d][uid], emb, err_msg=f"{d} user {uid}")


@pytest.fixture
def on_files(tmp_path: Path) -> Iterator[tuple[Pipeline, Path]]:
    """A pipeline whose source is a directory of daily Parquet files the test can corrupt."""
    files = tmp_path / "files"
    source = write_world(files)
    (tmp_path / "home").mkdir()
    with dg.instance_for_test(temp_dir=str(tmp_path / "home")) as instance:
        yield Pipeline(make_resources(tmp_path / "data", source), instance), files


def built_partitions(p: Pipeline, key: str) -> set[str]:
    return set(p.instance.get_materialized_partitions(dg.AssetKey(key)))


def test_rejected_day_holds_the_chain_until_repaired(
    on_files: tuple[Pipeline, Path], reference: dict
) -> None:
    """The automation cursor runs from the very first day, so it sees the rejection, the clean
    days after it and the repair (docs/DESIGN.md §7: a cursor started later could not fail)."""
    p, files = on_files
    cursor = dg.evaluate_automation_conditions(defs=p.defs, instance=p.instance).cursor
    p.days(day(0), day(4))
    p.train()
    p.run(["user_embeddings"], day(0))  # the first day by hand; automation carries the chain
    cursor = settle(p, cursor)
    assert built_partitions(p, "user_embeddings") == {day(i) for i in range(BAD)}

    good = corrupt(files, BAD, "scrambled_action_types")
    result = p.run(["raw_actions"], day(BAD), raise_on_error=False)
    assert not result.success  # a rejected day FAILS: the partition is not materialised
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data)
    assert f"raw_actions[{day(BAD)}] rejected: oov_rate" in message
    assert "action_type" in message
    assert "quarantine" in message
    assert "REPIN" in message.upper()
    failed = {
        (e.asset_check_key.name, e.partition)
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }
    assert failed == {("oov_rate", day(BAD))}  # the check of THAT partition
    assert day(BAD) not in built_partitions(p, "raw_actions")
    quarantined = list(
        (p.resources["storage"].root / "quarantine" / "raw_actions" / day(BAD)).iterdir()
    )  # type: ignore[attr-defined]
    assert len(quarantined) == 1
    assert pl.read_parquet(quarantined[0]).height == good.height
    with p.warehouse() as con:
        assert con.execute(
            "SELECT count(*) FROM raw_actions WHERE event_date = ?", [day(BAD)]
        ).fetchone() == (0,)

    for i in range(BAD + 1, LAST + 1):  # clean days keep arriving over the hole
        p.run(["raw_actions"], day(i))
        cursor, ticks = tick(p, cursor)
        assert ticks == {}, f"after day {i}: {ticks}"
        for key in ORDER[1:]:
            assert not {day(j) for j in range(BAD, LAST + 1)} & built_partitions(p, key), key
    # a run by hand (the schedule, a backfill) over the hole refuses too
    held = p.run(["user_timelines"], day(BAD + 1), raise_on_error=False)
    assert not held.success
    assert f"raw_actions is not stored for ['{day(BAD)}']" in str(
        next(e for e in held.all_events if e.event_type_value == "STEP_FAILURE").event_specific_data
    )

    before = {key: built_partitions(p, key) for key in ORDER[1:]}
    good.write_parquet(files / f"{day(BAD)}.parquet")  # the logging bug is fixed upstream
    p.run(["raw_actions"], day(BAD))
    ticks = tick_until_settled(p, cursor)
    assert_walks_forward(ticks)
    rebuilt = {part for t in ticks for parts in t.values() for part in parts}
    assert min(rebuilt) == day(BAD)  # the repair alone rebuilds what read it, nothing earlier
    assert before["user_embeddings"] == {day(i) for i in range(BAD)}
    assert_same(all_embeddings(p, BAD), reference)


def test_silent_corruption_is_recomputed_downstream(
    on_files: tuple[Pipeline, Path], reference: dict
) -> None:
    p, files = on_files
    good = corrupt(files, BAD, "shuffled_pins")
    build(p, LAST)
    corrupted = all_embeddings(p, BAD)
    with pytest.raises(AssertionError):
        assert_same(corrupted, reference)
    cursor = dg.evaluate_automation_conditions(defs=p.defs, instance=p.instance).cursor

    good.write_parquet(files / f"{day(BAD)}.parquet")
    p.run(["raw_actions"], day(BAD))
    ticks = tick_until_settled(p, cursor)
    # every timeline that reads the repaired day (LOOKBACK_DAYS lineage) is rebuilt at once
    assert ticks[0]["user_timelines"] == [day(i) for i in range(BAD, LAST + 1)]
    assert_walks_forward(ticks)
    assert_same(all_embeddings(p, BAD), reference)

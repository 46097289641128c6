"""The daily pipeline end to end on a real instance: merge, first day, missing day, versions."""

import datetime
import json

import dagster as dg
import numpy as np
from polars.testing import assert_frame_equal

from pinner_assets.defs.timelines.assets import write_user_timelines
from pinner_assets.lib.timelines import query_last_actions
from tests.pinner_assets.conftest import TRAIN_CONFIG, Pipeline, day


def embeddings(p: Pipeline, as_of: str) -> dict[int, tuple[np.ndarray, str, str]]:
    with p.warehouse() as con:
        rows = con.execute(
            "SELECT user_id, embedding, model_version, updated_on::VARCHAR FROM user_embeddings "
            "WHERE as_of = ?",
            [as_of],
        ).fetchall()
    return {r[0]: (np.asarray(r[1], dtype=np.float32), r[2], r[3]) for r in rows}


def active_users(p: Pipeline, on: str) -> set[int]:
    with p.warehouse() as con:
        rows = con.execute(
            "SELECT DISTINCT user_id FROM raw_actions WHERE event_date = ?", [on]
        ).fetchall()
    return {r[0] for r in rows}


def test_user_timelines_in_chunks_write_the_one_shot_rows(pipeline: Pipeline) -> None:
    """user_timelines builds a day inside DuckDB, one chunk of active users at a time (memory
    bounded by the chunk): any chunk size writes exactly the rows, columns and types that the
    one-shot query returns, replaces only that day, and counts the same users."""
    p = pipeline
    result = p.run(["raw_actions", "user_timelines"], day(0), day(2))
    metadata = {
        e.partition: e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("user_timelines")
    }
    vocab = p.resources["source"].feature_config()  # type: ignore[attr-defined]
    on = datetime.date.fromisoformat(day(2))
    with p.warehouse() as con:

        def stored(d: datetime.date):
            return con.execute(
                "SELECT * FROM user_timelines WHERE as_of = ? ORDER BY user_id", [d]
            ).pl()

        def ledger() -> tuple | None:
            return con.execute(
                "SELECT n_users FROM user_timeline_partitions WHERE as_of = ?", [on]
            ).fetchone()

        active = "SELECT DISTINCT user_id FROM raw_actions WHERE event_date = $day"
        one_shot = query_last_actions(con, on, active, vocab)
        n = one_shot.height
        assert n > 100
        assert_frame_equal(stored(on), one_shot)  # what the asset wrote
        assert ledger() == (n,)
        assert metadata[day(2)]["active_users"].value == n
        assert metadata[day(2)]["dagster/row_count"].value == n
        day_before = stored(on - datetime.timedelta(days=1))
        for chunk_users in (n, 7):  # one chunk; ~n/7 chunks
            assert write_user_timelines(con, on, vocab, chunk_users) == n
            assert_frame_equal(stored(on), one_shot)
            assert ledger() == (n,)
        assert_frame_equal(stored(on - datetime.timedelta(days=1)), day_before)


def test_daily_embeddings_merge_over_yesterday(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    # A backfill of a range runs the self-dependent chain in order, in ONE run.
    result = p.run(["user_embeddings"], day(0), day(3))
    partitions = [e.partition for e in result.get_asset_materialization_events()]
    assert partitions == [day(0), day(1), day(2), day(3)]
    # per-partition metadata in a range run: each day shows its own row count
    rows = {
        e.partition: e.materialization.metadata["dagster/row_count"].value
        for e in result.get_asset_materialization_events()
    }
    assert rows == {day(i): len(embeddings(p, day(i))) for i in range(4)}
    assert len(set(rows.values())) > 1
    first, second = embeddings(p, day(0)), embeddings(p, day(1))
    assert set(first) == active_users(p, day(0))  # first partition: today's users only
    active = active_users(p, day(1))
    assert set(second) == set(first) | active
    for uid, (emb, _version, updated) in second.items():
        if uid in active:
            assert updated == day(1)
        else:  # inactive users keep exactly yesterday's embedding
            np.testing.assert_array_equal(emb, first[uid][0])
            assert updated == first[uid][2]
        assert abs(float(np.linalg.norm(emb)) - 1.0) < 1e-4
    assert {v for _, v, _ in second.values()} == {next(iter(first.values()))[1]}
    # the chain advances by one day per partition
    assert len(embeddings(p, day(3))) >= len(embeddings(p, day(2))) >= len(second)


def test_missing_previous_partition_fails_loudly(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    p.run(["user_embeddings"], day(0))
    result = p.run(["user_embeddings"], day(2), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"user_embeddings[{day(1)}] is missing" in str(failure.event_specific_data)
    assert embeddings(p, day(2)) == {}  # nothing written


def test_new_model_version_reinfers_every_user(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    p.run(["user_embeddings"], day(0), day(1))
    old = embeddings(p, day(1))
    old_version = next(iter(old.values()))[1]
    config = TRAIN_CONFIG["ops"]["trained_model"]["config"]
    retrain = {"ops": {"trained_model": {"config": {**config, "seed": 1}}}}
    p.train(retrain)
    p.run(["user_embeddings"], day(2))
    new = embeddings(p, day(2))
    versions = {v for _, v, _ in new.values()}
    assert len(versions) == 1
    assert versions != {old_version}
    assert set(old) <= set(new)
    assert all(updated == day(2) for _, _, updated in new.values())


def test_evaluation_report_waits_for_its_labels_and_records_versions(
    trained_pipeline: Pipeline,
) -> None:
    p = trained_pipeline
    p.run(["user_embeddings"], day(0), day(5))
    early = p.run(["evaluation_report"], day(5), raise_on_error=False)
    assert not early.success  # (D, D + 14] is not stored: no report with empty metrics
    failure = next(e for e in early.all_events if e.event_type_value == "STEP_FAILURE")
    assert f"evaluation_report[{day(5)}] needs the labels" in str(failure.event_specific_data)
    p.run(["raw_actions"], day(6), day(19))
    result = p.run(["evaluation_report"], day(4), day(5))
    data_dir = p.resources["storage"].root  # type: ignore[attr-defined]
    metrics = json.loads((data_dir / "reports" / day(5) / "metrics.json").read_text())
    assert metrics["as_of"] == day(5)
    assert metrics["eval_users"] > 0
    assert metrics["horizon_days_available"] == 14
    assert metrics["users_model_version"] == metrics["pins_model_version"]
    for block in (metrics["pinnerformer"], *metrics["baselines"].values()):
        assert set(block) == {"recall_at_10", "p90_coverage_at_10", "interest_entropy_at_50"}
        assert 0 <= block["recall_at_10"] <= 1
    assert set(metrics["baselines"]) == {"popularity", "recent_mean", "history", "item_knn"}
    assert (data_dir / "reports" / day(5) / "report.html").stat().st_size > 0
    curve = metrics["pinnerformer_recall_at_k"]  # recall vs k, one retrieval
    assert list(curve) == ["1", "5", "10", "20", "50", "100"]
    assert list(curve.values()) == sorted(curve.values())
    assert abs(curve["10"] - metrics["pinnerformer"]["recall_at_10"]) < 1e-9
    # per-partition metadata: each day shows its own numbers, not the range's
    by_day = {
        m.materialization.partition: m.materialization.metadata
        for m in result.get_asset_materialization_events()
    }
    assert set(by_day) == {day(4), day(5)}
    assert by_day[day(5)]["eval_users"].value == metrics["eval_users"]
    assert by_day[day(4)]["eval_users"].value != by_day[day(5)]["eval_users"].value

"""A retrain never rewrites history and never mixes models (issue 9, docs/DESIGN.md §7).

The automation cursor starts before the retrain it must see. After training_job: no daily
partition is re-requested, past reports keep their numbers and model version, and LanceDB keeps
publishing ONE model version (the retrain's pins wait until the users are re-inferred).
"""

import json

import dagster as dg
import numpy as np

from pinner_assets.lib.vectors import open_published
from tests.pinner_assets.conftest import TRAIN_CONFIG, Pipeline, day
from tests.pinner_assets.test_recovery import settle, tick

DAILY = ["raw_actions", "user_timelines", "user_embeddings", "embedding_drift", "evaluation_report"]


def published(p: Pipeline) -> tuple[str, set[str], set[str], list[str]]:
    """The pointer's version, the versions found in the published users and pins, all tables."""
    uri = p.resources["storage"].lancedb_uri  # type: ignore[attr-defined]
    users, pins, pointer = open_published(uri)
    u = set(users.to_arrow()["model_version"].to_pylist())
    v = set(pins.to_arrow()["model_version"].to_pylist())
    import lancedb

    return pointer["model_version"], u, v, sorted(lancedb.connect(uri).list_tables().tables)


def report(p: Pipeline, key: str) -> dict:
    root = p.resources["storage"].root  # type: ignore[attr-defined]
    return json.loads((root / "reports" / key / "metrics.json").read_text())


def test_retrain_rewrites_no_history_and_publishes_one_version(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    p.days(day(6), day(16))  # training reads up to TRAIN_END only: the same model as after
    p.run(["user_embeddings"], day(0), day(16))
    p.run(["evaluation_report"], day(0), day(2))
    p.run(["embedding_drift"], day(0), day(16))
    cursor = dg.evaluate_automation_conditions(defs=p.defs, instance=p.instance).cursor
    cursor = settle(p, cursor)
    old, users_v, pins_v, tables = published(p)
    assert users_v == pins_v == {old}
    assert len(tables) == 2
    before = {key: report(p, key) for key in (day(0), day(1), day(2))}
    assert {r["users_model_version"] for r in before.values()} == {old}
    counts = {
        key: len(p.instance.fetch_materializations(dg.AssetKey(key), limit=1000).records)
        for key in DAILY
    }

    config = TRAIN_CONFIG["ops"]["trained_model"]["config"]
    p.train({"ops": {"trained_model": {"config": {**config, "seed": 1}}}})  # training_job
    # the new pins are staged, not published: notebooks still read one (the old) version
    version, users_v, pins_v, tables = published(p)
    assert version == old
    assert users_v == pins_v == {old}
    new = json.loads(
        (p.resources["storage"].root / "models" / "serving.json").read_text()  # type: ignore[attr-defined]
    )["version"]
    assert new != old
    assert sorted(tables) == sorted(
        [f"pins__{old.replace('-', '_')}", f"pins__{new.replace('-', '_')}"]
        + [f"users__{old.replace('-', '_')}"]
    )

    cursor, requested = tick(p, cursor)
    assert requested == {}, requested  # no historical day, report or drift is re-requested
    cursor = settle(p, cursor)
    for key in DAILY:
        n = len(p.instance.fetch_materializations(dg.AssetKey(key), limit=1000).records)
        assert n == counts[key], key

    # the next daily run re-infers every user with the new model and publishes the new pair
    p.run(["raw_actions", "user_timelines", "user_embeddings"], day(17))
    version, users_v, pins_v, tables = published(p)
    assert version == new
    assert users_v == pins_v == {new}
    assert len(tables) == 2  # the old version's tables are gone once the new pair is published
    cursor, requested = tick(p, cursor)
    # day 3's labels (days 4..17) are now complete: its FIRST report is due; day 17's are not
    assert requested.get("evaluation_report") == [day(3)]
    for key, parts in requested.items():  # nothing already built is requested again
        assert not set(parts) & set(p.instance.get_materialized_partitions(dg.AssetKey(key)))
    for key, was in before.items():  # past reports keep their numbers and their model version
        assert report(p, key) == was
    with p.warehouse() as con:
        versions = dict(
            con.execute(
                "SELECT as_of::VARCHAR, any_value(model_version) FROM user_embeddings "
                "GROUP BY as_of"
            ).fetchall()
        )
    assert {versions[day(i)] for i in range(17)} == {old}
    assert versions[day(17)] == new
    np.testing.assert_equal(len(versions), 18)

"""The promotion gate: only a model that passes its blocking check is served (issue 9)."""

import json

import dagster as dg

from pinner_assets.lib.promotion import PromotionPolicy
from tests.pinner_assets.conftest import TRAIN_CONFIG, Pipeline, day

TRAINED = {**TRAIN_CONFIG["ops"]["trained_model"]["config"], "steps": 60}
# a launchpad experiment: one step at a negligible learning rate, i.e. an untrained network
LAUNCHPAD = {**TRAINED, "steps": 1, "lr": 1e-9, "seed": 5}


def serving(p: Pipeline) -> str:
    root = p.resources["storage"].root  # type: ignore[attr-defined]
    return json.loads((root / "models" / "serving.json").read_text())["version"]


def gate(result: dg.ExecuteInProcessResult) -> dg.AssetCheckEvaluation:
    return next(e for e in result.get_asset_check_evaluations() if e.check_name == "promotion_gate")


def test_launchpad_model_is_not_promoted(pipeline: Pipeline) -> None:
    p = pipeline
    # the default policy except a validation slice that fits the 5 training days of the test
    p.resources["promotion"] = PromotionPolicy(validation_days=2)
    p.days(day(0), day(4))
    first = p.run(
        ["pin_features", "training_timelines", "count_min_sketch", "trained_model"],
        run_config={"ops": {"trained_model": {"config": TRAINED}}},
        raise_on_error=False,
    )
    check = gate(first)
    meta = {k: v.value for k, v in check.metadata.items()}
    assert check.passed, meta  # no serving model yet; beats popularity on the slice
    served = serving(p)
    assert meta["candidate_version"] == served
    (mat,) = first.get_asset_materialization_events()[-1:]
    assert mat.materialization.tags["dagster/data_version"] == served  # content hash

    second = p.run(
        ["trained_model", "pin_embeddings"],
        run_config={"ops": {"trained_model": {"config": LAUNCHPAD}}},
        raise_on_error=False,
    )
    check = gate(second)
    meta = {k: v.value for k, v in check.metadata.items()}
    assert not check.passed, meta
    assert meta["serving_version"] == served
    assert meta["candidate_recall_at_10"] < meta["serving_recall_at_10"]
    assert not second.success  # the blocking check stops the pin side in the same run
    assert not [
        e
        for e in second.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("pin_embeddings")
    ]
    assert serving(p) == served  # the served model did not move
    p.run(["pin_embeddings"])  # what is served is still the first model
    with p.warehouse() as con:
        versions = con.execute("SELECT DISTINCT model_version FROM pin_embeddings").fetchall()
    assert versions == [(served,)]

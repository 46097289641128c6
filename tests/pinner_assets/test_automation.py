"""The automation sensor never launches a run that can only fail: nothing downstream of the model
before a model exists."""

import dagster as dg

from tests.pinner_assets.conftest import TRAINED_DAYS, Pipeline

DOWNSTREAM = ("user_embeddings", "embedding_drift", "evaluation_report")


def requested(p: Pipeline, cursor: object) -> tuple[object, dict[str, list[str]]]:
    result = dg.evaluate_automation_conditions(defs=p.defs, instance=p.instance, cursor=cursor)
    keys = ("user_timelines", *DOWNSTREAM)
    found = {k: sorted(result.get_requested_partitions(dg.AssetKey(k))) for k in keys}
    return result.cursor, {k: v for k, v in found.items() if v}


def test_nothing_downstream_of_the_model_is_launched_before_a_model_exists(
    pipeline: Pipeline,
) -> None:
    p = pipeline
    cursor, _ = requested(p, None)  # the cursor starts before the events it reasons about
    p.days(*TRAINED_DAYS)
    cursor, first = requested(p, cursor)
    assert not set(first) & set(DOWNSTREAM), first  # no model yet: nothing inferred
    p.train()
    _, after = requested(p, cursor)
    assert after.get("user_embeddings", [])[:1] == [TRAINED_DAYS[0]]  # the chain starts

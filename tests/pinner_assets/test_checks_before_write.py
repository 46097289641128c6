"""Checks run on the in-memory result: a bad computation writes and publishes nothing."""

import dagster as dg
import torch

from pinner_assets.lib.promotion import serving_version
from pinner_assets.lib.vectors import read_pointer
from tests.pinner_assets.conftest import Pipeline, day


def test_nan_embeddings_are_never_written_or_published(trained_pipeline: Pipeline) -> None:
    p = trained_pipeline
    p.run(["user_embeddings"], day(0), day(1))
    storage = p.resources["storage"]
    uri = storage.lancedb_uri  # type: ignore[attr-defined]
    before = read_pointer(uri)
    assert before is not None
    # the served checkpoint goes bad on disk (a corrupt copy, a numerics bug): NaN weights
    version = serving_version(storage)  # type: ignore[arg-type]
    path = storage.path("models", str(version), "model.pt")  # type: ignore[attr-defined]
    state = torch.load(path, map_location="cpu", weights_only=True)
    for name, tensor in state["model"].items():
        if tensor.is_floating_point():
            state["model"][name] = torch.full_like(tensor, float("nan"))
    torch.save(state, path)

    result = p.run(["user_embeddings"], day(2), raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "not written: embeddings_valid failed" in str(failure.event_specific_data)
    assert not result.get_asset_materialization_events()
    with p.warehouse() as con:
        assert con.execute(
            "SELECT count(*) FROM user_embeddings WHERE as_of = ?", [day(2)]
        ).fetchone() == (0,)
        assert con.execute(
            "SELECT count(*) FROM user_embedding_partitions WHERE as_of = ?", [day(2)]
        ).fetchone() == (0,)
    pointer = read_pointer(uri)
    assert pointer is not None
    assert pointer["users_as_of"] == before["users_as_of"] == day(1)  # LanceDB untouched

    with p.warehouse() as con:
        stored_pins = con.execute("SELECT count(*) FROM pin_embeddings").fetchone()
    pins = p.run(["pin_embeddings"], raise_on_error=False)
    assert not pins.success  # the pin side refuses the same way
    assert not [
        e
        for e in pins.get_asset_materialization_events()
        if e.asset_key == dg.AssetKey("pin_embeddings")
    ]
    with p.warehouse() as con:
        assert con.execute("SELECT count(*) FROM pin_embeddings").fetchone() == stored_pins

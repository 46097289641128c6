"""Amazon review 5-core reader: every review a positive, attribute codes as metadata, ties kept in
file order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from model_core.data.sources import read_source
from model_core.data.timelines import PinCatalog, Timelines

SPORTS = Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets" / "amazon-sports-5core"


def test_reviews_become_positive_actions_with_attribute_metadata(tmp_path: Path) -> None:
    (tmp_path / "interactions.csv").write_text(
        "user_id,item_id,timestamp\n1,30,86400\n1,10,86400\n1,20,172800\n2,10,86400\n"
    )
    (tmp_path / "item_attributes.csv").write_text("item_id,attribute_ids\n10,5|7\n20,9\n")
    log = read_source("amazon", tmp_path)
    assert log.actions["pin_id"].to_list() == [30, 10, 20, 10]  # same-day ties: file order
    assert log.rule.frame_mask(log.actions).all()
    items = {r["pin_id"]: (r["topic"], r["text"]) for r in log.items.iter_rows(named=True)}
    assert items[10] == (5, "a5 a7")
    assert items[20] == (9, "a9")
    assert items[30] == (None, None)  # reviewed but without attributes
    catalog = PinCatalog(
        log.items["pin_id"].to_numpy(), np.ones((3, 2), np.float32), np.full(3, -1, np.int64)
    )
    tl, drops = Timelines.from_actions(
        log.actions, catalog, log.feature_config(content_dim=2), log.rule
    )
    assert drops.total == 0
    assert tl.pin_id.tolist() == [30, 10, 20, 10]


@pytest.mark.skipif(not SPORTS.exists(), reason=f"Amazon Sports not found at {SPORTS}")
def test_sports_counts() -> None:
    log = read_source("amazon", SPORTS)
    assert log.actions.height == 296_337
    assert log.actions["user_id"].n_unique() == 35_598
    assert log.items.height == 18_357
    assert log.notes["items_without_metadata"] == 0

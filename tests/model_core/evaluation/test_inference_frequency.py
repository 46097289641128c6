"""Table 2: embeddings computed once at t, daily, or in realtime over the evaluation horizon."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from model_core.data.synthetic import WorldConfig
from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.inference_frequency import (
    cutoff_times,
    inference_frequency_metrics,
    window_ends,
)
from model_core.evaluation.paper_protocol import (
    EvalConfig,
    build_eval_set,
    evaluate,
    popularity_counts,
)
from model_core.features.actions import FeatureConfig
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.recipe import split_timestamp

DAY = 86_400


def test_cutoffs_follow_the_update_frequency() -> None:
    t = 100 * DAY
    tau = np.array([t + 5, t + DAY + 7, t + 3 * DAY + 20_000])
    assert cutoff_times(tau, t, "once").tolist() == [t, t, t]
    # daily: everything before tau's day, but never earlier than t
    assert cutoff_times(tau, t, "daily").tolist() == [t, t + DAY - 1, t + 3 * DAY - 1]
    assert cutoff_times(tau, t, "realtime").tolist() == (tau - 1).tolist()
    with pytest.raises(ValueError, match="mode"):
        cutoff_times(tau, t, "hourly")  # type: ignore[arg-type]


def test_window_ends_never_read_the_positive_or_later(
    tiny_world: WorldConfig, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    split = split_timestamp(tiny_world.dates[-1], 7)
    es = build_eval_set(tiny_timelines, tiny_catalog, split, EvalConfig(horizon_days=7))
    tl = es.timelines
    for mode in ("once", "daily", "realtime"):
        cutoff = cutoff_times(es.positive_ts, split, mode)
        ends = window_ends(tl, es.positive_user, cutoff)
        assert (tl.ts[ends] <= cutoff).all()
        assert (tl.ts[ends] < es.positive_ts).all()  # the positive itself is never input
        # ...and the window is the LATEST one allowed: the user's next action is past the cutoff
        nxt = ends + 1
        same_user = nxt < tl.offsets[es.positive_user + 1]
        assert (tl.ts[nxt[same_user]] > cutoff[same_user]).all()


@pytest.mark.parametrize("remove_seen", [False, True])
def test_once_equals_the_standard_evaluation(
    tiny_world: WorldConfig,
    tiny_timelines: Timelines,
    tiny_catalog: PinCatalog,
    remove_seen: bool,
) -> None:
    """ "once" is the standard evaluation at t, seen items removed or not alike; fresher
    embeddings leave out what the user had engaged with by their own time."""
    split = split_timestamp(tiny_world.dates[-1], 7)
    cfg = EvalConfig(horizon_days=7, remove_seen=remove_seen)
    es = build_eval_set(tiny_timelines, tiny_catalog, split, cfg)
    torch.manual_seed(0)
    model = PinnerFormer(
        ModelConfig(
            features=FeatureConfig(content_dim=tiny_world.content_dim),
            max_len=16,
            hidden=32,
            n_heads=4,
            out_dim=16,
            pin_hidden=32,
        )
    )
    freq = inference_frequency_metrics(model, es, tiny_catalog)
    standard = evaluate(model, es, tiny_catalog, popularity_counts(es.history, len(tiny_catalog)))
    assert freq["once"].recall_at_k == pytest.approx(standard["pinnerformer"].recall_at_k)
    np.testing.assert_allclose(
        freq["once"].per_user_recall, standard["pinnerformer"].per_user_recall
    )
    assert freq["once"].n_users == standard["pinnerformer"].n_users
    for m in freq.values():
        assert 0.0 <= m.recall_at_k <= 1.0
        assert m.n_positives == len(es.positive_user)
    # Fresher embeddings read different windows, so the figures are not all the same number.
    assert len({round(m.recall_at_k, 9) for m in freq.values()}) > 1

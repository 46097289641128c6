"""Only the raw_actions gate message is filtered from Dagster's plan log; every other warning of
that logger still reaches the handlers."""

from __future__ import annotations

import logging

import pytest

import pinner_assets  # noqa: F401  (installs the filter)

PLAN = logging.getLogger("dagster._core.execution.plan.active")


def test_the_raw_actions_gate_message_is_filtered_and_nothing_else(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger=PLAN.name):
        PLAN.warning(
            "Blocking asset check 'raw_actions:volume' emitted no result in step 'raw_actions'; "
            "downstream step 'user_timelines' will proceed without gating on it."
        )
        PLAN.warning(
            "Blocking asset check 'pin_embeddings:embeddings_valid' emitted no result in step "
            "'pin_embeddings'; downstream step 'pin_index' will proceed without gating on it."
        )
    assert [r.getMessage().split("'")[1] for r in caplog.records] == [
        "pin_embeddings:embeddings_valid"
    ]

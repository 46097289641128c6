"""Declarative automation: re-materialising an old day recomputes every downstream day.

`eager()` alone only looks at the latest partition; without that restriction an update to an
old `raw_actions` day requests the same day downstream, and the self-dependent `user_embeddings`
chain then walks forward to the latest day. A failed blocking check on a dependency holds
everything back. The model is ignored so a retrain does not replay history (DESIGN §7).
"""

import dagster as dg

DAILY_EAGER = (
    dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
    & dg.AutomationCondition.all_deps_blocking_checks_passed()
)
EMBEDDINGS_EAGER = DAILY_EAGER.ignore(dg.AssetSelection.assets("trained_model"))

automation_sensor = dg.AutomationConditionSensorDefinition(
    "automation_sensor",
    target=dg.AssetSelection.all(),
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)

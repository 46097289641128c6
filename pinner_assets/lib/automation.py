"""Declarative automation: re-materialising an old day recomputes every downstream day.

`eager()` alone only looks at the latest partition; without that restriction an update to an
old `raw_actions` day requests the same day downstream, and the self-dependent `user_embeddings`
chain then walks forward to the latest day.

Holes hold the chain back by being MISSING: a rejected raw_actions day fails its materialisation
(its checks are recorded on that partition), so every partition that reads it waits in
`~any_deps_missing` until the day is repaired, and the repair alone triggers the rebuild. Checks
on computed assets run on the in-memory result and fail the step before anything is written, so
the same holds for them. (A condition on the raw checks' status is not used: partitioned check
status is a preview feature and a range run records its evaluations per partition by hand.)

A retrain must not replay history (docs/DESIGN.md §7): every asset a retrain touches is ignored by
the daily assets' conditions, and the serving model changes only through the promotion gate.
"""

import datetime

import dagster as dg

DAILY_EAGER = dg.AutomationCondition.eager().without(dg.AutomationCondition.in_latest_time_window())
# The pin side follows a retrain only once trained_model's blocking promotion_gate passed (an
# unpartitioned check, so its latest result is the right one to read).
PIN_EAGER = DAILY_EAGER & dg.AutomationCondition.all_deps_blocking_checks_passed()
# What a retrain (training_job) rematerialises; none of it may re-request a daily partition.
RETRAIN_ASSETS = dg.AssetSelection.assets(
    "pin_features", "trained_model", "pin_embeddings", "pin_index"
)
EMBEDDINGS_EAGER = DAILY_EAGER.ignore(RETRAIN_ASSETS)
# Nothing is inferred before a model exists: right after the first ingest, user_embeddings (and so
# embedding_drift and evaluation_report, which read it) would only fail. A retrain that fails its
# promotion gate keeps the previous model serving, so a trained model, not a passed gate, is the
# condition (the first model failing its gate is the one case left to fail, loudly).
MODEL_TRAINED = dg.AutomationCondition.any_deps_match(~dg.AutomationCondition.missing()).allow(
    dg.AssetSelection.assets("trained_model")
)
SERVING_EAGER = EMBEDDINGS_EAGER & MODEL_TRAINED
# evaluation_report[D] needs the labels of (D, D + 14]: never within 14 days of the latest day,
# and never while one of those raw_actions days is missing.
LABEL_HORIZON = datetime.timedelta(days=14)
REPORT_EAGER = EMBEDDINGS_EAGER & ~dg.AutomationCondition.in_latest_time_window(LABEL_HORIZON)

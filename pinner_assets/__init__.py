"""PinnerFormer as a Dagster project: `definitions.py` assembles the code location from the
definitions grouped by domain under `defs/` (ingest, timelines, training, serving, evaluation,
automation); `lib/` holds the reusable code that is not a definition (resources, warehouse
tables, vector stores, the training launcher, the promotion gate, the report); `cli.py` is
`pinner`.

Three Dagster features the pipeline relies on are marked beta or preview in Dagster 1.13, and
each use warns at import: a single-run backfill policy (a self-dependent asset computes a range
in order, docs/DESIGN.md §7), partition mappings that allow a missing upstream partition (the
first day of a self-dependent chain), and partitioned asset-check specs (each raw_actions rule is
recorded on the day it judged). They are chosen on purpose and tested, so their warnings, and
only theirs, are silenced here, before any definition is built.

One consequence of the last is logged by every run that ingests: raw_actions reports its rules as
per-day check evaluations rather than as the step's check outputs, so Dagster's plan says, for
each rule, that the downstream step "will proceed without gating on it". The gate holds all the
same: a day that breaks a blocking rule fails the raw_actions step itself (tested in
tests/pinner_assets/test_bad_inputs.py), so that message, and only that one, is filtered too.
"""

import logging
import os
import warnings

# LanceDB's Rust log says WARN "No existing dataset ... it will be created" for every table the
# pipeline creates; its errors still print.
os.environ.setdefault("LANCEDB_LOG", "error")

for _message in (
    r"Parameter `backfill_policy` of function `asset",
    r"Parameter `backfill_policy` of function `multi_asset",
    r"Parameter `allow_nonexistent_upstream_partitions`",
    r"Specifying a partitions_def on an AssetCheckSpec",
):
    warnings.filterwarnings("ignore", message=_message)


class _RawActionChecksGateTheirOwnStep(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (
            message.startswith("Blocking asset check 'raw_actions:")
            and "emitted no result in step 'raw_actions'" in message
        )


logging.getLogger("dagster._core.execution.plan.active").addFilter(
    _RawActionChecksGateTheirOwnStep()
)

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
"""

import warnings

for _message in (
    r"Parameter `backfill_policy` of function `asset",
    r"Parameter `backfill_policy` of function `multi_asset",
    r"Parameter `allow_nonexistent_upstream_partitions`",
    r"Specifying a partitions_def on an AssetCheckSpec",
):
    warnings.filterwarnings("ignore", message=_message)

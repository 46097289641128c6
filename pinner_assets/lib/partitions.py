"""Daily partitions, importable from anywhere without cycles.

The default range is the synthetic world's 70 days. For a production or public log, set
PINNER_START_DATE and PINNER_END_DATE (exclusive; empty = open-ended, so the schedule keeps adding
days) to its dates, e.g. 2017-11-24 and 2017-12-04 for the Taobao UserBehavior sample (UTC dates;
docs/REAL_DATA.md). They are read once, when the code location is imported.
"""

import os

import dagster as dg

START_DATE = os.environ.get("PINNER_START_DATE", "2026-01-01")
END_DATE = os.environ.get("PINNER_END_DATE", "2026-03-12") or None

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_date=END_DATE)

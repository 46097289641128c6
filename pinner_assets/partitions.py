"""Daily partitions, importable from anywhere without cycles.

The default range is the synthetic world's 70 days. For a production log, set PINNER_START_DATE
and PINNER_END_DATE (exclusive; empty = open-ended, so the schedule keeps adding days).
"""

import os

import dagster as dg

START_DATE = os.environ.get("PINNER_START_DATE", "2026-01-01")
END_DATE = os.environ.get("PINNER_END_DATE", "2026-03-12") or None

daily_partitions = dg.DailyPartitionsDefinition(start_date=START_DATE, end_date=END_DATE)

"""Freshness checks: the operator learns that a day is late before a downstream user does.

- user_embeddings: the daily schedule runs at 01:30 UTC for the day that just ended; by 04:00 UTC
  that partition must exist (time-partition freshness).
- evaluation_report: a day is reported once its 14 days of labels are stored, i.e. about one
  report per day, 15 days behind; it is overdue when nothing was reported for two days.
"""

import datetime

import dagster as dg

user_embeddings_freshness = dg.build_time_partition_freshness_checks(
    assets=[dg.AssetKey("user_embeddings")], deadline_cron="0 4 * * *"
)
evaluation_report_freshness = dg.build_last_update_freshness_checks(
    assets=[dg.AssetKey("evaluation_report")], lower_bound_delta=datetime.timedelta(days=2)
)
freshness_checks = [*user_embeddings_freshness, *evaluation_report_freshness]

"""Freshness policies: the operator learns that a day is late before a downstream user does.

- user_embeddings: the daily schedule runs at 01:30 UTC for the day that just ended; by 04:00 UTC
  a new materialisation must exist (one newer than 01:30).
- evaluation_report: a day is reported once its 14 days of labels are stored, i.e. about one
  report per day, 15 days behind; it is overdue when nothing was reported for two days.

Dagster evaluates the policies itself (no sensor); the UI shows each asset's freshness state.
"""

import datetime

import dagster as dg

USER_EMBEDDINGS_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 4 * * *", lower_bound_delta=datetime.timedelta(hours=2, minutes=30)
)
EVALUATION_REPORT_FRESHNESS = dg.FreshnessPolicy.time_window(fail_window=datetime.timedelta(days=2))

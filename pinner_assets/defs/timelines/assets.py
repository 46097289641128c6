"""user_timelines (daily) and training_timelines: one row per user, built by DuckDB SQL."""

import datetime

import dagster as dg
import duckdb
import numpy as np
import polars as pl
from dagster_duckdb import DuckDBResource

from model_core.evaluation.paper_protocol import is_eval_user
from model_core.features.actions import FeatureConfig
from pinner_assets.lib.automation import DAILY_EAGER
from pinner_assets.lib.partitions import daily_partitions
from pinner_assets.lib.resources import ActionSource, EvaluationSplit
from pinner_assets.lib.timelines import (
    LOOKBACK_DAYS,
    last_actions_params,
    last_actions_sql,
    query_last_actions,
)
from pinner_assets.lib.warehouse import (
    LOCK_RETRY,
    ensure_tables,
    replace_ledger_row,
    replacing_day,
    stored_days,
    utc_now,
)

LOOKBACK = dg.TimeWindowPartitionMapping(
    start_offset=-(LOOKBACK_DAYS - 1), end_offset=0, allow_nonexistent_upstream_partitions=True
)
# Active users whose windows one query builds: user_timelines' memory is bounded by this, not by
# the day's active users (one query over all of them peaked at ≈ 25 KiB per user, SCALING.md §2).
CHUNK_USERS = 100_000


def write_user_timelines(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    vocab: FeatureConfig,
    chunk_users: int = CHUNK_USERS,
) -> int:
    """Replace user_timelines[day] and its ledger row in one transaction with the windows of the
    users active on `day`; returns their number.

    The rows never come back to Python: `INSERT … SELECT` of `last_actions_sql`, once per chunk
    of about `chunk_users` active users (a hash of user_id modulo the number of chunks), so one
    chunk's windows are in memory at a time. The chunks split the users, not their rows: any
    `chunk_users` writes the same rows.
    """
    with replacing_day(con, "user_timelines", "as_of", day):
        row = con.execute(
            "SELECT count(DISTINCT user_id) FROM raw_actions WHERE event_date = ?", [day]
        ).fetchone()
        chunks = max(1, -(-int(row[0] if row else 0) // chunk_users))
        active = (
            "SELECT DISTINCT user_id FROM raw_actions "
            "WHERE event_date = $day AND hash(user_id) % $chunks = $chunk"
        )
        insert = f"INSERT INTO user_timelines BY NAME {last_actions_sql(active)}"
        n_users = 0
        for chunk in range(chunks):
            params = {**last_actions_params(day, vocab), "chunks": chunks, "chunk": chunk}
            inserted = con.execute(insert, params).fetchone()
            n_users += int(inserted[0]) if inserted else 0
        replace_ledger_row(con, "user_timeline_partitions", "as_of", day, [day, n_users, utc_now()])
    return n_users


def missing_raw_days(con: duckdb.DuckDBPyConnection, day: datetime.date) -> list[datetime.date]:
    """Days of the lookback window of `day` (inside the partition range) with no stored
    raw_actions: never ingested, or rejected and not yet repaired. A timeline built over such a
    hole would silently lack those actions."""
    first = max(
        day - datetime.timedelta(days=LOOKBACK_DAYS - 1),
        datetime.date.fromisoformat(daily_partitions.get_first_partition_key() or day.isoformat()),
    )
    have = stored_days(con, "raw_action_partitions", "event_date", first, day)
    n = (day - first).days + 1
    return [d for d in (first + datetime.timedelta(days=i) for i in range(n)) if d not in have]


@dg.asset(
    partitions_def=daily_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[dg.AssetDep("raw_actions", partition_mapping=LOOKBACK)],
    pool="duckdb",
    group_name="timelines",
    kinds={"duckdb"},
    owners=["team:data-platform"],
    code_version="user_timelines-2",
    metadata={
        "partition_expr": "as_of",
        "dagster/column_schema": dg.TableSchema(
            columns=[
                dg.TableColumn("as_of", "DATE", description="partition"),
                dg.TableColumn("user_id", "BIGINT", description="active on the day"),
                dg.TableColumn("ts", "TIMESTAMP[]", description="last M actions, oldest first"),
                dg.TableColumn("pin_id", "BIGINT[]"),
                dg.TableColumn("action_type", "VARCHAR[]"),
                dg.TableColumn("surface", "VARCHAR[]"),
                dg.TableColumn("duration_s", "DOUBLE[]"),
            ]
        ),
    },
    automation_condition=DAILY_EAGER,
    retry_policy=LOCK_RETRY,
)
def user_timelines(
    context: dg.AssetExecutionContext, source: ActionSource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """For the users active on the day: their last M actions (within LOOKBACK_DAYS) up to the
    end of the day, in the source's vocabulary. Refuses to build over a hole: every raw_actions
    day of the window must be stored. Written inside DuckDB, a chunk of active users at a time
    (`write_user_timelines`): memory does not grow with the day's active users."""
    vocab = source.feature_config()
    with duckdb.get_connection() as con:
        ensure_tables(con)
        for key in context.partition_keys:
            day = datetime.date.fromisoformat(key)
            holes = missing_raw_days(con, day)
            if holes:
                raise dg.Failure(
                    f"user_timelines[{key}] reads raw_actions {holes[0]} .. {day}, and "
                    f"raw_actions is not stored for {[d.isoformat() for d in holes][:10]}"
                    f"{' ...' if len(holes) > 10 else ''} (rejected or never ingested). Repair "
                    "or ingest those days first; automation then rebuilds this day.",
                    allow_retries=False,
                )
            n_users = write_user_timelines(con, day, vocab)
            context.add_asset_metadata(
                {"dagster/row_count": n_users, "active_users": n_users}, partition_key=key
            )
    return dg.MaterializeResult()


def training_window() -> dg.PartitionMapping:
    """The raw_actions days training_timelines reads: every day up to the split's last training
    day (PINNER_TRAIN_END_DATE, as EvaluationSplit.from_env), so a new day does not make the
    training side stale. Falls back to every day when the split lies outside the range."""
    end = EvaluationSplit.from_env().train_end_date
    keys = [k for k in daily_partitions.get_partition_keys() if k <= end]
    return dg.SpecificPartitionsPartitionMapping(keys) if keys else dg.AllPartitionMapping()


@dg.asset(
    deps=[dg.AssetDep("raw_actions", partition_mapping=training_window())],
    pool="duckdb",
    retry_policy=LOCK_RETRY,
    group_name="training",
    kinds={"duckdb"},
    owners=["team:ml-platform"],
)
def training_timelines(
    split: EvaluationSplit, source: ActionSource, duckdb: DuckDBResource
) -> dg.MaterializeResult:
    """One row per TRAINING user (held-out users excluded): their whole timeline up to
    train_end_date, in the source's vocabulary. Training examples are sampled from it on the
    fly (paper §3.5)."""
    end = split.train_end
    vocab = source.feature_config()
    with duckdb.get_connection() as con:
        users = (
            con.execute(
                "SELECT DISTINCT user_id FROM raw_actions WHERE event_date <= ? ORDER BY 1", [end]
            )
            .pl()["user_id"]
            .to_numpy()
        )
        train_users = users[~is_eval_user(users.astype(np.int64), split.eval_fraction)]
        con.register("_train_users", pl.DataFrame({"user_id": train_users}).to_arrow())
        rows = query_last_actions(
            con,
            end,
            "SELECT user_id FROM _train_users",
            vocab,
            max_len=None,
            lookback=100_000,
        )
        con.execute("BEGIN TRANSACTION")
        con.execute("DROP TABLE IF EXISTS training_timelines")
        con.register("_rows", rows.drop("as_of").to_arrow())
        con.execute("CREATE TABLE training_timelines AS SELECT * FROM _rows")
        con.execute("COMMIT")
    lengths = rows["ts"].list.len()
    return dg.MaterializeResult(
        metadata={
            "train_users": rows.height,
            "held_out_users": int(len(users) - len(train_users)),
            "actions": int(lengths.sum()),
            "median_length": float(lengths.cast(pl.Float64).median() or 0.0),  # type: ignore[arg-type]
            "train_end_date": split.train_end_date,
        }
    )

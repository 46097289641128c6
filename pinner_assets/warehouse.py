"""DuckDB tables of the pipeline and the one write pattern they share.

Every partitioned write is DELETE + INSERT of one day inside ONE transaction, so a failed run
never leaves a day half-written (the dagster-duckdb IO manager does the two outside a transaction,
DESIGN §7). Partition columns are DATE, never VARCHAR.
"""

import datetime

import duckdb
import polars as pl

DDL = {
    "raw_actions": """
        CREATE TABLE IF NOT EXISTS raw_actions (
            event_date DATE NOT NULL, ts TIMESTAMP NOT NULL, user_id BIGINT NOT NULL,
            pin_id BIGINT NOT NULL, action_type VARCHAR NOT NULL, surface VARCHAR NOT NULL,
            duration_s DOUBLE NOT NULL)""",
    "user_timelines": """
        CREATE TABLE IF NOT EXISTS user_timelines (
            as_of DATE NOT NULL, user_id BIGINT NOT NULL, ts TIMESTAMP[], pin_id BIGINT[],
            action_type VARCHAR[], surface VARCHAR[], duration_s DOUBLE[])""",
    "user_embeddings": """
        CREATE TABLE IF NOT EXISTS user_embeddings (
            as_of DATE NOT NULL, user_id BIGINT NOT NULL, embedding FLOAT[] NOT NULL,
            model_version VARCHAR NOT NULL, updated_on DATE NOT NULL)""",
    # One row per materialised user_embeddings partition, written in the same transaction, so a
    # partition with zero users is still distinguishable from a missing one.
    "user_embedding_partitions": """
        CREATE TABLE IF NOT EXISTS user_embedding_partitions (
            as_of DATE PRIMARY KEY, model_version VARCHAR NOT NULL, n_users BIGINT NOT NULL,
            n_inferred BIGINT NOT NULL, full_reinference BOOLEAN NOT NULL)""",
}


def ensure_tables(con: duckdb.DuckDBPyConnection) -> None:
    for ddl in DDL.values():
        con.execute(ddl)


def replace_day(
    con: duckdb.DuckDBPyConnection, table: str, date_col: str, day: datetime.date, df: pl.DataFrame
) -> None:
    """Atomically replace the rows of `day` in `table` with `df` (same columns, same order)."""
    ensure_tables(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {table} WHERE {date_col} = ?", [day])
        if df.height:
            con.register("_incoming", df.to_arrow())
            con.execute(f"INSERT INTO {table} SELECT * FROM _incoming")
            con.unregister("_incoming")
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def to_naive_utc(df: pl.DataFrame, col: str = "ts") -> pl.DataFrame:
    """DuckDB stores TIMESTAMP (naive, UTC by contract); polars carries the UTC zone."""
    return df.with_columns(pl.col(col).dt.convert_time_zone("UTC").dt.replace_time_zone(None))

"""DuckDB tables of the pipeline and the one write pattern they share.

Every partitioned write is DELETE + INSERT of one day inside ONE transaction, so a failed run
never leaves a day half-written (the dagster-duckdb IO manager does the two outside a transaction,
docs/DESIGN.md §7). Partition columns are DATE, never VARCHAR.
"""

import contextlib
import datetime
import time
from collections.abc import Iterator, Sequence

import dagster as dg
import duckdb
import polars as pl
from dagster_duckdb import DuckDBResource

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
    # One row per stored raw_actions day, written in the day's own transaction: a day that was
    # never accepted (missing, or rejected and never repaired) has no row, an empty one is refused.
    "raw_action_partitions": """
        CREATE TABLE IF NOT EXISTS raw_action_partitions (
            event_date DATE PRIMARY KEY, n_rows BIGINT NOT NULL, content_hash VARCHAR NOT NULL,
            ingested_at TIMESTAMP NOT NULL)""",
    "user_timeline_partitions": """
        CREATE TABLE IF NOT EXISTS user_timeline_partitions (
            as_of DATE PRIMARY KEY, n_users BIGINT NOT NULL, built_at TIMESTAMP NOT NULL)""",
    # Every model version's pin vectors (a list column: versions may differ in width), so a
    # report of an old day scores against the pins of the model that made its users.
    "pin_embeddings": """
        CREATE TABLE IF NOT EXISTS pin_embeddings (
            pin_id BIGINT NOT NULL, embedding FLOAT[] NOT NULL, topic INTEGER,
            model_version VARCHAR NOT NULL, as_of DATE NOT NULL)""",
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


def _identifier(name: str) -> str:
    """Table and column names are the pipeline's own constants; values are always bound."""
    assert name.isidentifier(), f"not an SQL identifier: {name!r}"
    return name


@contextlib.contextmanager
def replacing_day(
    con: duckdb.DuckDBPyConnection, table: str, date_col: str, day: datetime.date
) -> Iterator[None]:
    """One transaction that deletes the rows of `day` in `table`; the body inserts the new
    ones. Committed when the body returns, rolled back when it raises."""
    ensure_tables(con)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"DELETE FROM {_identifier(table)} WHERE {_identifier(date_col)} = ?", [day])
        yield
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise


def replace_ledger_row(
    con: duckdb.DuckDBPyConnection,
    ledger: str,
    date_col: str,
    day: datetime.date,
    row: Sequence[object],
) -> None:
    """The ledger's row for `day` (its first value the day); call it inside `replacing_day` so
    the ledger names exactly the days whose rows are stored."""
    name, date_col = _identifier(ledger), _identifier(date_col)
    con.execute(f"DELETE FROM {name} WHERE {date_col} = ?", [day])
    con.execute(f"INSERT INTO {name} VALUES ({', '.join('?' for _ in row)})", list(row))


def replace_day(
    con: duckdb.DuckDBPyConnection,
    table: str,
    date_col: str,
    day: datetime.date,
    df: pl.DataFrame,
    ledger: tuple[str, Sequence[object]] | None = None,
) -> None:
    """Atomically replace the rows of `day` in `table` with `df` (same columns, same order).

    `ledger`: (ledger table, its row for `day`, first value the day) replaced in the SAME
    transaction, so the ledger names exactly the days whose rows are stored.
    """
    with replacing_day(con, table, date_col, day):
        if df.height:
            con.register("_incoming", df.to_arrow())
            con.execute(f"INSERT INTO {_identifier(table)} SELECT * FROM _incoming")
            con.unregister("_incoming")
        if ledger is not None:
            replace_ledger_row(con, ledger[0], date_col, day, ledger[1])


def to_naive_utc(df: pl.DataFrame, col: str = "ts") -> pl.DataFrame:
    """DuckDB stores TIMESTAMP (naive, UTC by contract); polars carries the UTC zone."""
    return df.with_columns(pl.col(col).dt.convert_time_zone("UTC").dt.replace_time_zone(None))


def stored_days(
    con: duckdb.DuckDBPyConnection,
    ledger: str,
    date_col: str,
    first: datetime.date,
    last: datetime.date,
) -> set[datetime.date]:
    """The days in [first, last] that `ledger` records as stored."""
    rows = con.execute(
        f"SELECT {date_col} FROM {ledger} WHERE {date_col} BETWEEN ? AND ?", [first, last]
    ).fetchall()
    return {r[0] for r in rows}


def utc_now() -> datetime.datetime:
    """Now, as the naive UTC timestamp DuckDB stores."""
    return datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)


# A step that loses the DuckDB file lock to another process (a notebook, a second code location)
# is retried with backoff; failures of the pipeline's own rules say allow_retries=False.
LOCK_RETRY = dg.RetryPolicy(
    max_retries=3, delay=2.0, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS
)


def connect_read_only(path: str, attempts: int = 300) -> duckdb.DuckDBPyConnection:
    """A read-only connection for readers outside the pipeline (notebooks, reports), retried
    with backoff while a pipeline step holds the file's write lock."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return duckdb.connect(path, read_only=True)
        except duckdb.IOException:
            if attempt == attempts - 1:
                raise
            time.sleep(delay)
            delay = min(2.0, delay * 2)
    raise AssertionError("unreachable")


@contextlib.contextmanager
def read_only(resource: DuckDBResource) -> Iterator[duckdb.DuckDBPyConnection]:
    """A read-only connection to the resource's database for steps that only read (outside the
    one-slot duckdb pool, e.g. training in the gpu pool): never takes the write lock, waits while
    a writer holds it."""
    con = connect_read_only(resource.database)
    try:
        yield con
    finally:
        con.close()

"""Timelines in the warehouse: the last M actions of a set of users by DuckDB SQL, and the
conversion of those rows into model_core Timelines (the pipeline's side of paper §3.5)."""

import dataclasses
import datetime

import duckdb
import polars as pl

from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.features.actions import FeatureConfig

MAX_LEN = 64  # M: the model's window; timelines keep exactly what inference reads


# How far back a timeline looks. It is also the declared lineage (user_timelines[D] reads
# raw_actions[D - LOOKBACK_DAYS + 1 .. D]), so repairing an old day recomputes exactly the
# timelines that read it. Eight weeks covers the last M actions of all but the sparsest users.
LOOKBACK_DAYS = 56


FIELDS = ("ts", "pin_id", "action_type", "surface", "duration_s")
# the order of a user's actions, latest last; ties of ts are broken the same way everywhere
ORDER = "a.ts, a.pin_id, a.action_type"


def last_actions_sql(users: str, whole: bool = False) -> str:
    """Per user in the `users` sub-query: their last $max_len in-vocabulary actions in the
    $lookback days up to $day, oldest first; every action of those days when `whole` (no
    $max_len parameter then).

    Out-of-vocabulary rows ($action_types, $surfaces: the source's vocabulary) are dropped here
    (the paper drops them) so the window is full. The last actions are a top-N aggregate
    (`max_by(row, key, N)`): no sort of a user's whole lookback, ~30% faster than a
    row_number() window over it.
    """
    row = "{" + ", ".join(f"'{f}': a.{f}" for f in FIELDS) + "}"
    actions = (
        f"list({row} ORDER BY {ORDER})"
        if whole
        else f"list_reverse(max_by({row}, ({ORDER}), $max_len))"
    )
    columns = ", ".join(f"list_transform(actions, x -> x.{f}) AS {f}" for f in FIELDS)
    return f"""
        WITH per_user AS (
            SELECT a.user_id, {actions} AS actions
            FROM raw_actions a
            WHERE a.event_date <= $day AND a.event_date > $day - $lookback
              AND a.user_id IN ({users})
              AND list_contains($action_types, a.action_type)
              AND list_contains($surfaces, a.surface)
            GROUP BY a.user_id
        )
        SELECT $day AS as_of, user_id, {columns}
        FROM per_user ORDER BY user_id"""


def query_last_actions(
    con: duckdb.DuckDBPyConnection,
    day: datetime.date,
    users: str,
    vocab: FeatureConfig,
    max_len: int | None = MAX_LEN,
    lookback: int = LOOKBACK_DAYS,
) -> pl.DataFrame:
    """`last_actions_sql` for `users`, keeping the action types and surfaces of `vocab`;
    `max_len` None: every action in the lookback."""
    params = last_actions_params(day, vocab, max_len, lookback)
    return con.execute(last_actions_sql(users, whole=max_len is None), params).pl()


def last_actions_params(
    day: datetime.date,
    vocab: FeatureConfig,
    max_len: int | None = MAX_LEN,
    lookback: int = LOOKBACK_DAYS,
) -> dict[str, object]:
    """The bound parameters of `last_actions_sql` (no $max_len for the whole history)."""
    params: dict[str, object] = {
        "day": day,
        "lookback": lookback,
        "action_types": list(vocab.action_types),
        "surfaces": list(vocab.surfaces),
    }
    return params if max_len is None else {**params, "max_len": max_len}


def explode(rows: pl.DataFrame) -> pl.DataFrame:
    """One-row-per-user list columns → one row per action (the contract's columns)."""
    cols = ["ts", "pin_id", "action_type", "surface", "duration_s"]
    flat = rows.select("user_id", *cols).explode(cols)
    return flat.with_columns(pl.col("ts").dt.replace_time_zone("UTC"))


def load_catalog(con: duckdb.DuckDBPyConnection) -> PinCatalog:
    """The stored pin features as a catalogue (a table written before items carried metadata
    tokens has no tokens column: its catalogue has no tokens)."""
    columns = {r[0] for r in con.execute("DESCRIBE pin_features").fetchall()}
    tokens = ", tokens" if "tokens" in columns else ""
    df = con.execute(f"SELECT pin_id, embedding, topic{tokens} FROM pin_features ORDER BY pin_id")
    return PinCatalog.from_frame(df.pl())


def model_features(vocab: FeatureConfig, catalog: PinCatalog) -> FeatureConfig:
    """The source's vocabulary (`vocab`) with the pin features' content width."""
    return dataclasses.replace(vocab, content_dim=int(catalog.embeddings.shape[1]))


def to_timelines(
    rows: pl.DataFrame, catalog: PinCatalog, vocab: FeatureConfig, rule: PositiveRule
) -> Timelines:
    """Query rows → model_core Timelines: vocabulary ids from `vocab` (the source's, or the
    model's at inference), positive flags from the source's `rule`."""
    timelines, _ = Timelines.from_actions(
        explode(rows), catalog, model_features(vocab, catalog), rule
    )
    return timelines

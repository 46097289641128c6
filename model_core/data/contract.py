"""The `raw_actions` data contract (docs/DESIGN.md §4) and its validation rules.

`validate_actions` returns one `RuleResult` per rule, each naming the column, the rule and an
example offending row, so a bad day is rejected with a message a data engineer can act on. The
Dagster asset turns blocking failures into blocking asset checks and refuses to write the day.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import polars as pl

SCHEMA: dict[str, Any] = {
    "event_date": pl.Date,
    "ts": pl.Datetime("us", "UTC"),
    "user_id": pl.Int64,
    "pin_id": pl.Int64,
    "action_type": pl.Utf8,
    "surface": pl.Utf8,
    "duration_s": pl.Float64,
}


class ContractError(ValueError):
    """The frame cannot be read as the contract at all (missing or uncastable columns)."""


@dataclass(frozen=True)
class RuleResult:
    name: str
    passed: bool
    blocking: bool
    description: str
    n_bad: int = 0
    example: dict[str, Any] = field(default_factory=dict)

    def message(self) -> str:
        if self.passed:
            return f"{self.name}: ok"
        return f"{self.name}: {self.n_bad} rows break '{self.description}', e.g. {self.example}"


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Select and cast the contract's columns; raise ContractError naming what is wrong."""
    missing = [c for c in SCHEMA if c not in df.columns]
    if missing:
        raise ContractError(f"raw_actions is missing columns {missing}; the contract is {SCHEMA}")
    out = []
    for name, dtype in SCHEMA.items():
        col = df[name]
        try:
            if dtype == pl.Datetime("us", "UTC") and col.dtype == pl.Datetime("us"):
                col = col.dt.replace_time_zone("UTC")
            out.append(col.cast(dtype, strict=True))
        except Exception as err:  # polars raises several error types for a failed cast
            raise ContractError(
                f"column {name!r} ({col.dtype}) cannot be read as {dtype}: {err}"
            ) from err
    return pl.DataFrame(out)


def _first(df: pl.DataFrame, bad: pl.Expr) -> tuple[int, dict[str, Any]]:
    rows = df.filter(bad)
    if rows.height == 0:
        return 0, {}
    example = {k: str(v) for k, v in rows.row(0, named=True).items()}
    return rows.height, example


def validate_actions(
    df: pl.DataFrame,
    day: datetime.date,
    action_types: Sequence[str],
    surfaces: Sequence[str],
    max_oov_rate: float = 0.05,
) -> list[RuleResult]:
    """Run every rule on a conformed frame for partition `day`."""
    start = datetime.datetime.combine(day, datetime.time(), tzinfo=datetime.timezone.utc)
    end = start + datetime.timedelta(days=1)
    rules: list[tuple[str, bool, str, pl.Expr]] = [
        (
            "ids_not_null",
            True,
            "user_id, pin_id, ts, action_type and surface are never null",
            pl.any_horizontal(
                pl.col(c).is_null() for c in ("user_id", "pin_id", "ts", "action_type", "surface")
            ),
        ),
        (
            "duration_valid",
            True,
            "duration_s is finite and >= 0",
            pl.col("duration_s").is_null()
            | ~pl.col("duration_s").is_finite()
            | (pl.col("duration_s") < 0),
        ),
        (
            "ts_inside_partition",
            True,
            f"ts lies in [{start.isoformat()}, {end.isoformat()}) and event_date = {day}",
            (pl.col("ts") < start) | (pl.col("ts") >= end) | (pl.col("event_date") != day),
        ),
    ]
    results = []
    for name, blocking, description, bad in rules:
        n_bad, example = _first(df, bad)
        results.append(RuleResult(name, n_bad == 0, blocking, description, n_bad, example))

    oov = ~pl.col("action_type").is_in(list(action_types)) | ~pl.col("surface").is_in(
        list(surfaces)
    )
    n_oov, example = _first(df, oov)
    rate = n_oov / max(1, df.height)
    results.append(
        RuleResult(
            "oov_rate",
            rate <= max_oov_rate,
            True,
            f"at most {max_oov_rate:.0%} of rows have an action_type outside {list(action_types)} "
            f"or a surface outside {list(surfaces)} (found {rate:.1%})",
            n_oov,
            example,
        )
    )
    dup = df.is_duplicated()
    n_dup = int(dup.sum())
    results.append(
        RuleResult(
            "no_duplicates",
            n_dup == 0,
            False,
            "no exact duplicate rows (duplicates are dropped on write)",
            n_dup,
            {k: str(v) for k, v in df.filter(dup).row(0, named=True).items()} if n_dup else {},
        )
    )
    return results

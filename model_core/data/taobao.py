"""Taobao UserBehavior (`read_taobao`): behaviour types pv / cart / fav / buy kept as they are;
cart, fav and buy are positive by default. Rows outside the documented period are dropped and
counted."""

from __future__ import annotations

import datetime
import zoneinfo
from pathlib import Path

import polars as pl

from model_core.data.raw_log import RawLog, _finish
from model_core.data.timelines import PositiveRule

TAOBAO_ACTION_TYPES = ("pv", "cart", "fav", "buy")
TAOBAO_COLUMNS = ("user_id", "item_id", "category_id", "behavior_type", "timestamp")


def read_taobao(
    path: str | Path,
    period: tuple[datetime.date, datetime.date] = (
        datetime.date(2017, 11, 25),
        datetime.date(2017, 12, 3),
    ),
    tz: str = "Asia/Shanghai",
    positive_types: tuple[str, ...] = ("cart", "fav", "buy"),
) -> RawLog:
    """Taobao UserBehavior CSV (no header: user_id, item_id, category_id, behavior_type, unix ts).

    `path` is the CSV itself or a directory holding one `*.csv`. Behaviour types pv / cart / fav /
    buy are kept as action types; surface "app", duration 0.0. Positive: `positive_types`, by
    default cart, fav and buy (an explicit intent signal, like the paper's repin); pv (a page
    view) is input only unless listed.

    The dataset's documented period is `period` (inclusive) in local time `tz`. Rows whose
    timestamp lies outside it (35 in the public sample) are known-bad clock values: they are
    DROPPED from `actions` and counted in notes["out_of_period_rows"], so no daily partition ever
    sees a timestamp outside its day. Their items still get metadata. event_date is the UTC date.

    Items: every item in the file; topic = its category_id (an item's most frequent category,
    ties → the smallest id); text = null.
    """
    file = Path(path)
    if file.is_dir():
        csvs = sorted(file.glob("*.csv"))
        if len(csvs) != 1:
            raise ValueError(f"expected one *.csv in {file}, found {[p.name for p in csvs]}")
        file = csvs[0]
    raw = pl.read_csv(
        file,
        has_header=False,
        new_columns=list(TAOBAO_COLUMNS),
        schema_overrides={
            "user_id": pl.Int64,
            "item_id": pl.Int64,
            "category_id": pl.Int64,
            "behavior_type": pl.Utf8,
            "timestamp": pl.Int64,
        },
    )
    zone = zoneinfo.ZoneInfo(tz)
    start = datetime.datetime.combine(period[0], datetime.time(), tzinfo=zone)
    end = datetime.datetime.combine(period[1] + datetime.timedelta(days=1), datetime.time(), zone)
    ts = pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC")
    inside = (pl.col("timestamp") >= int(start.timestamp())) & (
        pl.col("timestamp") < int(end.timestamp())
    )
    kept = raw.filter(inside)
    actions = kept.select(
        ts=ts,
        user_id="user_id",
        pin_id="item_id",
        action_type=pl.col("behavior_type").str.strip_chars(),
        surface=pl.lit("app"),
        duration_s=pl.lit(0.0),
    )
    items = (
        raw.group_by("item_id", "category_id")
        .len()
        .sort(["item_id", "len", "category_id"], descending=[False, True, False])
        .unique("item_id", keep="first", maintain_order=True)
        .select(pin_id="item_id", topic=pl.col("category_id").cast(pl.Int32), text=pl.lit(None))
    )
    notes = {
        "input_rows": raw.height,
        "out_of_period_rows": raw.height - kept.height,
        "unknown_action_type_rows": int(
            (~actions["action_type"].is_in(list(TAOBAO_ACTION_TYPES))).sum()
        ),
    }
    unknown = set(positive_types) - set(TAOBAO_ACTION_TYPES)
    if unknown:
        raise ValueError(
            f"positive_types {sorted(unknown)} are not Taobao behaviours {TAOBAO_ACTION_TYPES}"
        )
    rule = PositiveRule(surfaces=("app",), always=tuple(positive_types), min_duration_s={})
    return _finish(actions, items, "taobao", TAOBAO_ACTION_TYPES, ("app",), rule, notes)

"""Amazon review 5-core logs (McAuley et al. 2014; the "Sports" benchmark of S3-Rec) → RawLog.

The directory holds `interactions.csv` (user_id, item_id, timestamp: Unix seconds at midnight UTC,
one review = one interaction) and, optionally, `item_attributes.csv` (item_id, attribute_ids: brand
and category codes separated by `|`). Every interaction is a positive ("review", surface "web",
duration 0). Reviews carry only a date, so same-day ties are common: they keep the FILE order (the
benchmark's order), as `Timelines` sorts by time with a stable sort.

Item metadata: topic = the item's first attribute code, text = every code as a token ("a12 a7"),
so the item vectors of `model_core.features.item_content` see brand and category.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from model_core.data.raw_log import RawLog, _finish
from model_core.data.timelines import PositiveRule

AMAZON_ACTION_TYPES = ("review",)
AMAZON_SURFACES = ("web",)


def read_amazon(path: str | Path) -> RawLog:
    root = Path(path)
    interactions = root / "interactions.csv" if root.is_dir() else root
    if not interactions.exists():
        raise ValueError(f"no interactions.csv in {root}")
    raw = pl.read_csv(interactions, schema_overrides={"timestamp": pl.Int64})
    missing = {"user_id", "item_id", "timestamp"} - set(raw.columns)
    if missing:
        raise ValueError(f"{interactions} lacks columns {sorted(missing)}")
    actions = raw.select(
        ts=pl.from_epoch("timestamp", time_unit="s").dt.replace_time_zone("UTC"),
        user_id=pl.col("user_id").cast(pl.Int64),
        pin_id=pl.col("item_id").cast(pl.Int64),
        action_type=pl.lit("review"),
        surface=pl.lit("web"),
        duration_s=pl.lit(0.0),
    )
    attributes = interactions.parent / "item_attributes.csv"
    if attributes.exists():
        attrs = pl.read_csv(attributes, schema_overrides={"attribute_ids": pl.Utf8})
        codes = pl.col("attribute_ids").fill_null("").str.split("|")
        items = attrs.select(
            pin_id=pl.col("item_id").cast(pl.Int64),
            topic=codes.list.first().cast(pl.Int32, strict=False),
            text=codes.list.eval(pl.lit("a") + pl.element()).list.join(" "),
        )
    else:
        items = pl.DataFrame(schema={"pin_id": pl.Int64, "topic": pl.Int32, "text": pl.Utf8})
    rule = PositiveRule(surfaces=AMAZON_SURFACES, always=AMAZON_ACTION_TYPES, min_duration_s={})
    notes = {"input_rows": raw.height}
    return _finish(actions, items, "amazon", AMAZON_ACTION_TYPES, AMAZON_SURFACES, rule, notes)

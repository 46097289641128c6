"""Public engagement logs → the `raw_actions` contract (docs/DESIGN.md §4), with item metadata.

Each reader returns a `RawLog`: the actions in the contract (sorted by user, then time), one row of
metadata per item, and the action-type / surface vocabulary and positive rule that fit the source,
so that a pipeline can be configured from the log alone::

    log = read_source("movielens", "/data/ml-latest-small")
    features = log.feature_config(content_dim=32)
    timelines, drops = Timelines.from_actions(log.actions, catalog, features, log.rule)

Sources (docs/REAL_DATA.md has the details and the measured counts):

- MovieLens (`read_movielens`): ml-100k, ml-1m and ml-latest(-small) layouts, detected from the
  files present. A rating becomes an action type: rating >= `positive_min_rating` → "rate_high"
  (the positive), 3.0 <= rating < `positive_min_rating` → "rate_mid", lower → "rate_low".
- Taobao UserBehavior (`read_taobao`): behaviour types pv / cart / fav / buy kept as they are;
  cart, fav and buy are positive. Rows outside the documented period are dropped and counted.
- Amazon review 5-core (`read_amazon`): every review positive, brand/category codes as metadata.
- Any table (`read_table`): CSV or Parquet with user / item / time columns named by the caller.

One module per source (`movielens`, `taobao`, `amazon`, `tables`); `RawLog` and the shared helpers
live in `model_core.data.raw_log`; this module dispatches and re-exports.

Ids: integer ids are kept, string ids hashed stably (`model_core.data.raw_log.stable_id`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_core.data.amazon import AMAZON_ACTION_TYPES, read_amazon
from model_core.data.csv_table import read_table
from model_core.data.movielens import MOVIELENS_ACTION_TYPES, read_movielens
from model_core.data.raw_log import ITEM_SCHEMA, RawLog, stable_id
from model_core.data.taobao import TAOBAO_ACTION_TYPES, read_taobao


def read_source(kind: str, path: str | Path, **kwargs: Any) -> RawLog:
    """Dispatch on `kind`: "movielens", "taobao", "amazon", "csv" or "parquet" (kwargs go to the
    reader)."""
    kind = kind.lower()
    if kind == "amazon":
        return read_amazon(path, **kwargs)
    if kind == "movielens":
        return read_movielens(path, **kwargs)
    if kind == "taobao":
        return read_taobao(path, **kwargs)
    if kind == "csv":
        return read_table(path, fmt="csv", **kwargs)
    if kind == "parquet":
        return read_table(path, fmt="parquet", **kwargs)
    raise ValueError(
        f"unknown source kind {kind!r}; expected movielens, taobao, amazon, csv or parquet"
    )


__all__ = [
    "AMAZON_ACTION_TYPES",
    "ITEM_SCHEMA",
    "MOVIELENS_ACTION_TYPES",
    "TAOBAO_ACTION_TYPES",
    "RawLog",
    "read_amazon",
    "read_movielens",
    "read_source",
    "read_table",
    "read_taobao",
    "stable_id",
]

"""What every public-log reader returns: `RawLog`, and the helpers they share.

Ids: integer id columns are kept as they are (cast to Int64). String ids are hashed with BLAKE2b
(8-byte digest of the UTF-8 string, top bit cleared so the id is non-negative): the same string maps
to the same id in every run, on every machine and for every polars version, so daily files read
separately agree. A hash collision among the ids of one read is detected and raises.
"""

from __future__ import annotations

import datetime
import hashlib
import io
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from model_core.data.contract import conform
from model_core.data.timelines import PositiveRule
from model_core.features.actions import FeatureConfig

ITEM_SCHEMA: dict[str, Any] = {"pin_id": pl.Int64, "topic": pl.Int32, "text": pl.Utf8}


@dataclass(frozen=True)
class RawLog:
    """One source's actions in the `raw_actions` contract, plus what is needed to model them.

    actions:      event_date Date, ts Datetime(us, UTC), user_id Int64, pin_id Int64,
                  action_type Utf8, surface Utf8, duration_s Float64 >= 0; sorted by (user_id, ts)
    items:        pin_id Int64 (unique, sorted), topic Int32 (nullable), text Utf8 (nullable)
    action_types: the vocabulary for `FeatureConfig.action_types`
    surfaces:     the vocabulary for `FeatureConfig.surfaces`
    rule:         which actions are positive engagement for this source
    notes:        counts of rows handled explicitly (dropped, repaired), by reason
    """

    name: str
    actions: pl.DataFrame
    items: pl.DataFrame
    action_types: tuple[str, ...]
    surfaces: tuple[str, ...]
    rule: PositiveRule
    notes: dict[str, int] = field(default_factory=dict)

    def feature_config(self, **overrides: Any) -> FeatureConfig:
        """A FeatureConfig whose vocabularies are this source's (other fields from `overrides`)."""
        return FeatureConfig(action_types=self.action_types, surfaces=self.surfaces, **overrides)

    @property
    def days(self) -> list[datetime.date]:
        """The distinct event dates (UTC), ascending."""
        return self.actions["event_date"].unique().sort().to_list()


def stable_id(values: pl.Series) -> pl.Series:
    """String ids → Int64 ids: BLAKE2b-64 of the UTF-8 bytes with the top bit cleared (>= 0).

    Stable across runs, machines and library versions. Raises if two distinct strings collide.
    """
    strings = values.cast(pl.Utf8)
    uniques = strings.drop_nulls().unique()
    hashed = [
        int.from_bytes(hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest(), "big")
        & 0x7FFF_FFFF_FFFF_FFFF
        for s in uniques.to_list()
    ]
    if len(set(hashed)) != len(hashed):
        raise ValueError(f"64-bit hash collision among the {len(hashed)} ids of {values.name!r}")
    mapping = dict(zip(uniques.to_list(), hashed, strict=True))
    return strings.replace_strict(mapping, default=None, return_dtype=pl.Int64).alias(values.name)


def _as_int_ids(values: pl.Series) -> pl.Series:
    """An id column → Int64: integers cast, integral floats cast, strings hashed (`stable_id`)."""
    dtype = values.dtype
    if dtype.is_integer():
        return values.cast(pl.Int64, strict=True)
    if dtype.is_float():
        finite = values.drop_nulls()
        if (finite != finite.round(0)).any():
            raise ValueError(f"id column {values.name!r} has non-integral numbers")
        return values.cast(pl.Int64, strict=True)
    if dtype in (pl.Utf8, pl.Categorical) or isinstance(dtype, pl.Enum):
        return stable_id(values)
    raise ValueError(f"id column {values.name!r} has dtype {dtype}; expected integers or strings")


def _finish(
    actions: pl.DataFrame,
    items: pl.DataFrame,
    name: str,
    action_types: tuple[str, ...],
    surfaces: tuple[str, ...],
    rule: PositiveRule,
    notes: Mapping[str, int],
) -> RawLog:
    """Derive event_date, conform to the contract, sort, and add items seen only in actions."""
    actions = actions.with_columns(
        pl.col("ts").dt.convert_time_zone("UTC").dt.cast_time_unit("us")
    ).with_columns(event_date=pl.col("ts").dt.date())
    actions = conform(actions).sort(["user_id", "ts"], maintain_order=True)
    items = items.select(
        pl.col(c).cast(t, strict=True) if c in items.columns else pl.lit(None, t).alias(c)
        for c, t in ITEM_SCHEMA.items()
    )
    unseen = actions.select("pin_id").unique().join(items, on="pin_id", how="anti")
    items = pl.concat([items, unseen], how="diagonal_relaxed")
    items = items.unique("pin_id", keep="first", maintain_order=True).sort("pin_id")
    items = items.select(pl.col(c).cast(t) for c, t in ITEM_SCHEMA.items())
    no_metadata = items.filter(pl.col("topic").is_null() & pl.col("text").is_null()).height
    return RawLog(
        name,
        actions,
        items,
        action_types,
        surfaces,
        rule,
        {**notes, "items_without_metadata": no_metadata},
    )


def _read_text(path: Path, encoding: str) -> str:
    """A whole text file, decoded, with CRLF / CR line endings normalised to LF."""
    text = path.read_bytes().decode(encoding)
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _read_separated(
    path: Path, separator: str, columns: Iterable[str], encoding: str = "latin-1"
) -> pl.DataFrame:
    """A header-less file whose fields are split by `separator` (may be multi-character, `::`).

    Quotes are not special (MovieLens titles contain unbalanced `"`); every column is read as text.
    """
    names = list(columns)
    text = _read_text(path, encoding)
    if len(separator) > 1:
        text = text.replace(separator, "\x1f")
        separator = "\x1f"
    return pl.read_csv(
        io.BytesIO(text.encode("utf-8")),
        has_header=False,
        separator=separator,
        quote_char=None,
        new_columns=names,
        schema_overrides={c: pl.Utf8 for c in names},
        truncate_ragged_lines=True,
    ).select(names)

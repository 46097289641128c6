"""Resources: where data comes from, where it goes, and on which device the model trains."""

import datetime
import os
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl
from dagster_duckdb import DuckDBResource
from pydantic import Field

from model_core import synthetic
from model_core.contract import SCHEMA


def default_data_dir() -> str:
    return os.environ.get("PINNER_DATA_DIR", str(Path("data").resolve()))


class PinnerStorage(dg.ConfigurableResource):
    """The one data directory every path derives from (DuckDB file, LanceDB, models, reports)."""

    data_dir: str = Field(
        default_factory=default_data_dir,
        description="Root of all outputs; PINNER_DATA_DIR, default ./data.",
    )

    @property
    def root(self) -> Path:
        path = Path(self.data_dir)
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, *parts: str) -> Path:
        p = self.root.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    @property
    def warehouse(self) -> str:
        return str(self.path("warehouse.duckdb"))

    @property
    def lancedb_uri(self) -> str:
        return str(self.path("lancedb"))


class ActionSource(dg.ConfigurableResource):
    """Where raw actions and pin features come from.

    kind="synthetic": the seeded synthetic world (the embedded default); any day regenerates
    identically. kind="files": a directory with one file per day named YYYY-MM-DD.parquet (or
    .csv) in the DESIGN §4 contract, plus pin_features.parquet (pin_id, embedding, topic).
    """

    kind: Literal["synthetic", "files"] = Field(
        default="synthetic", description="synthetic world or a directory of daily files"
    )
    path: str = Field(default="", description="directory of daily files (kind=files)")
    world: Literal["default", "tiny"] = Field(
        default="default", description="synthetic world size preset (kind=synthetic)"
    )
    seed: int = Field(default=0, description="synthetic world seed")

    def world_config(self) -> synthetic.WorldConfig:
        if self.world == "tiny":
            return synthetic.WorldConfig.tiny(seed=self.seed)
        return synthetic.WorldConfig(seed=self.seed)

    def load_day(self, day: datetime.date) -> pl.DataFrame:
        if self.kind == "synthetic":
            return synthetic.generate_day(self.world_config(), day)
        base = Path(self.path)
        for suffix, reader in ((".parquet", pl.read_parquet), (".csv", _read_csv)):
            f = base / f"{day.isoformat()}{suffix}"
            if f.exists():
                return reader(f)
        raise FileNotFoundError(f"no {day.isoformat()}.parquet or .csv under {base}")

    def load_pins(self) -> pl.DataFrame:
        if self.kind == "synthetic":
            return synthetic.pin_features(self.world_config())
        return pl.read_parquet(Path(self.path) / "pin_features.parquet")


def _read_csv(path: Path) -> pl.DataFrame:
    df = pl.read_csv(path, try_parse_dates=False)
    return df.with_columns(
        pl.col("event_date").str.to_date(),
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"),
    ).select(list(SCHEMA))


class EvaluationSplit(dg.ConfigurableResource):
    """The paper's §4.1 split, shared by training and evaluation so they always agree."""

    train_end_date: str = Field(
        default="2026-02-25",
        description="Last day of training data (inclusive); the default leaves the synthetic "
        "world's last 14 days for evaluation.",
    )
    eval_fraction: float = Field(
        default=0.2, description="Share of users held out of training entirely (stable hash)."
    )
    horizon_days: int = Field(default=14, description="Evaluation window after a day (§4.1).")
    index_size: int = Field(default=1_000_000, description="Random pins in the eval index.")

    @property
    def train_end(self) -> datetime.date:
        return datetime.date.fromisoformat(self.train_end_date)


class ComputeResource(dg.ConfigurableResource):
    """The training/inference device: auto → cuda when available, else cpu."""

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")


def default_resources() -> dict[str, object]:
    storage = PinnerStorage()
    return {
        "storage": storage,
        "duckdb": DuckDBResource(database=storage.warehouse),
        "source": ActionSource(),
        "compute": ComputeResource(),
        "split": EvaluationSplit(),
    }

"""Resources: where data comes from, where it goes, and on which device the model trains."""

import datetime
import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, get_args

import dagster as dg
import polars as pl
from pydantic import Field

from model_core.data import synthetic
from model_core.data.contract import SCHEMA
from model_core.data.sources import RawLog, read_source
from model_core.data.timelines import PositiveRule
from model_core.features.actions import FeatureConfig
from model_core.features.item_content import item_content_embeddings
from model_core.inference.embed import INFERENCE_BATCH_SIZE


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


SourceKind = Literal["synthetic", "files", "movielens", "taobao", "csv", "parquet"]
SOURCE_KINDS: tuple[str, ...] = get_args(SourceKind)
# Kinds read with model_core.data.sources: a whole log, read once per process and split into days.
LOG_KINDS = ("movielens", "taobao", "csv", "parquet")


class ActionSource(dg.ConfigurableResource):
    """Where raw actions and pin features come from, with the vocabulary and positive rule that
    fit them (`feature_config()`, `rule()`).

    - kind="synthetic": the seeded synthetic world (the embedded default); any day regenerates
      identically. Vocabulary and rule: FeatureConfig() and PositiveRule() (repin / closeup /
      click / hide on home_feed / search / related).
    - kind="files": a directory with one file per day named YYYY-MM-DD.parquet (or .csv) in the
      docs/DESIGN.md §4 contract, plus pin_features.parquet (pin_id, embedding, topic). Same
      vocabulary and rule as the synthetic world.
    - kind="movielens" | "taobao" | "csv" | "parquet": a whole public or custom log read with
      `model_core.data.sources.read_source` (docs/REAL_DATA.md): read ONCE per process (cached on
      the configuration and the files' size and mtime, so a repaired file is read again) and cut
      into days by `event_date` (UTC). Vocabulary and positive rule are the log's own
      (`RawLog.feature_config()`, `RawLog.rule`). Pin features are built from the log by
      `item_content_embeddings` with the cutoff at the end of the training period, so nothing
      from the evaluation period reaches an item vector (see `load_pins`).

    The pipeline's default resources read the source from the environment (`from_env`):
    PINNER_SOURCE, PINNER_SOURCE_PATH and PINNER_SOURCE_OPTIONS (a JSON object of further fields).
    """

    kind: SourceKind = Field(
        default="synthetic",
        description="synthetic world, a directory of daily files, or a whole log read by "
        "model_core.data.sources (movielens, taobao, csv, parquet)",
    )
    path: str = Field(
        default="",
        description="directory of daily files (files); the dataset directory or file (movielens, "
        "taobao, csv, parquet)",
    )
    world: Literal["default", "tiny"] = Field(
        default="default", description="synthetic world size preset (kind=synthetic)"
    )
    seed: int = Field(default=0, description="synthetic world seed; item-vector seed (real logs)")
    # csv / parquet: the column names read_table takes (the `pinner experiment --*-col` flags)
    user_col: str = Field(default="user_id", description="csv/parquet: the user id column")
    item_col: str = Field(default="pin_id", description="csv/parquet: the item id column")
    time_col: str = Field(default="ts", description="csv/parquet: the timestamp column")
    action_type_col: str | None = Field(
        default=None, description="csv/parquet: the action type column (none: 'interaction')"
    )
    surface_col: str | None = Field(
        default=None, description="csv/parquet: the surface column (none: 'default')"
    )
    duration_col: str | None = Field(
        default=None, description="csv/parquet: the duration column in seconds (none: 0.0)"
    )
    time_unit: Literal["s", "ms", "iso", "auto"] = Field(
        default="auto", description="csv/parquet: unix s / ms, ISO strings, or auto-detect"
    )
    positive_types: list[str] | None = Field(
        default=None,
        description="csv/parquet: the positive action types (none: every action is positive); "
        "taobao: the positive behaviours (none: cart, fav, buy)",
    )
    positive_min_rating: float = Field(
        default=4.0, description="movielens: ratings >= this are the positive 'rate_high'"
    )
    item_dim: int = Field(
        default=32, description="real logs: width of the item content embeddings (pin_features)"
    )
    item_engagement: Literal["positive", "all"] = Field(
        default="positive",
        description="real logs: co-engagement graph of the item vectors from positive actions "
        "only, or every action (e.g. Taobao's page views)",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "ActionSource":
        """The source named by PINNER_SOURCE (default synthetic), PINNER_SOURCE_PATH and
        PINNER_SOURCE_OPTIONS (JSON object of other fields, e.g. '{"user_col": "uid"}')."""
        env = os.environ if environ is None else environ
        kind = env.get("PINNER_SOURCE", "") or "synthetic"
        if kind not in SOURCE_KINDS:
            raise ValueError(f"PINNER_SOURCE={kind!r}; expected one of {list(SOURCE_KINDS)}")
        try:
            options = json.loads(env.get("PINNER_SOURCE_OPTIONS", "") or "{}")
        except json.JSONDecodeError as err:
            raise ValueError(f"PINNER_SOURCE_OPTIONS is not valid JSON: {err}") from err
        if not isinstance(options, dict):
            raise ValueError("PINNER_SOURCE_OPTIONS must be a JSON object of ActionSource fields")
        unknown = sorted(k for k in options if k not in cls.model_fields or k in ("kind", "path"))
        if unknown:
            raise ValueError(
                f"PINNER_SOURCE_OPTIONS: unknown or misplaced fields {unknown} (kind and path "
                f"come from PINNER_SOURCE / PINNER_SOURCE_PATH); fields: {sorted(cls.model_fields)}"
            )
        path = env.get("PINNER_SOURCE_PATH", "")
        if kind in ("files", *LOG_KINDS) and not path:
            raise ValueError(f"PINNER_SOURCE={kind} needs PINNER_SOURCE_PATH")
        return cls(kind=kind, path=path, **options)  # type: ignore[arg-type]

    @property
    def is_log(self) -> bool:
        """True for a whole log read by model_core.data.sources (movielens, taobao, csv,
        parquet)."""
        return self.kind in LOG_KINDS

    def world_config(self) -> synthetic.WorldConfig:
        if self.world == "tiny":
            return synthetic.WorldConfig.tiny(seed=self.seed)
        return synthetic.WorldConfig(seed=self.seed)

    def reader_options(self) -> dict[str, Any]:
        """Keyword arguments of `read_source` for this kind."""
        if self.kind == "movielens":
            return {"positive_min_rating": self.positive_min_rating}
        if self.kind == "taobao":
            if self.positive_types is None:
                return {}  # the adapter's default: cart, fav, buy
            return {"positive_types": tuple(self.positive_types)}
        if self.kind in ("csv", "parquet"):
            return {
                "user": self.user_col,
                "item": self.item_col,
                "time": self.time_col,
                "action_type": self.action_type_col,
                "surface": self.surface_col,
                "duration": self.duration_col,
                "time_unit": self.time_unit,
                "positive_types": (
                    tuple(self.positive_types) if self.positive_types is not None else None
                ),
            }
        return {}

    def raw_log(self) -> RawLog:
        """The whole log (kinds movielens, taobao, csv, parquet), read once per process."""
        if not self.is_log:
            raise ValueError(f"kind={self.kind!r} is not a log read by model_core.data.sources")
        if not self.path:
            raise ValueError(f"ActionSource(kind={self.kind!r}) needs a path")
        path = Path(self.path).resolve()
        if not path.exists():
            raise FileNotFoundError(f"ActionSource(kind={self.kind!r}): {path} does not exist")
        options = tuple(sorted(self.reader_options().items()))
        return _read_log(self.kind, str(path), options, _fingerprint(path))

    def feature_config(self) -> FeatureConfig:
        """The vocabularies (action types, surfaces) of this source; content_dim is the default
        and is replaced by the pin features' width where a model is built."""
        return self.raw_log().feature_config() if self.is_log else FeatureConfig()

    def rule(self) -> PositiveRule:
        """Which actions of this source are positive engagement (labels, sketch, evaluation)."""
        return self.raw_log().rule if self.is_log else PositiveRule()

    def date_span(self) -> tuple[datetime.date, datetime.date] | None:
        """First and last event_date of a log; None for the synthetic world and daily files."""
        if not self.is_log:
            return None
        days = self.raw_log().days
        return (days[0], days[-1]) if days else None

    def load_day(self, day: datetime.date) -> pl.DataFrame:
        if self.kind == "synthetic":
            return synthetic.generate_day(self.world_config(), day)
        if self.is_log:
            return self.raw_log().actions.filter(pl.col("event_date") == day)
        f = self.day_file(day)
        if f is None:
            raise FileNotFoundError(f"no {day.isoformat()}.parquet or .csv under {self.path}")
        return pl.read_parquet(f) if f.suffix == ".parquet" else _read_csv(f)

    def day_file(self, day: datetime.date) -> Path | None:
        """kind="files": the day's file (YYYY-MM-DD.parquet, else .csv), None when it is absent."""
        if self.kind != "files":
            return None
        for suffix in (".parquet", ".csv"):
            f = Path(self.path) / f"{day.isoformat()}{suffix}"
            if f.exists():
                return f
        return None

    def load_pins(self, train_end: datetime.date | None = None) -> pl.DataFrame:
        """The pin_features contract: pin_id, embedding, topic.

        For a log, `item_content_embeddings(log, cutoff, item_dim)` with cutoff = 00:00 UTC of the
        day after `train_end` (the last training day, inclusive, as in EvaluationSplit): exactly
        the actions with event_date <= train_end — the ones the model trains on — shape the item
        vectors, and nothing from the evaluation period (after train_end) leaks into them. Items
        first seen later still get a (metadata-only) vector.
        """
        if self.kind == "synthetic":
            return synthetic.pin_features(self.world_config())
        if self.is_log:
            if train_end is None:
                raise ValueError("a log's pin features need train_end (the evaluation split)")
            return item_content_embeddings(
                self.raw_log(),
                item_cutoff(train_end),
                dim=self.item_dim,
                seed=self.seed,
                engagement=self.item_engagement,
            )
        return pl.read_parquet(Path(self.path) / "pin_features.parquet")


def item_cutoff(train_end: datetime.date) -> datetime.datetime:
    """00:00 UTC of the day after the last training day: ts < cutoff ⇔ event_date <= train_end."""
    return datetime.datetime.combine(
        train_end + datetime.timedelta(days=1), datetime.time(), tzinfo=datetime.timezone.utc
    )


def _fingerprint(path: Path) -> tuple[tuple[str, int, int], ...]:
    """(name, size, mtime_ns) of the file, or of every file in the directory."""
    files = sorted(p for p in path.iterdir() if p.is_file()) if path.is_dir() else [path]
    return tuple((str(f), (st := f.stat()).st_size, st.st_mtime_ns) for f in files)


@functools.lru_cache(maxsize=2)
def _read_log(
    kind: str, path: str, options: tuple[tuple[str, Any], ...], fingerprint: tuple[object, ...]
) -> RawLog:
    """One read per (configuration, file state) and process; every partition slices it."""
    del fingerprint  # part of the cache key only
    return read_source(kind, path, **dict(options))


def _read_csv(path: Path) -> pl.DataFrame:
    df = pl.read_csv(path, try_parse_dates=False)
    return df.with_columns(
        pl.col("event_date").str.to_date(),
        pl.col("ts").str.to_datetime(time_unit="us", time_zone="UTC"),
    ).select(list(SCHEMA))


class EvaluationSplit(dg.ConfigurableResource):
    """The paper's §4.1 split, shared by training and evaluation so they always agree.

    train_end_date is the last day of training data, inclusive: training timelines read actions
    with event_date <= train_end, a log's item vectors only actions before 00:00 UTC of the next
    day, and evaluation_report[train_end] scores positives in (train_end, train_end + horizon].
    The pipeline's default resources take it from PINNER_TRAIN_END_DATE (`from_env`).
    """

    train_end_date: str = Field(
        default="2026-02-25",
        description="Last day of training data (inclusive); the default leaves the synthetic "
        "world's last 14 days for evaluation. PINNER_TRAIN_END_DATE in the default resources.",
    )
    eval_fraction: float = Field(
        default=0.2, description="Share of users held out of training entirely (stable hash)."
    )
    horizon_days: int = Field(default=14, description="Evaluation window after a day (§4.1).")
    index_size: int = Field(default=1_000_000, description="Random pins in the eval index.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "EvaluationSplit":
        """The default split, with train_end_date from PINNER_TRAIN_END_DATE when set."""
        env = os.environ if environ is None else environ
        end = env.get("PINNER_TRAIN_END_DATE", "")
        if not end:
            return cls()
        try:
            datetime.date.fromisoformat(end)
        except ValueError as err:
            raise ValueError(f"PINNER_TRAIN_END_DATE={end!r} is not a YYYY-MM-DD date") from err
        return cls(train_end_date=end)

    @property
    def train_end(self) -> datetime.date:
        return datetime.date.fromisoformat(self.train_end_date)


class ComputeResource(dg.ConfigurableResource):
    """Where training and inference run: the device (auto → cuda when available, else cpu), how
    trained_model launches torchrun through Dagster Pipes (a local subprocess or a Kubernetes pod,
    pinner_assets.lib.launch) and how many shards user_embeddings splits a day into."""

    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    launcher: Literal["subprocess", "k8s"] = Field(
        default="subprocess",
        description="Where torchrun runs: a local subprocess (PipesSubprocessClient) or a "
        "Kubernetes pod requesting nvidia.com/gpu (PipesK8sClient).",
    )
    nproc_per_node: int = Field(
        default=1, description="Training ranks torchrun starts (one per GPU; gloo on CPU)."
    )
    training_data_url: str = Field(
        default="",
        description="fsspec URL (file://, s3://, gs://) where trained_model exports its Parquet "
        "shards; empty = <data_dir>/training_data.",
    )
    checkpoint_every: int = Field(
        default=0,
        description="Checkpoint every N steps (small N on preemptible nodes); 0 = the recipe's.",
    )
    inference_shards: int = Field(
        default=0,
        description="S: user_embeddings splits the day's users by a stable hash into S shards "
        "computed by parallel worker processes (one intra-op thread each, so every S writes the "
        "same bytes) and merged in one transaction; 1 = in process; 0 = one per CPU core on a "
        "CPU, 1 on a GPU.",
    )
    inference_batch_size: int = Field(
        default=INFERENCE_BATCH_SIZE,
        description="Users per inference batch (and per hash bucket of a shard); larger on a GPU "
        "(model_core.inference.embed.INFERENCE_BATCH_SIZE says why 256 on a CPU).",
    )
    k8s_image: str = Field(
        default="pinnerformer:latest", description="launcher=k8s: the training image."
    )
    k8s_namespace: str = Field(default="", description="launcher=k8s: namespace ('' = current).")

    def shards(self, device: str) -> int:
        """`inference_shards` resolved for `device`: 0 = one per CPU core this process may use
        on a CPU (the in-process S = 1 runs on one thread), 1 on a GPU."""
        if self.inference_shards > 0:
            return self.inference_shards
        if device.startswith("cuda"):
            return 1
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1

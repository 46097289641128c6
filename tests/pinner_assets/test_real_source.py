"""Real logs as the pipeline's source: ActionSource over model_core.data.sources, and the pipeline
run end to end on a Taobao-format log with its own dates, vocabulary and positive rule."""

import datetime
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pytest
import torch

from model_core.data.contract import SCHEMA
from model_core.data.sources import TAOBAO_ACTION_TYPES, stable_id
from model_core.data.timelines import PositiveRule
from model_core.evaluation.paper_protocol import is_eval_user
from model_core.features.actions import FeatureConfig
from pinner_assets.definitions import default_resources
from pinner_assets.lib.resources import ActionSource, EvaluationSplit, item_cutoff

ROOT = Path(__file__).resolve().parents[2]
DATASETS = Path(
    os.environ.get("PINNER_DATASETS_DIR", ROOT / ".." / "shared" / "datasets")
).resolve()
UTC = datetime.timezone.utc
TAOBAO_DAYS = [datetime.date(2017, 11, 25) + datetime.timedelta(days=i) for i in range(4)]
TAOBAO_TRAIN_END = TAOBAO_DAYS[2]
TAOBAO_POSITIVE = ("cart", "fav", "buy")
OUT_OF_PERIOD_ITEM = 999


def write_taobao_log(path: Path) -> pl.DataFrame:
    """A tiny UserBehavior CSV (no header: user, item, category, behaviour, unix s) over four UTC
    days, plus one row dated before the dataset's period. Returns the rows the reader keeps."""
    ids = np.arange(1, 1000, dtype=np.int64)
    held = is_eval_user(ids, 0.2)
    users = [*ids[~held][:8].tolist(), *ids[held][:3].tolist()]  # 8 training, 3 held-out users
    rng = np.random.default_rng(7)
    rows = []
    for u, user in enumerate(users):
        for d, day in enumerate(TAOBAO_DAYS):
            if d > 0 and (u + d) % 4 == 0:  # everyone is active on day 0; some skip a later day
                continue
            start = datetime.datetime.combine(day, datetime.time(1), tzinfo=UTC)  # 09:00 +08
            offsets = np.sort(rng.choice(14 * 3600, size=int(rng.integers(3, 7)), replace=False))
            for offset in offsets.tolist():
                item = int(rng.integers(100, 130))
                rows.append(
                    {
                        "user_id": user,
                        "item_id": item,
                        "category_id": item // 10,
                        "behavior_type": str(
                            rng.choice(TAOBAO_ACTION_TYPES, p=[0.6, 0.15, 0.15, 0.1])
                        ),
                        "timestamp": int(start.timestamp()) + offset,
                    }
                )
    kept = pl.DataFrame(rows)
    early = datetime.datetime(2017, 11, 20, 12, tzinfo=UTC)  # a known-bad clock value
    bad = {"user_id": users[0], "item_id": OUT_OF_PERIOD_ITEM, "category_id": 99}
    bad |= {"behavior_type": "pv", "timestamp": int(early.timestamp())}
    pl.concat([kept, pl.DataFrame([bad])]).write_csv(path, include_header=False)
    return kept.with_columns(
        event_date=pl.from_epoch("timestamp", time_unit="s").dt.date(),
        held_out=pl.Series(is_eval_user(kept["user_id"].to_numpy(), 0.2)),
        positive=pl.col("behavior_type").is_in(TAOBAO_POSITIVE),
    )


def test_taobao_log_runs_through_the_pipeline(tmp_path: Path) -> None:
    """raw_actions → timelines → training → pin side → user_embeddings → evaluation_report on a
    Taobao log, configured only through the environment (as the UI and `pinner demo` are)."""
    log_path = tmp_path / "UserBehavior.csv"
    fixture = write_taobao_log(log_path)
    env = {
        **os.environ,
        "PINNER_DATA_DIR": str(tmp_path / "data"),
        "PINNER_SOURCE": "taobao",
        "PINNER_SOURCE_PATH": str(log_path),
        "PINNER_SOURCE_OPTIONS": json.dumps({"item_dim": 8}),
        "PINNER_START_DATE": TAOBAO_DAYS[0].isoformat(),
        "PINNER_END_DATE": (TAOBAO_DAYS[-1] + datetime.timedelta(days=1)).isoformat(),
        "PINNER_TRAIN_END_DATE": TAOBAO_TRAIN_END.isoformat(),
    }
    out = tmp_path / "report.json"
    (tmp_path / "home").mkdir()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.pinner_assets.env_pipeline",
            str(out),
            str(tmp_path / "home"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-8000:]
    report = json.loads(out.read_text())
    assert report["source"] == "taobao"
    assert report["partitions"] == [d.isoformat() for d in TAOBAO_DAYS]
    assert report["checks"]
    assert all(report["checks"].values()), report["checks"]
    meta = report["metadata"]

    con = duckdb.connect(str(tmp_path / "data" / "warehouse.duckdb"), read_only=True)
    try:
        # every fixture row of its day, nothing from outside the dataset's period
        per_day = dict(
            con.execute("SELECT event_date, count(*) FROM raw_actions GROUP BY 1").fetchall()
        )
        want = dict(fixture.group_by("event_date").len().iter_rows())
        assert per_day == want
        types = {
            r[0] for r in con.execute("SELECT DISTINCT action_type FROM raw_actions").fetchall()
        }
        assert types == set(TAOBAO_ACTION_TYPES)  # the fixture uses all four
        # Taobao's vocabulary reaches the timelines: no row is dropped as out of vocabulary
        last = TAOBAO_DAYS[-1]
        lengths = dict(
            con.execute(
                "SELECT user_id, len(action_type) FROM user_timelines WHERE as_of = ?", [last]
            ).fetchall()
        )
        active = fixture.filter(pl.col("event_date") == last)["user_id"].unique()
        history = fixture.filter(pl.col("user_id").is_in(active.implode()))
        assert lengths == dict(history.group_by("user_id").len().iter_rows())
        # every user active on any day has a unit-norm embedding on the last day
        emb = con.execute(
            "SELECT user_id, embedding FROM user_embeddings WHERE as_of = ?", [last]
        ).fetchall()
        assert {r[0] for r in emb} == set(fixture["user_id"].unique().to_list())
        norms = np.linalg.norm(np.asarray([r[1] for r in emb], dtype=np.float32), axis=1)
        np.testing.assert_allclose(norms, 1.0, atol=1e-4)
        # item vectors for every item of the file, also the one seen only in the dropped row
        pins = {r[0] for r in con.execute("SELECT pin_id FROM pin_features").fetchall()}
        assert pins == {*fixture["item_id"].to_list(), OUT_OF_PERIOD_ITEM}
        # ... each with its metadata tokens (Taobao: the category), for the model to learn
        tokens = dict(con.execute("SELECT pin_id, tokens FROM pin_features").fetchall())
        assert tokens[123] == ["topic=12"]
    finally:
        con.close()

    assert meta["pin_features"]["cutoff"] == str(item_cutoff(TAOBAO_TRAIN_END))
    assert meta["pin_features"]["dim"] == 8
    # Taobao's positive rule (cart / fav / buy) in training: the sketch counts labels the
    # sampler draws from the training users' positives up to the split (one epoch) ...
    train_rows = fixture.filter(~pl.col("held_out") & (pl.col("event_date") <= TAOBAO_TRAIN_END))
    assert train_rows["positive"].sum() > 0
    assert meta["count_min_sketch"]["sampled_labels"] > 0
    # ... and in evaluation: the held-out users' positives after it
    metrics = json.loads(
        (tmp_path / "data" / "reports" / TAOBAO_TRAIN_END.isoformat() / "metrics.json").read_text()
    )
    future = fixture.filter(
        pl.col("held_out") & pl.col("positive") & (pl.col("event_date") > TAOBAO_TRAIN_END)
    )
    assert metrics["eval_positives"] == future.height > 0
    assert metrics["eval_users"] == future["user_id"].n_unique()
    assert metrics["horizon_days_available"] == 1
    # the model learnt Taobao's vocabulary and carries it in its checkpoint
    latest = json.loads((tmp_path / "data" / "models" / "latest.json").read_text())
    state = torch.load(latest["path"], map_location="cpu", weights_only=False)
    features = state["model_config"]["features"]
    assert tuple(features["action_types"]) == TAOBAO_ACTION_TYPES
    assert tuple(features["surfaces"]) == ("app",)
    # ... and a vector per category that two of its training items share
    assert state["model_config"]["item_token_vocab"] >= 2


def test_taobao_source_reads_a_log_once_with_its_rule(tmp_path: Path) -> None:
    path = tmp_path / "UserBehavior.csv"
    fixture = write_taobao_log(path)
    source = ActionSource(kind="taobao", path=str(path))
    for day in TAOBAO_DAYS:
        want = fixture.filter(pl.col("event_date") == day)
        assert source.load_day(day).height == want.height
    assert source.raw_log() is source.raw_log()  # one read per process
    assert source.raw_log().notes["out_of_period_rows"] == 1
    assert source.feature_config().action_types == TAOBAO_ACTION_TYPES
    assert source.rule() == PositiveRule(
        surfaces=("app",), always=TAOBAO_POSITIVE, min_duration_s={}
    )
    buy_only = ActionSource(kind="taobao", path=str(path), positive_types=["buy"])
    assert buy_only.rule().always == ("buy",)


def write_custom_csv(path: Path) -> pl.DataFrame:
    """A log with its own column names, string user ids and ISO times over three days."""
    rows = []
    for d in range(3):
        for u, who in enumerate(["ana", "bo", "cy"]):
            for k in range(2 + u):
                rows.append(
                    {
                        "who": who,
                        "what": 10 + (d + u + k) % 5,
                        "when": f"2024-05-0{d + 1}T{8 + k:02d}:{10 * u:02d}:00Z",
                        "kind": ["view", "save", "view", "skip"][(u + k + d) % 4],
                        "where": ["feed", "search"][k % 2],
                        "secs": float(k),
                    }
                )
    df = pl.DataFrame(rows)
    df.write_csv(path)
    return df


CUSTOM_COLUMNS = {
    "user_col": "who",
    "item_col": "what",
    "time_col": "when",
    "action_type_col": "kind",
    "surface_col": "where",
    "duration_col": "secs",
    "time_unit": "iso",
    "positive_types": ["save"],
}


def test_csv_source_with_custom_columns_loads_through_the_resource(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    df = write_custom_csv(path)
    source = ActionSource(kind="csv", path=str(path), item_dim=4, **CUSTOM_COLUMNS)  # type: ignore[arg-type]
    day = source.load_day(datetime.date(2024, 5, 2))
    assert dict(day.schema) == SCHEMA
    assert day.height == df.filter(pl.col("when").str.starts_with("2024-05-02")).height
    assert set(day["user_id"].to_list()) == set(stable_id(pl.Series(["ana", "bo", "cy"])).to_list())
    assert source.load_day(datetime.date(2024, 5, 9)).height == 0
    assert source.date_span() == (datetime.date(2024, 5, 1), datetime.date(2024, 5, 3))
    vocab = source.feature_config()
    assert vocab.action_types == ("save", "skip", "view")
    assert vocab.surfaces == ("feed", "search")
    assert source.rule() == PositiveRule(
        surfaces=("feed", "search"), always=("save",), min_duration_s={}
    )
    assert source.raw_log() is source.raw_log()  # read once per process
    pins = source.load_pins(datetime.date(2024, 5, 2))
    assert pins["pin_id"].to_list() == sorted(df["what"].unique().to_list())
    assert pins["embedding"].dtype.shape == (4,)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="train_end"):
        source.load_pins()
    # a repaired file is read again, not served from the cache
    df.filter(pl.col("when").str.starts_with("2024-05-01")).write_csv(path)
    assert source.load_day(datetime.date(2024, 5, 2)).height == 0
    # the same source through the environment the code location reads
    env = {
        "PINNER_SOURCE": "csv",
        "PINNER_SOURCE_PATH": str(path),
        "PINNER_SOURCE_OPTIONS": json.dumps(CUSTOM_COLUMNS),
    }
    assert ActionSource.from_env(env) == ActionSource(kind="csv", path=str(path), **CUSTOM_COLUMNS)  # type: ignore[arg-type]


def test_source_and_split_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PINNER_SOURCE", "PINNER_SOURCE_PATH", "PINNER_SOURCE_OPTIONS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("PINNER_TRAIN_END_DATE", raising=False)
    resources = default_resources()  # nothing set: the synthetic world, unchanged
    assert resources["source"] == ActionSource()
    assert resources["split"] == EvaluationSplit()
    assert ActionSource().feature_config() == FeatureConfig()
    assert ActionSource().rule() == PositiveRule()
    assert ActionSource().date_span() is None
    split = EvaluationSplit.from_env({"PINNER_TRAIN_END_DATE": "2017-11-30"})
    assert split.train_end == datetime.date(2017, 11, 30)
    assert item_cutoff(split.train_end) == datetime.datetime(2017, 12, 1, tzinfo=UTC)
    with pytest.raises(ValueError, match="PINNER_TRAIN_END_DATE"):
        EvaluationSplit.from_env({"PINNER_TRAIN_END_DATE": "30/11/2017"})
    with pytest.raises(ValueError, match="expected one of"):
        ActionSource.from_env({"PINNER_SOURCE": "kafka"})
    with pytest.raises(ValueError, match="needs PINNER_SOURCE_PATH"):
        ActionSource.from_env({"PINNER_SOURCE": "taobao"})
    with pytest.raises(ValueError, match="unknown or misplaced fields"):
        ActionSource.from_env(
            {
                "PINNER_SOURCE": "csv",
                "PINNER_SOURCE_PATH": "x",
                "PINNER_SOURCE_OPTIONS": '{"usr": 1}',
            }
        )
    with pytest.raises(ValueError, match="not valid JSON"):
        ActionSource.from_env(
            {"PINNER_SOURCE": "csv", "PINNER_SOURCE_PATH": "x", "PINNER_SOURCE_OPTIONS": "{user"}
        )
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ActionSource(kind="taobao", path="/nonexistent/UserBehavior.csv").load_day(
            datetime.date(2017, 11, 25)
        )


def test_the_public_taobao_sample_loads_by_day() -> None:
    path = DATASETS / "taobao-userbehavior-sample"
    if not path.is_dir():
        pytest.skip(f"taobao-userbehavior-sample not found under {DATASETS} (PINNER_DATASETS_DIR)")
    source = ActionSource(kind="taobao", path=str(path))
    day = source.load_day(datetime.date(2017, 11, 28))
    assert day.height == 8_915  # UTC date 2017-11-28 of the sample (docs/REAL_DATA.md)
    assert dict(day.schema) == SCHEMA
    assert set(day["action_type"].unique().to_list()) == set(TAOBAO_ACTION_TYPES)
    assert source.date_span() == (datetime.date(2017, 11, 24), datetime.date(2017, 12, 3))
    days = [source.date_span()[0] + datetime.timedelta(days=i) for i in range(10)]  # type: ignore[index]
    assert sum(source.load_day(d).height for d in days) == 84_252  # 84,287 rows − 35 out of period
    assert source.feature_config().action_types == TAOBAO_ACTION_TYPES
    assert source.rule().always == TAOBAO_POSITIVE

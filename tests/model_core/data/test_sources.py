"""Public-log adapters (model_core.data.sources) and the real-data item features (item_features)."""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from model_core.data.contract import SCHEMA, conform, validate_actions
from model_core.data.sources import (
    ITEM_SCHEMA,
    RawLog,
    read_movielens,
    read_source,
    read_table,
    read_taobao,
    stable_id,
)
from model_core.data.timelines import PinCatalog, PositiveRule, Timelines
from model_core.features.item_content import item_content_embeddings

UTC = datetime.timezone.utc
DATASETS = Path(
    os.environ.get(
        "PINNER_DATASETS_DIR", Path(__file__).resolve().parents[3] / ".." / "shared" / "datasets"
    )
).resolve()


def check_contract(log: RawLog) -> None:
    """actions in the contract, sorted, valid per day; items unique and covering every action."""
    actions = log.actions
    assert dict(actions.schema) == SCHEMA
    assert actions.equals(conform(actions))
    assert actions.equals(actions.sort(["user_id", "ts"], maintain_order=True))
    assert not (actions["duration_s"] < 0).any()
    assert (actions["event_date"] == actions["ts"].dt.date()).all()
    for day in actions["event_date"].unique().sort().head(5):  # the contract's own day rules
        part = actions.filter(pl.col("event_date") == day)
        for rule in validate_actions(part, day, log.action_types, log.surfaces):
            assert rule.passed, rule.message()
    assert dict(log.items.schema) == ITEM_SCHEMA
    assert log.items["pin_id"].is_unique().all()
    assert log.items["pin_id"].is_sorted()
    assert actions["pin_id"].is_in(log.items["pin_id"].implode()).all()


def positives(log: RawLog) -> np.ndarray:
    a = log.actions
    return log.rule.mask(
        a["action_type"].to_numpy().astype(str),
        a["surface"].to_numpy().astype(str),
        a["duration_s"].to_numpy(),
    )


def write(path: Path, text: str, encoding: str = "utf-8", newline: str = "\n") -> None:
    path.write_bytes(text.replace("\n", newline).encode(encoding))


# --------------------------------------------------------------------------------------------
# MovieLens layouts

ML_RATINGS = [(1, 10, 5.0, 1_000_000_000), (1, 20, 3.5, 999_999_000), (2, 10, 2.0, 1_000_086_400),
              (2, 30, 4.0, 1_000_000_100), (3, 20, 3.0, 1_000_000_200)]  # fmt: skip


def test_movielens_100k_layout(tmp_path: Path) -> None:
    write(
        tmp_path / "u.data",
        "".join(f"{u}\t{i}\t{int(r)}\t{t}\n" for u, i, r, t in ML_RATINGS if r == int(r)),
    )
    flags = {10: [0, 1, 0, 1] + [0] * 15, 20: [0] * 8 + [1] + [0] * 10, 30: [1] + [0] * 18}
    titles = {10: "Amélie (2001)", 20: 'Le "Film" (1995)', 30: "Untitled (1990)"}
    write(
        tmp_path / "u.item",
        "".join(
            f"{m}|{titles[m]}|01-Jan-1995||http://x|" + "|".join(map(str, f)) + "\n"
            for m, f in flags.items()
        ),
        encoding="latin-1",
    )
    log = read_movielens(tmp_path)
    check_contract(log)
    assert log.name == "movielens-100k"
    assert log.actions.height == 4  # the 3.5 rating is not in this integer layout's fixture
    items = {r["pin_id"]: r for r in log.items.iter_rows(named=True)}
    # genres present: Action, Animation, Drama (unknown is "no genre") → sorted ids 0, 1, 2
    assert items[10]["topic"] == 0
    assert items[10]["text"] == "Amélie (2001) | Action|Animation"
    assert items[20]["topic"] == 2
    assert items[20]["text"] == 'Le "Film" (1995) | Drama'
    assert items[30]["topic"] is None
    types = dict(zip(log.actions["pin_id"], log.actions["action_type"], strict=True))
    assert log.actions.filter(pl.col("user_id") == 2)["action_type"].to_list() == [
        "rate_high",  # 4 at t=1_000_000_100
        "rate_low",  # 2 a day later
    ]
    assert types[20] == "rate_mid"


def test_movielens_1m_layout(tmp_path: Path) -> None:
    write(
        tmp_path / "ratings.dat",
        "".join(f"{u}::{i}::{int(r)}::{t}\n" for u, i, r, t in ML_RATINGS if r == int(r)),
    )
    write(
        tmp_path / "movies.dat",
        "10::Amélie: Le Fabuleux (2001)::Comedy|Romance\n20::Heat (1995)::Action|Crime\n"
        "30::Toy Story (1995)::Animation|Children's\n",
        encoding="latin-1",
    )
    log = read_movielens(tmp_path, positive_min_rating=5.0)
    check_contract(log)
    assert log.name == "movielens-1m"  # the directory is not named ml-*: the layout names it
    genres = ["Action", "Animation", "Children's", "Comedy", "Crime", "Romance"]
    items = {r["pin_id"]: r for r in log.items.iter_rows(named=True)}
    assert items[10]["topic"] == genres.index("Comedy")
    assert items[10]["text"] == "Amélie: Le Fabuleux (2001) | Comedy|Romance"
    assert items[30]["topic"] == genres.index("Animation")
    counts = dict(log.actions["action_type"].value_counts().iter_rows())
    assert counts == {"rate_high": 1, "rate_mid": 2, "rate_low": 1}  # 5 | 4, 3 | 2


def test_movielens_latest_layout_with_crlf(tmp_path: Path) -> None:
    header = "userId,movieId,rating,timestamp\n"
    write(
        tmp_path / "ratings.csv",
        header + "".join(f"{u},{i},{r},{t}\n" for u, i, r, t in ML_RATINGS),
        newline="\r\n",
    )
    write(
        tmp_path / "movies.csv",
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n'
        "20,Heat (1995),Action|Crime|Thriller\n30,Nothing (2018),(no genres listed)\n",
        newline="\r\n",
    )
    log = read_movielens(tmp_path)
    check_contract(log)
    assert log.actions.height == len(ML_RATINGS)
    assert log.notes["input_rows"] == len(ML_RATINGS)
    assert log.action_types == ("rate_low", "rate_mid", "rate_high")
    assert log.surfaces == ("web",)
    assert log.rule == PositiveRule(surfaces=("web",), always=("rate_high",), min_duration_s={})
    assert (log.actions["duration_s"] == 0.0).all()
    expected = {5.0: "rate_high", 4.0: "rate_high", 3.5: "rate_mid", 3.0: "rate_mid"}
    expected[2.0] = "rate_low"
    got = log.actions.sort("ts")["action_type"].to_list()
    assert got == [expected[r] for *_, r, _t in sorted(ML_RATINGS, key=lambda x: x[3])]
    assert positives(log).sum() == 2
    items = {r["pin_id"]: r for r in log.items.iter_rows(named=True)}
    assert items[10]["text"] == "American President, The (1995) | Comedy|Drama|Romance"
    assert not items[20]["text"].endswith("\r")
    assert items[30]["topic"] is None
    genres = ["Action", "Comedy", "Crime", "Drama", "Romance", "Thriller"]  # sorted
    assert items[10]["topic"] == genres.index("Comedy")
    user1 = log.actions.filter(pl.col("user_id") == 1)
    assert user1["pin_id"].to_list() == [20, 10]  # sorted by time, not by file order
    assert user1["ts"][1] == datetime.datetime(2001, 9, 9, 1, 46, 40, tzinfo=UTC)


def test_movielens_rejects_an_unknown_layout(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"not a MovieLens release.*notes\.txt"):
        read_movielens(tmp_path)


# --------------------------------------------------------------------------------------------
# Taobao

TAOBAO_ROWS = [
    (1, 100, 7, "pv", 1_511_544_070),  # 2017-11-25 01:21 Shanghai
    (1, 101, 7, "cart", 1_511_561_733),
    (1, 102, 8, "buy", 1_512_316_799),  # 2017-12-03 23:59:59 Shanghai: the last second inside
    (2, 100, 7, "fav", 1_511_800_000),
    (2, 103, 9, "pv", 1_505_000_000),  # 2017-09: a known-bad early timestamp
    (2, 104, 9, "pv", 1_512_316_800),  # 2017-12-04 00:00 Shanghai: just outside
]


def test_taobao_drops_and_counts_out_of_period_rows(tmp_path: Path) -> None:
    write(tmp_path / "UserBehavior.csv", "".join(",".join(map(str, r)) + "\n" for r in TAOBAO_ROWS))
    log = read_source("taobao", str(tmp_path))
    check_contract(log)
    assert log.notes["out_of_period_rows"] == 2
    assert log.notes["input_rows"] == len(TAOBAO_ROWS)
    assert log.actions.height == len(TAOBAO_ROWS) - 2
    assert set(log.actions["pin_id"]) == {100, 101, 102}
    assert log.action_types == ("pv", "cart", "fav", "buy")
    assert log.rule == PositiveRule(("app",), always=("cart", "fav", "buy"), min_duration_s={})
    assert positives(log).tolist() == [False, True, True, True]  # user 1: pv cart buy; user 2: fav
    # event_date is the UTC date: 2017-11-25 01:21 Shanghai is 2017-11-24 UTC.
    assert log.actions["event_date"][0] == datetime.date(2017, 11, 24)
    assert log.actions["ts"].max() == datetime.datetime(2017, 12, 3, 15, 59, 59, tzinfo=UTC)
    # items of dropped rows keep their metadata; topic = category
    topics = dict(zip(log.items["pin_id"], log.items["topic"], strict=True))
    assert topics == {100: 7, 101: 7, 102: 8, 103: 9, 104: 9}
    widened = read_taobao(
        tmp_path / "UserBehavior.csv",
        period=(datetime.date(2017, 9, 1), datetime.date(2017, 12, 4)),
    )
    assert widened.notes["out_of_period_rows"] == 0
    buy_only = read_taobao(tmp_path / "UserBehavior.csv", positive_types=("buy",))
    assert positives(buy_only).tolist() == [False, False, True, False]
    with pytest.raises(ValueError, match=r"\['click'\] are not Taobao behaviours"):
        read_taobao(tmp_path / "UserBehavior.csv", positive_types=("buy", "click"))


# --------------------------------------------------------------------------------------------
# CSV / Parquet tables

T0 = datetime.datetime(2024, 3, 1, 12, 0, tzinfo=UTC)


def _table(time_values: list[object]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "who": ["alice", "bob", "alice", "carol"],
            "what": [5, 6, 7, 5],
            "when": time_values,
            "kind": ["save", "view", "view", "save"],
            "where": ["feed", "feed", "search", "feed"],
            "secs": [1.5, None, -3.0, 12.0],
        }
    )


@pytest.mark.parametrize(
    ("time_unit", "values"),
    [
        ("auto", [1_709_294_400 + k for k in (0, 60, 120, 180)]),
        ("s", [1_709_294_400 + k for k in (0, 60, 120, 180)]),
        ("auto", [1_709_294_400_000 + 1000 * k for k in (0, 60, 120, 180)]),
        ("ms", [1_709_294_400_000 + 1000 * k for k in (0, 60, 120, 180)]),
        ("auto", [f"2024-03-01T12:0{k}:00" for k in range(4)]),  # no offset: UTC
        ("auto", [f"2024-03-01T12:0{k}:00Z" for k in range(4)]),
        ("iso", ["2024-03-01T14:00:00+02:00", "2024-03-01T14:01:00+02:00",
                 "2024-03-01T14:02:00+02:00", "2024-03-01T14:03:00+02:00"]),
    ],
)  # fmt: skip
def test_csv_time_units_and_string_ids(
    tmp_path: Path, time_unit: str, values: list[object]
) -> None:
    path = tmp_path / "log.csv"
    _table(values).write_csv(path)
    log = read_table(
        path, user="who", item="what", time="when", action_type="kind", surface="where",
        duration="secs", time_unit=time_unit, positive_types=("save",),  # type: ignore[arg-type]
    )  # fmt: skip
    check_contract(log)
    assert log.name == "csv:log.csv"
    expected_ts = [T0 + datetime.timedelta(minutes=k) for k in range(4)]
    by_user = dict(zip(stable_id(pl.Series(["alice", "bob", "carol"])), ["alice", "bob", "carol"],
                       strict=True))  # fmt: skip
    rows = log.actions.sort("ts")
    assert [by_user[u] for u in rows["user_id"]] == ["alice", "bob", "alice", "carol"]
    assert rows["ts"].to_list() == expected_ts
    assert rows["duration_s"].to_list() == [1.5, 0.0, 0.0, 12.0]
    assert log.notes["invalid_duration_rows"] == 2
    assert log.action_types == ("save", "view")
    assert log.surfaces == ("feed", "search")
    assert positives(log).sum() == 2


def test_stable_id_is_stable_and_non_negative() -> None:
    ids = stable_id(pl.Series("u", ["alice", "bob", None, "alice"]))
    assert ids.dtype == pl.Int64
    assert ids[0] == ids[3] != ids[1]
    assert ids[2] is None
    digest = hashlib.blake2b(b"alice", digest_size=8).digest()
    assert ids[0] == int.from_bytes(digest, "big") & (2**63 - 1)  # BLAKE2b-64, top bit cleared
    assert stable_id(pl.Series(["alice"]))[0] == ids[0]


def test_parquet_with_defaults_and_null_rows(tmp_path: Path) -> None:
    df = pl.DataFrame(
        {
            "user": [3, 1, 1, None],
            "item": [10, 11, 12, 13],
            "ts": [T0 + datetime.timedelta(hours=h) for h in (0, 2, 1, 3)],
        }
    )
    path = tmp_path / "part.parquet"
    df.write_parquet(path)
    log = read_source("parquet", str(path), user="user", item="item", time="ts")
    check_contract(log)
    assert log.notes["null_rows"] == 1
    assert log.actions["user_id"].to_list() == [1, 1, 3]
    assert log.actions["pin_id"].to_list() == [12, 11, 10]
    assert log.action_types == ("interaction",)
    assert log.surfaces == ("default",)
    assert positives(log).all()  # no positive_types: every action is positive
    naive = tmp_path / "naive"
    naive.mkdir()
    df.with_columns(pl.col("ts").dt.replace_time_zone(None)).write_parquet(naive / "a.parquet")
    assert read_table(naive, user="user", item="item", time="ts").actions.equals(log.actions)


def test_table_errors_name_the_column_and_what_is_available(tmp_path: Path) -> None:
    path = tmp_path / "log.csv"
    _table([1_709_294_400] * 4).write_csv(path)
    with pytest.raises(ValueError, match=r"item column 'pin'.*available columns: \['who'"):
        read_table(path, user="who", item="pin", time="when")
    with pytest.raises(ValueError, match=r"positive_types \['repin'\] never occur"):
        read_table(path, user="who", item="what", time="when", action_type="kind",
                   positive_types=("repin",))  # fmt: skip
    with pytest.raises(ValueError, match=r"holds numbers.*not ISO"):
        read_table(path, user="who", item="what", time="when", time_unit="iso")
    with pytest.raises(ValueError, match="unknown source kind 'kafka'"):
        read_source("kafka", str(path))


# --------------------------------------------------------------------------------------------
# The public datasets, when present


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_dir():
        pytest.skip(f"{name} not found under {DATASETS} (set PINNER_DATASETS_DIR to its parent)")
    return path


def test_real_movielens_latest_small_counts() -> None:
    log = read_movielens(dataset("movielens-latest-small"))
    check_contract(log)
    assert log.name == "movielens-latest-small"
    assert log.actions.height == 100_836
    assert log.actions["user_id"].n_unique() == 610
    assert log.actions["pin_id"].n_unique() == 9_724
    assert log.items.height == 9_742  # movies.csv also lists 18 movies nobody rated
    assert log.notes["movies_never_rated"] == 18
    assert (log.actions["user_id"].value_counts()["count"] >= 20).all()
    assert log.actions["event_date"].min() == datetime.date(1996, 3, 29)
    assert log.actions["event_date"].max() == datetime.date(2018, 9, 24)
    assert log.items["topic"].null_count() == 34  # "(no genres listed)"
    features = item_content_embeddings(log, datetime.datetime(2015, 1, 1, tzinfo=UTC))
    catalog = PinCatalog.from_frame(features)
    assert len(catalog) == 9_742
    np.testing.assert_allclose(np.linalg.norm(catalog.embeddings, axis=1), 1.0, atol=1e-5)
    timelines, drops = Timelines.from_actions(
        log.actions, catalog, log.feature_config(content_dim=32), log.rule
    )
    assert drops.total == 0
    assert timelines.positive.sum() == (log.actions["action_type"] == "rate_high").sum()


def test_real_taobao_sample_counts() -> None:
    log = read_taobao(dataset("taobao-userbehavior-sample"))
    check_contract(log)
    assert log.notes["input_rows"] == 84_287
    assert log.notes["out_of_period_rows"] == 35
    assert log.actions.height == 84_287 - 35
    assert log.actions["user_id"].n_unique() == 814
    assert log.items.height == 55_233
    assert log.items["topic"].n_unique() == 2_911
    counts = dict(log.actions["action_type"].value_counts().iter_rows())
    assert counts == {"pv": 75_693 - 35, "cart": 4_494, "fav": 2_351, "buy": 1_749}
    assert positives(log).sum() == 4_494 + 2_351 + 1_749


# --------------------------------------------------------------------------------------------
# Item features: no leakage across the cutoff

CUTOFF = datetime.datetime(2024, 1, 10, tzinfo=UTC)


def _leak_log(post: list[tuple[int, int, int]]) -> RawLog:
    """Users 1-6 engage with pins 1-6 before the cutoff; `post` = (user, pin, day) after it."""
    pre = [(u, p, 1 + (u + p) % 8) for u in range(1, 7) for p in range(1, 7) if (u + p) % 3]
    rows = [(u, p, datetime.datetime(2024, 1, d, tzinfo=UTC)) for u, p, d in pre]
    rows += [(u, p, CUTOFF + datetime.timedelta(days=d)) for u, p, d in post]
    actions = conform(
        pl.DataFrame(
            {
                "ts": [r[2] for r in rows],
                "user_id": [r[0] for r in rows],
                "pin_id": [r[1] for r in rows],
                "action_type": "save",
                "surface": "feed",
                "duration_s": 0.0,
            }
        ).with_columns(event_date=pl.col("ts").dt.date())
    ).sort(["user_id", "ts"], maintain_order=True)
    meta = {p: (p % 2, f"thing number {p}") for p in range(1, 7)}
    meta |= {100: (7, "the marker"), 101: (7, "the marker"), 201: meta[1]}  # 101, 201 are twins
    items = pl.DataFrame(
        {"pin_id": list(meta), "topic": [m[0] for m in meta.values()],
         "text": [m[1] for m in meta.values()]},
        schema=ITEM_SCHEMA,
    ).sort("pin_id")  # fmt: skip
    rule = PositiveRule(surfaces=("feed",), always=("save",), min_duration_s={})
    return RawLog("leak", actions, items, ("save",), ("feed",), rule, {})


def _embeddings(log: RawLog, seed: int = 0) -> dict[int, np.ndarray]:
    df = item_content_embeddings(log, CUTOFF, dim=8, seed=seed)
    assert df.schema["embedding"] == pl.Array(pl.Float32, 8)
    assert df["pin_id"].is_sorted()
    return dict(zip(df["pin_id"].to_list(), df["embedding"].to_numpy(), strict=True))


def test_item_features_never_see_engagement_after_the_cutoff() -> None:
    # The marker (pin 100) is engaged ONLY after the cutoff, together with pins 1 and 2.
    post = [(u, p, 1 + u % 3) for u in range(1, 7) for p in (100, 1, 2)] + [(9, 300, 2)]
    emb = _embeddings(_leak_log(post))
    np.testing.assert_array_equal(emb[100], emb[101])  # = its never-engaged twin's metadata-only
    assert not np.allclose(emb[1], emb[201])  # pre-cutoff co-engagement does reach pin 1
    assert 300 in emb  # first seen after the cutoff, not in items: still gets a vector
    for vector in emb.values():
        assert abs(float(np.linalg.norm(vector)) - 1.0) < 1e-5

    quiet = _embeddings(_leak_log([]))
    other = _embeddings(_leak_log([(u, p, 3) for u in (1, 4) for p in (3, 4, 5, 100)]))
    for changed in (quiet, other):
        for pin, vector in changed.items():
            np.testing.assert_array_equal(vector, emb[pin])


def test_item_features_are_deterministic_for_a_seed() -> None:
    log = _leak_log([])
    a, b, c = _embeddings(log), _embeddings(log), _embeddings(log, seed=1)
    assert all(np.array_equal(a[p], b[p]) for p in a)
    assert not np.allclose(a[1], c[1])


def test_item_tokens_reach_the_catalogue_as_codes() -> None:
    """Each item's metadata tokens (topic, lower-cased words) travel with its vector, and the
    catalogue codes them; an item with no metadata has none."""
    df = item_content_embeddings(_leak_log([]), CUTOFF, dim=8)
    tokens = dict(zip(df["pin_id"].to_list(), df["tokens"].to_list(), strict=True))
    assert tokens[1] == ["topic=1", "word=thing", "word=number", "word=1"]
    assert tokens[100] == tokens[101] == ["topic=7", "word=the", "word=marker"]
    catalog = PinCatalog.from_frame(df)
    assert catalog.tokens is not None
    assert catalog.tokens.shape == (len(df), 4)
    codes = dict(zip(catalog.pin_ids.tolist(), catalog.tokens.tolist(), strict=True))
    assert codes[100] == codes[101]
    assert 0 not in codes[100][:3]
    assert codes[100][3] == 0
    assert codes[1][0] != codes[2][0]  # topics 1 and 0
    assert set(codes[1]) & set(codes[3]) == {codes[1][0], codes[1][1], codes[1][2]}
    no_text = pl.DataFrame({"pin_id": [1], "embedding": [[1.0, 0.0]], "topic": [None]})
    assert PinCatalog.from_frame(no_text).tokens is None  # the contract without tokens

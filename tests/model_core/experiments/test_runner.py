"""`pinner experiment` / `pinner results` on the tiny world: rows, keys, rendering."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from model_core.evaluation.leave_one_out import leave_one_out
from model_core.experiments.data import load
from model_core.experiments.publish import render_files
from model_core.experiments.rows import baseline_table
from model_core.experiments.runner import (
    Budget,
    FitCache,
    RecipeOptions,
    base_recipe,
    run,
    write,
)
from model_core.experiments.tables import PEERS, TABLES, variants
from model_core.training.recipe import RecipeConfig
from model_core.training.validation import leave_one_out_split

BASELINES = [
    "popularity",
    "recent_mean",
    "pinnersage_oracle",
    "pinnersage_round_robin",
    "history",
    "item_knn",
]
TINY = Budget(max_epochs=1, max_minutes=0.02, patience=1)
ITEM_IDS = ["content_only", "ids_table", "ids_hashed", "ids_table_no_graph"]


def test_paper_and_leave_one_out_rows_render(tmp_path: Path) -> None:
    paper = run("synthetic", None, ["item_ids"], "paper", seeds=[0], quick=True, budget=TINY)
    variants = [(r["table"], r["variant"]) for r in paper["rows"]]
    assert variants == [(baseline_table(b), b) for b in BASELINES] + [
        ("item_ids", v) for v in ITEM_IDS
    ]
    # the oracle reads the target: an upper bound, in its own table (never a baseline)
    assert ("upper_bounds", "pinnersage_oracle") in variants
    for row in paper["rows"]:
        lo, hi = row["recall_at_10_ci"]
        assert 0.0 <= lo <= row["recall_at_10"] <= hi <= 1.0 or row["eval_users"] == 0
        assert "hr_at_10" not in row
    graph = {r["variant"]: r["item_neighbors"] for r in paper["rows"] if "item_neighbors" in r}
    assert graph["ids_table"] > 0  # the default: the co-engagement graph layer
    assert graph["ids_table_no_graph"] == graph["content_only"] == graph["ids_hashed"] == 0
    loo = run("synthetic", None, ["item_ids"], "leave_one_out", seeds=[0], quick=True, budget=TINY)
    for row in loo["rows"]:
        for suffix in ("", "_unfiltered"):  # seen items removed (the default), and not
            assert 0.0 <= row[f"ndcg_at_10{suffix}"] <= row[f"hr_at_10{suffix}"] <= 1.0
            lo, hi = row[f"hr_at_10{suffix}_ci"]
            assert lo <= row[f"hr_at_10{suffix}"] <= hi
        assert "recall_at_10" not in row
    write({**paper, "command": "pinner experiment A"}, tmp_path / "a.json")
    write({**loo, "command": "pinner experiment B"}, tmp_path / "b.json")
    out = tmp_path / "RESULTS.md"
    render_files([tmp_path / "a.json", tmp_path / "b.json"], out, ["pinner experiment A"])
    text = out.read_text()
    assert "HR@10" in text
    assert "Recall@10" in text
    assert "ids_table" in text


def test_paper_only_tables_rows_and_pivots(tmp_path: Path) -> None:
    """Table 2 (one row per model x inference frequency), Table 5 (one row per model x scored
    action type, plus the overall row), Table 10 (BCE) — and the pivot tables they render to;
    here on two pooled 14-day windows after the training cut."""
    res = run(
        "synthetic",
        None,
        ["inference", "multitask", "bce"],
        "paper",
        seeds=[0, 1],
        quick=True,
        budget=TINY,
        seeded_tables=("multitask",),
        eval_windows=2,
    )
    assert res["eval_windows"] == 2
    rows = res["rows"]
    inference = [(r["variant"], r["scored_on"]) for r in rows if r["table"] == "inference"]
    assert inference == [(v, m) for v in TABLES["inference"] for m in ("once", "daily", "realtime")]
    multitask = [r for r in rows if r["table"] == "multitask"]
    trained = list(dict.fromkeys(r["variant"] for r in multitask))
    assert trained == ["multi_task", "only_repin", "only_closeup", "only_click"]
    assert {r.get("scored_on") for r in multitask} == {None, "repin", "closeup", "click"}
    per_type = [r["eval_positives"] for r in multitask if r["variant"] == "multi_task"]
    assert per_type[0] == sum(per_type[1:])  # the types partition the positives
    assert all(r["seeds"] == [0] for r in rows if r["table"] != "multitask")
    assert all(r["seeds"] == [0, 1] for r in multitask)
    # Table 10's softmax SASRec is Table 2's SASRec: fitted once, scored identically at t.
    once = next(r for r in rows if r["table"] == "inference" and r["scored_on"] == "once")
    softmax = next(r for r in rows if r["variant"] == "sasrec_sampled_softmax")
    assert softmax["recall_at_10"] == once["recall_at_10"]
    assert softmax["train_seconds"] == once["train_seconds"]
    assert set(TABLES["objectives"]) >= {"sasrec", "dense_all_action_k28"}
    write({**res, "command": "pinner experiment C"}, tmp_path / "c.json")
    out = tmp_path / "RESULTS.md"
    render_files([tmp_path / "c.json"], out, ["pinner experiment C"])
    text = out.read_text()
    assert "| variant | once (paper) | daily (paper) | realtime (paper) | seeds |" in text
    assert "2 consecutive 14-day windows after the one training cut" in text
    assert "| multi_task |" in text
    assert "sasrec_bce_one_negative" in text


def test_paper_only_tables_refuse_leave_one_out() -> None:
    with pytest.raises(ValueError, match="need --protocol paper"):
        run("synthetic", None, ["inference"], "leave_one_out", seeds=[0], quick=True)
    with pytest.raises(ValueError, match="unknown tables"):
        run("synthetic", None, ["nope"], "paper", seeds=[0], quick=True)


def test_peers_and_variant_filter() -> None:
    """Table peers: the reference SASRecs, trained with validation and scored by the same code;
    `only` runs just the named variants; every model of both tables, reference or not, is also
    blended with the user's history at a weight chosen on validation (table with_history)."""
    res = run(
        "synthetic",
        None,
        ["objectives", "peers"],
        "leave_one_out",
        seeds=[0],
        quick=True,
        budget=TINY,
        only=["sasrec", "dense_all_action_k28", *PEERS],
    )
    scorers = ("baselines", "upper_bounds", "with_history")
    trained = [(r["table"], r["variant"]) for r in res["rows"] if r["table"] not in scorers]
    objectives = [("objectives", "sasrec"), ("objectives", "dense_all_action_k28")]
    assert trained == objectives + [("peers", p) for p in PEERS]
    # the references train with PinnerFormer's affordances, and their rows say so
    assert all(r["affordances"] for r in res["rows"] if r["table"] == "peers")
    blended = [r for r in res["rows"] if r["table"] == "with_history"]
    assert [r["variant"] for r in blended] == [f"{v}+history" for _, v in trained]
    for row in blended:
        assert len(row["history_weight"]) == 1
        assert row["history_weight"][0] >= 0
        assert row["repeat_users"] + row["new_users"] == row["eval_users"]
    res["rows"] = [r for r in res["rows"] if r["table"] != "with_history"]
    for row in res["rows"][len(BASELINES) :]:
        assert row["epochs"] >= row["best_epoch"] > 0
        assert row["stop_reasons"]
        assert 0.0 <= row["ndcg_at_10"] <= 1.0
    assert res["validation_users"] > 0
    # Leave-one-out: "auto" tiles the SASRec objective's windows and keeps the paper's random
    # ones for dense all action; the reference SASRecs have their own.
    assert res["windows"] == "auto"
    windows = [r.get("windows") for r in res["rows"][len(BASELINES) :]]
    assert windows == ["tiled", "random", None, None]
    for row in res["rows"]:  # one seen-removed rank string per seed, one character per user
        assert [len(s) for s in row["top10_ranks"]] == [row["eval_users"]] * len(row["seeds"])
    from model_core.experiments.results import merge, render

    text = render(merge([res]), [], [])
    assert "### Paired: PinnerFormer over each reference SASRec" in text
    for peer in PEERS:  # the default: ids with the co-engagement graph layer
        assert f"| dense_all_action_k28 + graph | {peer} | " in text
        assert f"| sasrec + graph (tiled windows) | {peer} | " in text


def test_files_of_one_setting_merge_into_one_section_with_baselines_once() -> None:
    """Files of one log and recipe merge whatever their budgets (each trained row keeps its own
    cap and patience); another recipe default is another section."""
    from model_core.experiments.results import merge, render

    def result(
        rows: list[tuple[str, str]], minutes: float = 5.0, patience: int = 5, ids: str = "auto"
    ) -> dict:
        trained = {"epochs": 3.0, "best_epoch": 2.0, "train_seconds": 60.0, "seeds": [0]}
        return {
            "dataset": "log",
            "protocol": "leave_one_out",
            "users": 10,
            "items": 5,
            "actions": 50,
            "item_ids": ids,
            "budget": {"max_minutes": minutes, "patience": patience, "max_epochs": 50},
            "latest_pin": "auto",  # today's default recipe
            "ema_epochs": 1.8,
            "rows": [
                {"table": t, "variant": v, "seeds": [0], "eval_users": 10}
                | (trained if t != "baselines" else {})
                for t, v in rows
            ],
        }

    pf = result([("baselines", "popularity"), ("objectives", "sasrec")]) | {"code": "abc1234"}
    peers = result([("baselines", "popularity"), ("peers", "sasrec_ce")], minutes=25.0)
    longer = result([("peers", "sasrec_reference")], patience=10)
    content_only = result([("objectives", "sasrec")], ids="none")
    tiled = result([("objectives", "sasrec")], minutes=12.0)  # the same variant, other windows
    tiled["rows"][0]["windows"] = "tiled"
    tokens = result([("objectives", "sasrec")], minutes=12.0)  # ... and with token vectors
    tokens["rows"][0] |= {"windows": "tiled", "item_tokens": True}
    bf16 = result([("objectives", "sasrec")], minutes=12.0)  # ... and trained in bf16
    bf16["rows"][0] |= {"windows": "tiled", "item_tokens": True, "bf16": True}
    chosen = result([("objectives", "sasrec")], minutes=12.0)  # ... and tokens validated
    choice = {"seed": 0, "with": 0.031, "without": 0.029, "kept": True}
    chosen["rows"][0] |= {"windows": "tiled", "item_tokens": True, "bf16": True}
    chosen["rows"][0] |= {"token_choice": choice}
    graph = result([("objectives", "sasrec")], minutes=12.0)  # ... and the graph layer
    graph["rows"][0] |= {"windows": "tiled", "item_tokens": True, "bf16": True}
    graph["rows"][0] |= {"token_choice": choice, "item_neighbors": 10}
    merged = merge([pf, peers, longer, content_only, tiled, tokens, bf16, chosen, graph])
    assert [[(r["table"], r["variant"]) for r in m["rows"]] for m in merged] == [
        [
            ("baselines", "popularity"),
            ("objectives", "sasrec"),
            ("peers", "sasrec_ce"),
            ("peers", "sasrec_reference"),
            ("objectives", "sasrec"),
            ("objectives", "sasrec"),
            ("objectives", "sasrec"),
            ("objectives", "sasrec"),
            ("objectives", "sasrec"),
        ],
        [("objectives", "sasrec")],
    ]
    caps = [(r.get("budget") or {}).get("max_minutes") for r in merged[0]["rows"]]
    assert caps == [None, 5.0, 25.0, 5.0, 12.0, 12.0, 12.0, 12.0, 12.0]
    assert len(pf["rows"]) == 2  # the inputs are not changed
    assert "budget" not in pf["rows"][1]
    text = render(merged[:1], [], [])
    assert "60 s of 5 min" in text
    assert "60 s of 25 min" in text
    assert "patience 10" in text
    assert "code: abc1234" in text  # the commit that produced the rows
    assert "| sasrec (tiled windows) |" in text
    assert "| sasrec + tokens (tiled windows) |" in text
    assert "| sasrec + tokens (tiled windows, bf16) |" in text
    label = "| sasrec + tokens (tiled windows, tokens chosen on validation, bf16) |"
    assert label in text
    assert "| sasrec + tokens + graph (tiled windows, tokens chosen on validation, bf16) |" in text
    assert "token vectors kept: validation 0.0310 with, 0.0290 without (seed 0)" in text
    assert "| sasrec |" in text


def test_validated_token_vectors_are_kept_only_where_they_win_on_validation() -> None:
    """`--item-tokens validated`: the first seed trains a variant with and without token
    vectors, the better validation score decides, and later seeds train the chosen one only."""
    data = load("synthetic", None, True, "leave_one_out", "all")
    n = len(data.catalog)
    tokens = (1 + np.arange(n) % 5).reshape(n, 1).astype(np.int64)  # five shared "topics"
    data = dataclasses.replace(data, catalog=dataclasses.replace(data.catalog, tokens=tokens))
    loo = leave_one_out(data.timelines)
    split = leave_one_out_split(loo.history, data.catalog, data.validation_users)
    trainer = FitCache(data, split, TINY, validate_tokens=True)
    variant = variants("objectives", data, ["dense_all_action"])["dense_all_action"]

    def recipe(seed: int) -> RecipeConfig:
        r = base_recipe(data, seed, TINY, "leave_one_out", RecipeOptions(item_tokens="validated"))
        return variant.change(r)

    model, stats = trainer(variant, recipe(0))
    choice = stats["token_choice"]
    assert len(trainer._fitted) == 2  # with and without token vectors
    assert choice["seed"] == 0
    assert choice["kept"] == (choice["with"] > choice["without"])
    assert stats["item_tokens"] == choice["kept"] == (model.config.item_token_vocab > 0)
    assert stats["validation"] == max(choice["with"], choice["without"])
    _, later = trainer(variant, recipe(1))
    assert len(trainer._fitted) == 3  # seed 1 trains the chosen recipe alone
    assert later["token_choice"] == choice
    assert later["item_tokens"] == choice["kept"]
    # "auto" keeps them without asking the validation split.
    plain = FitCache(data, split, TINY)
    _, auto = plain(variant, variant.change(base_recipe(data, 0, TINY, "leave_one_out")))
    assert auto["item_tokens"]
    assert "token_choice" not in auto

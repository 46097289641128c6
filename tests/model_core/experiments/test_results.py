"""Rendering results files: recipes stay apart, upper bounds stay out of the baselines, and the
headline is generated from the files alone."""

from __future__ import annotations

from typing import Any

import numpy as np

from model_core.evaluation.statistics import encode_ranks
from model_core.experiments.headline import headline_lines
from model_core.experiments.results import merge, render


def _file(rows: list[dict[str, Any]], **settings: Any) -> dict[str, Any]:
    return {
        "dataset": "log",
        "protocol": "leave_one_out",
        "users": 4,
        "items": 20,
        "actions": 40,
        "item_ids": "auto",
        "budget": {"max_minutes": 5.0, "patience": 5, "max_epochs": 50},
        "rows": rows,
        **settings,
    }


def _row(table: str, variant: str, ndcg: float, ranks: list[int] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {
        "table": table,
        "variant": variant,
        "seeds": [0],
        "eval_users": 4,
        "ndcg_at_10": ndcg,
        "ndcg_at_10_ci": [ndcg / 2, ndcg * 1.5],
    }
    if table not in ("baselines", "upper_bounds"):
        row |= {"epochs": 3.0, "best_epoch": 2.0, "train_seconds": 60.0}
    if ranks is not None:
        row["top10_ranks"] = [encode_ranks(np.asarray(ranks))]
    return row


def test_rows_of_another_recipe_are_kept_apart_and_marked() -> None:
    """The same variant before and after the latest-pin term and the weight average: two rows,
    the older one marked (they used to merge into one, dropping the newer row)."""
    older = _file([_row("objectives", "sasrec", 0.03)], latest_pin=None, ema_epochs=None)
    newer = _file([_row("objectives", "sasrec", 0.04)], latest_pin="auto", ema_epochs=1.8)
    merged = merge([older, newer])
    assert [r["ndcg_at_10"] for r in merged[0]["rows"]] == [0.03, 0.04]
    text = render(merged, [], [])
    assert "| sasrec (older recipe: no latest pin, no weight average) | " in text
    assert "| sasrec | n/a | 0.0400" in text  # HR@10 is not in these rows
    # an item-id dropout run is a row of its own; a file that records dropout 0 is the default
    dropout = _file([_row("objectives", "sasrec", 0.05)], latest_pin="auto", ema_epochs=1.8)
    off = {**dropout, "item_id_dropout": 0.0}
    merged = merge([newer, off, {**dropout, "item_id_dropout": 0.5}])
    assert [r["ndcg_at_10"] for r in merged[0]["rows"]] == [0.04, 0.05]  # off merges into newer
    assert "| sasrec (id dropout 0.5) | n/a | 0.0500" in render(merged, [], [])


def test_target_reading_scorers_are_upper_bounds_never_baselines() -> None:
    baselines = [
        _row("baselines", "recent_mean", 0.02),
        _row("baselines", "pinnersage_oracle", 0.9),
    ]
    merged = merge([_file(baselines)])
    tables = {r["variant"]: r["table"] for r in merged[0]["rows"]}
    assert tables == {"recent_mean": "baselines", "pinnersage_oracle": "upper_bounds"}
    line = headline_lines([_file([*baselines, _row("objectives", "sasrec", 0.05)])])[2]
    assert "recent_mean ¹: 0.0200" in line
    assert "oracle" not in line


def test_headline_pairs_pinnerformer_with_its_files_baseline_and_the_stronger_reference() -> None:
    ours = _file(
        [
            _row("baselines", "popularity", 0.01, [20, 20, 0, 20]),
            _row("objectives", "sasrec", 0.5, [0, 0, 0, 0]),
        ],
        latest_pin="auto",
        ema_epochs=1.8,
        code="abc1234",
    )
    refs = _file(
        [
            _row("peers", "sasrec_ce", 0.25, [0, 20, 0, 20]) | {"affordances": True},
            _row("peers", "sasrec_reference", 0.1),
        ],
        code="def5678",
    )
    line, _, footnote = headline_lines([ours, refs])[2:]
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2] == "sasrec: **0.5000 [0.250, 0.750]**"
    assert cells[3].startswith("popularity ¹: 0.0100")  # a file without history / item_knn
    assert footnote.startswith("¹ this file predates the `history` and `item_knn` baselines")
    assert cells[4].startswith("sasrec_ce: 0.2500")  # the stronger reference
    assert cells[5].startswith("2.00 [")  # 4 hits over 2, on the same users
    assert cells[6].startswith("4.00 [")
    assert cells[7] == "abc1234, def5678"
    # a reference trained without PinnerFormer's affordances says so
    refs["rows"][0].pop("affordances")
    line = headline_lines([ours, refs])[2]
    assert "sasrec_ce (original recipe): 0.2500" in line


def test_paper_headline_pairs_recall_per_user_and_lists_the_history_blend_apart() -> None:
    """Under the paper protocol the reference is the SASRec objective, paired by per-user
    recall; the embedding blended with the history is its own line."""

    def paper_row(table: str, variant: str, per_user: list[float]) -> dict[str, Any]:
        recall = float(np.mean(per_user))
        row = {
            "table": table,
            "variant": variant,
            "seeds": [0],
            "eval_users": len(per_user),
            "recall_at_10": recall,
            "recall_at_10_ci": [recall / 2, recall * 1.5],
            "per_user_recall": per_user,
        }
        if table not in ("baselines", "upper_bounds"):
            row |= {"epochs": 3.0, "best_epoch": 2.0, "train_seconds": 60.0}
        return row

    res = _file(
        [
            paper_row("baselines", "history", [0.0, 0.0, 1.0, 0.0]),
            paper_row("baselines", "item_knn", [0.5, 0.0, 0.0, 0.0]),
            paper_row("objectives", "sasrec", [0.5, 0.5, 0.0, 0.0]),
            paper_row("objectives", "dense_all_action", [1.0, 1.0, 0.0, 0.0]),
            paper_row("with_history", "dense_all_action+history", [1.0, 1.0, 1.0, 0.0]),
        ],
        protocol="paper",
        latest_pin="auto",
        ema_epochs=1.8,
    )
    lines = headline_lines([res])[2:]
    dense = next(line for line in lines if "| dense_all_action:" in line)
    cells = [c.strip() for c in dense.strip("|").split("|")]
    assert cells[3].startswith("history: 0.2500")
    assert cells[4].startswith("sasrec: 0.2500")
    assert cells[5].startswith("2.00 [")  # 2 hits over 1, on the same users
    blend = next(line for line in lines if "dense_all_action+history" in line)
    assert "| 3.00 [" in blend  # over history: 3 over 1

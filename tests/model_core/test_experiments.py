"""`pinner experiment` / `pinner results` on the tiny world: rows, keys, rendering."""

from __future__ import annotations

from pathlib import Path

from model_core.experiments import TABLES, run, write
from model_core.results import render_files


def test_paper_and_leave_one_out_rows_render(tmp_path: Path) -> None:
    paper = run("synthetic", None, ["pin_ids"], "paper", steps=2, seeds=[0], quick=True)
    variants = [(r["table"], r["variant"]) for r in paper["rows"]]
    assert variants == [("pin_ids", v) for v in TABLES["pin_ids"]] + [
        ("baselines", "popularity"),
        ("baselines", "recent_mean"),
    ]
    for row in paper["rows"]:
        lo, hi = row["recall_at_10_ci"]
        assert 0.0 <= lo <= row["recall_at_10"] <= hi <= 1.0 or row["eval_users"] == 0
        assert "hr_at_10" not in row
    loo = run("synthetic", None, ["pin_ids"], "leave_one_out", steps=2, seeds=[0], quick=True)
    for row in loo["rows"]:
        assert 0.0 <= row["ndcg_at_10"] <= row["hr_at_10"] <= 1.0
        assert "recall_at_10" not in row
    write({**paper, "command": "pinner experiment A"}, tmp_path / "a.json")
    write({**loo, "command": "pinner experiment B"}, tmp_path / "b.json")
    out = tmp_path / "RESULTS.md"
    render_files([tmp_path / "a.json", tmp_path / "b.json"], out, ["pinner experiment A"])
    text = out.read_text()
    assert "HR@10" in text
    assert "Recall@10" in text
    assert "content+ids" in text

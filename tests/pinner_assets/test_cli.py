"""`pinner compare` end to end on the tiny world: generate → train → evaluate → metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_core.training.config import cpu_bf16_units
from pinner_assets.cli import main


def test_compare_quick_writes_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PINNER_DATA_DIR", str(tmp_path))
    main(["compare", "--quick", "--steps", "5", "--item-ids", "hashed"])
    report = json.loads((tmp_path / "compare" / "metrics.json").read_text())
    scorers = {"pinnerformer", "pinnerformer+ids", "popularity", "recent_mean"}
    assert set(report["metrics"]) == scorers
    for row in report["metrics"].values():
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert 0.0 < row["p90_coverage_at_10"] <= 1.0
        assert row["n_users"] == report["eval_users"] > 0
    assert "Recall@10" in capsys.readouterr().out


def test_experiment_quick_with_variants_and_cap(tmp_path: Path) -> None:
    """The interface held-out checks call: --variants, --max-minutes, --quick (and --amp: bf16
    autocast for PinnerFormer, recorded on its row; the reference SASRec stays fp32)."""
    out = tmp_path / "r.json"
    main(
        [
            "experiment", "--source", "synthetic", "--tables", "objectives,peers",
            "--protocol", "leave_one_out", "--variants", "dense_all_action_k28,sasrec_ce",
            "--max-minutes", "0.05", "--max-epochs", "1", "--quick", "--amp", "on",
            "--out", str(out),
        ]
    )  # fmt: skip
    res = json.loads(out.read_text())
    trained = [r for r in res["rows"] if r["table"] in ("objectives", "peers")]
    assert [r["variant"] for r in trained] == [
        "dense_all_action_k28",
        "sasrec_ce",
    ]
    blended = [r["variant"] for r in res["rows"] if r["table"] == "with_history"]
    assert blended == ["dense_all_action_k28+history", "sasrec_ce+history"]
    assert "--variants dense_all_action_k28,sasrec_ce" in res["command"]
    assert res["budget"]["max_minutes"] == 0.05
    assert "--amp on" in res["command"]
    bf16 = {r["variant"]: r.get("bf16") for r in trained}
    # bf16 only where the CPU has bf16 matrix units; fp32 (and a warning) elsewhere
    assert bf16 == {"dense_all_action_k28": cpu_bf16_units(), "sasrec_ce": None}

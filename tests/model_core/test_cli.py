"""`pinner demo` end to end on the tiny world: generate → train → evaluate → metrics.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from model_core.cli import main


def test_demo_quick_writes_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PINNER_DATA_DIR", str(tmp_path))
    main(["demo", "--quick", "--steps", "5"])
    report = json.loads((tmp_path / "demo" / "metrics.json").read_text())
    assert set(report["metrics"]) == {"pinnerformer", "popularity", "recent_mean"}
    for row in report["metrics"].values():
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert 0.0 < row["p90_coverage_at_10"] <= 1.0
        assert row["n_users"] == report["eval_users"] > 0
    assert "Recall@10" in capsys.readouterr().out

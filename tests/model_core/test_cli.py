"""`pinner compare` end to end on the tiny world: generate → train → evaluate → metrics.json."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from model_core.cli import add_arguments, compare


def test_compare_quick_writes_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PINNER_DATA_DIR", str(tmp_path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    compare(parser.parse_args(["--quick", "--steps", "5", "--pin-id-buckets", "1024"]))
    report = json.loads((tmp_path / "compare" / "metrics.json").read_text())
    scorers = {"pinnerformer", "pinnerformer+ids", "popularity", "recent_mean"}
    assert set(report["metrics"]) == scorers
    for row in report["metrics"].values():
        assert 0.0 <= row["recall_at_10"] <= 1.0
        assert 0.0 < row["p90_coverage_at_10"] <= 1.0
        assert row["n_users"] == report["eval_users"] > 0
    assert "Recall@10" in capsys.readouterr().out

"""The evaluation report: drift verdicts, metrics.json schema, HTML contents, patch hygiene."""

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from evidently.legacy.metrics.data_drift import embeddings_drift
from sklearn.manifold import TSNE

from pinner_assets.lib import report, report_metrics
from pinner_assets.lib.report import write_evaluation_report

N, D = 600, 16


def _unit(x: np.ndarray) -> np.ndarray:
    """[U, D] -> [U, D] float32 rows of unit length."""
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _sphere(seed: int) -> np.ndarray:
    """[N, D] float32, uniform on the unit sphere: zero mean, where cosine-of-means fails."""
    return _unit(np.random.default_rng(seed).standard_normal((N, D)))


def _metrics() -> dict[str, Any]:
    return {
        "as_of": "2024-03-02",
        "model_version": "pinnerformer-2024-03-02-abc123",
        "eval_users": 480,
        "index_size": 12_000,
        "pinnerformer": {
            "recall_at_10": 0.31,
            "p90_coverage_at_10": 0.42,
            "interest_entropy_at_50": 2.5,
        },
        "baselines": {
            "popularity": {
                "recall_at_10": 0.05,
                "p90_coverage_at_10": 0.01,
                "interest_entropy_at_50": 0.7,
            },
            "recent_mean": {
                "recall_at_10": None,
                "p90_coverage_at_10": None,
                "interest_entropy_at_50": None,
            },
        },
        "extra_key": {"kept": True},
    }


def test_identical_distributions_are_not_drift_and_a_shift_is(tmp_path: Path) -> None:
    today, yesterday = _sphere(1), _sphere(2)
    direction = _unit(np.random.default_rng(3).standard_normal((1, D)))
    shifted = _unit(_sphere(4) + direction)

    same = write_evaluation_report(tmp_path / "same", _metrics(), today, yesterday)
    moved = write_evaluation_report(tmp_path / "moved", _metrics(), shifted, yesterday)

    assert same.drift_detected is False
    assert moved.drift_detected is True
    assert same.drift_score is not None
    assert moved.drift_score is not None
    assert moved.drift_score > same.drift_score
    written = json.loads(moved.metrics_json.read_text())["embedding_drift"]
    assert written["detected"] is True
    assert written["score"] == pytest.approx(moved.drift_score)
    assert written["method"] == report.DRIFT_METHOD


def test_first_day_has_no_reference_and_says_so(tmp_path: Path) -> None:
    paths = write_evaluation_report(tmp_path, _metrics(), _sphere(1), None)

    assert paths.drift_score is None
    assert paths.drift_detected is None
    drift = json.loads(paths.metrics_json.read_text())["embedding_drift"]
    assert drift["score"] is None
    assert drift["detected"] is None
    assert "first day" in drift["note"]
    assert "No reference: first day" in paths.html.read_text()


def test_changed_embedding_dim_skips_drift_with_a_note(tmp_path: Path) -> None:
    yesterday = _unit(np.random.default_rng(0).standard_normal((N, D // 2)))
    paths = write_evaluation_report(tmp_path, _metrics(), _sphere(1), yesterday)

    assert paths.drift_score is None
    assert "shape changed" in json.loads(paths.metrics_json.read_text())["embedding_drift"]["note"]


def test_metrics_json_round_trips_with_nulls_and_leaves_the_input_alone(tmp_path: Path) -> None:
    metrics = _metrics()
    metrics["pinnerformer"]["interest_entropy_at_50"] = np.float32(2.5)  # numpy scalar -> float
    metrics["baselines"]["popularity"]["recall_at_10"] = float("nan")  # NaN -> null
    before = copy.deepcopy(metrics)

    paths = write_evaluation_report(tmp_path, metrics, _sphere(1), _sphere(2))

    assert metrics.keys() == before.keys()
    assert "embedding_drift" not in metrics
    written = json.loads(paths.metrics_json.read_text())
    expected = _metrics()
    expected["baselines"]["popularity"]["recall_at_10"] = None
    assert {k: v for k, v in written.items() if k != "embedding_drift"} == expected
    assert set(written["embedding_drift"]) >= {"method", "score", "detected"}
    for scorer in [written["pinnerformer"], *written["baselines"].values()]:
        assert set(scorer) == set(report_metrics.METRIC_NAMES)


def test_html_is_one_page_with_every_section(tmp_path: Path) -> None:
    curve = [{"step": float(s), "loss": 5.0 / (1 + s), "lr": 1e-3} for s in range(0, 500, 50)]
    paths = write_evaluation_report(
        tmp_path, _metrics(), _sphere(1), _sphere(2), training_curve=curve
    )

    html = paths.html.read_text()
    assert paths.html == tmp_path / "report.html"
    for name in [*report_metrics.METRIC_NAMES, "pinnerformer", "popularity", "recent_mean"]:
        assert name in html
    assert "n/a" in html  # the None metrics of recent_mean
    assert "Drift in embeddings" in html
    assert "Training curve" in html
    assert "pinnerformer-2024-03-02-abc123" in html
    assert "<script src=" not in html  # self-contained: no external scripts
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json", "report.html"]


def test_tsne_is_restored_after_the_call_and_after_an_error(tmp_path: Path) -> None:
    assert embeddings_drift.TSNE is TSNE
    write_evaluation_report(tmp_path, _metrics(), _sphere(1), _sphere(2))
    assert embeddings_drift.TSNE is TSNE

    inside: list[object] = []

    def crash_inside_the_patch() -> None:
        with report.tsne_replaced_by_pca():
            inside.append(embeddings_drift.TSNE)
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        crash_inside_the_patch()
    assert inside
    assert inside[0] is not TSNE
    assert embeddings_drift.TSNE is TSNE


def test_failed_write_keeps_the_previous_file_and_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "report.html"
    target.write_text("yesterday's complete report")

    def crash_mid_write() -> None:
        with report._atomic_path(target) as tmp:
            tmp.write_text("half a rep")
            raise RuntimeError("crash")

    with pytest.raises(RuntimeError, match="crash"):
        crash_mid_write()

    assert target.read_text() == "yesterday's complete report"
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]


def test_subsampling_caps_rows_and_is_seeded() -> None:
    emb = _sphere(1)
    a = report._subsample(emb, 100, np.random.default_rng(7))
    b = report._subsample(emb, 100, np.random.default_rng(7))
    assert a.shape == (100, D)
    np.testing.assert_array_equal(a, b)
    assert report._subsample(emb, 10_000, np.random.default_rng(7)).shape == (N, D)


def test_long_training_curve_is_thinned_keeping_both_ends() -> None:
    rows = [
        {"step": float(s), "loss": 1.0 / (1 + s)}
        for s in range(10 * report_metrics.MAX_CURVE_POINTS)
    ]
    curve = report_metrics.curve_section(rows)
    assert len(curve.steps) == report_metrics.MAX_CURVE_POINTS
    assert curve.steps[0] == 0.0
    assert curve.steps[-1] == rows[-1]["step"]
    assert list(curve.series) == ["loss"]


def test_drift_report_alone_gives_the_evaluation_reports_verdict(tmp_path: Path) -> None:
    """The embedding_drift asset's report: the same score, verdict and JSON fields as the drift
    section of the evaluation report, and a note instead on the first day."""
    shifted = _unit(_sphere(4) + _unit(np.random.default_rng(3).standard_normal((1, D))))
    alone = report.write_drift_report(tmp_path / "alone", shifted, _sphere(2))
    full = write_evaluation_report(tmp_path / "full", _metrics(), shifted, _sphere(2))
    assert alone.drift_score == pytest.approx(full.drift_score)
    assert alone.drift_detected is full.drift_detected is True
    written = json.loads(alone.metrics_json.read_text())
    assert written == json.loads(full.metrics_json.read_text())["embedding_drift"]
    first = report.write_drift_report(tmp_path / "first", shifted, None)
    assert first.drift_score is None
    assert "first day" in json.loads(first.metrics_json.read_text())["note"]

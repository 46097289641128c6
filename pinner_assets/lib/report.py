"""The daily evaluation report: ``metrics.json`` plus one self-contained Evidently HTML page.

``write_evaluation_report`` is a plain function (no Dagster import) so the evaluation asset stays
a thin wrapper and the report can be built and tested on its own. The HTML holds three sections:

1. embedding drift of today's user embeddings against yesterday's (Evidently ``EmbeddingsDrift``),
   or a note saying why there is no reference;
2. the offline metrics as a scorer x metric table (``MetricsTable``, a ``DataframeMetric``);
3. the training loss curve as a plotly figure (``TrainingCurve``), when one is given.

Drift method. Evidently's ``distance(dist="cosine")`` compares the cosine distance between the two
*mean* embeddings. For user embeddings spread over the sphere the means are near zero and their
direction is noise, so identical distributions score ~0.7-1.2 ("drift") and a real shift can score
lower than no shift. We use ``model()`` instead: the ROC AUC of a linear classifier that tries to
tell today's rows from yesterday's (0.5 = indistinguishable, threshold 0.55). It is scale-free and
takes ~0.1 s on 5k x 64 per side. When the model is retrained daily, the score measures the change
of the embedding space as well as the change of the users.
"""

import contextlib
import json
import math
import os
import tempfile
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.metrics.data_drift import embeddings_drift as _embeddings_drift
from evidently.legacy.metrics.data_drift.embedding_drift_methods import model as _model_drift
from evidently.metrics import EmbeddingsDrift
from sklearn.decomposition import PCA

from pinner_assets.lib.report_metrics import ReportNote, curve_section, metrics_table

EMBEDDINGS_NAME = "user_emb"
DRIFT_METHOD = "domain_classifier_roc_auc"
# Evidently's default for model() without bootstrap: AUC above 0.55 means a linear classifier
# separates the two days better than chance by a margin that 5k rows per side measure reliably.
DRIFT_THRESHOLD = 0.55
# Below this many rows per side the classifier's 50/50 train/test split is too noisy to mean much.
MIN_DRIFT_ROWS = 20


@dataclass(frozen=True)
class ReportPaths:
    """Where the report went, and the drift verdict (``None`` when there was no reference)."""

    metrics_json: Path
    html: Path
    drift_score: float | None
    drift_detected: bool | None


# ---- custom Evidently metrics: values computed outside Evidently, rendered inside its report ----


# ---- the TSNE patch ----

_TSNE_PATCH_LOCK = threading.Lock()


def _pca_2d(n_components: int = 2, **_tsne_kwargs: Any) -> PCA:
    """Stand-in for ``sklearn.manifold.TSNE`` with the same call shape: a 2-component PCA."""
    return PCA(n_components=n_components)


@contextlib.contextmanager
def tsne_replaced_by_pca() -> Iterator[None]:
    """Within the block, Evidently's embedding-drift plot projects with PCA instead of TSNE.

    ``EmbeddingsDriftMetric.calculate`` always runs TSNE on up to 2 x 2500 rows, only to draw the
    2-D density picture; that takes 16-46 s on two CPUs and dominates the report. The drift score
    does not use the projection, so scores are unchanged. Only the name ``TSNE`` inside
    ``evidently.legacy.metrics.data_drift.embeddings_drift`` is replaced, the original is restored
    on exit (also on error), and a lock keeps concurrent threads from interleaving the swap.
    """
    with _TSNE_PATCH_LOCK:
        original = _embeddings_drift.TSNE
        _embeddings_drift.TSNE = _pca_2d
        try:
            yield
        finally:
            _embeddings_drift.TSNE = original


# ---- the report ----


def write_evaluation_report(
    out_dir: Path,
    metrics: dict[str, Any],
    user_emb_today: np.ndarray,
    user_emb_yesterday: np.ndarray | None,
    training_curve: list[dict[str, float]] | None = None,
    max_rows: int = 5000,
    seed: int = 0,
    no_reference_note: str | None = None,
) -> ReportPaths:
    """Write ``out_dir/metrics.json`` and ``out_dir/report.html``, each atomically.

    Args:
        out_dir: folder for both files; created if missing.
        metrics: the metrics.json payload: ``as_of``, ``model_version``, ``eval_users``,
            ``index_size``, ``pinnerformer: {recall_at_10, p90_coverage_at_10,
            interest_entropy_at_50}`` and ``baselines: {name: {same keys}}``. Values may be
            ``None``. Extra keys are kept. ``embedding_drift: {method, score, detected,
            threshold, reference_rows, current_rows, note}`` is added to the written copy; the
            argument is not modified.
        user_emb_today: ``[U1, D]`` float, today's user embeddings (Evidently's "current").
        user_emb_yesterday: ``[U0, D]`` float, yesterday's (the "reference"), or ``None`` on the
            first day. With too few rows or another ``D`` the drift is skipped with a note.
        training_curve: rows like ``{"step": 100, "loss": 3.2, ...}``; plotted when given.
        max_rows: each side is subsampled (without replacement, seeded) to at most this many rows.
        seed: seed of the subsampling.

    Returns:
        The two paths and the drift score / verdict (both ``None`` without a usable reference).
    """
    assert user_emb_today.ndim == 2, f"user_emb_today must be [U, D], got {user_emb_today.shape}"
    assert user_emb_today.shape[0] > 0, "user_emb_today has no rows"
    assert np.isfinite(user_emb_today).all(), "user_emb_today has NaN or inf"
    assert max_rows >= MIN_DRIFT_ROWS, f"max_rows must be >= {MIN_DRIFT_ROWS}, got {max_rows}"
    out_dir.mkdir(parents=True, exist_ok=True)
    note = no_reference_note or _no_reference_reason(user_emb_yesterday, user_emb_today.shape[1])
    current, reference = _datasets(
        user_emb_today, None if note else user_emb_yesterday, max_rows, seed
    )
    sections: list[Any] = [ReportNote(title="Run", text=_run_summary(metrics))]
    if reference is not None:
        drift_method = _model_drift(threshold=DRIFT_THRESHOLD, bootstrap=False)
        sections.append(EmbeddingsDrift(embeddings_name=EMBEDDINGS_NAME, drift_method=drift_method))
    else:
        sections.append(ReportNote(title="Embedding drift", text=f"No reference: {note}"))
    sections.append(metrics_table(metrics))
    if training_curve:
        sections.append(curve_section(training_curve))

    with tsne_replaced_by_pca():
        snapshot = Report(sections).run(current, reference)

    drift_score = None if reference is None else _drift_score(snapshot)
    html_path = out_dir / "report.html"
    with _atomic_path(html_path) as tmp:
        snapshot.save_html(str(tmp))

    payload = _jsonable(dict(metrics))
    payload["embedding_drift"] = _drift_payload(
        drift_score, user_emb_today, user_emb_yesterday, note
    )
    json_path = out_dir / "metrics.json"
    with _atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return ReportPaths(json_path, html_path, drift_score, payload["embedding_drift"]["detected"])


def _datasets(
    today: np.ndarray, yesterday: np.ndarray | None, max_rows: int, seed: int
) -> tuple[Dataset, Dataset | None]:
    """Evidently's current dataset (today's embeddings) and reference (yesterday's; None when
    there is none to compare with), each subsampled to at most `max_rows` rows (seeded)."""
    rng = np.random.default_rng(seed)
    cols = [f"e{i}" for i in range(today.shape[1])]
    definition = DataDefinition(embeddings={EMBEDDINGS_NAME: cols}, numerical_columns=cols)

    def dataset(emb: np.ndarray) -> Dataset:
        frame = pd.DataFrame(_subsample(emb, max_rows, rng), columns=cols)
        return Dataset.from_pandas(frame, data_definition=definition)

    if yesterday is not None:
        assert np.isfinite(yesterday).all(), "user_emb_yesterday has NaN or inf"
    return dataset(today), None if yesterday is None else dataset(yesterday)


def _drift_payload(
    score: float | None, today: np.ndarray, yesterday: np.ndarray | None, note: str | None
) -> dict[str, Any]:
    """The drift verdict as written to JSON: method, score, detected, threshold, both sides'
    row counts and the note saying why there is no reference (None when there is one)."""
    return {
        "method": DRIFT_METHOD,
        "score": score,
        "detected": None if score is None else score > DRIFT_THRESHOLD,
        "threshold": DRIFT_THRESHOLD,
        "current_rows": int(today.shape[0]),
        "reference_rows": None if yesterday is None else int(yesterday.shape[0]),
        "note": note,
    }


def _drift_score(snapshot: Any) -> float:
    """The embeddings-drift score in an Evidently snapshot."""
    metrics = snapshot.dict()["metrics"]
    return float(
        next(m["value"] for m in metrics if m["config"]["type"].endswith(":EmbeddingsDrift"))
    )


def write_drift_report(
    out_dir: Path,
    user_emb_today: np.ndarray,
    user_emb_yesterday: np.ndarray | None,
    note: str | None = None,
    max_rows: int = 5000,
    seed: int = 0,
) -> ReportPaths:
    """``out_dir/drift.json`` and ``out_dir/drift.html``: the embedding drift section alone (the
    ``embedding_drift`` asset). ``note`` says why there is no reference (e.g. a model change)."""
    assert user_emb_today.ndim == 2, f"user_emb_today must be [U, D], got {user_emb_today.shape}"
    assert user_emb_today.shape[0] > 0, "user_emb_today has no rows"
    out_dir.mkdir(parents=True, exist_ok=True)
    note = note or _no_reference_reason(user_emb_yesterday, user_emb_today.shape[1])
    current, reference = _datasets(
        user_emb_today, None if note else user_emb_yesterday, max_rows, seed
    )
    score: float | None = None
    if reference is not None:
        method = _model_drift(threshold=DRIFT_THRESHOLD, bootstrap=False)
        sections: list[Any] = [
            EmbeddingsDrift(embeddings_name=EMBEDDINGS_NAME, drift_method=method)
        ]
        with tsne_replaced_by_pca():
            snapshot = Report(sections).run(current, reference)
        score = _drift_score(snapshot)
    else:
        sections = [ReportNote(title="Embedding drift", text=f"No reference: {note}")]
        snapshot = Report(sections).run(current, None)
    html_path = out_dir / "drift.html"
    with _atomic_path(html_path) as tmp:
        snapshot.save_html(str(tmp))
    payload = _drift_payload(score, user_emb_today, user_emb_yesterday, note)
    json_path = out_dir / "drift.json"
    with _atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    return ReportPaths(json_path, html_path, score, payload["detected"])


def _no_reference_reason(yesterday: np.ndarray | None, dim: int) -> str | None:
    """Why yesterday's embeddings cannot serve as the drift reference, or ``None`` if they can."""
    if yesterday is None:
        return "first day, there are no embeddings from the previous day to compare against."
    if yesterday.ndim != 2 or yesterday.shape[1] != dim:
        return f"the embedding shape changed from {yesterday.shape} to [*, {dim}]."
    if yesterday.shape[0] < MIN_DRIFT_ROWS:
        return f"the previous day has {yesterday.shape[0]} users, fewer than {MIN_DRIFT_ROWS}."
    return None


def _subsample(emb: np.ndarray, max_rows: int, rng: np.random.Generator) -> np.ndarray:
    """``[U, D]`` -> ``[min(U, max_rows), D]`` float32, rows drawn without replacement."""
    if emb.shape[0] > max_rows:
        emb = emb[np.sort(rng.choice(emb.shape[0], size=max_rows, replace=False))]
    return np.asarray(emb, dtype=np.float32)


def _run_summary(metrics: Mapping[str, Any]) -> str:
    """One markdown line with the run's identifying fields."""
    keys = ("as_of", "model_version", "eval_users", "index_size")
    return " · ".join(f"**{k}**: {metrics.get(k, 'n/a')}" for k in keys)


def _jsonable(value: Any) -> Any:
    """A copy with numpy scalars/arrays made plain and NaN made ``None`` (strict JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


@contextlib.contextmanager
def _atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success it replaces ``path``, on error it is removed.

    Readers see the old file or the complete new one, never a half-written file.
    """
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        tmp.chmod(0o644)  # mkstemp makes 0600; the report is meant to be read by others
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

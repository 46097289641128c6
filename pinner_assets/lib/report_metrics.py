"""The report's own Evidently metrics: the paper's metric table, the training curve and a note,
each a DataFrame metric the HTML page renders."""

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from evidently import Dataset
from evidently.core.metric_types import DataframeCalculation, DataframeMetric, DataframeValue
from evidently.legacy.renderers.html_widgets import plotly_figure, table_data, text_widget

# A loss curve needs no more points than a plot is pixels wide.
MAX_CURVE_POINTS = 2000


METRIC_NAMES = ("recall_at_10", "p90_coverage_at_10", "interest_entropy_at_50")


class MetricsTable(DataframeMetric):
    """A table of precomputed numbers: one row per scorer, one column per metric."""

    title: str
    row_labels: list[str]  # scorers, e.g. ["pinnerformer", "popularity", "recent_mean"]
    column_labels: list[str]  # metric names
    values: list[list[float | None]]  # [rows, columns]; None = not computable that day


class MetricsTableCalculation(DataframeCalculation[MetricsTable]):
    """Turns ``MetricsTable`` into a dataframe (NaN for missing) and an ``n/a``-aware table."""

    def calculate(
        self, context: Any, current_data: Dataset, reference_data: Dataset | None
    ) -> DataframeValue:
        m = self.metric
        frame = pd.DataFrame(
            [[math.nan if v is None else v for v in row] for row in m.values],
            columns=m.column_labels,
            dtype=float,
        )
        frame.insert(0, "scorer", m.row_labels)
        result = self.result(frame)
        cells = [
            [label, *(_format_number(v) for v in row)]
            for label, row in zip(m.row_labels, m.values, strict=True)
        ]
        result.widget = [
            table_data(title=m.title, column_names=["scorer", *m.column_labels], data=cells)
        ]
        return result

    def display_name(self) -> str:
        return self.metric.title


class TrainingCurve(DataframeMetric):
    """Training curves against the step; the first series is shown, the others in the legend."""

    title: str = "Training curve"
    steps: list[float]
    series: dict[str, list[float | None]]  # name -> one value per step


class TrainingCurveCalculation(DataframeCalculation[TrainingCurve]):
    """Renders ``TrainingCurve`` as one plotly line chart."""

    def calculate(
        self, context: Any, current_data: Dataset, reference_data: Dataset | None
    ) -> DataframeValue:
        m = self.metric
        frame = pd.DataFrame({"step": m.steps, **m.series}, dtype=float)
        figure = go.Figure()
        for i, (name, ys) in enumerate(m.series.items()):
            figure.add_trace(
                go.Scatter(
                    x=m.steps,
                    y=ys,
                    mode="lines",
                    name=name,
                    visible=True if i == 0 else "legendonly",
                )
            )
        figure.update_layout(xaxis_title="step", yaxis_title="value")
        result = self.result(frame)
        result.widget = [plotly_figure(title=m.title, figure=figure)]
        return result

    def display_name(self) -> str:
        return self.metric.title


class ReportNote(DataframeMetric):
    """A markdown note in the report (e.g. why there is no drift section)."""

    title: str
    text: str


class ReportNoteCalculation(DataframeCalculation[ReportNote]):
    """Renders ``ReportNote`` as an Evidently text widget."""

    def calculate(
        self, context: Any, current_data: Dataset, reference_data: Dataset | None
    ) -> DataframeValue:
        result = self.result(pd.DataFrame({"note": [self.metric.text]}))
        result.widget = [text_widget(title=self.metric.title, text=self.metric.text)]
        return result

    def display_name(self) -> str:
        return self.metric.title


def metrics_table(metrics: Mapping[str, Any]) -> MetricsTable:
    """Scorer x metric table from ``pinnerformer`` and every entry of ``baselines``."""
    scorers: dict[str, Mapping[str, Any]] = {"pinnerformer": metrics.get("pinnerformer") or {}}
    scorers.update(metrics.get("baselines") or {})
    names = list(METRIC_NAMES)
    for values in scorers.values():
        names += [k for k in values if k not in names and _is_number_or_none(values[k])]
    return MetricsTable(
        title="Offline metrics",
        row_labels=list(scorers),
        column_labels=names,
        values=[[_float_or_none(values.get(k)) for k in names] for values in scorers.values()],
    )


def curve_section(rows: list[dict[str, float]]) -> TrainingCurve:
    """``[{"step", "loss", ...}]`` -> ``TrainingCurve`` with "loss" first.

    Long curves are thinned to ``MAX_CURVE_POINTS`` evenly spaced rows (first and last kept):
    Evidently stores a metric's parameters in the page twice, so the page would grow with them.
    """
    if len(rows) > MAX_CURVE_POINTS:
        keep = np.unique(np.linspace(0, len(rows) - 1, MAX_CURVE_POINTS).round().astype(int))
        rows = [rows[i] for i in keep]
    keys = [k for k in rows[0] if k != "step"]
    keys.sort(key=lambda k: k != "loss")
    return TrainingCurve(
        steps=[float(r.get("step", i)) for i, r in enumerate(rows)],
        series={k: [_float_or_none(r.get(k)) for r in rows] for k in keys},
    )


def _is_number_or_none(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float | np.number) and not isinstance(value, bool)
    )


def _float_or_none(value: Any) -> float | None:
    """``None`` and NaN -> ``None``; numbers -> ``float``."""
    if value is None:
        return None
    out = float(value)
    return None if math.isnan(out) else out


def _format_number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"

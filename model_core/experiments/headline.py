"""The headline table: per log and protocol, PinnerFormer against the best baseline and the
stronger reference SASRec, from the results files alone.

Leave-one-out compares NDCG@10 (seen items removed), the paper protocol Recall@10, both with
paired ratios over the same users where the rows carry per-user figures. A baseline is a scorer
that does not read the target (`upper_bounds` never count). PinnerFormer's embedding alone
(`objectives`) and blended with the user's history (`with_history`) are separate lines. Every line
names the commits its rows were made at, and a PinnerFormer row made before today's default
recipe says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from model_core.evaluation.statistics import per_user_ndcg, ratio_ci
from model_core.experiments.results import is_default_recipe, row_recipe, setting_key
from model_core.experiments.rows import baseline_table

METRIC = {"leave_one_out": "ndcg_at_10", "paper": "recall_at_10"}
METRIC_NAME = {"leave_one_out": "NDCG@10", "paper": "Recall@10"}


def _value(row: dict[str, Any] | None, metric: str) -> str:
    if row is None:
        return "—"
    lo, hi = row.get(metric + "_ci") or (None, None)
    ci = f" [{lo:.3f}, {hi:.3f}]" if lo is not None else ""
    return f"{row[metric]:.4f}{ci}"


def _per_user(row: dict[str, Any]) -> np.ndarray | None:
    """[U] the row's per-user figure (NDCG@10 from its ranks, or Recall@10), None if absent."""
    if row.get("top10_ranks"):
        return per_user_ndcg(row["top10_ranks"])
    if row.get("per_user_recall") is not None:
        return np.asarray(row["per_user_recall"], dtype=np.float64)
    return None


def _ratio(a: dict[str, Any], b: dict[str, Any] | None) -> str:
    """a over b on the same users with a paired 95% interval, where both carry per-user
    figures."""
    if b is None or a["eval_users"] != b["eval_users"]:
        return "—"
    per_a, per_b = _per_user(a), _per_user(b)
    if per_a is None or per_b is None:
        return "—"
    ratio, lo, hi = ratio_ci(per_a, per_b)
    return f"{ratio:.2f} [{lo:.2f}, {hi:.2f}]"


def _ref_label(ref: dict[str, Any] | None) -> str:
    if ref is None:
        return "—"
    return ref["variant"] + ("" if is_default_recipe(ref) else " (original recipe)")


def _best(rows: list[dict[str, Any]], metric: str) -> dict[str, Any] | None:
    rows = [r for r in rows if metric in r]
    return max(rows, key=lambda r: r[metric]) if rows else None


def headline_lines(results: list[dict[str, Any]]) -> list[str]:
    """The Markdown table: one line per PinnerFormer row of each file's `objectives` and
    `with_history` tables. The baselines are that file's own (same users, same code, same item
    vectors); the reference is the stronger SASRec of any file of the same setting
    (`setting_key`) — under the paper protocol also the file's SASRec objective."""
    lines = [
        "| log | protocol | PinnerFormer | best baseline | stronger reference SASRec | "
        "paired: over reference | paired: over baseline | code |",
        "|---|---|---|---|---|---|---|---|",
    ]
    peers: dict[str, list[dict[str, Any]]] = {}
    for res in results:
        peers.setdefault(setting_key(res), []).extend(
            {**r, "code": res.get("code")} for r in res["rows"] if r["table"] == "peers"
        )
    for res in sorted(results, key=lambda r: (r["dataset"], r["protocol"])):
        protocol = res["protocol"]
        metric = METRIC[protocol]
        scorers = [r for r in res["rows"] if r["table"] == "baselines"]
        base = _best([r for r in scorers if baseline_table(r["variant"]) == "baselines"], metric)
        # a file made before the history scorers existed has a weaker set of baselines
        partial = "" if {"history", "item_knn"} <= {r["variant"] for r in scorers} else " ¹"
        recipe = {"code": res.get("code"), **row_recipe(res)}
        # the paper protocol's reference is also PinnerFormer trained on the SASRec objective
        sasrec = [
            {**r, **recipe}
            for r in res["rows"]
            if protocol == "paper" and (r["table"], r["variant"]) == ("objectives", "sasrec")
        ]
        for ours in (r for r in res["rows"] if r["table"] in ("objectives", "with_history")):
            refs = peers[setting_key(res)] + sasrec
            ref = _best([r for r in refs if r["variant"] != ours["variant"]], metric)
            ours = {**ours, **recipe}
            older = "" if is_default_recipe(ours) else " (older recipe)"
            codes = sorted({str(r["code"]) for r in (ours, ref) if r and r.get("code")})
            lines.append(
                f"| {res['dataset']} | {protocol} ({METRIC_NAME[protocol]}) | "
                f"{ours['variant']}{older}: **{_value(ours, metric)}** | "
                f"{base['variant'] if base else '—'}{partial}: {_value(base, metric)} | "
                f"{_ref_label(ref)}: {_value(ref, metric)} | "
                f"{_ratio(ours, ref)} | {_ratio(ours, base)} | {', '.join(codes) or '—'} |"
            )
    if any(" ¹:" in line for line in lines):
        lines += [
            "",
            "¹ this file predates the `history` and `item_knn` baselines (and the item vectors "
            "built from exactly what the models train on): its best baseline is among the "
            "older ones.",
        ]
    return lines

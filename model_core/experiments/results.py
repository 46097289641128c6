"""`pinner results`: render experiment JSON files into docs/RESULTS.md, a table per paper table."""

from __future__ import annotations

import json
from typing import Any

from model_core.evaluation.statistics import per_user_ndcg, ratio_ci
from model_core.experiments.paper_figures import paper_recall
from model_core.experiments.rows import baseline_table

PAPER_TABLES = {
    "objectives": "Table 3 — training objectives",
    "negatives": "Table 4 — negative sampling and logQ correction",
    "features": "Table 6 — feature ablations",
    "bce": "Table 10 — SASRec: binary cross-entropy with one negative vs sampled softmax",
    "inference": "Table 2 — inference frequency: embeddings computed once at t, daily, realtime",
    "multitask": "Table 5 — single-task vs multi-task (rows: trained on; columns: scored on)",
    "item_ids": "Beyond the paper — the paper's content-only item tower vs learned item ids",
    "peers": "Reference SASRecs (original BCE recipe; full cross-entropy) — the bar to clear",
    "with_history": "Each model blended with the user's own history (the repeat source a serving "
    "system ships beside the index; weight chosen on validation, 0 = the embedding alone)",
    "baselines": "Baselines",
    "upper_bounds": "Upper bounds (they read the target: never a baseline to beat)",
}
ORDER = (
    "baselines",
    "upper_bounds",
    "peers",
    "objectives",
    "with_history",
    "item_ids",
    "inference",
    "bce",
    "negatives",
    "multitask",
    "features",
)


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def _recall(r: dict[str, Any]) -> str:
    lo, hi = r["recall_at_10_ci"]
    spread = f" ±{r['recall_at_10_seed_std']:.4f}" if len(r["seeds"]) > 1 else ""
    return f"{_fmt(r['recall_at_10'])}{spread} [{_fmt(lo, 3)}, {_fmt(hi, 3)}]"


def _paper(table: str, variant: str, scored_on: str | None = None) -> str:
    value = paper_recall(table, variant, scored_on)
    return "—" if value is None else f"{value:.3f}"


def _paper_table(table: str, rows: list[dict[str, Any]]) -> list[str]:
    scored = [r for r in rows if "scored_on" in r]
    if scored:  # a pivot: one row per variant, one column per inference mode / action type
        columns = list(dict.fromkeys(r["scored_on"] for r in scored))
        plain = {r["variant"]: r for r in rows if "scored_on" not in r}
        if plain:
            columns = ["all", *columns]
        head = " | ".join(f"{c} (paper)" for c in columns)
        lines = [f"| variant | {head} | seeds |", "|---|" + "---|" * (len(columns) + 1)]
        for variant in dict.fromkeys(r["variant"] for r in rows):
            cells = []
            for c in columns:
                on = None if c == "all" else c
                match = [r for r in rows if r["variant"] == variant and r.get("scored_on") == on]
                ours = _recall(match[0]) if match else "n/a"
                cells.append(f"{ours} ({_paper(table, variant, on)})")
            seeds = len(next(r for r in rows if r["variant"] == variant)["seeds"])
            lines.append(f"| {variant} | {' | '.join(cells)} | {seeds} |")
        first = rows[0]
        what = (
            "a column is when each embedding was computed (the model is the same)"
            if table == "inference"
            else "a per-type column scores that type's positives only"
        )
        lines += [
            "",
            f"Recall@10 [95% CI] (paper's figure); {first['eval_users']} users, "
            f"{first['eval_positives']} positives in all; {what}.",
        ]
        return lines
    lines = [
        "| variant | Recall@10 [95% CI] | paper | Recall@10 repeat / new positives | "
        "P90 cov@10 | entropy@50 | seeds | users | positives | training |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {_recall(r)} | {_paper(table, r['variant'])} | "
            f"{_repeat_new(r, 'recall_at_10')} | "
            f"{_fmt(r['p90_coverage_at_10'])} | {_fmt(r['interest_entropy_at_50'], 3)} | "
            f"{len(r['seeds'])} | {r['eval_users']} | {r['eval_positives']} | "
            f"{_train(r)} |"
        )
    return lines


def _train(r: dict[str, Any]) -> str:
    """Training cost: seconds, epochs (best epoch and its validation score), why it stopped;
    empty for baselines."""
    if "epochs" not in r:
        return "—"
    stops = "/".join(s.replace("_", " ") for s in r.get("stop_reasons", []))
    budget = r.get("budget") or {}
    cap = f" of {budget['max_minutes']:g} min" if budget.get("max_minutes") else ""
    patience = f", patience {budget['patience']}" if budget.get("patience") else ""
    val = f", validation {r['validation']:.4f}" if r.get("validation") is not None else ""
    if r.get("history_weight") is not None:
        weights = "/".join(f"{w:g}" for w in r["history_weight"])
        val += f"; history weight {weights}"
    choice = r.get("token_choice")
    if choice:  # `--item-tokens validated`: which way the validation split decided
        kept = "kept" if choice["kept"] else "dropped"
        val += f"; token vectors {kept}: validation {_fmt(choice['with'])} with, "
        val += f"{_fmt(choice['without'])} without (seed {choice['seed']})"
    return (
        f"{r['train_seconds']:.0f} s{cap}, {r['epochs']:.1f} ep (best {r['best_epoch']:.1f}{val}), "
        f"{stops}{patience}"
    )


def _label(row: dict[str, Any]) -> str:
    """The variant, "+ tokens" when its items learned metadata-token vectors, "+ graph" with the
    co-engagement graph layer (`model_core.features.item_graph`), and in brackets
    PinnerFormer's training windows when they are not the paper's, whether the validation split
    chose the token vectors (`--item-tokens validated`) and "bf16" when it trained under bf16
    autocast."""
    label = row["variant"] + (" + tokens" if row.get("item_tokens") else "")
    label += " + graph" if row.get("item_neighbors") else ""
    notes = [] if row.get("windows") in (None, "random") else [f"{row['windows']} windows"]
    notes += ["tokens chosen on validation"] if row.get("token_choice") else []
    notes += ["bf16"] if row.get("bf16") else []
    notes += [f"id dropout {row['item_id_dropout']:g}"] if row.get("item_id_dropout") else []
    if not is_default_recipe(row):
        notes += [
            "original recipe: constant lr, no weight average"
            if row.get("table") == "peers"
            else "older recipe: no latest pin, no weight average"
        ]
    return f"{label} ({', '.join(notes)})" if notes else label


def is_default_recipe(row: dict[str, Any]) -> bool:
    """A row made with today's default recipe: PinnerFormer with the latest-pin term and the
    weight average (rows before them carry neither flag); a reference SASRec with
    PinnerFormer's training affordances (schedule, weight average). Baselines: always."""
    if row.get("table") == "peers":
        return bool(row.get("affordances"))
    if row.get("table") in ("baselines", "upper_bounds") or "epochs" not in row:
        return True
    return row.get("latest_pin") == "auto" and bool(row.get("ema_epochs"))


def _loo_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| variant | HR@10 [95% CI] | NDCG@10 [95% CI] | NDCG@10 unfiltered [95% CI] | "
        "NDCG@10 repeat / new target | seeds | users | training |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        cells = []
        for metric in ("hr_at_10", "ndcg_at_10", "ndcg_at_10_unfiltered"):
            if metric not in r:
                cells.append("n/a")
                continue
            spread = f" ±{r[metric + '_seed_std']:.4f}" if len(r["seeds"]) > 1 else ""
            lo, hi = r.get(metric + "_ci", (None, None))
            ci = f" [{_fmt(lo, 3)}, {_fmt(hi, 3)}]" if lo is not None else ""
            cells.append(f"{_fmt(r[metric])}{spread}{ci}")
        lines.append(
            f"| {_label(r)} | {' | '.join(cells)} | {_repeat_new(r)} | {len(r['seeds'])} | "
            f"{r['eval_users']} | {_train(r)} |"
        )
    return lines


def _repeat_new(r: dict[str, Any], metric: str = "ndcg_at_10") -> str:
    """The metric on what the user had acted on before and on the rest (leave-one-out: the users
    whose target is a repeat / new; paper: each user's repeated / new positives), with the
    number of users each part has."""
    if "repeat_users" not in r:
        return "n/a"
    parts = [f"{_fmt(r[f'{metric}_{part}'])} ({r[f'{part}_users']})" for part in ("repeat", "new")]
    return " / ".join(parts)


def _recipe_text(res: dict[str, Any]) -> str:
    """What a section's files ran: split time, item representation, negatives, code."""
    split = f", split t = {res['split']}" if res.get("split") else ""
    if res.get("item_engagement"):
        split += f"; item co-engagement vectors from `{res['item_engagement']}` actions"
    ids = res.get("item_ids", "none")
    split += (
        "; items: the paper's content-only tower"
        if ids == "none"
        else f"; items: content + learned ids (`{ids}`, beyond the paper)"
    )
    if ids != "none" and res.get("item_tokens") == "auto":
        split += " and learned metadata-token vectors where the log has metadata"
    if ids != "none" and res.get("item_tokens") == "validated":
        split += (
            " and learned metadata-token vectors where the log has metadata and they win on"
            " the validation split"
        )
    if ids != "none" and res.get("item_graph") == "auto":
        split += " and a co-engagement graph layer over the ids (`--item-graph auto`)"
    if ids != "none" and res.get("latest_pin") == "auto":
        split += "; user embedding + a learned share of the latest pin's (`--latest-pin auto`)"
    if res.get("ema_epochs"):
        split += f"; weights averaged over ~{res['ema_epochs']:g} epochs (`--ema-epochs`)"
    split += (
        "; negatives: the whole catalogue (the exact softmax, beyond the paper)"
        if res.get("negatives") == "catalog"
        else "; negatives: the paper's mixed sampled pool with logQ"
    )
    if res.get("remove_seen"):
        split += "; each user's already-engaged pins removed from their ranking"
    if (res.get("eval_windows") or 1) > 1:
        split += (
            f"; {res['eval_windows']} consecutive 14-day windows after the one training cut, "
            "pooled (a user is one evaluation unit per window with positives)"
        )
    codes = sorted({r["code"] for r in res["rows"] if r.get("code")})
    if codes:
        split += f"; code: {', '.join(codes)}"
    return split


def _paired_table(rows: list[dict[str, Any]]) -> list[str]:
    """Each PinnerFormer row's NDCG@10 divided by each reference SASRec's, on the same users,
    with a paired bootstrap interval; empty when the rows carry no per-user ranks."""
    ranked = [r for r in rows if r.get("top10_ranks")]
    ours = [r for r in ranked if r["table"] not in ("peers", "baselines")]
    peers = [r for r in ranked if r["table"] == "peers"]
    pairs = [(a, b) for a in ours for b in peers if a["eval_users"] == b["eval_users"]]
    if not pairs:
        return []
    lines = [
        "",
        "### Paired: PinnerFormer over each reference SASRec",
        "",
        "NDCG@10 (seen removed) of the row over the reference's, on the same users: a bootstrap "
        "over users resampled jointly, of the per-user NDCG averaged over seeds. Narrower than "
        "comparing the two rows' own intervals, because both models meet the same users.",
        "",
        "| PinnerFormer | reference | ratio [95% paired CI] |",
        "|---|---|---|",
    ]
    for a, b in pairs:
        ratio, lo, hi = ratio_ci(per_user_ndcg(a["top10_ranks"]), per_user_ndcg(b["top10_ranks"]))
        lines.append(f"| {_label(a)} | {b['variant']} | {ratio:.2f} [{lo:.2f}, {hi:.2f}] |")
    return lines


def render(results: list[dict[str, Any]], commands: list[str], headline: list[str]) -> str:
    lines = [
        "# Results",
        "",
        "Generated by `pinner results` from the JSON files in `results/current/` "
        "(`results/INDEX.md` lists every file, the archive included); do not edit by hand. "
        "Numbers are from this repository's code on 2 CPU cores within the budgets given.",
        "",
        "## Headline",
        "",
        *headline,
    ]
    for res in results:
        split = _recipe_text(res)
        lines += [
            "",
            f"## {res['dataset']} — protocol `{res['protocol']}`",
            "",
            f"{res['users']} users, {res['items']} items, {res['actions']} actions; every model "
            f"trained against a validation split ({res.get('validation_users', 0)} validation "
            "users; early stopping with the best weights restored; each row's training column "
            "gives its wall-clock cap per seed and its patience — validation epochs without "
            "improvement, x4 for the reference SASRecs and for PinnerFormer on tiled windows, "
            "whose epochs are one pass over each user's history, a quarter or less of a "
            "random-window epoch; a row that stopped on `max minutes` did not converge)"
            f"{split}.",
        ]
        tables: dict[str, list[dict[str, Any]]] = {}
        for row in res["rows"]:
            tables.setdefault(row["table"], []).append(row)
        order = sorted(tables, key=lambda t: ORDER.index(t) if t in ORDER else len(ORDER))
        for table in order:
            rows = tables[table]
            lines += ["", f"### {PAPER_TABLES.get(table, table)}", ""]
            if res["protocol"] == "paper":
                lines += _paper_table(table, rows)
            else:
                lines += _loo_table(rows)
        if res["protocol"] != "paper":
            lines += _paired_table(res["rows"])
    lines += [
        "",
        "## How to read these tables",
        "",
        "Small logs give noisy numbers: read the 95% bootstrap intervals (over users) and the seed "
        "spread (± one standard deviation over seeds) before reading an ordering into two rows; "
        "a paired ratio (both models on the same users) separates what two overlapping intervals "
        "cannot. A row marked `older recipe` was made before today's default PinnerFormer recipe "
        "and is kept beside it, never mixed into it. The `paper` figures are the paper's own "
        "Recall@10 (`model_core/experiments/paper_figures.py`), measured on Pinterest's data with "
        "a 1M-pin index: compare the SHAPE (which variant wins, by how much relative to its "
        "neighbours), never the absolute values. Upper bounds read the target and are never a "
        "baseline to beat. docs/RESULTS_NOTES.md has the probes and the reasoning behind each "
        "choice.",
        "",
        "## Commands",
        "",
        "```bash",
        *commands,
        "```",
    ]
    return "\n".join(lines) + "\n"


SETTING = ("dataset", "protocol", "item_ids", "negatives", "remove_seen", "split", "eval_windows")


# File-level recipe settings every trained row carries into a merged section, so that rows of the
# same variant made under another recipe stay apart and say so.
ROW_RECIPE = ("latest_pin", "ema_epochs", "item_id_dropout")


def row_recipe(res: dict[str, Any]) -> dict[str, Any]:
    """A file's `ROW_RECIPE` flags; an off flag (0, absent in older files) is None."""
    return {k: res.get(k) or None for k in ROW_RECIPE}


def merge(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One section per setting: files run under the same log, protocol and recipe defaults
    (e.g. PinnerFormer in one file, the reference SASRecs in another) are merged; a baseline
    scored in several of them is kept once. Each trained row keeps its own file's budget (cap,
    patience), code and recipe flags (`ROW_RECIPE`); rows of scorers that read the target, in
    files written before the `upper_bounds` table existed, move there."""
    merged: dict[str, dict[str, Any]] = {}
    for res in results:
        res = {**res, "rows": [_with_file_settings(r, res) for r in res["rows"]]}
        key = setting_key(res)
        if key not in merged:
            merged[key] = {**res, "rows": list(res["rows"])}
            continue
        have = {_row_key(r) for r in merged[key]["rows"]}
        merged[key]["rows"] += [r for r in res["rows"] if _row_key(r) not in have]
    return list(merged.values())


def setting_key(res: dict[str, Any]) -> str:
    """The section a results file belongs to: its log, protocol and recipe defaults."""
    windows = res.get("eval_windows") or (1 if res.get("protocol") == "paper" else None)
    return json.dumps([res.get(k) for k in SETTING[:-1]] + [windows], sort_keys=True)


def _with_file_settings(row: dict[str, Any], res: dict[str, Any]) -> dict[str, Any]:
    if row["table"] == "baselines" and baseline_table(row["variant"]) != "baselines":
        return {**row, "table": baseline_table(row["variant"])}
    if "epochs" not in row:
        return row
    recipe = row_recipe(res)
    return {"budget": res.get("budget"), "code": res.get("code"), **recipe, **row}


def _row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes a row distinct within a section: the same variant on other training windows
    (`--windows`), with item-token vectors, trained in bf16, with the token vectors chosen on
    validation, with the co-engagement graph layer, or under another recipe (`ROW_RECIPE`), is
    another row."""
    return (
        row["table"], row["variant"], row.get("scored_on"), row.get("windows"),
        bool(row.get("item_tokens")), bool(row.get("bf16")), bool(row.get("token_choice")),
        bool(row.get("item_neighbors")), bool(row.get("affordances")),
        *(row.get(k) for k in ROW_RECIPE),
    )  # fmt: skip

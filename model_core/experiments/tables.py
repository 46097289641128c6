"""The experiment tables: which variants each paper table compares (a variant is a change of the
base RecipeConfig, a label restriction for Table 5, or a reference SASRec for `peers`).

- objectives (Table 3), negatives (Table 4), features (Table 6), bce (Table 10: the original
  SASRec loss, BCE with one random negative, vs sampled softmax);
- inference (Table 2) and multitask (Table 5), paper protocol only;
- item_ids (beyond the paper): the paper's content-only item tower vs learned ids (table, hashed;
  the table with and without learned metadata-token vectors, and without the co-engagement graph
  layer);
- peers: the reference SASRecs (`model_core.model.sasrec`), original BCE recipe and full
cross-entropy.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from model_core.data.timelines import Timelines
from model_core.experiments.data import Data
from model_core.features.item_ids import id_fields
from model_core.training.recipe import RecipeConfig

Change = Callable[[RecipeConfig], RecipeConfig]
Base = Callable[[int], RecipeConfig]  # seed → the recipe a variant changes


def _sampler(**kw: Any) -> Change:
    return lambda r: dataclasses.replace(r, sampler=dataclasses.replace(r.sampler, **kw))


def _loss(**kw: Any) -> Change:
    return lambda r: dataclasses.replace(r, loss=dataclasses.replace(r.loss, **kw))


def _features(**kw: Any) -> Change:
    def change(r: RecipeConfig) -> RecipeConfig:
        feats = dataclasses.replace(r.model.features, **kw)
        return dataclasses.replace(r, model=dataclasses.replace(r.model, features=feats))

    return change


def _both(a: Change, b: Change) -> Change:
    return lambda r: b(a(r))


def _model(**kw: Any) -> Change:
    return lambda r: dataclasses.replace(r, model=dataclasses.replace(r.model, **kw))


TABLES: dict[str, dict[str, Change]] = {
    "objectives": {  # paper Table 3
        "next_action": _sampler(objective="next_action"),
        "sasrec": _sampler(objective="sasrec"),
        "all_action": _sampler(objective="all_action"),
        # the base recipe's window: 28 days under the paper protocol, none under leave-one-out
        "dense_all_action": _sampler(objective="dense_all_action"),
        "dense_all_action_k14": _sampler(objective="dense_all_action", window_days=14.0),
        "dense_all_action_k28": _sampler(objective="dense_all_action", window_days=28.0),
    },
    "negatives": {  # paper Table 4
        f"{neg}{'+logq' if logq else ''}": _loss(negatives=neg, logq=logq)
        for neg in ("in_batch", "random", "mixed")
        for logq in (False, True)
    }
    | {"catalog": _loss(negatives="catalog")},  # beyond the paper: the exact softmax
    "features": {  # paper Table 6
        "all": _features(),
        "no_content": _features(use_content=False),
        "no_action_type": _features(use_action_type=False),
        "no_surface": _features(use_surface=False),
        "no_duration": _features(use_duration=False),
        "no_time": _features(use_absolute_time=False, use_relative_time=False),
    },
    "bce": {  # paper Table 10
        "sasrec_sampled_softmax": _sampler(objective="sasrec"),
        "sasrec_bce_one_negative": _both(_sampler(objective="sasrec"), _loss(kind="bce")),
        "dense_all_action": _sampler(objective="dense_all_action"),
    },
    "inference": {  # paper Table 2; each model is scored once per inference frequency
        "sasrec": _sampler(objective="sasrec"),
        "dense_all_action": _sampler(objective="dense_all_action"),
    },
    "multitask": {},  # paper Table 5; variants depend on the log's positive types (`variants`)
    "item_ids": {},  # beyond the paper: content only (the paper) vs learned ids (`variants`)
    "peers": {},  # reference SASRecs (`model_core.model.sasrec`); variants from PEERS
}
# The reference SASRecs: variant → loss (`model_core.model.sasrec`).
PEERS: dict[str, Literal["bce", "ce"]] = {"sasrec_reference": "bce", "sasrec_ce": "ce"}


PAPER_ONLY = ("inference", "multitask")  # need time-stamped positives in (t, t + 14 days]


@dataclass(frozen=True)
class Variant:
    change: Change
    label_action: str | None = None  # Table 5 single task: only this action type is a label
    peer: Literal["bce", "ce"] | None = None  # a reference SASRec instead of PinnerFormer


def variants(table: str, data: Data, only: list[str] | None = None) -> dict[str, Variant]:
    """The table's variants (those named in `only`, when given)."""
    if table == "multitask":
        if len(data.positive_types) < 2:
            raise ValueError(
                f"table multitask needs a log with several positive action types; {data.name} "
                f"has {list(data.positive_types)}"
            )
        out = {"multi_task": Variant(_same)}
        out.update({f"only_{a}": Variant(_same, a) for a in data.positive_types})
    elif table == "peers":
        out = {name: Variant(_same, peer=loss) for name, loss in PEERS.items()}
    elif table == "item_ids":
        n = len(data.catalog)
        # tokens and the graph layer need a full table: the other layouts go without them
        bare = {"item_token_vocab": 0, "item_tokens_per_item": 0, "item_neighbors": 0}
        out = {
            "content_only": Variant(_model(**id_fields(n, "none"), **bare)),
            "ids_table": Variant(_model(**id_fields(n, "table"))),
            "ids_hashed": Variant(_model(**id_fields(n, "hashed"), **bare)),
            "ids_table_no_graph": Variant(_model(**id_fields(n, "table"), item_neighbors=0)),
        }
        if data.catalog.tokens is not None:  # the base learns token vectors; this row does not
            out["ids_table_no_tokens"] = Variant(
                _model(**id_fields(n, "table"), item_token_vocab=0, item_tokens_per_item=0)
            )
    else:
        out = {name: Variant(change) for name, change in TABLES[table].items()}
    return {k: v for k, v in out.items() if only is None or k in only}


def _same(r: RecipeConfig) -> RecipeConfig:
    return r


def with_labels(tl: Timelines, data: Data, action: str | None) -> Timelines:
    """Keep only `action` positives as labels (inputs unchanged); None keeps every positive."""
    if action is None:
        return tl
    code = data.features.action_types.index(action) + 1
    return dataclasses.replace(tl, positive=tl.positive & (tl.action == code))

"""The scorers that read the user's own history, set up the way every model is: `history` and
`item_knn` (`model_core.evaluation.history_scorers`) with their settings chosen on the validation
split, and `Blend`, any model's embedding blended with the chosen `history` scorer
(`model_core.evaluation.score_rows.EmbeddingWithHistory`) at a weight chosen the same way."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from model_core.data.timelines import PinCatalog, Timelines
from model_core.evaluation.history_scorers import (
    Choice,
    choose,
    history_scores,
    item_knn_scores,
    item_similarity,
)
from model_core.evaluation.index import index_positions
from model_core.evaluation.leave_one_out import LeaveOneOut, score_ranks
from model_core.evaluation.metrics import RetrievalMetrics
from model_core.evaluation.paper_protocol import EvalSet
from model_core.evaluation.score_rows import EmbeddingWithHistory, evaluate_score_rows
from model_core.evaluation.seen import Seen
from model_core.experiments.data import Data
from model_core.inference.embed import user_item_vectors
from model_core.training.validation import Split

# The settings the history scorers choose among on the validation split.
HISTORY_SETTINGS: tuple[dict[str, Any], ...] = ({"by": "frequency"}, {"by": "recency"})
KNN_NEIGHBORS = (20, 100)
KNN_RECENT = (1, 5, 20)


HistoryScorer = Callable[[Timelines], sp.csr_matrix]


def chosen_history_scorers(
    data: Data, split: Split
) -> dict[str, tuple[HistoryScorer, dict[str, Any]]]:
    """`history` and `item_knn` (`model_core.evaluation.history_scorers`), each with the setting
    that scored best on the validation split, as timelines → sparse scores; item co-occurrence
    comes from `split.train`, exactly what every model trains on."""
    n = len(data.catalog)
    hist = choose(
        HISTORY_SETTINGS,
        lambda s: split.validate_scores(lambda tl: history_scores(tl, n, **s)),
    )
    sims = {k: item_similarity(split.train, n, k) for k in KNN_NEIGHBORS}
    knn = choose(
        [{"neighbors": k, "recent": r} for k in KNN_NEIGHBORS for r in KNN_RECENT],
        lambda s: split.validate_scores(
            lambda tl: item_knn_scores(tl, sims[s["neighbors"]], s["recent"])
        ),
    )
    best_sims, recent = sims[knn.setting["neighbors"]], knn.setting["recent"]
    return {
        "history": (lambda tl: history_scores(tl, n, **hist.setting), _choice_stats(hist)),
        "item_knn": (lambda tl: item_knn_scores(tl, best_sims, recent), _choice_stats(knn)),
    }


# The tables whose models also get a `<variant>+history` row (`Blend`), and the history weights
# it chooses among on the validation split: 0 = the embedding alone; unit-norm dot products lie
# in [-1, 1], so from 2 on the user's top history item outranks every other item, and at 1000
# the whole history comes first in its own order, the embedding ranking the rest.
BLENDED_TABLES = frozenset({"objectives", "peers"})
HISTORY_WEIGHTS = (0.0, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 1000.0)


@dataclass(frozen=True)
class Blend:
    """Each model's embedding blended with the chosen `history` scorer
    (`model_core.evaluation.score_rows.EmbeddingWithHistory`), the weight chosen per model on
    the validation split like every other setting."""

    catalog: PinCatalog
    history: HistoryScorer
    split: Split

    def _chosen(self, model: Any) -> tuple[Callable[[Timelines], EmbeddingWithHistory], float]:
        """timelines → the model's blend at the weight that scored best on validation."""
        cache: dict[int, tuple[Timelines, np.ndarray, np.ndarray, sp.csr_matrix]] = {}

        def blended(weight: float, tl: Timelines) -> EmbeddingWithHistory:
            if id(tl) not in cache:  # one embedding pass per timelines, whatever the weight
                users, items = user_item_vectors(model, tl, self.catalog)
                cache[id(tl)] = (tl, users, items, self.history(tl))
            _, users, items, h = cache[id(tl)]
            return EmbeddingWithHistory(users, items, h, weight)

        choice = choose(
            [{"weight": w} for w in HISTORY_WEIGHTS],
            lambda s: self.split.validate_scores(functools.partial(blended, s["weight"])),
        )
        weight = float(choice.setting["weight"])
        return functools.partial(blended, weight), weight

    def paper(self, model: Any, es: EvalSet) -> tuple[RetrievalMetrics, float]:
        """The blend's §4.1 metrics on the evaluation set, and its weight."""
        scorer, weight = self._chosen(model)
        m = evaluate_score_rows(
            scorer(es.history),
            es.positive_user,
            es.positive_pin_row,
            es.index_rows,
            self.catalog.topics[es.index_rows],
            index_positions(es.index_rows, es.positive_pin_row),
            seen=es.seen,
        )
        return m, weight

    def loo(self, model: Any, loo: LeaveOneOut, seen: Seen) -> tuple[dict[str, np.ndarray], float]:
        """The blend's leave-one-out ranks, seen removed ("") and unfiltered, and its weight."""
        scorer, weight = self._chosen(model)
        rows = scorer(loo.history)
        ranks = {
            "": score_ranks(rows, loo.target_pin_row, seen),
            "_unfiltered": score_ranks(rows, loo.target_pin_row),
        }
        return ranks, weight


def _choice_stats(choice: Choice) -> dict[str, Any]:
    return {"setting": choice.setting, "validation": max(choice.validation.values())}

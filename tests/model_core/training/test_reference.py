"""The reference SASRec trains with PinnerFormer's affordances: the same schedule and the same
moving average of the weights, which validation reads and the run returns."""

from __future__ import annotations

import torch

from model_core.data.timelines import PinCatalog, Timelines
from model_core.model.sasrec import SASRecConfig
from model_core.training.reference import fit_sasrec


def _fit(tl: Timelines, catalog: PinCatalog, affordances: bool) -> tuple[list, dict]:
    scored: list[dict[str, torch.Tensor]] = []

    def validate(model: torch.nn.Module) -> float:
        scored.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return float(len(scored))  # every epoch is better: the last one is kept

    cfg = SASRecConfig(
        loss="ce", max_len=20, hidden=16, max_epochs=3, batch_size=64, affordances=affordances
    )
    model, result = fit_sasrec(tl, catalog, cfg, validate)
    assert result.best_epoch == 3
    return scored, model.state_dict()


def test_validation_and_the_result_read_the_weight_average(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    averaged, returned = _fit(tiny_timelines, tiny_catalog, affordances=True)
    raw, _ = _fit(tiny_timelines, tiny_catalog, affordances=False)
    for key, value in returned.items():  # the run returns what validation scored last
        torch.testing.assert_close(value, averaged[-1][key])
    # the average (and the scheduled learning rate) differ from the original recipe's weights
    emb = "item_emb.weight"
    assert not torch.allclose(averaged[-1][emb], raw[-1][emb])

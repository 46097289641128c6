"""The trainer: schedule, learning, exact resume from a checkpoint."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.testing import assert_close

from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.config import TrainConfig
from model_core.training.loss import LossConfig
from model_core.training.recipe import Fitted, RecipeConfig, fit, label_sketch
from model_core.training.sampler import SamplerConfig, SequenceSampler
from model_core.training.schedule import lr_at
from model_core.training.trainer import train


def test_lr_schedule_is_warmup_then_cosine() -> None:
    cfg = TrainConfig(lr=1.0, warmup_fraction=10 / 110, steps=110, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(0.1)
    assert lr_at(9, cfg) == pytest.approx(1.0)
    assert lr_at(10, cfg) == pytest.approx(1.0)
    assert lr_at(60, cfg) == pytest.approx(0.55)  # half-way down the cosine
    assert lr_at(110, cfg) == pytest.approx(0.1)
    values = [lr_at(s, cfg) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def small_recipe(content_dim: int, steps: int, dropout: float = 0.1) -> RecipeConfig:
    return RecipeConfig(
        model=ModelConfig(
            features=FeatureConfig(content_dim=content_dim),
            max_len=16,
            hidden=32,
            n_heads=4,
            out_dim=16,
            pin_hidden=32,
            dropout=dropout,
        ),
        sampler=SamplerConfig(max_len=16, max_positives=8),
        loss=LossConfig(n_random=128),
        train=TrainConfig(
            batch_size=32,
            steps=steps,
            warmup_fraction=0.125,
            lr=3e-3,
            log_every=5,
            checkpoint_every=10,
        ),
    )


def held_out_loss(model: PinnerFormer, sampler: SequenceSampler, cfg: RecipeConfig) -> float:
    """Loss on fixed batches with in-batch negatives only (no random draws) — comparable."""
    from model_core.training.loss import Candidates, sampled_softmax_loss

    sketch = label_sketch(sampler, cfg)
    total = 0.0
    model.eval()
    with torch.no_grad():
        for step in range(10_000, 10_004):
            b = sampler.batch(step, 64)
            content = torch.from_numpy(sampler.catalog.embeddings)[b.pin_row]
            u, p = model(b.seq, b.pair_b, b.pair_pos, content, b.pin_id)
            log_q = torch.from_numpy(sketch.expected_count_log(b.pin_id.numpy(), len(b.pin_id)))
            total += float(
                sampled_softmax_loss(
                    u,
                    Candidates(p, b.pin_id, b.user_id, log_q),
                    b.emb_key,
                    torch.tensor(0.05),
                    LossConfig(negatives="in_batch"),
                )
            )
    return total / 4


def fit_lowers_held_out_loss(tl: Timelines, catalog: PinCatalog, cfg: RecipeConfig) -> Fitted:
    """Fit `cfg` and assert it lowers the loss on windows drawn with another sampler seed."""
    sampler = SequenceSampler(tl, catalog, cfg.sampler, seed=1)
    torch.manual_seed(0)
    before = held_out_loss(PinnerFormer(cfg.model), sampler, cfg)
    fitted = fit(tl, catalog, cfg)
    after = held_out_loss(fitted.model, sampler, cfg)
    assert after < before - 0.1, (before, after)
    return fitted


def test_training_lowers_held_out_loss(tiny_timelines: Timelines, tiny_catalog: PinCatalog) -> None:
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=40)
    fitted = fit_lowers_held_out_loss(tiny_timelines, tiny_catalog, cfg)
    assert [row["step"] for row in fitted.result.history] == [5.0 * i for i in range(1, 9)]
    assert fitted.result.sequences_per_s > 0


def test_sasrec_bce_training_lowers_held_out_loss(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """Table 10's original SASRec recipe (BCE, one random negative per pair) trains too."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=40)
    cfg = dataclasses.replace(
        cfg,
        sampler=dataclasses.replace(cfg.sampler, objective="sasrec"),
        loss=dataclasses.replace(cfg.loss, kind="bce"),
    )
    fit_lowers_held_out_loss(tiny_timelines, tiny_catalog, cfg)


def test_resume_from_checkpoint_is_exact(
    tmp_path: Path, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=20)
    straight = fit(tiny_timelines, tiny_catalog, cfg).model

    ckpt = tmp_path / "model.pt"
    sampler = SequenceSampler(tiny_timelines, tiny_catalog, cfg.sampler, seed=cfg.train.seed)
    sketch = label_sketch(sampler, cfg)
    torch.manual_seed(cfg.train.seed)
    train(PinnerFormer(cfg.model), sampler, sketch, cfg.loss, cfg.train, ckpt, stop_after=10)
    assert torch.load(ckpt, weights_only=False)["step"] == 10
    # A new process rebuilds everything and resumes from the checkpoint.
    torch.manual_seed(123)  # a different fresh init: the checkpoint must override it
    resumed = PinnerFormer(cfg.model)
    train(resumed, sampler, sketch, cfg.loss, cfg.train, checkpoint_path=ckpt)
    for (name, a), (_, b) in zip(
        straight.state_dict().items(), resumed.state_dict().items(), strict=True
    ):
        assert_close(a, b, msg=name)


def test_a_checkpoint_without_a_weight_average_resumes_with_one(
    tmp_path: Path, tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """A checkpoint written with `ema_epochs=0` (or before the average existed) holds no
    average: a run that averages resumes from it and starts its average there."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=20)
    sampler = SequenceSampler(tiny_timelines, tiny_catalog, cfg.sampler, seed=cfg.train.seed)
    sketch = label_sketch(sampler, cfg)
    ckpt = tmp_path / "model.pt"
    raw = dataclasses.replace(cfg.train, ema_epochs=0.0)
    train(PinnerFormer(cfg.model), sampler, sketch, cfg.loss, raw, ckpt, stop_after=10)
    assert torch.load(ckpt, weights_only=False)["ema"] is None
    result = train(PinnerFormer(cfg.model), sampler, sketch, cfg.loss, cfg.train, ckpt)
    assert result.steps == 20


def test_the_run_returns_the_moving_average_of_its_weights(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """`ema_epochs`: the returned weights are the moving average of every step's weights, whose
    memory is at most a tenth of the run (here 2 of 20 steps: a decay of 0.5), and whose first
    update copies the weights; with 0 the run returns its last weights."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=20)
    sampler = SequenceSampler(tiny_timelines, tiny_catalog, cfg.sampler, seed=cfg.train.seed)
    sketch = label_sketch(sampler, cfg)

    def run(epochs: float, stop_after: int | None = None) -> dict[str, torch.Tensor]:
        torch.manual_seed(cfg.train.seed)
        model = PinnerFormer(cfg.model)
        train_cfg = dataclasses.replace(cfg.train, ema_epochs=epochs)
        train(model, sampler, sketch, cfg.loss, train_cfg, stop_after=stop_after)
        return model.state_dict()

    steps = [run(0.0, stop_after=k) for k in range(1, 21)]  # the raw weights after each step
    expected = dict(steps[0])
    for raw in steps[1:]:
        expected = {n: 0.5 * expected[n] + 0.5 * raw[n] for n in raw}
    averaged = run(1e12)
    for name, value in averaged.items():
        assert_close(value, expected[name], msg=name)
    assert any(not torch.equal(averaged[n], steps[-1][n]) for n in averaged)
    for name, value in run(0.0).items():
        assert_close(value, steps[-1][name], msg=name)


def test_early_stopping_restores_the_best_weights(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """A validation metric that peaks at the first score: training stops after `patience` more
    scores and the model holds the weights it had at the peak."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=100)
    cfg = dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, eval_every=5, patience=2, log_every=100)
    )
    snapshots: list[dict[str, torch.Tensor]] = []
    scores = iter([0.5, 0.4, 0.3, 0.2, 0.1, 0.0])

    def validate(model: PinnerFormer) -> float:
        snapshots.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scores)

    fitted = fit(tiny_timelines, tiny_catalog, cfg, validate=validate)
    r = fitted.result
    assert r.stop_reason == "early_stopping"
    assert r.steps == 15
    assert r.best_step == 5
    assert [v["score"] for v in r.validation] == [0.5, 0.4, 0.3]
    for name, value in fitted.model.state_dict().items():
        assert_close(value, snapshots[0][name], msg=name)


def test_max_minutes_caps_the_run(tiny_timelines: Timelines, tiny_catalog: PinCatalog) -> None:
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=10_000)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, max_minutes=1e-6))
    result = fit(tiny_timelines, tiny_catalog, cfg).result
    assert result.stop_reason == "max_minutes"
    assert result.steps == 1


def test_a_capped_run_fits_its_schedule_to_the_deadline() -> None:
    """Under max_minutes the cosine schedule ends at the projected last step, not at `epochs`."""
    import time

    from model_core.training.schedule import fitted_schedule

    deadline = time.monotonic() + 10.0
    # 100 steps in 5 s = 20 steps/s; ~10 s left -> ~200 more steps.
    got = fitted_schedule(step=100, start=0, elapsed=5.0, deadline=deadline, n_steps=10_000)
    assert 280 <= got <= 300
    assert fitted_schedule(100, 0, 5.0, deadline, n_steps=150) == 150  # never past `epochs`
    assert fitted_schedule(100, 0, 5.0, time.monotonic() - 1, 10_000) == 101  # out of time


def test_a_capped_run_without_validation_still_warms_up_and_decays(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """The schedule is fitted to the cap from the first log line, not only at validations: a
    capped run on a long nominal schedule (or before its first epoch ends) used to spend the cap
    warming up over 12.5% of 100,000 steps, at a rate near zero."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=100_000)
    train = dataclasses.replace(cfg.train, max_minutes=0.1, log_every=1)
    result = fit(tiny_timelines, tiny_catalog, dataclasses.replace(cfg, train=train)).result
    assert result.stop_reason == "max_minutes"
    lrs = [row["lr"] for row in result.history]
    assert len(lrs) >= 3, f"{result.steps} steps in {result.seconds:.1f} s"
    assert max(lrs) > 0.5 * cfg.train.lr  # reached the peak rate within the cap
    assert lrs[-1] < max(lrs)  # and decayed from it


def test_items_the_training_data_never_shows_are_their_content_alone(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """With learned ids, fit gives id rows only to items in the training timelines: an item
    outside them (new since training, or only ever engaged by held-out users) reads the zero row,
    so its embedding is the content tower's, not an untrained random vector."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=5)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, item_id_vocab=len(tiny_catalog))
    )
    train_tl = tiny_timelines.select_rows(tiny_timelines.pin_row % 7 != 0)  # hide 1 item in 7
    shown = np.unique(train_tl.pin_row)
    unseen = np.setdiff1d(np.arange(len(tiny_catalog)), shown)
    assert len(unseen) > 0
    model = fit(train_tl, tiny_catalog, cfg).model
    assert model.config.item_id_vocab == len(shown)
    ids = torch.from_numpy(tiny_catalog.pin_ids)
    table = model.pin_tower.item_ids
    assert table is not None
    with torch.no_grad():
        vectors = table(ids)
    assert torch.all(vectors[unseen] == 0)
    assert torch.all(vectors[shown].abs().sum(dim=1) > 0)


def test_catalog_negatives_training_lowers_held_out_loss(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """negatives="catalog": the trainer embeds the whole catalogue each step as the pool."""
    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=40)
    cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, negatives="catalog"))
    fit_lowers_held_out_loss(tiny_timelines, tiny_catalog, cfg)


def test_the_training_job_holds_users_out_for_early_stopping(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """The worker's split: with a validation fraction the held-out users leave the training
    timelines and a Recall@10 scores them; at 0, or with too few users to score, every user
    trains and nothing is scored."""
    from model_core.training.worker import held_out

    cfg = small_recipe(tiny_catalog.embeddings.shape[1], steps=10)
    everyone, none = held_out(tiny_timelines, tiny_catalog, cfg)
    assert none is None
    assert everyone is tiny_timelines
    cfg = dataclasses.replace(cfg, validation_fraction=0.2)
    too_few, nothing = held_out(tiny_timelines, tiny_catalog, cfg)  # a handful of users
    assert nothing is None
    assert too_few is tiny_timelines
    train_tl, validate = held_out(tiny_timelines, tiny_catalog, cfg, min_users=1)
    assert validate is not None
    assert 0 < train_tl.n_users < tiny_timelines.n_users
    assert not set(train_tl.user_ids) - set(tiny_timelines.user_ids)
    fitted = fit(train_tl, tiny_catalog, cfg, validate=validate)
    assert fitted.result.best_score is not None
    assert 0.0 <= fitted.result.best_score <= 1.0


def test_fit_learns_vectors_for_the_tokens_known_items_share(
    tiny_timelines: Timelines, tiny_catalog: PinCatalog
) -> None:
    """With item tokens on, fit gives a token a vector only if two items of the training data
    carry it; the trained table then moves items that share a token together."""
    n = len(tiny_catalog)
    tokens = np.zeros((n, 2), dtype=np.int64)
    tokens[:, 0] = 1 + np.arange(n) % 3  # three shared "topics"
    tokens[0, 1] = 4  # a token of one item only: no vector
    catalog = dataclasses.replace(tiny_catalog, tokens=tokens)
    cfg = small_recipe(catalog.embeddings.shape[1], steps=5)
    model_cfg = dataclasses.replace(
        cfg.model, item_id_vocab=n, item_token_vocab=4, item_tokens_per_item=2
    )
    model = fit(tiny_timelines, catalog, dataclasses.replace(cfg, model=model_cfg)).model
    shown = np.unique(tiny_timelines.pin_row)
    assert model.config.item_token_vocab == len(np.unique(tokens[shown, 0])) == 3
    assert model.config.item_tokens_per_item == 1
    table = model.pin_tower.item_ids
    assert table is not None
    assert table.tokens is not None
    assert table.tokens.weight.shape == (4, model.config.out_dim)
    assert table.item_tokens[1:, 0].tolist() == (tokens[shown, 0]).tolist()  # codes kept in order


def test_bf16_is_used_on_a_cpu_only_where_it_has_bf16_matrix_units(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """On an AVX2-only CPU a bf16 matmul is many times slower than fp32: `--amp on` falls back
    to fp32 there, with one warning; CUDA and "off" are unchanged."""
    from model_core.training import config

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setattr(config, "cpu_bf16_units", lambda: False)
    config._warn_no_bf16_units.cache_clear()
    with caplog.at_level("WARNING", logger="model_core.training.config"):
        assert config.amp_dtype(cpu, "on") == torch.float32
        assert config.amp_dtype(cpu, "on") == torch.float32
    assert len([r for r in caplog.records if "bf16 matrix units" in r.message]) == 1
    assert config.amp_dtype(cuda, "auto") == torch.bfloat16
    assert config.amp_dtype(cpu, "auto") == torch.float32
    monkeypatch.setattr(config, "cpu_bf16_units", lambda: True)
    assert config.amp_dtype(cpu, "on") == torch.bfloat16
    assert config.amp_dtype(cpu, "off") == torch.float32

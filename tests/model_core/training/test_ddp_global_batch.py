"""One DDP step on two gloo ranks == one process on the same global batch: the model, the
all-gathered in-batch negatives and DDP's gradient averaging together (the loss alone is
test_loss_distributed.py).

Tolerance: float32, rtol 1e-5 / atol 1e-6 on the loss and rtol 1e-4 / atol 1e-6 on every
parameter gradient. The two runs sum the same terms in a different order (per-rank GEMMs, the
gloo all-reduce), so they agree to float32 rounding, not bit for bit.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.testing import assert_close

from model_core.data import synthetic
from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.loss import Candidates, LossConfig, sampled_softmax_loss
from model_core.training.sampler import SamplerConfig, SequenceSampler, TrainBatch
from model_core.training.sketch import CountMinSketch
from tests.model_core.distributed import spawn_gloo

WORLD = 2
PER_RANK = 16  # sequences per rank; the single process takes 2 * 16
N_RANDOM = 32
# next_action: one embedding and one positive per sequence, so every rank holds the same number
# of embeddings and the global mean equals the mean of the rank means.
SAMPLER = SamplerConfig(objective="next_action", max_len=16)
LOSS = LossConfig(negatives="mixed", n_random=N_RANDOM)


def setup() -> tuple[SequenceSampler, PinnerFormer, np.ndarray, CountMinSketch]:
    world = synthetic.WorldConfig.tiny()
    actions = pl.concat(list(synthetic.generate_range(world, world.dates[0], world.dates[9])))
    catalog = PinCatalog.from_frame(synthetic.pin_features(world))
    features = FeatureConfig(content_dim=world.content_dim)
    timelines, _ = Timelines.from_actions(actions, catalog, features)
    sampler = SequenceSampler(timelines, catalog, SAMPLER, seed=0)
    torch.manual_seed(0)
    model = PinnerFormer(
        ModelConfig(features=features, max_len=16, hidden=32, n_heads=4, out_dim=16)
    )
    ends = sampler.epoch_pool(0)[: WORLD * PER_RANK]
    sketch = CountMinSketch(1024, 4, seed=0)
    sketch.add(timelines.pin_id[timelines.positive])
    return sampler, model, ends, sketch


def step(
    model: torch.nn.Module, raw: PinnerFormer, sampler: SequenceSampler, batch: TrainBatch, sk
) -> torch.Tensor:
    """Forward and backward of one batch as the trainer computes it; returns the loss."""
    catalog = sampler.catalog
    emb = torch.from_numpy(catalog.embeddings)
    ids = torch.from_numpy(catalog.pin_ids)
    # the same random negatives everywhere, so the candidate pools are identical
    rand_rows = torch.randint(len(catalog), (N_RANDOM,), generator=torch.Generator().manual_seed(7))
    rows = torch.cat([batch.pin_row, rand_rows])
    user_emb, item_emb = model(batch.seq, batch.pair_b, batch.pair_pos, emb[rows], ids[rows])
    n = len(batch.pin_row)
    log_q = torch.from_numpy(sk.inclusion_log_prob(batch.pin_id.numpy(), WORLD * PER_RANK))
    positives = Candidates(item_emb[:n].float(), batch.pin_id, batch.user_id, log_q)
    randoms = Candidates(
        item_emb[n:].float(),
        ids[rand_rows],
        torch.full((N_RANDOM,), -1, dtype=torch.int64),
        torch.full((N_RANDOM,), -3.0),
    )
    loss = sampled_softmax_loss(
        user_emb.float(), positives, batch.emb_key, raw.temperature(0.01), LOSS, randoms
    )
    loss.backward()
    return loss.detach()


def grads(model: PinnerFormer) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        sampler, raw, ends, sk = setup()
        mine = ends[rank * PER_RANK : (rank + 1) * PER_RANK]
        batch = sampler.build(mine, np.random.default_rng(0))
        loss = step(DistributedDataParallel(raw), raw, sampler, batch, sk)
        torch.save({"loss": loss, "grads": grads(raw)}, Path(out_dir) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_gloo_ranks_equal_one_process_on_the_global_batch(tmp_path: Path) -> None:
    spawn_gloo(worker, tmp_path, nprocs=WORLD)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]

    torch.set_num_threads(1)
    sampler, raw, ends, sk = setup()
    single_loss = step(raw, raw, sampler, sampler.build(ends, np.random.default_rng(0)), sk)
    single = grads(raw)

    assert_close(torch.stack([r["loss"] for r in ranks]).mean(), single_loss, rtol=1e-5, atol=1e-6)
    assert set(ranks[0]["grads"]) == set(single)
    for name, g in single.items():
        # DDP all-reduced (averaged) the gradients: both ranks hold the global gradient
        assert_close(ranks[0]["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)
        assert_close(ranks[1]["grads"][name], ranks[0]["grads"][name], rtol=0, atol=0)

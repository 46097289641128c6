"""One training step's loss: a batch of sequences, its positives and negatives, and the sampled
softmax (or BCE) over them (paper §3.3). The trainer owns the optimizer; this owns what a step
computes."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from model_core.model.pinnerformer import PinnerFormer
from model_core.training.config import TrainConfig, amp_dtype, autocast
from model_core.training.loss import (
    Candidates,
    LossConfig,
    binary_cross_entropy_loss,
    sampled_softmax_loss,
)
from model_core.training.sampler import SequenceSampler
from model_core.training.sketch import CountMinSketch


def uniform_log_count(n_random: int, corpus_size: int) -> float:
    """log E[copies of an item among n_random uniform draws with replacement] = log(R / N)."""
    return math.log(n_random / corpus_size)


@dataclass
class StepOutput:
    loss: torch.Tensor  # [] float32
    temperature: torch.Tensor  # [] float32
    sequences: int  # sequences in this rank's batch


class StepLoss:
    """The loss of step `step` on this rank: batch `step * world + rank` of the sampler (ranks
    never share a batch), random negatives from a generator seeded by (seed, step, rank)."""

    def __init__(
        self,
        sampler: SequenceSampler,
        sketch: CountMinSketch,
        loss_cfg: LossConfig,
        cfg: TrainConfig,
        device: torch.device,
        rank: int,
        world: int,
    ) -> None:
        self.sampler, self.sketch, self.loss_cfg, self.cfg = sampler, sketch, loss_cfg, cfg
        self.device, self.rank, self.world = device, rank, world
        self.amp = autocast(device, cfg.amp)
        self.catalog_emb = torch.from_numpy(sampler.catalog.embeddings).to(device)
        self.catalog_ids = torch.from_numpy(sampler.catalog.pin_ids).to(device)
        self.n_corpus = len(sampler.catalog)
        self.bce = loss_cfg.kind == "bce"
        # the pool is every item, every step
        self.catalog = not self.bce and loss_cfg.negatives == "catalog"
        n_random = loss_cfg.n_random if loss_cfg.negatives != "in_batch" else 0
        self.n_random = self.n_corpus if self.catalog else n_random
        self.rand_log_q = uniform_log_count(max(1, self.n_random), self.n_corpus)

    def __call__(self, model: torch.nn.Module, raw_model: PinnerFormer, step: int) -> StepOutput:
        """`model`: what runs the forward (the DDP wrapper under torchrun); `raw_model`: the
        PinnerFormer itself (its temperature)."""
        device, world, rank = self.device, self.world, self.rank
        batch = self.sampler.batch(step * world + rank, self.cfg.batch_size)
        seq = batch.seq.to(device)
        g = torch.Generator(device="cpu").manual_seed(
            self.cfg.seed * 1_000_003 + step * world + rank
        )
        pin_row = batch.pin_row.to(device)
        n_pos = len(pin_row)
        n_draw = n_pos if self.bce else self.n_random  # BCE: one negative per pair
        if self.catalog:  # embed the catalogue once; the positives are rows of it
            item_content, item_ids = self.catalog_emb, self.catalog_ids
            rand_ids = self.catalog_ids
        else:
            rand_rows = torch.randint(self.n_corpus, (n_draw,), generator=g).to(device)
            item_rows = torch.cat([pin_row, rand_rows])
            item_content, item_ids = self.catalog_emb[item_rows], self.catalog_ids[item_rows]
            rand_ids = self.catalog_ids[rand_rows]
        in_batch_size = min(self.loss_cfg.in_batch_cap, n_pos * world)
        pos_log_q = torch.from_numpy(
            self.sketch.expected_count_log(batch.pin_id.numpy(), max(1, in_batch_size))
        ).to(device)
        with self.amp:
            user_emb, item_emb = model(
                seq, batch.pair_b.to(device), batch.pair_pos.to(device), item_content, item_ids
            )
        temperature = raw_model.temperature(self.loss_cfg.min_temperature)
        pos_emb, rand_emb = (
            (item_emb[pin_row], item_emb) if self.catalog else item_emb.split([n_pos, n_draw])
        )
        positives = Candidates(
            pos_emb.float(), batch.pin_id.to(device), batch.user_id.to(device), pos_log_q
        )
        random_negs = Candidates(
            rand_emb.float(),
            rand_ids,
            torch.full((n_draw,), -1, dtype=torch.int64, device=device),
            torch.full((n_draw,), self.rand_log_q, device=device),
        )
        emb_key = (batch.pair_b * seq.ts.shape[1] + batch.pair_pos).to(device)
        if self.bce:
            loss = binary_cross_entropy_loss(
                user_emb.float(), positives, random_negs, emb_key, temperature
            )
        else:
            loss = sampled_softmax_loss(
                user_emb.float(),
                positives,
                emb_key,
                temperature,
                self.loss_cfg,
                random_negs if self.n_random else None,
                amp_dtype(device, self.cfg.amp),
            )
        return StepOutput(loss, temperature, len(batch.seq.lengths))

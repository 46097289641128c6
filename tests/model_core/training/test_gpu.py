"""The CUDA path: bf16 autocast training, fused attention, device-resident inference.

Marked `gpu` (kept out of the default run) and skipped without CUDA; run with `make test-all`
or `pytest -m gpu` on a machine with a GPU.
"""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from model_core.data.timelines import PinCatalog, Timelines
from model_core.features.actions import FeatureConfig, SeqBatch
from model_core.model.pinnerformer import ModelConfig, PinnerFormer
from model_core.training.config import TrainConfig
from model_core.training.loss import LossConfig
from model_core.training.recipe import RecipeConfig, fit
from model_core.training.sampler import SamplerConfig

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_flash_attention_kernel_runs_the_causal_tower() -> None:
    """Right padding + is_causal needs no explicit mask, so the flash kernel can serve it."""
    cfg = ModelConfig(features=FeatureConfig(content_dim=8), max_len=32, hidden=64, n_heads=8)
    model = PinnerFormer(cfg).cuda()
    B, M = 4, 32
    batch = SeqBatch(
        content=torch.randn(B, M, 8),
        action=torch.randint(1, 5, (B, M)),
        surface=torch.randint(1, 4, (B, M)),
        duration=torch.rand(B, M) * 30,
        ts=1_760_000_000 + torch.randint(1, 600, (B, M)).cumsum(1),
        lengths=torch.tensor([32, 10, 1, 20]),
    ).to("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16), sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        out = model.user_tower(batch)  # raises if the flash kernel cannot serve the call
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(B, M, device="cuda"))


def test_bf16_training_on_cuda(tiny_timelines: Timelines, tiny_catalog: PinCatalog) -> None:
    cfg = RecipeConfig(
        model=ModelConfig(
            features=FeatureConfig(content_dim=tiny_catalog.embeddings.shape[1]),
            max_len=32,
            hidden=64,
        ),
        sampler=SamplerConfig(max_len=32),
        loss=LossConfig(n_random=512),
        train=TrainConfig(steps=30, batch_size=64, device="cuda", log_every=10),
    )
    fitted = fit(tiny_timelines, tiny_catalog, cfg)
    assert fitted.result.device.startswith("cuda")
    losses = [row["loss"] for row in fitted.result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]

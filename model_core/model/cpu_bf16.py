"""Row counts rounded up to a few sizes, so that bf16 matmuls on a CPU reuse their kernels.

Under CPU autocast a bf16 matmul runs through oneDNN, which compiles a kernel for every new
shape it meets. A training batch's row counts (its real actions, its pairs, its candidates)
differ from step to step, so every step paid for fresh kernels: a [n, 64] x [64, 256] layer
with its backward took 9.3 ms a call with n varying over 3000-4500, against 5.6 ms with n fixed
(one thread, AVX512-BF16). Padding the rows up to one of 16 sizes per octave (at most 1/16 more
rows) brings it to 6.3 ms. fp32 (MKL's sgemm) and CUDA compile nothing per shape, so rows are
padded only under CPU autocast.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

SIZES_PER_OCTAVE = 16
SMALLEST_STEP = 8


def bucket_rows(n: int) -> int:
    """n rounded up to a multiple of max(8, 2^(k-4)) for n in [2^k, 2^(k+1)): 16 sizes an
    octave, at most 1/16 above n."""
    step = max(SMALLEST_STEP, (1 << max(0, n.bit_length() - 1)) // SIZES_PER_OCTAVE)
    return -(-n // step) * step


def cpu_bf16(x: torch.Tensor) -> bool:
    """Whether `x`'s matmuls run in bf16 through oneDNN: a CPU tensor in bf16 or under CPU
    autocast."""
    cpu = x.device.type == "cpu"
    return cpu and (x.dtype == torch.bfloat16 or torch.is_autocast_enabled("cpu"))


def row_bucketed(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """fn(x) for a row-wise fn, x: [n, ...]: under CPU autocast fn runs on x padded with zero
    rows to `bucket_rows(n)`, and the first n rows of its output are returned."""
    n = x.shape[0]
    if not cpu_bf16(x) or bucket_rows(n) == n:
        return fn(x)
    pad = [0, 0] * (x.dim() - 1) + [0, bucket_rows(n) - n]
    return fn(F.pad(x, pad))[:n]

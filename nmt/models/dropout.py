"""Dropout (Srivastava et al. 2014) with a mask drawn from random 16-bit integers.

``torch.nn.functional.dropout`` on a CPU draws one Bernoulli sample per element through
``bernoulli_``, which costs several times more than the matmul it follows in a small model. Here the mask comes
from 64-bit random words split into four 16-bit uniform integers (one generator call per
four elements) compared with a threshold, so the drop probability is ``p`` rounded to a
multiple of 1/65536. The mask is stored as bool (1 byte per element) for the backward pass.
Inverted dropout: kept elements are scaled by ``1 / (1 - p)``. The global torch generator is
used, so seeding and checkpointed RNG state make runs reproducible exactly as before.
"""
from __future__ import annotations

import torch
from torch import Tensor

_LEVELS = 1 << 16


def _keep_mask(shape: torch.Size, threshold: int, device: torch.device) -> Tensor:
    """Bool mask of ``shape`` with P(True) = 1 - threshold / 65536."""
    n = 1
    for size in shape:
        n *= size
    words = torch.empty((n + 3) // 4, dtype=torch.int64, device=device).random_(-2 ** 63, 2 ** 63 - 1)
    return words.view(torch.int16)[:n].view(shape) >= threshold - (_LEVELS // 2)


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, threshold: int, scale: float) -> Tensor:
        keep = _keep_mask(x.shape, threshold, x.device)
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return torch.where(keep, x, 0.0).mul_(scale)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None, None


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout of ``x`` (any shape) with drop probability ``p`` when ``training``.

    Returns ``x`` itself when not training or ``p == 0``.

    Raises:
        ValueError: when ``p`` is outside [0, 1).
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout probability must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu":  # GPUs have a fast fused kernel
        return torch.nn.functional.dropout(x, p, True)
    threshold = round(p * _LEVELS)
    return _Dropout.apply(x, threshold, _LEVELS / (_LEVELS - threshold))

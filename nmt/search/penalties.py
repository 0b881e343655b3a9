"""Length penalty and maximum output length as small pure functions."""
from __future__ import annotations

import torch
from torch import Tensor


def gnmt_length_penalty(length: int | Tensor, alpha: float) -> float | Tensor:
    """lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016 eq. 14); hypothesis score = log P(Y|X) / lp(Y).

    ``length`` counts output tokens including EOS; ``alpha = 0`` gives 1 (raw log-probability).
    """
    return ((5.0 + length) / 6.0) ** alpha


def max_output_lengths(src_lengths: Tensor, a: float, b: int, limit: int | None = None) -> Tensor:
    """Maximum number of output tokens before EOS: ``floor(a * src_len + b)``, at least 1.

    src_lengths ``(B,)`` (EOS included) -> ``(B,)`` long, clipped to ``limit`` when given.
    """
    out = torch.clamp((src_lengths.float() * a + b).floor().long(), min=1)
    return out if limit is None else out.clamp(max=limit)

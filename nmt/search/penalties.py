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
    out = torch.clamp((src_lengths.double() * a + b).floor().clamp(max=2**31).long(), min=1)
    return out if limit is None else out.clamp(max=max(1, limit))


def output_limit(model) -> int | None:
    """The most tokens before EOS that ``model`` can decode: ``model.max_positions - 1`` (the
    step that emits EOS reads position ``max_positions - 1``), or None when it has no bound."""
    positions = getattr(model, "max_positions", None)
    return None if positions is None else positions - 1

"""The result type of every search."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from torch import Tensor


@dataclass
class Hypothesis:
    """One translation.

    Attributes:
        tokens: output ids without BOS/EOS.
        score: length-normalised score ``log_prob / lp`` (Wu et al. 2016 eq. 14) used for ranking.
        log_prob: total log-probability of ``tokens`` + EOS (natural log).
        alignment: ``(len(tokens) + 1, S)`` head-averaged cross-attention of the alignment layer,
            one row per output token including EOS, one column per real source token
            (EOS included), or None when attention was not requested.
    """

    tokens: list[int]
    score: float
    log_prob: float
    alignment: Optional[Tensor] = None

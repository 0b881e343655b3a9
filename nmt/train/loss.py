"""Label-smoothed cross-entropy (Szegedy et al. 2016; Vaswani et al. 2017 §5.4)."""
from __future__ import annotations

import torch
from torch import Tensor

from nmt.data.batch import PAD_ID


def label_smoothed_nll(logits: Tensor, target: Tensor, label_smoothing: float, ignore_index: int = PAD_ID
                       ) -> tuple[Tensor, Tensor]:
    """Summed label-smoothed loss and summed NLL over non-pad targets.

    loss = (1 - eps) * NLL + eps * mean_v(-log p_v)  (the smoothing mass eps spread uniformly
    over the V classes, as in fairseq's ``label_smoothed_cross_entropy``).

    Args:
        logits: ``(B, T, V)`` unnormalised scores.
        target: ``(B, T)`` gold ids; ``ignore_index`` positions contribute nothing.
        label_smoothing: eps in [0, 1).
    Returns:
        ``(loss_sum, nll_sum)``, scalars in nats (divide by the number of target tokens).
    """
    lprobs = torch.log_softmax(logits.float(), dim=-1)
    keep = target != ignore_index
    nll = -lprobs.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    nll_sum = nll.masked_fill(~keep, 0.0).sum()
    if label_smoothing <= 0:
        return nll_sum, nll_sum
    smooth = -lprobs.mean(dim=-1)
    smooth_sum = smooth.masked_fill(~keep, 0.0).sum()
    return (1.0 - label_smoothing) * nll_sum + label_smoothing * smooth_sum, nll_sum

"""Optimisers and learning-rate schedules."""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn


def build_optimizer(model: nn.Module, optimizer: str, lr: float, betas: tuple[float, float], eps: float,
                    weight_decay: float) -> torch.optim.Optimizer:
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019) or SGD.

    Weight decay is not applied to biases and LayerNorm gains (1-D parameters).

    Raises:
        ValueError: for an unknown optimizer name.
    """
    params = {id(p): p for p in model.parameters() if p.requires_grad}.values()
    decay = [p for p in params if p.dim() > 1]
    no_decay = [p for p in params if p.dim() <= 1]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if optimizer == "adam":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps, foreach=True)
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optim.optimizer {optimizer!r}; expected adam or sgd")


def lr_lambda(scheduler: str, lr: float, warmup_steps: int, warmup_init_lr: float, min_lr: float,
              d_model: int = 512) -> Callable[[int], float]:
    """Multiplier of the peak ``lr`` at update ``step`` (0-based, as ``LambdaLR`` counts).

    * ``inverse_sqrt``: linear warmup from ``warmup_init_lr`` to ``lr`` over ``warmup_steps``,
      then ``lr * sqrt(warmup_steps / step)`` (fairseq's inverse_sqrt).
    * ``noam``: ``d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`` scaled by ``lr``
      (Vaswani et al. 2017 eq. 3).
    * ``constant``: linear warmup, then ``lr``.

    Raises:
        ValueError: for an unknown schedule.
    """
    warmup = max(1, warmup_steps)

    def warm(step: int) -> float:
        return (warmup_init_lr + (lr - warmup_init_lr) * step / warmup) / lr

    if scheduler == "inverse_sqrt":
        return lambda s: max(min_lr / lr, warm(s) if s < warmup else math.sqrt(warmup / max(s, 1)))
    if scheduler == "constant":
        return lambda s: warm(s) if s < warmup else 1.0
    if scheduler == "noam":
        return lambda s: d_model ** -0.5 * min(max(s, 1) ** -0.5, max(s, 1) * warmup ** -1.5)
    raise ValueError(f"unknown optim.scheduler {scheduler!r}; expected inverse_sqrt, constant or noam")


def build_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :func:`lr_lambda` (its state is saved in checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(**kwargs))

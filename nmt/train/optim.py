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
        # the fused kernel (CPU and CUDA) updates all parameters in one pass, several times faster
        # than foreach, which CPUs run per tensor
        fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps,
                                 **({"fused": True} if fused else {"foreach": True}))
    if optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=0.9)
    raise ValueError(f"unknown optim.optimizer {optimizer!r}; expected adam or sgd")


def lr_lambda(scheduler: str, lr: float, warmup_steps: int, warmup_init_lr: float, min_lr: float,
              d_model: int = 512, total_steps: int = 0) -> Callable[[int], float]:
    """Multiplier of the peak ``lr`` at update ``step`` (0-based, as ``LambdaLR`` counts).

    * ``inverse_sqrt``: linear warmup from ``warmup_init_lr`` to ``lr`` over ``warmup_steps``,
      then ``lr * sqrt(warmup_steps / step)`` (fairseq's inverse_sqrt).
    * ``noam``: ``d_model^-0.5 * min(step^-0.5, step * warmup^-1.5)`` scaled by ``lr``
      (Vaswani et al. 2017 eq. 3).
    * ``constant``: linear warmup, then ``lr``.
    * ``cosine``: linear warmup, then half a cosine from ``lr`` down to ``min_lr`` at
      ``total_steps`` (Loshchilov & Hutter 2017, without restarts).
    * ``linear``: linear warmup, then a straight line from ``lr`` down to ``min_lr`` at
      ``total_steps``.

    The decaying schedules anneal over a fixed number of updates (``train.max_steps``), which
    is what a fixed compute budget wants; ``inverse_sqrt`` never anneals.

    Raises:
        ValueError: for an unknown schedule, or ``cosine``/``linear`` without
            ``total_steps > warmup_steps``.
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
    if scheduler in ("cosine", "linear"):
        if total_steps <= warmup:
            raise ValueError(f"optim.scheduler={scheduler} decays over train.max_steps, which must be larger "
                             f"than optim.warmup_steps={warmup_steps} (got max_steps={total_steps})")
        floor = min_lr / lr

        def decay(s: int) -> float:
            if s < warmup:
                return warm(s)
            return floor + (1.0 - floor) * _decay_shape(scheduler, (s - warmup) / (total_steps - warmup))

        return decay
    raise ValueError(f"unknown optim.scheduler {scheduler!r}; expected inverse_sqrt, constant, noam, "
                     "cosine or linear")


def _decay_shape(scheduler: str, progress: float) -> float:
    """1 → 0 over ``progress`` 0 → 1 (clamped at 1): half a cosine, or a straight line."""
    progress = min(1.0, progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress)) if scheduler == "cosine" else 1.0 - progress


def shorten_decay(fn: Callable[[int], float], at_step: int, total_steps: int, scheduler: str,
                  min_fraction: float) -> Callable[[int], float]:
    """``fn`` up to ``at_step``, then a new decay from ``fn(at_step)`` down to ``min_fraction``
    at ``total_steps``, of the same shape (half a cosine, or a straight line).

    Used by ``train.fit_schedule_to_time`` (:mod:`nmt.train.budget`) when a slower machine than
    planned makes an earlier end necessary: the learning rate stays continuous at ``at_step``.
    Values are multipliers of the peak learning rate, as :func:`lr_lambda`'s.

    Raises:
        ValueError: ``scheduler`` is not cosine or linear, or ``total_steps <= at_step``.
    """
    if scheduler not in ("cosine", "linear"):
        raise ValueError(f"only a cosine or linear decay can be shortened, not {scheduler!r}")
    if total_steps <= at_step:
        raise ValueError(f"the shortened decay must end after update {at_step}, got {total_steps}")
    start = fn(at_step)

    def shortened(s: int) -> float:
        if s <= at_step:
            return fn(s)
        return min_fraction + (start - min_fraction) * _decay_shape(scheduler, (s - at_step) / (total_steps - at_step))

    return shortened


def build_scheduler(optimizer: torch.optim.Optimizer, **kwargs) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` with :func:`lr_lambda` (its state is saved in checkpoints)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(**kwargs))


def schedule_args(oc, d_model: int, total_steps: int) -> dict:
    """Keyword arguments of :func:`lr_lambda` for an :class:`~nmt.config.OptimConfig`, decaying
    over ``total_steps`` updates."""
    return {"scheduler": str(oc.scheduler), "lr": oc.lr, "warmup_steps": oc.warmup_steps,
            "warmup_init_lr": oc.warmup_init_lr, "min_lr": oc.min_lr, "d_model": d_model, "total_steps": total_steps}


def apply_fitted_schedule(optimizer, scheduler, oc, d_model: int, schedule_steps: int, refits: list) -> None:
    """Put ``scheduler`` on the decay fitted to a time budget: ending at ``schedule_steps`` (same
    warmup and peak), then shortened at each ``[update, end]`` of ``refits``
    (:func:`shorten_decay`); and set the optimizer's learning rate to the new curve now."""
    fn = lr_lambda(**schedule_args(oc, d_model, schedule_steps))
    for at_step, end in refits:
        fn = shorten_decay(fn, at_step, end, str(oc.scheduler), oc.min_lr / oc.lr)
    scheduler.lr_lambdas = [fn] * len(optimizer.param_groups)
    for group, base in zip(optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = base * fn(scheduler.last_epoch)
    scheduler._last_lr = [g["lr"] for g in optimizer.param_groups]

"""One optimizer update and its three ways to be skipped (RELIABILITY.md R13-R15), and the memory
preflight: :class:`Updater` holds what an update needs, :meth:`Updater.train_step` does one."""
from __future__ import annotations

import contextlib
import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from nmt.data.batch import Batch
from nmt.train import distributed
from nmt.train.distributed import DistContext
from nmt.train.state import Progress, rng_state, set_rng_state

log = logging.getLogger("nmt.train")


class TrainingDiverged(RuntimeError):
    """``train.max_bad_steps`` updates in a row had a non-finite loss or gradient (R13)."""


class BatchTooLarge(RuntimeError):
    """The preflight's largest batch ran out of memory: the token budget is too big (R15)."""


@dataclass
class StepStats:
    """What one update did. Losses are sums over the update's target tokens (label-smoothed and
    plain NLL, in nats); ``skipped`` says why the parameters did not change: ``""`` (they did),
    ``"oom"`` (R15), ``"overflow"`` (an fp16 loss-scale overflow, R14), ``"non-finite"`` (R13)."""

    loss: float
    nll: float
    tokens: int  # target tokens of the update (every process of a distributed job)
    src_tokens: int  # source tokens trained on (0 when skipped)
    grad_norm: float  # before clipping
    skipped: str = ""


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocation failures."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def shapes(group: list[Batch]) -> str:
    """``"(B, S)->(B, T), ..."``: source and target shapes of the batches of one update."""
    return ", ".join(f"{tuple(b.src_tokens.shape)}->{tuple(b.tgt_out.shape)}" for b in group)


class Updater:
    """Optimizer updates of ``model`` through ``loss_module`` (a
    :class:`~nmt.models.seq2seq.TrainingLoss`, wrapped by DistributedDataParallel in a job of
    several processes).

    Args:
        precision: ``fp32`` (the fused loss), ``bf16`` or ``fp16`` (autocast; fp16 with ``scaler``).
        clip_norm: gradient norm clipping (0 = none; the norm is always measured).
        max_bad_steps: non-finite updates in a row that stop training (0 = never).
        max_tokens: the token budget, for advice in messages.
    """

    def __init__(self, model: torch.nn.Module, loss_module: torch.nn.Module, plain_loss: torch.nn.Module,
                 optimizer, scheduler, scaler, dist: DistContext, *, precision: str, clip_norm: float,
                 max_bad_steps: int, max_tokens: int) -> None:
        self.model, self.loss_module, self.plain_loss = model, loss_module, plain_loss
        self.optimizer, self.scheduler, self.scaler, self.dist = optimizer, scheduler, scaler, dist
        self.precision, self.clip_norm = str(precision), clip_norm
        self.max_bad_steps, self.max_tokens = max_bad_steps, max_tokens

    def autocast(self):
        """``torch.autocast`` for bf16/fp16; nothing for fp32."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        device = next(self.model.parameters()).device.type
        return torch.autocast(device, dtype=torch.bfloat16 if self.precision == "bf16" else torch.float16)

    def loss(self, batch: Batch, module=None) -> tuple[Tensor, Tensor]:
        """``(loss_sum, nll_sum)`` of one batch (through ``module``, default the unwrapped loss)."""
        with self.autocast():
            return (module or self.plain_loss)(batch)

    def train_step(self, group: list[Batch], progress: Progress) -> StepStats:
        """One update over ``group`` (gradient accumulation), normalised by the target tokens of
        the whole update (over every process, where DDP averages the gradients: hence the factor
        ``world_size``). Updates ``progress``'s counters.

        Raises:
            TrainingDiverged: ``max_bad_steps`` non-finite updates in a row.
            RuntimeError: out of memory in a distributed job (a rank cannot skip alone).
        """
        dist = self.dist
        self.model.train()
        ntokens = sum(b.ntokens for b in group)
        if dist.enabled:
            ntokens = int(distributed.all_reduce(dist, [ntokens])[0])
        try:
            total_loss, total_nll = self._backward(group, ntokens)
        except RuntimeError as err:
            if not is_out_of_memory(err) or dist.enabled:  # a rank cannot skip alone: its peers wait in all-reduce
                raise
            return self._skip_oom(group, ntokens, err, progress)
        src_tokens = sum(int(b.src_lengths.sum()) for b in group)
        if dist.enabled:  # the same loss on every rank, so every rank takes the same skip decisions
            total_loss, total_nll, src_tokens = distributed.all_reduce(dist, [total_loss, total_nll, src_tokens])
            src_tokens = int(src_tokens)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        clip = self.clip_norm if self.clip_norm > 0 else float("inf")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        stats = StepStats(total_loss, total_nll, ntokens, 0, grad_norm)
        if self.scaler is not None and math.isfinite(total_loss) and not math.isfinite(grad_norm):
            return self._skip_overflow(stats, progress)
        if not (math.isfinite(grad_norm) and math.isfinite(total_loss)):
            return self._skip_non_finite(stats, group, progress)
        progress.bad_steps_in_a_row = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        progress.step += 1
        progress.tgt_tokens += ntokens
        progress.src_tokens += src_tokens
        stats.src_tokens = src_tokens
        return stats

    def _backward(self, group: list[Batch], ntokens: int) -> tuple[float, float]:
        total_loss = total_nll = 0.0
        for i, batch in enumerate(group):
            sync = not self.dist.enabled or i == len(group) - 1  # all-reduce once, after the last backward
            with contextlib.nullcontext() if sync else self.loss_module.no_sync():
                loss, nll = self.loss(batch, self.loss_module)
                scaled = loss * self.dist.world_size / ntokens
                (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
            total_loss += float(loss.detach())
            total_nll += float(nll.detach())
        return total_loss, total_nll

    def _skip_oom(self, group, ntokens: int, err: RuntimeError, progress: Progress) -> StepStats:
        """R15: skip the update, say which batch; parameters and step count untouched."""
        self.optimizer.zero_grad(set_to_none=True)
        free_memory()
        progress.oom_skips += 1
        log.warning("update after step %d skipped: out of memory on a batch of %s (%s); %d such skips in all. "
                    "Lower train.max_tokens (now %d) if this repeats", progress.step, shapes(group),
                    str(err).splitlines()[0][:200], progress.oom_skips, self.max_tokens)
        return StepStats(0.0, 0.0, ntokens, 0, float("nan"), "oom")

    def _skip_overflow(self, stats: StepStats, progress: Progress) -> StepStats:
        """R14: an fp16 gradient overflow; the scaler skips the step and halves the scale."""
        scale = self.scaler.get_scale()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        progress.overflow_skips += 1
        log.info("update after step %d skipped: fp16 gradient overflow at loss scale %g (now %g); %d in all",
                 progress.step, scale, self.scaler.get_scale(), progress.overflow_skips)
        stats.skipped = "overflow"
        return stats

    def _skip_non_finite(self, stats: StepStats, group, progress: Progress) -> StepStats:
        """R13: skip the update (parameters, optimizer, schedule and step count untouched)."""
        if self.scaler is not None:
            self.scaler.update()  # closes this iteration's unscale_; the scale is lowered
        self.optimizer.zero_grad(set_to_none=True)
        progress.skipped_steps += 1
        progress.bad_steps_in_a_row += 1
        first = [int(i) for i in group[0].indices[:8]]
        log.warning("update after step %d skipped: loss %s, gradient norm %s (batch src->tgt shapes %s, first example "
                    "indices %s); %d skipped in a row, %d in all", progress.step, stats.loss, stats.grad_norm,
                    shapes(group), first, progress.bad_steps_in_a_row, progress.skipped_steps)
        if self.max_bad_steps > 0 and progress.bad_steps_in_a_row >= self.max_bad_steps:
            raise TrainingDiverged(f"{progress.bad_steps_in_a_row} updates in a row had a non-finite loss or gradient "
                                   f"(train.max_bad_steps={self.max_bad_steps}) after step {progress.step}; the last "
                                   "checkpoint is the last finite model. Lower optim.lr or raise optim.warmup_steps")
        stats.skipped = "non-finite"
        return stats

    def preflight(self, batch: Batch) -> None:
        """Forward and backward of ``batch`` (the epoch's largest), so a token budget that does not
        fit in memory fails before the first update, with advice (R15). Gradients and RNG states
        are restored: training is unchanged by it.

        Raises:
            BatchTooLarge: the batch runs out of memory.
        """
        rng = rng_state()
        self.model.train()
        loss = None
        try:
            loss, _ = self.loss(batch)
            loss.backward()
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            device = next(self.model.parameters()).device
            raise BatchTooLarge(f"the largest training batch ({shapes([batch])} tokens, source->target) runs out of "
                                f"memory on {device}: lower train.max_tokens (now {self.max_tokens}) or use gradient "
                                "accumulation (train.update_freq)") from err
        finally:
            loss = None
            self.optimizer.zero_grad(set_to_none=True)
            set_rng_state(rng)
            free_memory()

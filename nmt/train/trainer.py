"""The training loop: batches -> model -> label-smoothed loss -> Adam, with validation BLEU,
early stopping, checkpoints and TensorBoard.

The loop is here; checkpoints and resume are in :mod:`nmt.train.run_state`, validation and the
end of training in :mod:`nmt.train.validation` (mixed into :class:`Trainer`)."""
from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Iterator, Optional

import torch
from torch import Tensor

from nmt.config import Config
from nmt.data.batch import Batch
from nmt.data.dataset import BucketingSampler, TokenizedDataset, make_batch
from nmt.models import build_model, count_parameters
from nmt.train import checkpoint as ckpt_io
from nmt.train import distributed
from nmt.train.allocator import keep_freed_memory
from nmt.train.data import PreparedData
from nmt.train.distributed import SINGLE, DistContext
from nmt.train.loss import label_smoothed_nll, linear_label_smoothed_nll
from nmt.train.monitor import Monitor, format_scalars
from nmt.train.budget import fit_schedule_steps, refit_schedule_steps
from nmt.train.optim import build_optimizer, build_scheduler, lr_lambda, shorten_decay
from nmt.train.run_state import RunDirError  # noqa: F401 (re-exported: nmt.cli.train and the tests raise/catch it from here)
from nmt.train.run_state import CheckpointMixin, Progress, _rng_state, _set_rng_state, seed_everything
from nmt.tensorboard.writer import read_probe
from nmt.train.validation import ValidationMixin
from nmt.versions import format_versions

log = logging.getLogger("nmt.train")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; re-run the same command to resume
EXIT_DIVERGED = 4  # train.max_bad_steps non-finite updates in a row
INTERRUPTED = "interrupted"


def _raw_stderr(text: str) -> None:
    """Write ``text`` to file descriptor 2 with one system call, bypassing Python's buffered
    streams and their locks (safe inside a signal handler); errors are ignored."""
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM/SIGINT (or :meth:`Trainer.request_stop`) after saving
    ``checkpoint``; running the same command again resumes from it (R16, R17)."""

    def __init__(self, checkpoint: Path, step: int, reason: str) -> None:
        super().__init__(f"{reason}: saved {checkpoint} at step {step}; run the same command again to resume")
        self.checkpoint, self.step = checkpoint, step


class TrainingDiverged(RuntimeError):
    """``train.max_bad_steps`` updates in a row had a non-finite loss or gradient (R13)."""


class BatchTooLarge(RuntimeError):
    """The preflight's largest batch ran out of memory: the token budget is too big (R15)."""


def is_out_of_memory(err: BaseException) -> bool:
    """True for CUDA/MPS out-of-memory errors and CPU allocation failures."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


def _free_memory() -> None:
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


class Trainer(CheckpointMixin, ValidationMixin):
    """Trains ``cfg.model`` on prepared data and writes everything under ``run_dir``.

    Args:
        cfg: the resolved configuration.
        data: tokenizer, training ids and dev/test text (:func:`nmt.train.data.prepare_data`).
        run_dir: output directory (Hydra's run directory for ``nmt-train``), the same for every
            process of a distributed job.
        dist: this process's place in a ``torchrun`` job (:mod:`nmt.train.distributed`); rank 0
            alone writes checkpoints, TensorBoard and results, the others train their share.

    Raises:
        ValueError: ``train.update_freq`` is not a multiple of the number of processes.
    """

    def __init__(self, cfg: Config, data: PreparedData, run_dir: Path, dist: DistContext = SINGLE) -> None:
        self.cfg = cfg
        self.data = data
        self.dist = dist
        self.run_dir = Path(run_dir)
        self.ckpt_dir = self.run_dir / "checkpoints"
        tc = cfg.train
        self.accum = distributed.per_rank_update_freq(tc.update_freq, dist)  # batches per update on this rank
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        if dist.backend == "nccl":
            self.device = torch.device("cuda", dist.local_rank)
        elif tc.device == "auto":
            self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        else:
            self.device = torch.device(tc.device)
        if tc.keep_freed_memory and self.device.type == "cpu":
            keep_freed_memory()
        seed_everything(tc.seed)
        tok = data.tokenizer
        self.model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        self.train_model: torch.nn.Module = self.model  # what the training forward runs (DDP wraps it)
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # the same initial weights everywhere (DDP also broadcasts rank 0's); dropout differs per rank
            self.train_model = DistributedDataParallel(
                self.model, device_ids=[dist.local_rank] if self.device.type == "cuda" else None)
            torch.manual_seed(tc.seed + 1000003 * dist.rank)
        oc = cfg.optim
        self.optimizer = build_optimizer(self.model, oc.optimizer, oc.lr, oc.betas, oc.eps, oc.weight_decay)
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=tc.fp16_init_scale) \
            if tc.precision == "fp16" else None
        self.scheduler = build_scheduler(self.optimizer, **self._schedule(tc.max_steps))
        # the training batches' order and position: in-memory ids with the bucketing sampler, or
        # a streamed corpus (data.streaming=true), which yields whole batches and has no length
        self.stream = data.train_stream
        self.sampler = self.stream if self.stream is not None else BucketingSampler(
            data.train.src_lengths, data.train.tgt_lengths, max_tokens=tc.max_tokens, shuffle=True, seed=tc.seed,
            epoch_lengths=None if data.train_sampling is None else self._epoch_lengths)
        self.valid_ids = TokenizedDataset.from_text(tok, data.valid.src, data.valid.tgt, name="valid",
                                                    max_len=cfg.model.max_positions - 1)
        self.probes = read_probe(tc.attention.probe) if tc.attention.probe else None  # else: the first dev sentences
        self.progress = Progress()
        self.num_params = count_parameters(self.model)
        self._stop_signal: Optional[str] = None
        self._signal_received: Optional[str] = None  # a signal the log has not told of yet
        self._start: Optional[float] = None
        self._last_saved_step = -1
        self.check_ranks_agree()
        self.run_lock = ckpt_io.RunLock(self.run_dir)  # held by rank 0 until training ends (R32)
        try:
            self.resumed_from = self._prepare_run_dir()
        except BaseException:
            self.run_lock.release()
            raise
        if self.progress.schedule_steps:  # a resumed run keeps the schedule fitted to its time budget
            self._apply_fitted_schedule()
        self.monitor = Monitor(self.run_dir / "tensorboard", enabled=dist.is_main,
                               purge_step=self.progress.step + 1 if self.resumed_from else None)
        log.info("versions: %s", format_versions())
        size = "streamed training data" if self.stream is not None else \
            f"{len(data.train)} training pairs, {len(self.sampler)} batches per epoch"
        log.info("model %s: %d parameters; %s%s", cfg.model.arch, self.num_params, size,
                 f"; {dist.world_size} processes x {self.accum} batches per update" if dist.enabled else "")

    def _autocast(self):
        """``torch.autocast`` for ``train.precision`` bf16/fp16; nothing for fp32."""
        precision = self.cfg.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16 if precision == "bf16" else torch.float16)

    def _loss(self, batch: Batch, model: Optional[torch.nn.Module] = None) -> tuple[Tensor, Tensor]:
        """Teacher-forced ``(loss_sum, nll_sum)`` of one batch (label smoothing from the config),
        through ``model`` (default: the unwrapped model; training passes the DDP wrapper).

        In fp32 the output projection and the loss are fused
        (:func:`~nmt.train.loss.linear_label_smoothed_nll`: the ``(B, T, V)`` logits are never
        materialised); under bf16/fp16 autocast the logits are computed and cast to float32.
        """
        eps = self.cfg.train.label_smoothing
        model = self.model if model is None else model
        with self._autocast():
            if self.cfg.train.precision == "fp32":
                out = model(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in, features_only=True)
                weight, bias = self.model.decoder.output_projection()
                return linear_label_smoothed_nll(out.features, weight, bias, batch.tgt_out, eps)
            out = model(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in)
            return label_smoothed_nll(out.logits, batch.tgt_out, eps)

    def preflight(self) -> None:
        """Run forward and backward on the epoch's largest batch (most padded tokens) before the
        first update, so a token budget that does not fit in memory fails at once with advice
        (R15). Gradients and RNG states are restored: training is unchanged by it.

        Raises:
            BatchTooLarge: that batch runs out of memory.
        """
        if self.stream is not None:
            log.info("memory preflight skipped: a streamed corpus's largest batch is not known in advance")
            return
        batches = self.sampler.batches()
        if not batches:
            return
        ds = self._train_ids(self.sampler.epoch)
        largest = max(batches, key=lambda b: len(b) * (max(ds.src_lengths[i] for i in b) +
                                                      max(ds.tgt_lengths[i] for i in b)))
        batch = make_batch(ds, largest).to(self.device)
        rng = _rng_state()
        self.model.train()
        try:
            loss, _ = self._loss(batch)
            loss.backward()
        except RuntimeError as err:
            if not is_out_of_memory(err):
                raise
            raise BatchTooLarge(f"the largest training batch ({_shapes([batch])} tokens, source->target) runs out "
                                f"of memory on {self.device}: lower train.max_tokens (now "
                                f"{self.cfg.train.max_tokens}) or use gradient accumulation (train.update_freq)") from err
        finally:
            out = loss = None
            self.optimizer.zero_grad(set_to_none=True)
            _set_rng_state(rng)
            _free_memory()

    # -------------------------------------------------------------------------------- signals
    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current update, save a checkpoint and raise :class:`TrainingInterrupted`."""
        self._stop_signal = reason

    def _install_signal_handlers(self) -> dict:
        """SIGTERM/SIGINT: the first asks for a clean stop, a second exits at once (R16)."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            # No logging here: the handler runs between two bytecodes of the main thread, which may
            # be inside a log handler's buffered write; a nested write then fails ("reentrant call")
            # and logging drops the line. The main loop logs the stop (_signalled); os.write is one
            # unbuffered system call, safe to use for the immediate notice on stderr.
            # The stop is recorded before the notice is written: a second signal may run its handler
            # inside this one (CPython checks for signals between any two bytecodes), and must
            # find the first one's mark.
            name = signal.Signals(signum).name
            if self._stop_signal is not None:
                _raw_stderr(f"second signal ({name}): exiting now without saving\n")
                os._exit(128 + signum)
            self.request_stop(name)
            self._signal_received = name
            _raw_stderr(f"{name} received: finishing the current update, then saving and exiting "
                        "(send it again to exit at once)\n")

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    # ----------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Run until max epochs/steps/time or early stopping; then evaluate the test split.

        Returns the results dict also written to ``<run>/results.json``.
        """
        try:
            return self._train()
        finally:
            self.run_lock.release()

    def close(self) -> None:
        """Release the run directory without training (:meth:`train` releases it when it ends)."""
        self.run_lock.release()
        self.monitor.close()

    def _train(self) -> dict:
        tc = self.cfg.train
        start = self._start = time.monotonic() - self.progress.train_seconds
        previous_handlers = self._install_signal_handlers()
        try:
            if tc.preflight and self.progress.step == 0:
                self.preflight()
            # a resumed run may have nothing left to train, or may have stopped early before a kill
            stop_reason = self.progress.stop_reason or self._budget_exhausted(start, agree=True)
            if self.progress.stop_reason:
                log.info("the run stopped early before it was interrupted (%s): going on to the final evaluation",
                         stop_reason)
            while stop_reason is None and self.progress.epoch <= tc.max_epochs:
                stop_reason = self._train_epoch(start)
                if stop_reason is not None:  # stopped inside the epoch
                    break
                if self._validation_due(epoch_end=True):
                    stop_reason = self._validate_and_save()
                    if stop_reason is None:
                        self._refit_schedule(start)
                self.progress.epoch += 1
                if stop_reason is None and self._signalled():
                    stop_reason = INTERRUPTED
            if stop_reason is None:
                stop_reason = f"reached max_epochs={tc.max_epochs}"
            self.progress.train_seconds = time.monotonic() - start
            if stop_reason == INTERRUPTED:
                path = self.save(best=False, scores={}) if self._last_saved_step != self.progress.step \
                    else ckpt_io.resolve_checkpoint(self.ckpt_dir, "latest")
                self.monitor.close()
                raise TrainingInterrupted(path, self.progress.step, self._stop_signal or "stopped")
            if not self.progress.history or self.progress.history[-1]["step"] != self.progress.step:
                self._validate_and_save()
        finally:
            for sig, old in previous_handlers.items():  # a signal during the final evaluation acts as usual
                signal.signal(sig, old)
        log.info("training stopped: %s (%d steps, %.1f min)", stop_reason, self.progress.step,
                 self.progress.train_seconds / 60)
        if not self.dist.is_main:  # rank 0 alone averages, decodes the test split and writes results
            return {}
        results = self._final_evaluation(stop_reason)
        self.monitor.close()
        return results

    def _signalled(self) -> bool:
        """A stop was requested (SIGTERM/SIGINT) on this or, in a distributed job, any process.

        The first call after a signal writes it to the log (the handler itself must not log)."""
        if self._signal_received is not None:
            log.warning("%s received: saving a checkpoint at step %d and exiting", self._signal_received,
                        self.progress.step)
            self._signal_received = None
        return distributed.agree(self.dist, self._stop_signal is not None)

    def _train_epoch(self, start: float) -> Optional[str]:
        tc = self.cfg.train
        self.sampler.set_epoch(self.progress.epoch)
        batches = self._epoch_batches()
        bar = self._progress_bar(None if self.stream is not None else len(self.sampler))
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.monotonic()}
        group: list[Batch] = []
        for batch in batches:
            group.append(batch)
            if len(group) < self.accum:
                continue
            stats = self._update(group)
            group = []
            if stats["skipped"]:
                if self._signalled():
                    return INTERRUPTED
                continue
            window["loss"] += stats["loss"]
            window["nll"] += stats["nll"]
            window["tokens"] += stats["tokens"]
            if bar is not None:
                bar.update(tc.update_freq)
                bar.set_postfix(loss=f"{stats['loss'] / max(1, stats['tokens']):.3f}", step=self.progress.step)
            if self.progress.step % tc.log_every_steps == 0:
                self._log_train(window, stats)
                window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.monotonic()}
            if self._validation_due(epoch_end=False):
                reason = self._validate_and_save()
                if reason:
                    return reason
                self._refit_schedule(start)
            if tc.fit_schedule_to_time and not self.progress.schedule_steps \
                    and self.progress.step >= max(1, self.cfg.optim.warmup_steps):
                if self.progress.cycle_seconds:
                    self._fit_schedule(start)
                else:  # the fit counts the validations' cost: time one, and save the fit with it
                    reason = self._validate_and_save(before_save=lambda: self._fit_schedule(start))
                    if reason:
                        return reason
            reason = self._budget_exhausted(start, agree=True)
            if reason:
                return reason
            if tc.save_every_steps > 0 and self.progress.step % tc.save_every_steps == 0 \
                    and self._last_saved_step != self.progress.step:
                self.save(best=False, scores={})
            if self._signalled():
                return INTERRUPTED
        if bar is not None:
            bar.close()
        return None

    def _epoch_batches(self) -> Iterator[Batch]:
        """This rank's batches of the epoch, from the position the sampler (or stream) is at.

        Only whole updates are trained: an epoch's last ``len % update_freq`` batches are skipped
        (a stream, whose length is unknown, leaves its incomplete last group unused the same way).
        In a distributed job a rank's batches are handed out only when the whole update group has
        been read (:func:`nmt.train.distributed.owns_batch`), so every rank's data position, the
        one saved in checkpoints, is the end of the same update.
        """
        uf, dist = self.cfg.train.update_freq, self.dist
        mine = (lambda pos: True) if not dist.enabled else (lambda pos: distributed.owns_batch(pos, uf, dist))
        if self.stream is not None:
            usable = None  # read the group's last batch too, so the stream has passed the whole group
            items = self.stream.iterate(keep=lambda pos: mine(pos) or pos % uf == uf - 1)
            positioned = ((self.stream.batches_consumed - 1, b) for b in items)
        else:
            usable = len(self.sampler) - len(self.sampler) % uf
            ids = self._train_ids(self.sampler.epoch)
            positioned = ((self.sampler.batches_consumed - 1, idx) for idx in self.sampler)
        pending: list[Batch] = []
        for position, item in positioned:
            if usable is not None and position >= usable:
                continue
            if mine(position):
                batch = (item if self.stream is not None else make_batch(ids, item)).to(self.device)
                if not dist.enabled:
                    yield batch
                    continue
                pending.append(batch)
            if dist.enabled and position % uf == uf - 1:
                yield from pending
                pending = []

    def _train_ids(self, epoch: int) -> TokenizedDataset:
        """The training ids of ``epoch``: fixed, or that epoch's sampled segmentation
        (``data.tokenizer.enable_sampling``)."""
        sampling = self.data.train_sampling
        return self.data.train if sampling is None else sampling.dataset(epoch)

    def _epoch_lengths(self, epoch: int) -> tuple:
        """``(src_lengths, tgt_lengths)`` of ``epoch``'s training ids (the bucketing sampler's input)."""
        ids = self._train_ids(epoch)
        return ids.src_lengths, ids.tgt_lengths

    def _update(self, group: list[Batch]) -> dict:
        """One optimizer update over ``group`` (gradient accumulation); the loss is normalised by
        the target tokens of the whole update (over every process in a distributed job, where DDP
        averages the gradients, hence the factor ``world_size``)."""
        tc, dist = self.cfg.train, self.dist
        self.model.train()
        total_loss = total_nll = 0.0
        ntokens = sum(b.ntokens for b in group)
        if dist.enabled:
            ntokens = int(distributed.all_reduce(dist, [ntokens])[0])
        p = self.progress
        try:
            for i, batch in enumerate(group):
                sync = not dist.enabled or i == len(group) - 1  # all-reduce once, after the last backward
                with contextlib.nullcontext() if sync else self.train_model.no_sync():
                    loss, nll = self._loss(batch, self.train_model)
                    scaled = loss * dist.world_size / ntokens
                    (scaled if self.scaler is None else self.scaler.scale(scaled)).backward()
                total_loss += float(loss.detach())
                total_nll += float(nll.detach())
        except RuntimeError as err:
            if not is_out_of_memory(err) or dist.enabled:  # a rank cannot skip alone: its peers wait in all-reduce
                raise
            # R15: skip the update, say which batch; parameters and step count untouched
            loss = nll = None
            self.optimizer.zero_grad(set_to_none=True)
            _free_memory()
            p.oom_skips += 1
            log.warning("update after step %d skipped: out of memory on a batch of %s (%s); %d such skips in all. "
                        "Lower train.max_tokens (now %d) if this repeats", p.step,
                        _shapes(group), str(err).splitlines()[0][:200], p.oom_skips, tc.max_tokens)
            return {"loss": 0.0, "nll": 0.0, "tokens": ntokens, "grad_norm": float("nan"), "src_tokens": 0,
                    "skipped": True}
        src_tokens = sum(int(b.src_lengths.sum()) for b in group)
        if dist.enabled:  # the same loss on every rank, so every rank takes the same skip decisions
            total_loss, total_nll, src_tokens = distributed.all_reduce(dist, [total_loss, total_nll, src_tokens])
            src_tokens = int(src_tokens)
        clip = self.cfg.optim.clip_norm if self.cfg.optim.clip_norm > 0 else float("inf")
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip))
        if self.scaler is not None and math.isfinite(total_loss) and not math.isfinite(grad_norm):
            # R14: fp16 gradient overflow; the scaler skips the step and halves the scale
            scale = self.scaler.get_scale()
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            p.overflow_skips += 1
            log.info("update after step %d skipped: fp16 gradient overflow at loss scale %g (now %g); %d in all",
                     p.step, scale, self.scaler.get_scale(), p.overflow_skips)
            return {"loss": total_loss, "nll": total_nll, "tokens": ntokens, "grad_norm": grad_norm,
                    "src_tokens": 0, "skipped": True}
        if not (math.isfinite(grad_norm) and math.isfinite(total_loss)):
            # R13: skip the update (parameters, optimizer, schedule and step count untouched)
            if self.scaler is not None:
                self.scaler.update()  # closes this iteration's unscale_; the scale is lowered
            self.optimizer.zero_grad(set_to_none=True)
            p.skipped_steps += 1
            p.bad_steps_in_a_row += 1
            first = [int(i) for i in group[0].indices[:8]]
            log.warning("update after step %d skipped: loss %s, gradient norm %s (batch src->tgt shapes %s, "
                        "first example indices %s); %d skipped in a row, %d in all", p.step, total_loss, grad_norm,
                        _shapes(group), first, p.bad_steps_in_a_row, p.skipped_steps)
            limit = self.cfg.train.max_bad_steps
            if limit > 0 and p.bad_steps_in_a_row >= limit:
                raise TrainingDiverged(f"{p.bad_steps_in_a_row} updates in a row had a non-finite loss or gradient "
                                       f"(train.max_bad_steps={limit}) after step {p.step}; the last checkpoint "
                                       "is the last finite model. Lower optim.lr or raise optim.warmup_steps")
            return {"loss": total_loss, "nll": total_nll, "tokens": ntokens, "grad_norm": grad_norm,
                    "src_tokens": 0, "skipped": True}
        p.bad_steps_in_a_row = 0
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        self.progress.step += 1
        self.progress.tgt_tokens += ntokens
        self.progress.src_tokens += src_tokens
        return {"loss": total_loss, "nll": total_nll, "tokens": ntokens, "grad_norm": grad_norm,
                "src_tokens": src_tokens, "skipped": False}

    def _log_train(self, window: dict, stats: dict) -> None:
        elapsed = max(1e-9, time.monotonic() - window["time"])
        tokens = max(1, window["tokens"])
        values = {"loss": window["loss"] / tokens, "nll": window["nll"] / tokens,
                  "ppl": math.exp(min(50.0, window["nll"] / tokens)), "lr": self.scheduler.get_last_lr()[0],
                  "grad_norm": stats["grad_norm"], "tgt_tokens_per_s": window["tokens"] / elapsed}
        self.monitor.scalars(self.progress.step, values, "train")
        log.info("epoch %d step %d %s", self.progress.epoch, self.progress.step, format_scalars(values))

    def _elapsed(self, start: float) -> float:
        """Seconds of training so far (earlier sessions of a resumed run included)."""
        return time.monotonic() - start

    def _schedule(self, total_steps: int) -> dict:
        """Keyword arguments of :func:`nmt.train.optim.lr_lambda` for this config, decaying over
        ``total_steps`` updates."""
        oc = self.cfg.optim
        return {"scheduler": oc.scheduler, "lr": oc.lr, "warmup_steps": oc.warmup_steps,
                "warmup_init_lr": oc.warmup_init_lr, "min_lr": oc.min_lr, "d_model": self.cfg.model.d_model,
                "total_steps": total_steps}

    def _apply_fitted_schedule(self) -> None:
        """Put the scheduler on the decay fitted to the time budget: ending at
        ``progress.schedule_steps`` (same warmup and peak), then shortened at each of
        ``progress.schedule_refits`` (:func:`nmt.train.optim.shorten_decay`); and set the
        optimizer's learning rate to the new curve at the current update."""
        p, oc = self.progress, self.cfg.optim
        fn = lr_lambda(**self._schedule(p.schedule_steps))
        for at_step, end in p.schedule_refits:
            fn = shorten_decay(fn, at_step, end, oc.scheduler, oc.min_lr / oc.lr)
        self.scheduler.lr_lambdas = [fn] * len(self.optimizer.param_groups)
        last = self.scheduler.last_epoch
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * fn(last)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _validation_due(self, epoch_end: bool) -> bool:
        """Whether to validate now: after an update (``epoch_end=False``) with
        ``train.valid_every_steps``, otherwise at the end of every ``valid_every_epochs``-th epoch;
        never before ``train.validate_after_updates``."""
        tc, p = self.cfg.train, self.progress
        if p.step < tc.validate_after_updates:
            return False
        if epoch_end:
            return tc.valid_every_steps <= 0 and p.epoch % tc.valid_every_epochs == 0
        return tc.valid_every_steps > 0 and p.step % tc.valid_every_steps == 0

    def _steps_per_cycle(self) -> float:
        """Updates between two validations (for the time-budget estimate)."""
        tc, p = self.cfg.train, self.progress
        if tc.valid_every_steps > 0:
            return float(tc.valid_every_steps)
        if self.stream is None:
            return len(self.sampler) * tc.valid_every_epochs / max(1, tc.update_freq)
        # streamed data: epochs have no known length; use the validations seen so far
        return p.step / len(p.cycle_seconds) if p.cycle_seconds else math.inf

    def _earliest_end(self, steps: int) -> int:
        """The smallest of every process's schedule end (a distributed job follows one curve)."""
        if not self.dist.enabled:
            return steps
        return -int(distributed.all_reduce(self.dist, [-float(steps)], op="max")[0])

    def _refit_schedule(self, start: float) -> None:
        """After a validation: when the fitted decay no longer ends inside ``max_time_minutes``
        at the speed measured so far, end it earlier, from the current update and learning rate
        (:func:`nmt.train.budget.refit_schedule_steps`). Every process takes the earliest end."""
        tc, p = self.cfg.train, self.progress
        end = p.schedule_end
        if not end or p.step >= end:
            return
        elapsed = self._elapsed(start)
        steps = refit_schedule_steps(p.step, elapsed, tc.max_time_minutes * 60, end, p.cycle_seconds,
                                     self._steps_per_cycle())
        steps = self._earliest_end(steps)
        if steps >= end:
            return
        p.schedule_refits.append([p.step, steps])
        self._apply_fitted_schedule()
        log.info("schedule shortened to fit train.max_time_minutes=%g: the %s decay now ends at update %d "
                 "instead of %d (%d updates in %.1f min so far)", tc.max_time_minutes, self.cfg.optim.scheduler,
                 steps, end, p.step, elapsed / 60)

    def _fit_schedule(self, start: float) -> None:
        """train.fit_schedule_to_time: measure the time per update (validations included) and
        shorten the decay to what fits in ``max_time_minutes`` (:mod:`nmt.train.budget`). Every
        process of a distributed job takes the smallest estimate."""
        tc, p = self.cfg.train, self.progress
        elapsed = self._elapsed(start)
        steps = fit_schedule_steps(p.step, elapsed, tc.max_time_minutes * 60, tc.max_steps,
                                   p.cycle_seconds, self._steps_per_cycle(),
                                   validate_after=tc.validate_after_updates)
        steps = self._earliest_end(steps)
        p.schedule_steps = steps
        self._apply_fitted_schedule()
        log.info("schedule fitted to train.max_time_minutes=%g: the %s decay ends at update %d%s (%d updates in "
                 "%.1f min so far, %d validations taking %.1f min)", tc.max_time_minutes,
                 self.cfg.optim.scheduler, steps, " (train.max_steps)" if steps == tc.max_steps else "", p.step,
                 elapsed / 60, len(p.cycle_seconds), sum(p.cycle_seconds) / 60)

    def _budget_exhausted(self, start: float, agree: bool = False) -> Optional[str]:
        """The reason to stop when the step or time budget is used up. With ``agree`` every
        process of a distributed job stops when any one's clock says so."""
        tc = self.cfg.train
        if tc.max_steps > 0 and self.progress.step >= tc.max_steps:
            return f"reached max_steps={tc.max_steps}"
        if self.progress.schedule_end and self.progress.step >= self.progress.schedule_end:
            return (f"reached the end of the schedule fitted to max_time_minutes={tc.max_time_minutes} "
                    f"({self.progress.schedule_end} updates)")
        out_of_time = tc.max_time_minutes > 0 and self._elapsed(start) >= tc.max_time_minutes * 60
        if tc.max_time_minutes > 0 and agree:
            out_of_time = distributed.agree(self.dist, out_of_time)
        return f"reached max_time_minutes={tc.max_time_minutes}" if out_of_time else None

    def _progress_bar(self, total: Optional[int]):
        show = self.cfg.train.progress_bar
        if show is None:
            show = sys.stderr.isatty()
        if not self.dist.is_main:
            show = False
        if not show:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=f"epoch {self.progress.epoch}", leave=False, dynamic_ncols=True)

def _shapes(group: list[Batch]) -> str:
    """``"(B, S)->(B, T), ..."``: source and target shapes of the batches of one update."""
    return ", ".join(f"{tuple(b.src_tokens.shape)}->{tuple(b.tgt_out.shape)}" for b in group)



"""The training loop: batches -> :meth:`Updater.train_step` -> validation and checkpoints, until
the step, epoch or time budget is spent or early stopping; then the final evaluation. It is
built from parts with explicit arguments (as fairseq's ``validate_and_save`` and OpenNMT-py's
``model_saver``/``earlystopper`` are given to their loops): :class:`~nmt.train.step.Updater`,
:class:`~nmt.train.checkpoints.Checkpoints`, :class:`~nmt.train.validator.Validator`,
:class:`~nmt.train.budget.TimeBudget` and :func:`~nmt.train.finish.final_evaluation`."""
from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch

from nmt.config import Config, config_to_yaml
from nmt.data.batch import Batch
from nmt.data.dataset import BucketingSampler, TokenizedDataset, make_batch
from nmt.models import build_model, count_parameters
from nmt.models.seq2seq import TrainingLoss
from nmt.tensorboard.writer import read_probe
from nmt.train import distributed
from nmt.train.allocator import keep_freed_memory
from nmt.train.budget import TimeBudget
from nmt.train.checkpoints import Checkpoints
from nmt.train.data import PreparedData
from nmt.train.distributed import SINGLE, DistContext
from nmt.train.finish import final_evaluation
from nmt.train.monitor import Monitor
from nmt.train.optim import apply_fitted_schedule, build_optimizer, build_scheduler, schedule_args
from nmt.train.signals import StopRequests, TrainingInterrupted
from nmt.train.resume import restore, trainer_state
from nmt.train.state import Progress, RunDirError, rng_state, seed_everything
from nmt.train.step import BatchTooLarge, StepStats, TrainingDiverged, Updater  # noqa: F401 (the CLI's errors)
from nmt.train.validator import Validator
from nmt.versions import format_versions

log = logging.getLogger("nmt.train")

INTERRUPTED = "interrupted"
__all__ = ["Trainer", "TrainingInterrupted", "TrainingDiverged", "BatchTooLarge", "RunDirError"]


class Trainer:
    """Trains ``cfg.model`` on prepared data and writes everything under ``run_dir``.

    Args:
        cfg: the resolved configuration.
        data: tokenizer, training ids and dev/test text (:func:`nmt.train.data.prepare_data`).
        run_dir: output directory, the same for every process of a distributed job.
        dist: this process's place in a ``torchrun`` job (:mod:`nmt.train.distributed`); rank 0
            alone writes checkpoints, TensorBoard and results.
    Raises:
        ValueError: ``train.update_freq`` is not a multiple of the number of processes.
        RunDirError: the run directory cannot be used (in use, finished, another config, ...).
    """

    def __init__(self, cfg: Config, data: PreparedData, run_dir: Path, dist: DistContext = SINGLE) -> None:
        self.cfg, self.data, self.dist, tc = cfg, data, dist, cfg.train
        self.accum = distributed.per_rank_update_freq(tc.update_freq, dist)  # batches per update on this rank
        self.device = self._setup_device()
        seed_everything(tc.seed)
        tok = data.tokenizer
        self.model = build_model(cfg.model, tok.src_vocab_size, tok.tgt_vocab_size).to(self.device)
        self.updater = self._build_updater()
        self.optimizer, self.scheduler = self.updater.optimizer, self.updater.scheduler
        # the batches' order and position: in-memory ids with the bucketing sampler, or a streamed
        # corpus (data.streaming=true), which yields whole batches and has no length
        self.stream = data.train_stream
        self.sampler = self.stream if self.stream is not None else BucketingSampler(
            data.train.src_lengths, data.train.tgt_lengths, max_tokens=tc.max_tokens, shuffle=True, seed=tc.seed,
            epoch_lengths=None if data.train_sampling is None else self._epoch_lengths)
        self.progress, self.budget, self.stops = Progress(), TimeBudget(), StopRequests()
        self.num_params = count_parameters(self.model)
        self._start: Optional[float] = None
        valid_ids = TokenizedDataset.from_text(tok, data.valid.src, data.valid.tgt, name="valid",
                                               max_len=cfg.model.max_positions - 1)
        probes = read_probe(tc.attention.probe) if tc.attention.probe else None  # else: the first dev sentences
        distributed.check_ranks_agree(dist, cfg, tok, data)
        self.checkpoints = Checkpoints(run_dir, cfg, tok, dist)
        self.checkpoints.open()
        try:
            self.resumed_from = self.checkpoints.resume(self.restore)
        except BaseException:
            self.checkpoints.close()
            raise
        if self.budget.schedule_steps:  # a resumed run keeps the schedule fitted to its time budget
            self.apply_fitted_schedule()
        self.monitor = Monitor(Path(run_dir) / "tensorboard", enabled=dist.is_main,
                               purge_step=self.progress.step + 1 if self.resumed_from else None)
        self.validator = Validator(cfg, self.model, tok, data.valid, valid_ids, probes, self.monitor, self.device,
                                   self.updater.loss)
        log.info("versions: %s", format_versions())
        size = "streamed training data" if self.stream is not None else \
            f"{len(data.train)} training pairs, {len(self.sampler)} batches per epoch"
        log.info("model %s: %d parameters; %s%s", cfg.model.arch, self.num_params, size,
                 f"; {dist.world_size} processes x {self.accum} batches per update" if dist.enabled else "")

    def _build_updater(self) -> Updater:
        """The loss module (DDP-wrapped in a job of several processes), optimizer, loss scaler and schedule."""
        tc, oc, dist = self.cfg.train, self.cfg.optim, self.dist
        plain = TrainingLoss(self.model, tc.label_smoothing, fused=str(tc.precision) == "fp32")
        loss_module: torch.nn.Module = plain
        if dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            # the same initial weights everywhere (DDP also broadcasts rank 0's); dropout differs per rank
            loss_module = DistributedDataParallel(plain, device_ids=[dist.local_rank] if self.device.type == "cuda" else None)
            torch.manual_seed(tc.seed + 1000003 * dist.rank)
        optimizer = build_optimizer(self.model, oc.optimizer, oc.lr, oc.betas, oc.eps, oc.weight_decay)
        scaler = torch.amp.GradScaler(self.device.type, init_scale=tc.fp16_init_scale) if tc.precision == "fp16" else None
        scheduler = build_scheduler(optimizer, **schedule_args(oc, self.cfg.model.d_model, tc.max_steps))
        return Updater(self.model, loss_module, plain, optimizer, scheduler, scaler, dist, precision=tc.precision,
                       clip_norm=oc.clip_norm, max_bad_steps=tc.max_bad_steps, max_tokens=tc.max_tokens)

    def _setup_device(self) -> torch.device:
        tc, dist = self.cfg.train, self.dist
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        device = torch.device("cuda", dist.local_rank) if dist.backend == "nccl" else \
            torch.device("cuda" if torch.cuda.is_available() else "cpu") if tc.device == "auto" else torch.device(tc.device)
        if tc.keep_freed_memory and device.type == "cpu":
            keep_freed_memory()
        return device

    def train(self) -> dict:
        """Run until max epochs/steps/time or early stopping; then evaluate the test split.
        Returns the results also written to ``<run>/results.json`` (rank 0; ``{}`` elsewhere).

        Raises:
            TrainingInterrupted: stopped by a signal after saving; TrainingDiverged; RunDirError.
        """
        try:
            return self._train()
        finally:
            self.checkpoints.close()

    def close(self) -> None:
        """Release the run directory without training (:meth:`train` releases it when it ends)."""
        self.checkpoints.close()
        self.monitor.close()

    def _train(self) -> dict:
        tc, p = self.cfg.train, self.progress
        start = self._start = time.monotonic() - p.train_seconds
        previous = self.stops.install()
        try:
            if tc.preflight and p.step == 0:
                self.preflight()
            reason = p.stop_reason or self._budget_reason(start)  # a resumed run may have nothing left to do
            if p.stop_reason:
                log.info("the run stopped early before it was interrupted (%s): going on to the final evaluation",
                         reason)
            while reason is None and self.progress.epoch <= tc.max_epochs:
                reason = self.train_epoch(start)
                if reason is not None:  # stopped inside the epoch
                    break
                if self.validation_due(epoch_end=True):
                    reason = self.validate_and_save()
                    if reason is None:
                        self._refit_schedule(start)
                self.progress.epoch += 1
                if reason is None and self._signalled():
                    reason = INTERRUPTED
            reason = reason or f"reached max_epochs={tc.max_epochs}"
            self.progress.train_seconds = time.monotonic() - start
            if reason == INTERRUPTED:
                self._save_and_stop()
            if not self.progress.history or self.progress.history[-1]["step"] != self.progress.step:
                self.validate_and_save()
        finally:
            self.stops.restore(previous)  # a signal during the final evaluation acts as usual
        log.info("training stopped: %s (%d steps, %.1f min)", reason, self.progress.step,
                 self.progress.train_seconds / 60)
        if not self.dist.is_main:  # rank 0 alone averages, decodes the test split and writes results
            return {}
        results = final_evaluation(reason, cfg=self.cfg, model=self.model, tokenizer=self.data.tokenizer,
                                   test=self.data.test, progress=self.progress, budget=self.budget,
                                   checkpoints=self.checkpoints, validator=self.validator, monitor=self.monitor,
                                   num_params=self.num_params, world_size=self.dist.world_size)
        self.monitor.close()
        return results

    def train_epoch(self, start: float) -> Optional[str]:
        """Train the rest of the current epoch; returns why training must stop, or None."""
        tc = self.cfg.train
        self.sampler.set_epoch(self.progress.epoch)
        bar = self.monitor.progress_bar(None if self.stream is not None else len(self.sampler), self.progress.epoch,
                                        self.cfg.train.progress_bar)
        window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.monotonic()}
        group: list[Batch] = []
        for batch in self.epoch_batches():
            group.append(batch)
            if len(group) < self.accum:
                continue
            stats, group = self.step(group), []
            if stats.skipped:
                if self._signalled():
                    return INTERRUPTED
                continue
            window["loss"] += stats.loss
            window["nll"] += stats.nll
            window["tokens"] += stats.tokens
            if bar is not None:
                bar.update(tc.update_freq)
                bar.set_postfix(loss=f"{stats.loss / max(1, stats.tokens):.3f}", step=self.progress.step)
            if self.progress.step % tc.log_every_steps == 0:
                self.monitor.log_train(self.progress.epoch, self.progress.step, window, stats.grad_norm,
                                       self.scheduler.get_last_lr()[0])
                window = {"loss": 0.0, "nll": 0.0, "tokens": 0, "time": time.monotonic()}
            reason = self._after_update(start)
            if reason:
                return reason
        if bar is not None:
            bar.close()
        return None

    def _after_update(self, start: float) -> Optional[str]:
        """Validation, the schedule fit, the budget, periodic saves and signals after an update."""
        tc, p = self.cfg.train, self.progress
        if self.validation_due(epoch_end=False):
            reason = self.validate_and_save()
            if reason:
                return reason
            self._refit_schedule(start)
        if tc.fit_schedule_to_time and not self.budget.schedule_steps and p.step >= max(1, self.cfg.optim.warmup_steps):
            if self.budget.cycle_seconds:
                self._fit_schedule(start)
            else:  # the fit counts the validations' cost: time one, and save the fit with it
                reason = self.validate_and_save(before_save=lambda: self._fit_schedule(start))
                if reason:
                    return reason
        reason = self._budget_reason(start)
        if reason:
            return reason
        if tc.save_every_steps > 0 and p.step % tc.save_every_steps == 0 and self.checkpoints.last_saved_step != p.step:
            self.save(best=False, scores={})
        return INTERRUPTED if self._signalled() else None

    def step(self, group: list[Batch]) -> StepStats:
        """One optimizer update over ``group`` (:meth:`Updater.train_step`)."""
        return self.updater.train_step(group, self.progress)

    def epoch_batches(self) -> Iterator[Batch]:
        """This rank's batches of the epoch, from the position the sampler (or stream) is at; only
        whole updates (:func:`nmt.train.distributed.rank_batches`)."""
        uf, dist = self.cfg.train.update_freq, self.dist
        if self.stream is not None:  # the group's last batch is read too, so the stream has passed the whole group
            keep = (lambda pos: True) if not dist.enabled else \
                (lambda pos: distributed.owns_batch(pos, uf, dist) or pos % uf == uf - 1)
            positioned = ((self.stream.batches_consumed - 1, b) for b in self.stream.iterate(keep=keep))
            return distributed.rank_batches(positioned, uf, dist, lambda b: b.to(self.device))
        ids = self.train_ids(self.sampler.epoch)
        positioned = ((self.sampler.batches_consumed - 1, idx) for idx in self.sampler)
        return distributed.rank_batches(positioned, uf, dist, lambda idx: make_batch(ids, idx).to(self.device),
                                        usable=len(self.sampler) - len(self.sampler) % uf)

    def train_ids(self, epoch: int) -> TokenizedDataset:
        """The training ids of ``epoch``: fixed, or that epoch's sampled segmentation."""
        sampling = self.data.train_sampling
        return self.data.train if sampling is None else sampling.dataset(epoch)

    def _epoch_lengths(self, epoch: int) -> tuple:
        ids = self.train_ids(epoch)
        return ids.src_lengths, ids.tgt_lengths

    def preflight(self) -> None:
        """Run the epoch's largest batch (most padded tokens) once before the first update (R15).

        Raises:
            BatchTooLarge: it runs out of memory.
        """
        if self.stream is not None:
            log.info("memory preflight skipped: a streamed corpus's largest batch is not known in advance")
            return
        batches = self.sampler.batches()
        if batches:
            ds = self.train_ids(self.sampler.epoch)
            largest = max(batches, key=lambda b: len(b) * int(ds.src_lengths[b].max() + ds.tgt_lengths[b].max()))
            self.updater.preflight(make_batch(ds, largest).to(self.device))

    def validation_due(self, epoch_end: bool) -> bool:
        """After an update (``epoch_end=False``) with ``train.valid_every_steps``, else at the end of
        every ``valid_every_epochs``-th epoch; never before ``train.validate_after_updates``."""
        tc, p = self.cfg.train, self.progress
        if p.step < tc.validate_after_updates:
            return False
        if epoch_end:
            return tc.valid_every_steps <= 0 and p.epoch % tc.valid_every_epochs == 0
        return tc.valid_every_steps > 0 and p.step % tc.valid_every_steps == 0

    def validate_and_save(self, before_save: Optional[Callable[[], None]] = None) -> Optional[str]:
        """Validate (rank 0), time the cycle, checkpoint; returns an early-stopping reason.

        In a distributed job the others wait, then take rank 0's outcome and counters; a failure
        on rank 0 is sent to every rank, which all stop (R34). ``before_save`` runs just before
        the checkpoint is written (the schedule fitted at warmup end is saved with it)."""
        t0 = time.monotonic()
        outcome = failure = None
        if self.dist.is_main:
            try:
                outcome = self.validator.validate(self.progress)
            except Exception as err:
                if not self.dist.enabled:
                    raise
                failure = err
        if self.dist.enabled:
            message = None if failure is None else f"validation failed on rank 0: {type(failure).__name__}: {failure}"
            outcome, progress, budget, message = distributed.broadcast_object(
                self.dist, (outcome, self.progress.to_dict(), self.budget.to_dict(), message))
            if failure is not None:
                raise failure
            if message is not None:
                raise distributed.PeerFailed(message)
            self.progress, self.budget = Progress.from_dict(progress), TimeBudget.from_dict(budget)
        self.budget.record_cycle(time.monotonic() - t0, outcome.figure_seconds, self.cfg.train.attention.every)
        self.progress.stop_reason = outcome.stop_reason or ""  # saved: a re-run after a kill does not train on
        if before_save is not None:
            before_save()
        self.save(best=outcome.improved, scores=outcome.scores)
        return outcome.stop_reason

    def save(self, best: bool, scores: dict) -> Path:
        """Checkpoint ``step-<N>`` (every process calls it; rank 0 writes)."""
        p = self.progress
        if self._start is not None:
            p.train_seconds = time.monotonic() - self._start
        rng_ranks = distributed.all_gather_object(self.dist, rng_state()) if self.dist.enabled else None
        meta = {"step": p.step, "epoch": p.epoch, "valid": scores, "num_params": self.num_params,
                "config_sha256": hashlib.sha256(config_to_yaml(self.cfg).encode()).hexdigest()}
        state = lambda: trainer_state(self.optimizer, self.scheduler, self.updater.scaler, self.sampler,  # noqa: E731
                                      self.progress, self.budget, rng_ranks)  # called on rank 0 only
        return self.checkpoints.save(p.step, self.model, meta, state, best, scores)

    def restore(self, ckpt: Path) -> None:
        """Resume from ``ckpt`` bitwise (:func:`nmt.train.resume.restore`)."""
        self.progress, self.budget = restore(ckpt, self.checkpoints, self.model, self.optimizer, self.scheduler,
                                             self.updater.scaler, self.sampler, self.device, self.dist,
                                             self.cfg.train.seed)

    def _save_and_stop(self) -> None:
        p = self.progress
        path = self.save(best=False, scores={}) if self.checkpoints.last_saved_step != p.step \
            else self.checkpoints.resolve("latest")
        self.monitor.close()
        raise TrainingInterrupted(path, p.step, self.stops.reason or "stopped")

    def request_stop(self, reason: str = "stop requested") -> None:
        """Finish the current update, save a checkpoint and raise :class:`TrainingInterrupted`."""
        self.stops.request(reason)

    def _signalled(self) -> bool:
        """A stop was requested on this or, in a distributed job, any process."""
        self.stops.announce(self.progress.step)
        return distributed.agree(self.dist, self.stops.requested)

    def elapsed(self, start: float) -> float:
        """Seconds of training so far, earlier sessions of a resumed run included (the budget's clock)."""
        return time.monotonic() - start

    def _budget_reason(self, start: float) -> Optional[str]:
        """Why the step or time budget stops training now (every process agrees on the clock)."""
        tc = self.cfg.train
        reason = self.budget.exhausted(self.progress.step, self.elapsed(start), tc.max_steps, tc.max_time_minutes)
        if reason or tc.max_time_minutes <= 0:
            return reason
        out = distributed.agree(self.dist, TimeBudget.out_of_time(self.elapsed(start), tc.max_time_minutes))
        return f"reached max_time_minutes={tc.max_time_minutes}" if out else None

    def apply_fitted_schedule(self) -> None:
        """The scheduler on the decay fitted to the time budget (and its later shortenings)."""
        apply_fitted_schedule(self.optimizer, self.scheduler, self.cfg.optim, self.cfg.model.d_model,
                              self.budget.schedule_steps, self.budget.schedule_refits)

    def _steps_per_cycle(self) -> float:
        """Updates between two validations (for the time-budget estimate)."""
        tc, p = self.cfg.train, self.progress
        if tc.valid_every_steps > 0:
            return float(tc.valid_every_steps)
        if self.stream is None:
            return len(self.sampler) * tc.valid_every_epochs / max(1, tc.update_freq)
        cycles = self.budget.cycle_seconds  # streamed data: epochs have no known length
        return p.step / len(cycles) if cycles else math.inf

    def _fit_schedule(self, start: float) -> None:
        self.budget.fit(self.progress.step, self.elapsed(start), self.cfg.train, self._steps_per_cycle(),
                        str(self.cfg.optim.scheduler), lambda n: distributed.smallest(self.dist, n))
        self.apply_fitted_schedule()

    def _refit_schedule(self, start: float) -> None:
        if self.budget.refit(self.progress.step, self.elapsed(start), self.cfg.train.max_time_minutes,
                             self._steps_per_cycle(), str(self.cfg.optim.scheduler), lambda n: distributed.smallest(self.dist, n)):
            self.apply_fitted_schedule()

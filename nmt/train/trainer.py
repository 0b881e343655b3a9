"""The training loop: batches -> model -> label-smoothed loss -> Adam, with validation BLEU,
early stopping, checkpoints and TensorBoard."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import torch
from torch import Tensor

from nmt.attention_maps import attention_statistics, collect_attention
from nmt.config import Config, config_from_yaml, config_to_yaml
from nmt.data.batch import Batch
from nmt.data.dataset import BucketingSampler, TokenizedDataset, make_batch
from nmt.evaluate import score_corpus, translate_texts
from nmt.io import atomic_write_text
from nmt.models import build_model, count_parameters
from nmt.search import Hypothesis
from nmt.train import checkpoint as ckpt_io
from nmt.train import distributed
from nmt.train.data import PreparedData
from nmt.train.distributed import SINGLE, DistContext
from nmt.train.loss import label_smoothed_nll, linear_label_smoothed_nll
from nmt.train.monitor import Monitor, format_scalars, hparams_of, samples_markdown
from nmt.versions import format_versions, versions
from nmt.train.optim import build_optimizer, build_scheduler

log = logging.getLogger("nmt.train")

EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: stopped by a signal after saving; re-run the same command to resume
EXIT_DIVERGED = 4  # train.max_bad_steps non-finite updates in a row
INTERRUPTED = "interrupted"

# Config keys that may change between an interrupted run and its resumption (RELIABILITY.md R9):
# budgets, logging, devices, what happens after training. A key ending in "." allows a whole group.
RESUME_ALLOWED = ("name", "train.max_steps", "train.max_time_minutes", "train.max_epochs", "train.patience",
                  "train.log_every_steps", "train.progress_bar", "train.device", "train.num_threads",
                  "train.keep_last", "train.save_every_steps", "train.resume", "train.overwrite",
                  "train.max_bad_steps", "train.preflight", "train.eval_test", "train.tune_length_penalty", "train.average_last",
                  "train.average_best",
                  "train.num_samples", "train.attention.", "search.batch_size", "data.dir", "data.download",
                  "data.tokenizer.cache_dir")


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: it holds a finished run, its checkpoint was
    written with a different configuration or tokenizer, or it is not writable."""


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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (R27)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class Progress:
    """Counters saved in every checkpoint."""

    step: int = 0  # optimizer updates
    epoch: int = 1
    best_bleu: float = -1.0
    best_step: int = 0
    bad_validations: int = 0  # validations since the best one (early stopping)
    train_seconds: float = 0.0
    tgt_tokens: int = 0  # target tokens trained on (padding excluded)
    src_tokens: int = 0
    skipped_steps: int = 0  # updates skipped for a non-finite loss or gradient (R13)
    bad_steps_in_a_row: int = 0
    oom_skips: int = 0  # updates skipped because a batch ran out of memory (R15)
    overflow_skips: int = 0  # fp16 updates skipped by the loss scaler (gradient overflow), apart from NaNs (R14)
    history: list = field(default_factory=list)  # one dict per validation


class Trainer:
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
        if tc.precision not in ("fp32", "bf16", "fp16"):
            raise ValueError(f"train.precision must be fp32, bf16 or fp16, got {tc.precision!r}")
        self.scaler = torch.amp.GradScaler(self.device.type, init_scale=tc.fp16_init_scale) \
            if tc.precision == "fp16" else None
        self.scheduler = build_scheduler(self.optimizer, scheduler=oc.scheduler, lr=oc.lr,
                                         warmup_steps=oc.warmup_steps, warmup_init_lr=oc.warmup_init_lr,
                                         min_lr=oc.min_lr, d_model=cfg.model.d_model,
                                         total_steps=tc.max_steps)
        # the training batches' order and position: in-memory ids with the bucketing sampler, or
        # a streamed corpus (data.streaming=true), which yields whole batches and has no length
        self.stream = data.train_stream
        self.sampler = self.stream if self.stream is not None else BucketingSampler(
            data.train.src_lengths, data.train.tgt_lengths, max_tokens=tc.max_tokens, shuffle=True, seed=tc.seed)
        self.valid_ids = TokenizedDataset.from_text(tok, data.valid.src, data.valid.tgt, name="valid")
        self.progress = Progress()
        self.num_params = count_parameters(self.model)
        self._stop_signal: Optional[str] = None
        self._start: Optional[float] = None
        self._last_saved_step = -1
        self.resumed_from = self._prepare_run_dir()
        self.monitor = Monitor(self.run_dir / "tensorboard", enabled=dist.is_main,
                               purge_step=self.progress.step + 1 if self.resumed_from else None)
        log.info("versions: %s", format_versions())
        size = "streamed training data" if self.stream is not None else \
            f"{len(data.train)} training pairs, {len(self.sampler)} batches per epoch"
        log.info("model %s: %d parameters; %s%s", cfg.model.arch, self.num_params, size,
                 f"; {dist.world_size} processes x {self.accum} batches per update" if dist.enabled else "")

    # ------------------------------------------------------------------------ run directory
    def _prepare_run_dir(self) -> Optional[Path]:
        """Check the run directory is writable, refuse or clear a finished run, and resume from
        the newest complete checkpoint when there is one (R9, R17, R18). Returns that checkpoint.

        Raises:
            RunDirError: not writable; a finished run without ``train.overwrite``; checkpoints
                with ``train.resume=false``; a checkpoint from a different config or tokenizer.
            nmt.train.checkpoint.CheckpointError: the newest checkpoint cannot be loaded.
        """
        problem = self._check_run_dir() if self.dist.is_main else None
        problem = distributed.broadcast_object(self.dist, problem)  # every rank fails, or none
        if problem is not None:
            raise RunDirError(problem)
        if self.cfg.train.overwrite:
            return None
        checkpoints = [c for c in ckpt_io.complete_checkpoints(self.ckpt_dir) if c.name.startswith("step-")]
        if not checkpoints:
            return None
        self.load_checkpoint(checkpoints[-1])
        return checkpoints[-1]

    def _check_run_dir(self) -> Optional[str]:
        """Rank 0's half of :meth:`_prepare_run_dir`: probe, clear for ``train.overwrite``, or the
        reason the directory cannot be used."""
        tc = self.cfg.train
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe = self.run_dir / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as err:
            return f"run directory {self.run_dir} is not writable: {err}"
        results = self.run_dir / "results.json"
        checkpoints = [c for c in ckpt_io.complete_checkpoints(self.ckpt_dir) if c.name.startswith("step-")]
        if tc.overwrite:
            if results.exists() or checkpoints:
                log.warning("train.overwrite=true: deleting the previous run's checkpoints, TensorBoard logs "
                            "and results in %s", self.run_dir)
            for name in ("checkpoints", "tensorboard"):
                shutil.rmtree(self.run_dir / name, ignore_errors=True)
            for path in [results, *self.run_dir.glob(f"{self.cfg.data.test_split}.hyp.*")]:
                path.unlink(missing_ok=True)
            return None
        if results.exists():
            return (f"{self.run_dir} holds a finished run ({results} exists). Choose another "
                    "directory (hydra.run.dir=...) or start over there with train.overwrite=true "
                    "(deletes its checkpoints, TensorBoard logs and results)")
        if checkpoints and not tc.resume:
            return (f"{self.ckpt_dir} holds checkpoints of an unfinished run and train.resume=false; "
                    "resume it (train.resume=true), start over (train.overwrite=true) or choose "
                    "another directory (hydra.run.dir=...)")
        return None

    def load_checkpoint(self, ckpt: Path) -> None:
        """Resume from ``ckpt``: weights, optimizer, scheduler, counters, data position and RNG
        states, so that training continues bitwise as if it had not stopped (R6-R8).

        Raises:
            RunDirError: ``ckpt`` was written with a configuration that differs outside
                :data:`RESUME_ALLOWED` (every differing key is listed) or with another tokenizer.
            nmt.train.checkpoint.CheckpointError: a file is missing or cannot be loaded safely.
        """
        from safetensors.torch import load_model as st_load

        try:
            saved_cfg = config_from_yaml((ckpt / "config.yaml").read_text(encoding="utf-8"))
            meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        except Exception as err:
            raise ckpt_io.CheckpointError(f"checkpoint {ckpt}: cannot read config.yaml/meta.json: {err}") from err
        diffs = config_differences(saved_cfg, self.cfg)
        if diffs:
            raise RunDirError(f"cannot resume from {ckpt}: the configuration differs in {len(diffs)} key(s) that "
                              "change training:\n  " + "\n  ".join(diffs) + "\nRun with the original "
                              "settings, start over with train.overwrite=true, or choose another directory "
                              "(hydra.run.dir=...)")
        if meta.get("tokenizer_sha256") != self.data.tokenizer.sha256():
            raise RunDirError(f"cannot resume from {ckpt}: its sentencepiece model (sha256 "
                              f"{meta.get('tokenizer_sha256')}) differs from this run's "
                              f"({self.data.tokenizer.sha256()}); the training data or tokenizer settings changed")
        state = ckpt_io.load_trainer_state(ckpt)
        try:
            st_load(self.model, str(ckpt / "model.safetensors"), device=str(self.device))
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.progress = Progress(**state["progress"])
            self.sampler.load_state_dict(state["sampler"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
            self._restore_rng(state)
        except Exception as err:
            raise ckpt_io.CheckpointError(f"checkpoint {ckpt} does not match this model/optimizer: {err}") from err
        # at an epoch boundary the sampler has already moved to the next epoch
        self.progress.epoch = self.sampler.state_dict()["epoch"]
        self._last_saved_step = self.progress.step
        log.info("resuming from %s: step %d, epoch %d (batch %d of it), %.1f min trained, best dev BLEU %.2f",
                 ckpt, self.progress.step, self.progress.epoch, self.sampler.state_dict()["batches_consumed"],
                 self.progress.train_seconds / 60, self.progress.best_bleu)

    def _restore_rng(self, state: dict) -> None:
        """This rank's RNG states from a checkpoint (``rng_ranks`` holds one per process of a
        distributed run). Resuming with another number of processes re-seeds the ranks that have
        no saved state (training continues correctly, but not bitwise as uninterrupted)."""
        per_rank = state.get("rng_ranks") or [state["rng"]]
        if len(per_rank) == self.dist.world_size:
            _set_rng_state(per_rank[self.dist.rank])
            return
        log.warning("checkpoint was written by %d process(es), this run has %d: dropout streams are re-seeded, "
                    "so training is not bitwise the uninterrupted run", len(per_rank), self.dist.world_size)
        _set_rng_state(per_rank[min(self.dist.rank, len(per_rank) - 1)])
        if self.dist.rank >= len(per_rank):
            torch.manual_seed(self.cfg.train.seed + 1000003 * self.dist.rank + self.progress.step)

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
        ds = self.data.train
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
            name = signal.Signals(signum).name
            if self._stop_signal is not None:
                log.error("second signal (%s): exiting now without saving", name)
                logging.shutdown()
                os._exit(128 + signum)
            log.warning("%s received: finishing the current update, then saving and exiting "
                        "(send it again to exit at once)", name)
            self.request_stop(name)

        return {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    # ----------------------------------------------------------------------------------- loop
    def train(self) -> dict:
        """Run until max epochs/steps/time or early stopping; then evaluate the test split.

        Returns the results dict also written to ``<run>/results.json``.
        """
        tc = self.cfg.train
        start = self._start = time.monotonic() - self.progress.train_seconds
        previous_handlers = self._install_signal_handlers()
        try:
            if tc.preflight and self.progress.step == 0:
                self.preflight()
            stop_reason = self._budget_exhausted(start, agree=True)  # a resumed run may have nothing left to train
            while stop_reason is None and self.progress.epoch <= tc.max_epochs:
                stop_reason = self._train_epoch(start)
                if stop_reason is not None:  # stopped inside the epoch
                    break
                if tc.valid_every_steps <= 0 and self.progress.epoch % tc.valid_every_epochs == 0:
                    stop_reason = self._validate_and_save()
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
        """A stop was requested (SIGTERM/SIGINT) on this or, in a distributed job, any process."""
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
            if tc.valid_every_steps > 0 and self.progress.step % tc.valid_every_steps == 0:
                reason = self._validate_and_save()
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
            positioned = ((self.sampler.batches_consumed - 1, idx) for idx in self.sampler)
        pending: list[Batch] = []
        for position, item in positioned:
            if usable is not None and position >= usable:
                continue
            if mine(position):
                batch = (item if self.stream is not None else make_batch(self.data.train, item)).to(self.device)
                if not dist.enabled:
                    yield batch
                    continue
                pending.append(batch)
            if dist.enabled and position % uf == uf - 1:
                yield from pending
                pending = []

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

    def _budget_exhausted(self, start: float, agree: bool = False) -> Optional[str]:
        """The reason to stop when the step or time budget is used up. With ``agree`` every
        process of a distributed job stops when any one's clock says so."""
        tc = self.cfg.train
        if tc.max_steps > 0 and self.progress.step >= tc.max_steps:
            return f"reached max_steps={tc.max_steps}"
        out_of_time = tc.max_time_minutes > 0 and time.monotonic() - start >= tc.max_time_minutes * 60
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

    # ----------------------------------------------------------------------------- validation
    @torch.no_grad()
    def valid_loss(self) -> dict:
        """Teacher-forced loss and perplexity on the dev set (no label smoothing in ``nll``)."""
        ds = self.valid_ids
        sampler = BucketingSampler(ds.src_lengths, ds.tgt_lengths, max_tokens=self.cfg.train.max_tokens,
                                   shuffle=False)
        self.model.eval()
        loss_sum = nll_sum = 0.0
        ntokens = 0
        for indices in sampler:
            batch = make_batch(ds, indices).to(self.device)
            loss, nll = self._loss(batch)
            loss_sum += float(loss)
            nll_sum += float(nll)
            ntokens += batch.ntokens
        return {"loss": loss_sum / ntokens, "nll": nll_sum / ntokens, "ppl": math.exp(min(50.0, nll_sum / ntokens))}

    def decode_hypotheses(self, sources: list[str], length_penalty: Optional[float] = None) -> list[Hypothesis]:
        """Translate with the configured search (``length_penalty`` overrides it); returns the
        best hypothesis of each source."""
        sc = self.cfg.search
        alpha = sc.length_penalty if length_penalty is None else length_penalty
        hyps = translate_texts(self.model, self.data.tokenizer, sources, beam_size=sc.beam_size,
                               length_penalty=alpha, max_len_a=sc.max_len_a, max_len_b=sc.max_len_b,
                               batch_size=sc.batch_size, need_attn=False, device=self.device)
        return [h[0] for h in hyps]

    def decode(self, sources: list[str], length_penalty: Optional[float] = None) -> list[str]:
        """:meth:`decode_hypotheses`, detokenised."""
        return self.data.tokenizer.decode_tgt([h.tokens for h in self.decode_hypotheses(sources, length_penalty)])

    def log_attention(self, hyp_tokens: list[list[int]]) -> None:
        """Attention statistics and alignment figures of the fixed dev sentences (TensorBoard).

        ``hyp_tokens`` are the search's outputs for the first dev sentences; teacher-forcing
        them reproduces the search's attention for every layer and head. Failures are logged
        and never stop training; the time spent is logged as ``attention/plot_seconds``.
        """
        ac, step = self.cfg.train.attention, self.progress.step
        t0 = time.monotonic()
        values: dict[str, float] = {}
        figures = 0
        try:
            ds = self.valid_ids
            if ac.stats_sentences > 0:
                k = min(ac.stats_sentences, len(ds))
                values.update(attention_statistics(self.model, ds.src[:k], ds.tgt[:k]))
            if ac.sentences > 0 and (len(self.progress.history) - 1) % max(1, ac.every) == 0:
                from nmt.viz import alignment_figures

                k = min(ac.sentences, len(hyp_tokens))
                maps = collect_attention(self.model, self.data.tokenizer, ds.src[:k], hyp_tokens[:k])
                for i, sentence_maps in enumerate(maps):
                    figs = alignment_figures(sentence_maps, f"attention/dev{i}", words=ac.words,
                                             all_layers=ac.all_layers and i < ac.layer_sentences)
                    for tag, fig in figs.items():
                        self.monitor.figure(tag, fig, step)
                    figures += len(figs)
        except Exception:  # plotting must never stop training
            log.warning("attention figures/statistics failed at step %d; training continues", step, exc_info=True)
        values["plot_seconds"] = time.monotonic() - t0
        self.monitor.scalars(step, values, "attention")
        if figures:
            log.info("attention: %d figures and statistics in %.1f s", figures, values["plot_seconds"])

    def _validate_and_save(self) -> Optional[str]:
        """Validate, checkpoint (latest/best), log; return a stop reason on early stopping.

        In a distributed job rank 0 validates while the others wait, then every rank takes its
        counters (best BLEU, patience) and decision, and all join the checkpoint's collectives.
        """
        outcome = self._validate() if self.dist.is_main else None
        if self.dist.enabled:
            outcome = distributed.broadcast_object(self.dist, (outcome, asdict(self.progress)))
            outcome, progress = outcome
            self.progress = Progress(**progress)
        reason, improved, scores = outcome
        self.save(best=improved, scores=scores)
        return reason

    def _validate(self) -> tuple[Optional[str], bool, dict]:
        """Dev loss, BLEU and figures; ``(early-stopping reason or None, improved, scores)``."""
        t0 = time.monotonic()
        p, tc = self.progress, self.cfg.train
        values = self.valid_loss()
        valid = self.data.valid
        n = tc.valid_max_sentences or len(valid.src)
        best = self.decode_hypotheses(valid.src[:n])
        hyps = self.data.tokenizer.decode_tgt([h.tokens for h in best])
        scores = score_corpus(hyps, valid.tgt[:n])
        values.update(bleu=scores["bleu"], chrf=scores["chrf"], bleu_lc=scores["bleu_lc"])
        improved = scores["bleu"] > p.best_bleu
        if improved:
            p.best_bleu, p.best_step, p.bad_validations = scores["bleu"], p.step, 0
        else:
            p.bad_validations += 1
        values["seconds"] = time.monotonic() - t0
        p.history.append({"step": p.step, "epoch": p.epoch, **values})
        self.monitor.scalars(p.step, {k: values[k] for k in ("loss", "ppl", "bleu", "chrf")}, "valid")
        k = min(tc.num_samples, n)
        self.monitor.text("valid/samples", samples_markdown(valid.src[:k], valid.tgt[:k], hyps[:k]), p.step)
        self.log_attention([h.tokens for h in best[: tc.attention.sentences]])
        self.monitor.flush()
        log.info("validation epoch %d step %d %s%s", p.epoch, p.step, format_scalars(values),
                 " (best)" if improved else "")
        scores = {**scores, "valid_loss": values["loss"], "valid_ppl": values["ppl"]}
        reason = None
        if tc.patience > 0 and p.bad_validations >= tc.patience:
            reason = f"no BLEU improvement in {tc.patience} validations (early stopping)"
        return reason, improved, scores

    # ---------------------------------------------------------------------------- checkpoints
    def trainer_state(self, rng_ranks: Optional[list] = None) -> dict:
        """Optimizer, scheduler, counters, data position and RNG states (loadable with weights_only);
        ``rng_ranks``: every process's RNG states in a distributed job."""
        state = {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                 "progress": asdict(self.progress), "sampler": self.sampler.state_dict(),
                 "rng": _rng_state(), "scaler": self.scaler.state_dict() if self.scaler is not None else {}}
        if rng_ranks is not None:
            state["rng_ranks"] = rng_ranks
        return state

    def save(self, best: bool, scores: dict) -> Path:
        """Write ``step-<N>`` and update ``checkpoints.json``; prune old ones (never latest/best).

        Every process of a distributed job calls this (their RNG states are gathered); rank 0
        writes, and all wait for it before going on.

        Raises:
            RunDirError: the checkpoint cannot be written (disk full, permissions); the message
                names the directory and the previous checkpoint, which is left intact (R18).
        """
        p = self.progress
        name = f"step-{p.step:07d}"
        if self.dist.enabled:
            rng_ranks = distributed.all_gather_object(self.dist, _rng_state())
            error = self._write_checkpoint(name, best, scores, rng_ranks) if self.dist.is_main else None
            error = distributed.broadcast_object(self.dist, error)  # the barrier after the save
        else:
            error = self._write_checkpoint(name, best, scores)
        if error is not None:
            raise RunDirError(error)
        self._last_saved_step = p.step
        return self.ckpt_dir / name

    def _write_checkpoint(self, name: str, best: bool, scores: dict, rng_ranks: Optional[list] = None
                          ) -> Optional[str]:
        """Rank 0's part of :meth:`save`; returns an error message instead of raising so that
        every rank can raise it."""
        p = self.progress
        if self._start is not None:
            p.train_seconds = time.monotonic() - self._start
        meta = {"step": p.step, "epoch": p.epoch, "valid": scores, "num_params": self.num_params,
                "config_sha256": hashlib.sha256(config_to_yaml(self.cfg).encode()).hexdigest()}
        try:
            ckpt_io.save_checkpoint(self.ckpt_dir, name, self.model, self.cfg, self.data.tokenizer, meta,
                                    self.trainer_state(rng_ranks))
        except OSError as err:
            previous = ckpt_io.read_index(self.ckpt_dir).get("latest", "none")
            return (f"cannot save checkpoint {name} in {self.ckpt_dir}: {err.strerror or err}; the previous "
                    f"checkpoint ({previous}) is intact, and re-running the same command resumes from it "
                    "once there is room")
        index = ckpt_io.read_index(self.ckpt_dir)
        index["latest"] = name
        if best:
            index["best"] = name
            index["best_bleu"] = scores.get("bleu")
        ckpt_io.write_index(self.ckpt_dir, index)
        tc = self.cfg.train
        protect = {index["latest"], index.get("best", "")}
        if tc.average_best > 1:  # the best N by dev BLEU survive pruning, for the final average
            from nmt.train.average import select_checkpoints

            try:
                protect |= {c.name for c in select_checkpoints(self.ckpt_dir, tc.average_best, "bleu", warn=False)}
            except ValueError:
                pass  # fewer than 2 validated checkpoints so far
        ckpt_io.prune_checkpoints(self.ckpt_dir, max(tc.keep_last, tc.average_last), protect)
        return None

    # ------------------------------------------------------------------------------ the end
    def _final_evaluation(self, stop_reason: str) -> dict:
        """Average checkpoints if asked, load the best, decode the test split, write results.json."""
        cfg, p = self.cfg, self.progress
        best = ckpt_io.resolve_checkpoint(self.ckpt_dir, "best")
        chosen = best.name
        from safetensors.torch import load_model as st_load

        st_load(self.model, str(best / "model.safetensors"))
        if cfg.train.average_last > 1 or cfg.train.average_best > 1:
            chosen = self._try_average() or chosen
        dev_alpha = self._tune_length_penalty(self.ckpt_dir / chosen) if cfg.train.tune_length_penalty else None
        results = {"stop_reason": stop_reason, "steps": p.step, "epochs_completed": p.epoch - 1,
                   "train_minutes": round(p.train_seconds / 60, 2), "num_params": self.num_params,
                   # throughput over the whole training wall time, validations included
                   "tgt_tokens_per_s": round(p.tgt_tokens / max(1e-9, p.train_seconds)),
                   "src_tokens_per_s": round(p.src_tokens / max(1e-9, p.train_seconds)),
                   "checkpoint": chosen, "best_valid_bleu": p.best_bleu, "best_step": p.best_step,
                   "src_lang": cfg.data.src_lang, "tgt_lang": cfg.data.tgt_lang,
                   "search": asdict(cfg.search), "length_penalty_dev_bleu": dev_alpha,
                   "world_size": self.dist.world_size, "versions": versions(), "history": p.history}
        test = self.data.test
        if cfg.train.eval_test and test is not None:
            t0 = time.monotonic()
            hyps = self.decode(test.src)
            results["test"] = {"split": cfg.data.test_split, **score_corpus(hyps, test.tgt),
                               "decode_seconds": round(time.monotonic() - t0, 1)}
            hyp_path = self.run_dir / f"{cfg.data.test_split}.hyp.{cfg.data.tgt_lang}"
            atomic_write_text(hyp_path, "".join(h + "\n" for h in hyps))
            log.info("test %s: BLEU %.2f (%s) | lowercased BLEU %.2f | chrF %.2f", cfg.data.test_split,
                     results["test"]["bleu"], results["test"]["bleu_signature"], results["test"]["bleu_lc"],
                     results["test"]["chrf"])
        atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=2) + "\n")
        metrics = {"best_valid_bleu": p.best_bleu, "train_minutes": results["train_minutes"],
                   "tgt_tokens_per_s": results["tgt_tokens_per_s"]}
        if "test" in results:
            metrics.update({f"test_{k}": results["test"][k] for k in ("bleu", "bleu_lc", "chrf")})
        self.monitor.hparams(hparams_of(cfg), metrics)
        return results

    def _tune_length_penalty(self, ckpt: Path) -> dict:
        """Choose ``search.length_penalty`` on the dev set (never on test) among
        ``train.tune_length_penalty``; the choice is written into ``ckpt``'s config so that
        translation uses it. Returns ``{alpha: dev BLEU}``."""
        from nmt.config import config_to_yaml

        valid = self.data.valid
        scores = {a: score_corpus(self.decode(valid.src, length_penalty=a), valid.tgt)["bleu"]
                  for a in self.cfg.train.tune_length_penalty}
        best = max(scores, key=lambda a: (scores[a], -abs(a - self.cfg.search.length_penalty)))
        log.info("length penalty on dev: %s -> %.2f", " ".join(f"{a:g}:{b:.2f}" for a, b in scores.items()), best)
        self.cfg.search.length_penalty = best
        atomic_write_text(ckpt / "config.yaml", config_to_yaml(self.cfg))
        return {str(a): b for a, b in scores.items()}

    def _try_average(self) -> Optional[str]:
        """Average the best N checkpoints by dev BLEU (``train.average_best``) or the last N
        (``train.average_last``), as Vaswani et al. 2017 §6.1; the average is saved as
        ``averaged`` and becomes ``best`` only if its dev BLEU beats the best single checkpoint.
        Returns ``"averaged"`` when it does."""
        from nmt.train.average import average_and_keep, select_checkpoints

        tc, valid = self.cfg.train, self.data.valid
        n, by = (tc.average_best, "bleu") if tc.average_best > 1 else (tc.average_last, "last")
        try:
            paths = select_checkpoints(self.ckpt_dir, n, by)
        except ValueError as err:
            log.warning("no checkpoint averaging: %s", err)
            return None
        k = tc.valid_max_sentences or len(valid.src)  # the sentences the best checkpoint was scored on
        outcome = average_and_keep(self.model, paths, lambda m: score_corpus(self.decode(valid.src[:k]), valid.tgt[:k]),
                                   self.progress.best_bleu, self.cfg, self.data.tokenizer, self.ckpt_dir, save="kept",
                                   meta={"step": self.progress.step})
        if not outcome.kept:
            return None
        self.progress.best_bleu = outcome.bleu
        return "averaged"


def _shapes(group: list[Batch]) -> str:
    """``"(B, S)->(B, T), ..."``: source and target shapes of the batches of one update."""
    return ", ".join(f"{tuple(b.src_tokens.shape)}->{tuple(b.tgt_out.shape)}" for b in group)


def _rng_state() -> dict:
    """Python, numpy, torch (and CUDA) generator states as tensors and plain values (weights_only)."""
    state = {"python": random.getstate(), "numpy": _numpy_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def config_differences(old: Config, new: Config, allowed: tuple[str, ...] = RESUME_ALLOWED) -> list[str]:
    """``"key: old -> new"`` for every config key whose value differs, except ``allowed`` ones
    (an entry ending in ``.`` allows every key under it)."""
    def flat(d: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v.value if hasattr(v, "value") else v
        return out

    a, b = flat(asdict(old)), flat(asdict(new))
    diffs = []
    for key in sorted(set(a) | set(b)):
        if any(key == x or (x.endswith(".") and key.startswith(x)) for x in allowed):
            continue
        if a.get(key, "<absent>") != b.get(key, "<absent>"):
            diffs.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return diffs


def _numpy_state() -> dict:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}

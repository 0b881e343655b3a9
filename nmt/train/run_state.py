"""What makes a run resumable: the run directory, checkpoints of the trainer's state, RNG
states, and the check that a resumed run has the same configuration (RELIABILITY.md R6-R9,
R17, R18). :class:`CheckpointMixin` is the part of :class:`nmt.train.trainer.Trainer` that reads
and writes them; in a distributed job rank 0 writes and every rank reads."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nmt.config import Config, config_from_yaml, config_to_yaml, resume_allowed
from nmt.train import checkpoint as ckpt_io
from nmt.train import distributed

log = logging.getLogger("nmt.train")

#: the config keys that may change between an interrupted run and its resumption (R9), declared on
#: the fields of nmt.config (MAY_CHANGE_ON_RESUME); a key ending in "." allows a whole group
RESUME_ALLOWED = resume_allowed()


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked: it holds a finished run, its checkpoint was
    written with a different configuration or tokenizer, or it is not writable."""


class RanksDisagree(RunDirError):
    """The processes of a distributed job have different configs, tokenizers, data or
    checkpoints (R34); every rank raises it."""


#: config keys that may differ between the processes of one job (where each node keeps its files)
RANK_LOCAL = ("data.dir", "data.tokenizer.cache_dir", "data.hf_cache_dir", "train.progress_bar")


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
    cycle_seconds: list = field(default_factory=list)  # wall time of each validate-and-checkpoint cycle
    schedule_steps: int = 0  # the decay's length fitted to the time budget when warmup ended (0 = train.max_steps)
    schedule_refits: list = field(default_factory=list)  # [update, new end] of each later shortening
    figure_share: float = 0.0  # seconds of the last alignment-figure drawing / train.attention.every
    stop_reason: str = ""  # early stopping decided at the last validation: a re-run goes straight to the final evaluation

    @property
    def schedule_end(self) -> int:
        """The update at which the fitted decay ends now (0 = no fit, train.max_steps)."""
        return self.schedule_refits[-1][1] if self.schedule_refits else self.schedule_steps


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (R27)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class CheckpointMixin:
    """Run directory, checkpoints and resume for :class:`~nmt.train.trainer.Trainer` (which
    provides ``cfg``, ``data``, ``dist``, ``run_dir``, ``ckpt_dir``, ``model``, ``optimizer``,
    ``scheduler``, ``scaler``, ``sampler``, ``progress``, ``device``, ``num_params``, ``_start``
    and ``_last_saved_step``)."""

    def _prepare_run_dir(self) -> Optional[Path]:
        """Lock the run directory (rank 0), check it is writable, clear a finished run for
        ``train.overwrite``, and resume from the newest complete checkpoint that loads, chosen by
        rank 0 for every rank (R9, R17, R18, R32, R34). Returns that checkpoint.

        Raises:
            RunDirError: in use by another process; not writable; a finished run without
                ``train.overwrite``; checkpoints with ``train.resume=false``; a checkpoint from a
                different config or tokenizer; ranks that resume from different checkpoints.
            nmt.checkpoint.CheckpointError: no complete checkpoint of the run can be loaded.
        """
        problem = None
        if self.dist.is_main:
            try:
                self.run_lock.acquire()
            except ckpt_io.RunInUse as err:
                problem = str(err)
            except OSError as err:
                problem = f"run directory {self.run_dir} is not writable: {err}"
            if problem is None:
                problem = self._check_run_dir()
        problem = distributed.broadcast_object(self.dist, problem)  # every rank fails, or none
        if problem is not None:
            self.run_lock.release()
            raise RunDirError(problem)
        if self.dist.is_main:
            ckpt_io.clean_stale_temps(self.ckpt_dir)
        candidates = [c.name for c in ckpt_io.complete_checkpoints(self.ckpt_dir) if c.name.startswith("step-")]
        candidates = distributed.broadcast_object(self.dist, candidates)  # rank 0's disk decides (R34)
        for i, name in enumerate(reversed(candidates)):
            error, fatal = None, False
            try:
                self.load_checkpoint(self.ckpt_dir / name)
            except ckpt_io.CheckpointError as err:  # damaged: the one before may do
                error = str(err)
            except RunDirError as err:  # another config or tokenizer: no checkpoint of this run will do
                error, fatal = str(err), True
            outcomes = distributed.all_gather_object(self.dist, (error, fatal))  # no rank left waiting
            errors = [e for e, _ in outcomes]
            if any(f for _, f in outcomes):
                raise RunDirError(error if fatal else next(f"rank {r}: {e}" for r, (e, f) in enumerate(outcomes) if f))
            if all(e is None for e in errors):
                distributed.check_agreement(self.dist, "resumed checkpoint", checkpoint_fingerprint(self.ckpt_dir / name))
                return self.ckpt_dir / name
            if self.dist.enabled and any(e is None for e in errors):
                raise RunDirError(f"ranks cannot all resume from {self.ckpt_dir / name}: "
                                  + "; ".join(f"rank {r}: {e}" for r, e in enumerate(errors) if e))
            log.warning("cannot resume from %s (%s); trying the checkpoint before it", name, errors[0])
            if i == len(candidates) - 1:
                raise ckpt_io.CheckpointError(f"no checkpoint in {self.ckpt_dir} can be loaded; the newest: "
                                              f"{errors[0]}")
        return None

    def check_ranks_agree(self) -> None:
        """Every process of a distributed job has the same config (but for :data:`RANK_LOCAL`
        keys), tokenizer and data sizes (R34); no-op for one process.

        Raises:
            RanksDisagree: on every rank, naming the ranks and what differs.
        """
        if not self.dist.enabled:
            return
        data = self.data
        mine = {"config": self.cfg, "tokenizer": self.data.tokenizer.sha256(),
                "data": {"train pairs": None if data.train is None else len(data.train),
                         "train tokens": None if data.train is None else
                         int(sum(data.train.src_lengths)) + int(sum(data.train.tgt_lengths)),
                         "valid pairs": len(data.valid.src), "test pairs": None if data.test is None else len(data.test.src)}}
        everyone = distributed.all_gather_object(self.dist, mine)
        problems = []
        for rank, other in enumerate(everyone[1:], 1):
            diffs = config_differences(everyone[0]["config"], other["config"], RANK_LOCAL)
            problems += [f"rank {rank} config {d}" for d in diffs]
            for key in ("tokenizer", "data"):
                if other[key] != everyone[0][key]:
                    problems.append(f"rank {rank} {key}: {other[key]} (rank 0: {everyone[0][key]})")
        if problems:
            raise RanksDisagree("the processes of this job disagree (rank 0 -> rank N); every node must see the "
                                "same config, tokenizer and data:\n  " + "\n  ".join(problems))

    def _check_run_dir(self) -> Optional[str]:
        """Rank 0's half of :meth:`_prepare_run_dir`: probe, clear a finished run for
        ``train.overwrite``, or the reason the directory cannot be used."""
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
        if results.exists() and tc.overwrite:
            log.warning("train.overwrite=true: deleting the finished run's checkpoints, TensorBoard logs and "
                        "results in %s", self.run_dir)
            clear_finished_run(self.run_dir, self.cfg.data.test_split)
            return None
        if results.exists():
            return (f"{self.run_dir} holds a finished run ({results} exists). Choose another "
                    "directory (hydra.run.dir=...) or start over there with train.overwrite=true "
                    "(deletes its checkpoints, TensorBoard logs and results)")
        if checkpoints and tc.overwrite:
            log.warning("train.overwrite=true applies only to a finished run (with results.json); %s holds an "
                        "unfinished one, which resumes. To start over, delete %s yourself or choose another "
                        "directory", self.run_dir, self.ckpt_dir)
        if checkpoints and not tc.resume:
            return (f"{self.ckpt_dir} holds checkpoints of an unfinished run and train.resume=false; "
                    "resume it (train.resume=true), or delete that folder yourself or choose another "
                    "directory (hydra.run.dir=...) to start over")
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
            saved_cfg = config_from_yaml((ckpt / "config.yaml").read_text(encoding="utf-8"), str(ckpt / "config.yaml"))
            meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
        except Exception as err:
            raise ckpt_io.CheckpointError(f"checkpoint {ckpt}: cannot read config.yaml/meta.json: {err}") from err
        diffs = config_differences(saved_cfg, self.cfg)
        if diffs:
            raise RunDirError(f"cannot resume from {ckpt}: the configuration differs in {len(diffs)} key(s) that "
                              "change training:\n  " + "\n  ".join(diffs) + "\nRun with the original "
                              "settings, or choose another directory (hydra.run.dir=...)")
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
        rng_ranks = distributed.all_gather_object(self.dist, _rng_state()) if self.dist.enabled else None
        error = None
        if self.dist.is_main:
            try:
                error = self._write_checkpoint(name, best, scores, rng_ranks)
            except Exception as err:  # never leave the other ranks waiting at the broadcast (R34)
                error = f"cannot save checkpoint {name} in {self.ckpt_dir}: {type(err).__name__}: {err}"
        error = distributed.broadcast_object(self.dist, error)  # the barrier after the save
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
        except Exception as err:  # OSError, SafetensorError, torch.save's RuntimeError: a full disk, permissions
            previous = ckpt_io.read_index(self.ckpt_dir).get("latest", "none")
            reason = getattr(err, "strerror", None) or str(err).splitlines()[0] if str(err) else type(err).__name__
            return (f"cannot save checkpoint {name} in {self.ckpt_dir}: {reason}; the previous "
                    f"checkpoint ({previous}) is intact, and re-running the same command resumes from it "
                    "once there is room")
        try:
            self._update_index(name, best, scores)
        except Exception as err:  # the checkpoint itself is complete; the index and pruning can be redone
            return f"checkpoint {name} was saved, but {self.ckpt_dir / ckpt_io.INDEX} cannot be updated: {err}"
        return None

    def _update_index(self, name: str, best: bool, scores: dict) -> None:
        """Point ``latest`` (and ``best``) at ``name`` and prune (R4, R5); rank 0, under the run's lock."""
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


def clear_finished_run(run_dir: Path, test_split: str) -> None:
    """Delete a finished run's outputs for ``train.overwrite`` (R31, R32): its nmt checkpoints,
    ``checkpoints.json``, TensorBoard event files, ``results.json`` and test hypotheses. Anything
    else in ``checkpoints/`` or ``tensorboard/`` stays, with a warning."""
    ckpt_dir, tb_dir = run_dir / "checkpoints", run_dir / "tensorboard"
    if ckpt_dir.is_dir():
        ckpt_io.clean_stale_temps(ckpt_dir)
        for p in ckpt_dir.iterdir():
            if ckpt_io.is_checkpoint(p):
                ckpt_io.remove_checkpoint(p)
        (ckpt_dir / ckpt_io.INDEX).unlink(missing_ok=True)
    if tb_dir.is_dir():
        for p in sorted(tb_dir.rglob("events.out.tfevents.*"), reverse=True):
            if p.is_file() and not p.is_symlink():
                p.unlink()
        for d in sorted((p for p in tb_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _remove_if_empty(d)
    for folder in (ckpt_dir, tb_dir):
        if folder.is_dir() and not _remove_if_empty(folder):
            log.warning("train.overwrite: %s holds files nmt did not write (%s); they are kept", folder,
                        ", ".join(sorted(p.name for p in folder.iterdir())[:5]))
    for path in [run_dir / "results.json", *run_dir.glob(f"{test_split}.hyp.*")]:
        if path.is_file():
            path.unlink()


def _remove_if_empty(folder: Path) -> bool:
    try:
        folder.rmdir()
        return True
    except OSError:
        return False


def checkpoint_fingerprint(ckpt: Path) -> str:
    """What identifies a checkpoint across machines: sha256 of its ``meta.json`` and its weights'
    size (ranks on per-node storage must resume from the same one, R34)."""
    meta = (ckpt / "meta.json").read_bytes()
    return f"{ckpt.name} {hashlib.sha256(meta).hexdigest()[:16]} {(ckpt / 'model.safetensors').stat().st_size}"


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

"""The run directory's checkpoints for the trainer (RELIABILITY.md R1-R9, R17, R18, R31, R32, R34):
the lock, the run directory's state when training starts, resuming from the newest checkpoint
that loads (rank 0 chooses it for every rank), saving and pruning. :class:`Checkpoints` is given
to the training loop, as fairseq's ``checkpoint_utils`` and OpenNMT-py's ``model_saver`` are."""
from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Callable, Optional

from nmt.config import Config, config_from_yaml
from nmt.train import checkpoint as ckpt_io
from nmt.train import distributed
from nmt.train.distributed import DistContext
from nmt.train.state import RunDirError, config_differences

log = logging.getLogger("nmt.train")


class Checkpoints:
    """``<run>/checkpoints`` of one training run.

    Args:
        run_dir: the run directory (the same for every process of a distributed job; rank 0
            alone writes into it).
        cfg: the run's configuration (overwrite, resume, keep_last, averaging, test split).
        tokenizer: the run's tokenizer (its sha256 must match a resumed checkpoint's).
    """

    def __init__(self, run_dir: Path, cfg: Config, tokenizer, dist: DistContext) -> None:
        self.run_dir, self.dir = Path(run_dir), Path(run_dir) / "checkpoints"
        self.cfg, self.tokenizer, self.dist = cfg, tokenizer, dist
        self.lock = ckpt_io.RunLock(self.run_dir)
        self.last_saved_step = -1

    def open(self) -> None:
        """Lock the run directory (rank 0), check it is writable, clear a finished run for
        ``train.overwrite``, clean what killed saves left (R3, R9, R18, R32). Every rank raises,
        or none.

        Raises:
            RunDirError: in use by another process, not writable, a finished run without
                ``train.overwrite``, or checkpoints with ``train.resume=false``.
        """
        problem = None
        if self.dist.is_main:
            try:
                self.lock.acquire()
                problem = self._check_run_dir()
            except ckpt_io.RunInUse as err:
                problem = str(err)
            except OSError as err:
                problem = f"run directory {self.run_dir} is not writable: {err}"
            if problem is None:
                ckpt_io.clean_stale_temps(self.dir)
        problem = distributed.broadcast_object(self.dist, problem)
        if problem is not None:
            self.close()
            raise RunDirError(problem)

    def close(self) -> None:
        """Give the run directory back (also done by the kernel when the process ends)."""
        self.lock.release()

    def _check_run_dir(self) -> Optional[str]:
        """Rank 0's half of :meth:`open`: probe, clear a finished run, or why the directory cannot be used."""
        tc = self.cfg.train
        self.run_dir.mkdir(parents=True, exist_ok=True)
        probe = self.run_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
        results = self.run_dir / "results.json"
        checkpoints = self.steps()
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
                        "directory", self.run_dir, self.dir)
        if checkpoints and not tc.resume:
            return (f"{self.dir} holds checkpoints of an unfinished run and train.resume=false; "
                    "resume it (train.resume=true), or delete that folder yourself or choose another "
                    "directory (hydra.run.dir=...) to start over")
        return None

    def steps(self) -> list[Path]:
        """The complete ``step-*`` checkpoints on disk, oldest first."""
        return [c for c in ckpt_io.complete_checkpoints(self.dir) if c.name.startswith("step-")]

    def resume(self, restore: Callable[[Path], None]) -> Optional[Path]:
        """Restore the newest checkpoint that loads, chosen by rank 0 for every rank (R17, R34):
        ``restore(path)`` loads one (raising ``CheckpointError`` for a damaged one, which falls
        back to the one before, or ``RunDirError`` for another config, which stops).

        Returns:
            The checkpoint resumed from, or None for a fresh run.
        Raises:
            RunDirError: another configuration or tokenizer; ranks that cannot all load it.
            nmt.checkpoint.CheckpointError: no checkpoint of the run can be loaded.
        """
        candidates = distributed.broadcast_object(self.dist, [c.name for c in self.steps()])
        for i, name in enumerate(reversed(candidates)):
            error, fatal = None, False
            try:
                restore(self.dir / name)
            except ckpt_io.CheckpointError as err:  # damaged: the one before may do
                error = str(err)
            except RunDirError as err:  # another config or tokenizer: no checkpoint of this run will do
                error, fatal = str(err), True
            outcomes = distributed.all_gather_object(self.dist, (error, fatal))  # no rank left waiting
            if any(f for _, f in outcomes):
                raise RunDirError(error if fatal else next(f"rank {r}: {e}" for r, (e, f) in enumerate(outcomes) if f))
            errors = [e for e, _ in outcomes]
            if all(e is None for e in errors):
                distributed.check_agreement(self.dist, "resumed checkpoint", fingerprint(self.dir / name))
                return self.dir / name
            if self.dist.enabled and any(e is None for e in errors):
                raise RunDirError(f"ranks cannot all resume from {self.dir / name}: "
                                  + "; ".join(f"rank {r}: {e}" for r, e in enumerate(errors) if e))
            log.warning("cannot resume from %s (%s); trying the checkpoint before it", name, errors[0])
            if i == len(candidates) - 1:
                raise ckpt_io.CheckpointError(f"no checkpoint in {self.dir} can be loaded; the newest: {errors[0]}")
        return None

    def read(self, ckpt: Path) -> tuple[dict, dict]:
        """``(meta, trainer_state)`` of one of this run's checkpoints, after checking it was written
        with this configuration (but for the keys that may change) and this tokenizer (R9).

        Raises:
            RunDirError: every differing key listed, or another tokenizer.
            nmt.checkpoint.CheckpointError: a file is missing or cannot be loaded safely.
        """
        try:
            saved_cfg = config_from_yaml((ckpt / "config.yaml").read_text(encoding="utf-8"), str(ckpt / "config.yaml"))
            meta = ckpt_io.read_json(ckpt / "meta.json")
        except Exception as err:
            raise ckpt_io.CheckpointError(f"checkpoint {ckpt}: cannot read config.yaml/meta.json: {err}") from err
        diffs = config_differences(saved_cfg, self.cfg)
        if diffs:
            raise RunDirError(f"cannot resume from {ckpt}: the configuration differs in {len(diffs)} key(s) that "
                              "change training:\n  " + "\n  ".join(diffs) + "\nRun with the original "
                              "settings, or choose another directory (hydra.run.dir=...)")
        if meta.get("tokenizer_sha256") != self.tokenizer.sha256():
            raise RunDirError(f"cannot resume from {ckpt}: its sentencepiece model (sha256 "
                              f"{meta.get('tokenizer_sha256')}) differs from this run's "
                              f"({self.tokenizer.sha256()}); the training data or tokenizer settings changed")
        return meta, ckpt_io.load_trainer_state(ckpt)

    def save(self, step: int, model, meta: dict, trainer_state: Callable[[], dict], best: bool,
             scores: dict) -> Path:
        """Write ``step-<N>``, update ``checkpoints.json`` and prune (never latest or best).

        Every process of a distributed job calls this; rank 0 writes (``trainer_state()`` is
        called there only), and all wait for it.

        Raises:
            RunDirError: on every rank, when the checkpoint cannot be written (disk full,
                permissions); the previous checkpoint is left intact (R18).
        """
        name = f"step-{step:07d}"
        error = None
        if self.dist.is_main:
            try:
                error = self._write(name, model, meta, trainer_state(), best, scores)
            except Exception as err:  # never leave the other ranks waiting at the broadcast (R34)
                error = f"cannot save checkpoint {name} in {self.dir}: {type(err).__name__}: {err}"
        error = distributed.broadcast_object(self.dist, error)  # the barrier after the save
        if error is not None:
            raise RunDirError(error)
        self.last_saved_step = step
        return self.dir / name

    def _write(self, name: str, model, meta: dict, state: dict, best: bool, scores: dict) -> Optional[str]:
        """Rank 0's part of :meth:`save`; returns an error message rather than raising."""
        try:
            ckpt_io.save_checkpoint(self.dir, name, model, self.cfg, self.tokenizer, meta, state)
        except Exception as err:  # OSError, SafetensorError, torch.save's RuntimeError: a full disk, permissions
            previous = ckpt_io.read_index(self.dir).get("latest", "none")
            reason = getattr(err, "strerror", None) or (str(err).splitlines()[0] if str(err) else type(err).__name__)
            return (f"cannot save checkpoint {name} in {self.dir}: {reason}; the previous checkpoint ({previous}) "
                    "is intact, and re-running the same command resumes from it once there is room")
        try:
            self._update_index(name, best, scores)
        except Exception as err:  # the checkpoint itself is complete; the index and pruning can be redone
            return f"checkpoint {name} was saved, but {self.dir / ckpt_io.INDEX} cannot be updated: {err}"
        return None

    def _update_index(self, name: str, best: bool, scores: dict) -> None:
        """Point ``latest`` (and ``best``) at ``name`` and prune (R4, R5); rank 0, under the lock."""
        index = ckpt_io.read_index(self.dir)
        index["latest"] = name
        if best:
            index["best"] = name
            index["best_bleu"] = scores.get("bleu")
        ckpt_io.write_index(self.dir, index)
        tc = self.cfg.train
        protect = {index["latest"], index.get("best", "")}
        if tc.average_best > 1:  # the best N by dev BLEU survive pruning, for the final average
            from nmt.train.average import select_checkpoints

            try:
                protect |= {c.name for c in select_checkpoints(self.dir, tc.average_best, "bleu", warn=False)}
            except ValueError:
                pass  # fewer than 2 validated checkpoints so far
        ckpt_io.prune_checkpoints(self.dir, max(tc.keep_last, tc.average_last), protect)

    def resolve(self, which: str = "best") -> Path:
        """The run's ``best`` (or ``latest``) checkpoint."""
        return ckpt_io.resolve_checkpoint(self.dir, which)


def fingerprint(ckpt: Path) -> str:
    """What identifies a checkpoint across machines: sha256 of its ``meta.json`` and its weights'
    size (ranks on per-node storage must resume from the same one, R34)."""
    meta = (ckpt / "meta.json").read_bytes()
    return f"{ckpt.name} {hashlib.sha256(meta).hexdigest()[:16]} {(ckpt / 'model.safetensors').stat().st_size}"


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

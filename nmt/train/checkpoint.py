"""Writing checkpoints, and the lock that makes one trainer the only writer of a run
(RELIABILITY.md R1, R3-R6, R18, R31, R32). Reading is :mod:`nmt.checkpoint`'s.

A checkpoint is built in a temporary directory named for this process
(``.tmp-<name>.<pid>.<random>``), its files fsynced, the ``COMPLETE`` marker written last, and
then renamed into place; ``checkpoints.json`` (``latest``/``best``) is replaced atomically.
Only what is itself an nmt checkpoint is ever replaced or removed, and only the process holding
the run's lock (:class:`RunLock`) cleans up temporary entries left by a killed save.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Optional

import torch

from nmt.checkpoint import (FORMAT_VERSION, INDEX, MARKER, TEMP_PREFIX, CheckpointError,  # noqa: F401 (re-exported)
                            LoadedModel, checkpoint_root, complete_checkpoints, is_checkpoint, load_model,
                            read_index, read_json, resolve_checkpoint)
from nmt.config import Config, config_to_yaml
from nmt.io import atomic_write_text, file_mode, fsync_dir

log = logging.getLogger(__name__)

LOCK_FILE = ".nmt-run.lock"
#: what a temporary entry written by this module looks like (nothing else is cleaned up)
_TEMP_ENTRY = re.compile(r"^\.tmp-(removing-)?[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class RunInUse(RuntimeError):
    """Another process holds the run directory's lock (R32)."""


class RunLock:
    """An exclusive ``fcntl.flock`` on ``<run>/.nmt-run.lock``, holding the owner's pid (R32).

    The kernel drops the lock when the process ends, however it ends, so a killed trainer never
    leaves a stale lock; the file itself stays (deleting it would race a new owner).

    Raises:
        RunInUse: (from :meth:`acquire`) another process holds it; the message names its pid.
    """

    def __init__(self, run_dir: str | os.PathLike, purpose: str = "trains") -> None:
        self.path = Path(run_dir) / LOCK_FILE
        self.purpose = purpose
        self._fd: Optional[int] = None

    def acquire(self) -> "RunLock":
        """Take the lock without waiting; writes this pid into the lock file."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown"
            os.close(fd)
            raise RunInUse(f"{self.path.parent} is in use by another nmt process ({holder}); wait for it to "
                           "finish or stop it, or choose another directory (hydra.run.dir=...)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {self.purpose}\n".encode(), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock back (also done by the kernel at exit)."""
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _temp_dir(ckpt_root: Path, name: str) -> Path:
    """A new, empty temporary directory for ``name``, unique to this process and call."""
    tmp = ckpt_root / f"{TEMP_PREFIX}{name}.{os.getpid()}.{secrets.token_hex(4)}"
    tmp.mkdir()
    return tmp


def save_checkpoint(ckpt_root: Path, name: str, model: torch.nn.Module, cfg: Config, tokenizer: Any,
                    meta: dict, trainer_state: Optional[dict] = None) -> Path:
    """Write checkpoint ``ckpt_root/name`` atomically and return its path.

    An existing ``ckpt_root/name`` is replaced only when it is itself an nmt checkpoint or an
    empty folder (R31).

    Raises:
        CheckpointError: ``ckpt_root/name`` exists and is not an nmt checkpoint.
        OSError, RuntimeError: the files cannot be written (disk full, permissions; safetensors
            and ``torch.save`` raise their own types); an older checkpoint is never touched.
    """
    from safetensors.torch import save_model

    import nmt

    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$", name):
        raise CheckpointError(f"checkpoint name {name!r}: letters, digits, '_', '.', '-' only")
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / name
    if final.is_dir() and not final.is_symlink() and not any(final.iterdir()):
        final.rmdir()  # an empty folder made for the output
    if (final.exists() or final.is_symlink()) and not is_checkpoint(final):
        raise CheckpointError(f"{final} exists and is not an nmt checkpoint: refusing to replace it")
    tmp = _temp_dir(ckpt_root, name)
    try:
        save_model(model, str(tmp / "model.safetensors"))
        if trainer_state is not None:
            torch.save(trainer_state, tmp / "trainer_state.pt")
        _write_file(tmp / "config.yaml", config_to_yaml(cfg).encode())
        for fname, data in tokenizer.to_bytes().items():
            _write_file(tmp / fname, data)
        meta = dict(meta, format_version=FORMAT_VERSION, nmt_version=nmt.__version__, torch_version=torch.__version__,
                    tokenizer_sha256=tokenizer.sha256())
        _write_file(tmp / "meta.json", json.dumps(meta, indent=2, default=str).encode())
        for written in tmp.iterdir():  # safetensors and torch.save do not fsync their files
            with open(written, "rb") as f:
                os.fsync(f.fileno())
        _write_file(tmp / MARKER, b"ok\n")
        fsync_dir(tmp)
        if is_checkpoint(final):
            remove_checkpoint(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def write_index(ckpt_root: Path, index: dict) -> None:
    """Replace ``checkpoints.json`` atomically (R4)."""
    atomic_write_text(ckpt_root / INDEX, json.dumps(index, indent=2) + "\n")


def remove_checkpoint(path: Path) -> None:
    """Delete checkpoint directory ``path`` so that no kill leaves it half-deleted under its own
    name: it is renamed to a ``.tmp-removing-`` name first (atomic; readers skip such names and
    the lock holder cleans them up), then removed (R3, R5).

    Raises:
        CheckpointError: ``path`` is not an nmt checkpoint (nothing else is ever deleted, R31).
    """
    if not is_checkpoint(path):
        raise CheckpointError(f"{path} is not an nmt checkpoint: refusing to delete it")
    doomed = path.with_name(f"{TEMP_PREFIX}removing-{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def clean_stale_temps(ckpt_root: Path) -> int:
    """Remove temporary entries left by killed saves and removals (R3); returns how many.

    Call only while holding the run's :class:`RunLock` (no other process writes here then).
    Acts only inside a folder named ``checkpoints`` and only on directories named as this
    module names its temporary entries (R31).
    """
    root = Path(ckpt_root)
    if root.name != "checkpoints" or not root.is_dir():
        return 0
    removed = 0
    for p in root.iterdir():
        if _TEMP_ENTRY.match(p.name) and p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
            removed += 1
    if removed:
        log.info("removed %d unfinished checkpoint(s) left in %s by an interrupted save", removed, root)
    return removed


def prune_checkpoints(ckpt_root: Path, keep_last: int, protect: set[str]) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, never one named in ``protect`` (R5)."""
    steps = [p for p in complete_checkpoints(ckpt_root) if p.name.startswith("step-")]
    for p in steps[: max(0, len(steps) - max(1, keep_last))]:
        if p.name not in protect:
            remove_checkpoint(p)


def load_trainer_state(ckpt: Path) -> dict:
    """``trainer_state.pt`` with ``weights_only=True`` (no code can run, R10)."""
    try:
        return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{ckpt}/trainer_state.pt cannot be loaded safely: {err}") from err

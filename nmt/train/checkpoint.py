"""Self-describing checkpoints (ARCHITECTURE.md example 4; RELIABILITY.md R1, R3-R6, R10-R12).

A checkpoint is a directory ``<run>/checkpoints/step-<N>/`` holding

* ``model.safetensors``: weights (safetensors, tied tensors stored once);
* ``trainer_state.pt``: optimizer, scheduler, counters, data position, RNG states, loadable
  with ``torch.load(weights_only=True)``;
* ``config.yaml``: the resolved :class:`nmt.config.Config`;
* the sentencepiece model(s);
* ``meta.json``: format version, step, versions, tokenizer sha256, validation scores;
* ``COMPLETE``: written last. A directory without it is ignored (and cleaned up).

The directory is built under a temporary name and renamed into place, and
``checkpoints.json`` (``latest``/``best``) is replaced atomically.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch

from nmt.config import Config, config_from_yaml, config_to_yaml
from nmt.io import atomic_write_text, fsync_dir

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX = "checkpoints.json"
MARKER = "COMPLETE"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or from an incompatible version."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: everything translation needs."""

    model: torch.nn.Module
    config: Config
    tokenizer: Any
    meta: dict
    path: Path


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_checkpoint(ckpt_root: Path, name: str, model: torch.nn.Module, cfg: Config, tokenizer: Any,
                    meta: dict, trainer_state: Optional[dict] = None) -> Path:
    """Write checkpoint ``ckpt_root/name`` atomically and return its path.

    Raises:
        OSError: when the directory cannot be written; an older checkpoint is never touched.
    """
    from safetensors.torch import save_model

    import nmt

    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
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
        if final.exists():
            remove_checkpoint(final)
        os.replace(tmp, final)
        fsync_dir(ckpt_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def read_index(ckpt_root: Path) -> dict:
    """``checkpoints.json`` as a dict (empty when absent)."""
    path = ckpt_root / INDEX
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path} is corrupt: {err}") from err


def write_index(ckpt_root: Path, index: dict) -> None:
    """Replace ``checkpoints.json`` atomically (R4)."""
    atomic_write_text(ckpt_root / INDEX, json.dumps(index, indent=2) + "\n")


def complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoint directories, oldest first (by step); stale temp dirs are removed (R3).

    A directory with the marker but no readable ``meta.json`` (changed by hand, or damaged
    outside nmt) is left out with a warning.
    """
    if not ckpt_root.is_dir():
        return []
    out = []
    for p in ckpt_root.iterdir():
        if p.name.startswith(".tmp-"):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_dir() and (p / MARKER).exists():
            try:
                step = json.loads((p / "meta.json").read_text()).get("step", 0)
            except (OSError, ValueError) as err:
                log.warning("checkpoint %s is left out: its meta.json cannot be read (%s)", p, err)
                continue
            out.append((step, p.name, p))
    return [p for _, _, p in sorted(out)]


def remove_checkpoint(path: Path) -> None:
    """Delete checkpoint directory ``path`` so that no kill leaves it half-deleted under its own
    name: it is renamed to a ``.tmp-`` name first (atomic; :func:`complete_checkpoints` skips and
    cleans such names), then removed (R3, R5)."""
    doomed = path.with_name(f".tmp-removing-{path.name}")
    if doomed.exists():
        shutil.rmtree(doomed, ignore_errors=True)
    os.replace(path, doomed)
    shutil.rmtree(doomed, ignore_errors=True)


def prune_checkpoints(ckpt_root: Path, keep_last: int, protect: set[str]) -> None:
    """Delete all but the newest ``keep_last`` step checkpoints, never one named in ``protect`` (R5)."""
    steps = [p for p in complete_checkpoints(ckpt_root) if p.name.startswith("step-")]
    for p in steps[: max(0, len(steps) - max(1, keep_last))]:
        if p.name not in protect:
            remove_checkpoint(p)


def checkpoint_root(path: str | os.PathLike) -> Path:
    """``path/checkpoints`` when ``path`` is a run directory, else ``path`` itself."""
    p = Path(path)
    return p / "checkpoints" if (p / "checkpoints").is_dir() else p


def resolve_checkpoint(path: str | os.PathLike, which: str = "best") -> Path:
    """Accept a checkpoint directory, a ``checkpoints/`` directory or a run directory.

    Raises:
        CheckpointError: when nothing loadable is found, naming what was looked for.
    """
    p = Path(path)
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist")
    if (p / "model.safetensors").exists() or (p / "config.yaml").exists() and (p / "meta.json").exists():
        if not (p / MARKER).exists():
            raise CheckpointError(f"checkpoint {p} is incomplete (no {MARKER} marker): it was interrupted while saving")
        return p
    root = checkpoint_root(p)
    index = read_index(root)
    name = index.get(which) or index.get("latest")
    if name and (root / name / MARKER).exists():
        return root / name
    complete = complete_checkpoints(root)
    if complete:
        return complete[-1]
    raise CheckpointError(f"no complete checkpoint under {p} (looked for {root / INDEX} and */{MARKER})")


def load_model(path: str | os.PathLike, device: str = "cpu", which: str = "best") -> LoadedModel:
    """Load model, config and tokenizer from a checkpoint (nothing else is needed, R12).

    Raises:
        CheckpointError: missing/incomplete/corrupt files, or a newer format version.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_model as st_load

    from nmt.data.tokenizer import Tokenizer
    from nmt.models import build_model

    ckpt = resolve_checkpoint(path, which)
    try:
        meta = json.loads((ckpt / "meta.json").read_text())
        cfg = config_from_yaml((ckpt / "config.yaml").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"checkpoint {ckpt}: cannot read meta.json/config.yaml: {err}") from err
    except Exception as err:  # omegaconf validation errors
        raise CheckpointError(f"checkpoint {ckpt}: config.yaml does not match this version of nmt: {err}") from err
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {ckpt} has format version {meta['format_version']}, newer than this "
                              f"nmt supports ({FORMAT_VERSION}); upgrade nmt")
    tok_files = {f.name: f.read_bytes() for f in ckpt.glob("*.model")}
    if not tok_files:
        raise CheckpointError(f"checkpoint {ckpt} holds no sentencepiece model (*.model)")
    try:
        tokenizer = Tokenizer.from_bytes(tok_files)
    except Exception as err:  # sentencepiece raises RuntimeError/DataError on a bad proto
        raise CheckpointError(f"checkpoint {ckpt}: sentencepiece model cannot be loaded: {err}") from err
    model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    try:
        missing, unexpected = st_load(model, str(ckpt / "model.safetensors"), strict=False, device=device)
    except (SafetensorError, OSError, RuntimeError) as err:
        raise CheckpointError(f"checkpoint {ckpt}/model.safetensors cannot be loaded: {err}") from err
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {ckpt}/model.safetensors does not match the model in config.yaml: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    model.to(device).eval()
    return LoadedModel(model, cfg, tokenizer, meta, ckpt)


def load_trainer_state(ckpt: Path) -> dict:
    """``trainer_state.pt`` with ``weights_only=True`` (no code can run, R10)."""
    try:
        return torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{ckpt}/trainer_state.pt cannot be loaded safely: {err}") from err

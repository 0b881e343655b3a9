"""Reading checkpoints for inference: find one, check it, load it (ARCHITECTURE.md example 4;
RELIABILITY.md R3, R4, R10, R12, R30, R31).

A checkpoint is a directory ``<run>/checkpoints/<name>/`` holding ``model.safetensors``,
``config.yaml``, the sentencepiece model(s), ``meta.json`` and, written last, ``COMPLETE``
(training adds ``trainer_state.pt``; :mod:`nmt.train.checkpoint` writes them).

A checkpoint or model folder may come from anyone, so loading treats it as untrusted input:
every file is size-checked before it is read; ``config.yaml`` is parsed without interpolation
and validated and bounded (:func:`nmt.config_checks.validate`); the tokenizer must match the
sha256 in ``meta.json``; the model is first built on the ``meta`` device and compared with the
safetensors header, so nothing is allocated for a size the weights file does not back. Every
failure is one :class:`CheckpointError` naming the file. Readers never delete or write anything.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

import torch

from nmt.config import Config, ConfigError, config_from_yaml
from nmt.io import read_limited

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
INDEX = "checkpoints.json"
MARKER = "COMPLETE"
WEIGHTS = "model.safetensors"
TOKENIZER_FILES = ("spm.model", "src.spm.model", "tgt.spm.model")
TEMP_PREFIX = ".tmp-"
#: a checkpoint's directory name as the index may name it (no path separators, no leading dot)
CHECKPOINT_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
MAX_SMALL_FILE = 1 << 20  # config.yaml, meta.json, checkpoints.json
MAX_TOKENIZER_FILE = 64 << 20


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, corrupt, untrustworthy or from an incompatible version."""


@dataclass
class LoadedModel:
    """What :func:`load_model` returns: everything translation needs."""

    model: torch.nn.Module
    config: Config
    tokenizer: Any
    meta: dict
    path: Path


def is_checkpoint(path: str | os.PathLike) -> bool:
    """True when ``path`` is a real directory (not a link) with the marker and ``meta.json``: an
    nmt checkpoint, the only kind of folder a checkpoint may replace (R31)."""
    p = Path(path)
    return p.is_dir() and not p.is_symlink() and (p / MARKER).is_file() and (p / "meta.json").is_file()


def read_json(path: Path, limit: int = MAX_SMALL_FILE) -> dict:
    """A JSON object from ``path`` (at most ``limit`` bytes).

    Raises:
        CheckpointError: unreadable, too large, not JSON or not an object (names the file).
    """
    try:
        data = json.loads(read_limited(path, limit).decode("utf-8"))
    except (OSError, ValueError) as err:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise CheckpointError(f"{path} cannot be read: {err}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} holds {type(data).__name__}, expected a JSON object")
    return data


def read_index(ckpt_root: Path) -> dict:
    """``checkpoints.json`` (``latest``, ``best``, ``best_bleu``) as a dict, empty when absent.

    The index only points at directories that are on disk anyway, so a damaged one is never
    fatal (R17): it is ignored with a warning, and an entry that is not a plain checkpoint name
    (``../elsewhere``) is dropped.
    """
    path = Path(ckpt_root) / INDEX
    if not path.exists():
        return {}
    try:
        index = read_json(path)
    except CheckpointError as err:
        log.warning("%s; using the checkpoints on disk instead", err)
        return {}
    for key in ("latest", "best"):
        name = index.get(key)
        if name is not None and not (isinstance(name, str) and CHECKPOINT_NAME.match(name)):
            log.warning("%s: %s=%r is not a checkpoint name; ignored", path, key, name)
            index.pop(key)
    if not isinstance(index.get("best_bleu"), (int, float, type(None))):
        index.pop("best_bleu")
    return index


def _step(meta: dict) -> int:
    step = meta.get("step", 0)
    return step if isinstance(step, int) else 0


def complete_checkpoints(ckpt_root: Path) -> list[Path]:
    """Complete checkpoint directories under ``ckpt_root``, oldest first (by step).

    Temporary entries (``.tmp-*``), links and directories without the marker are skipped; a
    directory with the marker but no readable ``meta.json`` is left out with a warning. Nothing
    is deleted (R31): only the trainer that holds the run's lock cleans up
    (:func:`nmt.train.checkpoint.clean_stale_temps`).
    """
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        if p.name.startswith(TEMP_PREFIX) or not is_checkpoint(p):
            continue
        try:
            step = _step(read_json(p / "meta.json"))
        except CheckpointError as err:
            log.warning("checkpoint %s is left out: %s", p, err)
            continue
        out.append((step, p.name, p))
    return [p for _, _, p in sorted(out)]


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
    if (p / WEIGHTS).exists() or (p / "config.yaml").exists() and (p / "meta.json").exists():
        if not (p / MARKER).exists():
            raise CheckpointError(f"checkpoint {p} is incomplete (no {MARKER} marker): it was interrupted while saving")
        return p
    root = checkpoint_root(p)
    index = read_index(root)
    name = index.get(which) or index.get("latest")
    if name and is_checkpoint(root / name):
        return root / name
    complete = complete_checkpoints(root)
    if complete:
        return complete[-1]
    raise CheckpointError(f"no complete checkpoint under {p} (looked for {root / INDEX} and */{MARKER})")


def read_config(ckpt: Path) -> Config:
    """``ckpt/config.yaml`` parsed without interpolation and validated (R30).

    Raises:
        CheckpointError: naming the file and the key.
    """
    from nmt.config_checks import validate

    path = ckpt / "config.yaml"
    try:
        text = read_limited(path, MAX_SMALL_FILE).decode("utf-8")
        cfg = config_from_yaml(text, source=str(path))
        validate(cfg, training=False)
    except (OSError, ValueError) as err:  # ConfigError and UnicodeDecodeError are ValueErrors
        message = str(err).replace("\n  ", "; ")
        raise CheckpointError(message if str(path) in message else f"{path}: {message}") from None
    return cfg


def read_tokenizer(folder: Path, meta: Optional[dict] = None, label: Optional[str] = None):
    """The sentencepiece model(s) in ``folder``, checked against ``meta["tokenizer_sha256"]`` (R12).

    Raises:
        CheckpointError: no model, a file too large or not a sentencepiece model, or a model
            whose sha256 differs from the one recorded (a swapped tokenizer translates garbage).
    """
    from nmt.data.errors import DataError
    from nmt.data.tokenizer import Tokenizer

    label = label or str(folder)
    try:
        files = {n: read_limited(folder / n, MAX_TOKENIZER_FILE) for n in TOKENIZER_FILES if (folder / n).is_file()}
        if not files:
            raise CheckpointError(f"{label} holds no sentencepiece model ({' or '.join(TOKENIZER_FILES[:2])})")
        tokenizer = Tokenizer.from_bytes(files)
    except (OSError, ValueError, DataError) as err:
        raise CheckpointError(f"{label}: sentencepiece model cannot be loaded: {err}") from None
    if meta is not None:
        recorded = meta.get("tokenizer_sha256")
        if recorded != tokenizer.sha256():
            raise CheckpointError(f"{label}: the sentencepiece model's sha256 {tokenizer.sha256()} differs from "
                                  f"meta.json's tokenizer_sha256 {recorded}: the tokenizer was replaced or damaged")
    return tokenizer


def check_weights_header(model: torch.nn.Module, path: Path) -> None:
    """Compare ``model``'s parameters (built on the ``meta`` device: no memory) with the tensors
    named in the safetensors header of ``path``, before anything real is allocated (R30).

    A tied parameter (one tensor under several names) needs one of its names in the file.

    Raises:
        CheckpointError: unreadable header, or missing, unexpected or differently shaped tensors.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # SafetensorError, OSError, ...: a damaged or foreign file
        raise CheckpointError(f"{path} cannot be read as safetensors: {err}") from None
    groups: dict[int, list[tuple[str, tuple]]] = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append((name, tuple(tensor.shape)))
    missing, wrong = [], []
    for members in groups.values():
        present = [(n, s) for n, s in members if n in header]
        if not present:
            missing.append(members[0][0])
        wrong += [f"{n} {header[n]} (config.yaml implies {s})" for n, s in present if header[n] != s]
    known = {n for members in groups.values() for n, _ in members}
    unexpected = sorted(set(header) - known)
    if missing or unexpected or wrong:
        raise CheckpointError(f"{path} does not match the model in config.yaml: missing {sorted(missing)[:5]}, "
                              f"unexpected {unexpected[:5]}, shapes {wrong[:3]}")


def build_checked_model(cfg: Config, tokenizer, weights: Path, device: str = "cpu") -> torch.nn.Module:
    """Build ``cfg.model`` for ``tokenizer`` and load ``weights`` into it, after checking the
    safetensors header against a ``meta``-device build (R30).

    Raises:
        CheckpointError: the configuration cannot be built or does not match the weights.
    """
    from safetensors.torch import load_model as st_load

    from nmt.models import build_model

    try:
        with torch.device("meta"):
            skeleton = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    except (ValueError, TypeError, RuntimeError) as err:
        raise CheckpointError(f"{weights.parent / 'config.yaml'}: the model cannot be built: {err}") from None
    check_weights_header(skeleton, weights)
    del skeleton
    try:
        model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
        missing, unexpected = st_load(model, str(weights), strict=False, device=device)
    except Exception as err:  # SafetensorError, OSError, RuntimeError (out of memory, bad data)
        raise CheckpointError(f"{weights} cannot be loaded: {str(err).splitlines()[0]}") from None
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not match the model in config.yaml: "
                              f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return model.to(device).eval()


def load_model(path: str | os.PathLike, device: str = "cpu", which: str = "best") -> LoadedModel:
    """Load model, config and tokenizer from a checkpoint, checked as untrusted input (R12, R30).

    Raises:
        CheckpointError: missing/incomplete/corrupt files, a config that is invalid or out of
            bounds, a tokenizer that does not match ``meta.json``, weights that do not match the
            config, or a newer format version.
    """
    ckpt = resolve_checkpoint(path, which)
    meta = read_json(ckpt / "meta.json")
    version = meta.get("format_version", 0)
    if not isinstance(version, int):
        raise CheckpointError(f"{ckpt / 'meta.json'}: format_version={version!r} is not a number")
    if version > FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {ckpt} has format version {version}, newer than this "
                              f"nmt supports ({FORMAT_VERSION}); upgrade nmt")
    cfg = read_config(ckpt)
    tokenizer = read_tokenizer(ckpt, meta, label=f"checkpoint {ckpt}")
    model = build_checked_model(cfg, tokenizer, ckpt / WEIGHTS, device)
    return LoadedModel(model, cfg, tokenizer, meta, ckpt)


def load_ensemble(paths: Sequence[str | os.PathLike], device: str = "cpu", which: str = "best") -> LoadedModel:
    """Load one checkpoint (the plain model) or several (an :class:`~nmt.models.ensemble.Ensemble`).

    Args:
        paths: checkpoint or run directories (see :func:`resolve_checkpoint`).
    Returns:
        a :class:`LoadedModel`. With several paths, ``model`` is an ``Ensemble``; ``tokenizer``,
        ``path`` and ``meta`` are the first member's (``meta`` gains ``"ensemble": [member
        checkpoint paths]``); ``config`` is the first member's with ``model.max_positions``
        lowered to the smallest of the members', so that ``config.model.max_positions - 1`` is a
        source length every member accepts.
    Raises:
        CheckpointError: no paths, a member that cannot be loaded, or members whose tokenizers
            differ (compared by sha256, so that ids mean the same thing); names both checkpoints.
    """
    from nmt.models.ensemble import Ensemble

    if not paths:
        raise CheckpointError("no checkpoint given")
    members = [load_model(p, device=device, which=which) for p in paths]
    if len(members) == 1:
        return members[0]
    first = members[0]
    for other in members[1:]:
        if other.tokenizer.sha256() != first.tokenizer.sha256():
            raise CheckpointError(f"cannot ensemble {first.path} and {other.path}: their sentencepiece models "
                                  "differ, so token ids mean different things (ensembles need one shared vocabulary)")
    max_positions = min(m.config.model.max_positions for m in members)
    config = dataclasses.replace(first.config, model=dataclasses.replace(first.config.model,
                                                                          max_positions=max_positions))
    meta = dict(first.meta, ensemble=[str(m.path) for m in members])
    model = Ensemble([m.model for m in members]).to(device).eval()
    return LoadedModel(model, config, first.tokenizer, meta, first.path)


def describe_error(err: BaseException) -> str:
    """One ``error:`` line's text for a failure while loading (ConfigError, CheckpointError, ...)."""
    text = str(err).strip().replace("\n  ", "; ").replace("\n", " ")
    return text if isinstance(err, (CheckpointError, ConfigError)) else f"{type(err).__name__}: {text}"

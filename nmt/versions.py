"""Versions of nmt, Python and the libraries a result depends on (logged by every run and
written into ``results.json``, so that a number can be traced to the software that made it)."""
from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

import nmt

# distribution names (as pip knows them) whose versions change results or speed
DEPENDENCIES = ("torch", "sentencepiece", "sacrebleu", "datasets", "hydra-core", "omegaconf", "tensorboard",
                "safetensors", "numpy", "ctranslate2")


def git_commit() -> str | None:
    """The checkout's commit (with ``+dirty`` when files are modified), or None outside a git checkout."""
    root = Path(nmt.__file__).resolve().parents[1]
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) or None


def versions() -> dict[str, str]:
    """``{"nmt": ..., "python": ..., "torch": ..., ...}``; libraries that are not installed are
    left out (ctranslate2 is optional). Reads package metadata only: nothing heavy is imported."""
    out = {"nmt": nmt.__version__, "python": platform.python_version(), "platform": platform.platform()}
    commit = git_commit()
    if commit:
        out["git"] = commit
    for name in DEPENDENCIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def format_versions(info: dict[str, str] | None = None) -> str:
    """One line: ``nmt 0.1.0 (git abc123) | python 3.11.7 | torch 2.13.0 | ...``."""
    info = versions() if info is None else info
    head = f"nmt {info['nmt']}" + (f" (git {info['git']})" if "git" in info else "")
    rest = [f"{k} {v}" for k, v in info.items() if k not in ("nmt", "git", "platform")]
    return " | ".join([head, *rest]) + f" | {info.get('platform', '')}"

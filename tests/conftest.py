"""Shared fixtures: real-data location and small helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def real_data_dir() -> Path | None:
    """``$NMT_DATA_DIR`` when it holds Multi30k, else None."""
    env = os.environ.get("NMT_DATA_DIR")
    if env and (Path(env) / "multi30k" / "train.en").exists():
        return Path(env)
    return None


def require_multi30k() -> Path:
    """Folder containing ``multi30k/``; skips the calling test (or fixture) with a visible reason
    when absent."""
    d = real_data_dir()
    if d is None:
        pytest.skip("real Multi30k not available: set NMT_DATA_DIR to a folder containing multi30k/")
    return d


@pytest.fixture
def multi30k_dir() -> Path:
    """Folder containing ``multi30k/``; skips with a visible reason when absent."""
    return require_multi30k()


@pytest.fixture(autouse=True)
def _deterministic():
    """Seed every test, and give it back the thread count it started with (the trainer and the
    CLIs call torch.set_num_threads, which would otherwise leak into later tests)."""
    torch.manual_seed(0)
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)

"""Checkpoint averaging (Vaswani et al. 2017 §6.1: the last checkpoints averaged)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch


def average_checkpoints(paths: Sequence[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the weights in ``<ckpt>/model.safetensors`` for each path.

    Returns a state dict (tied weights appear under the name safetensors stored).

    Raises:
        ValueError: when ``paths`` is empty or the checkpoints hold different tensors.
    """
    from safetensors.torch import load_file

    if not paths:
        raise ValueError("no checkpoints to average")
    total: dict[str, torch.Tensor] = {}
    for path in paths:
        state = load_file(str(Path(path) / "model.safetensors"))
        if total and set(state) != set(total):
            raise ValueError(f"{path} holds different tensors from {paths[0]}")
        for k, v in state.items():
            total[k] = total[k] + v.double() if k in total else v.double()
    return {k: (v / len(paths)).float() for k, v in total.items()}

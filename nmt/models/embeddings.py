"""Token embeddings and positional encodings (Vaswani et al. 2017 §3.4, §3.5)."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from nmt.data.batch import PAD_ID


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """``(num_positions, dim)`` table PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...)
    (Vaswani et al. 2017 §3.5)."""
    position = torch.arange(num_positions, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table


class PositionalEncoding(nn.Module):
    """Adds positions to ``(B, T, D)`` embeddings starting at ``offset`` (incremental decoding).

    Args:
        kind: ``sinusoidal`` (fixed) or ``learned`` (an embedding per position).
        max_positions: largest supported position + 1.
    Raises:
        ValueError: on an unknown kind, or (in forward) a position beyond ``max_positions``.
    """

    def __init__(self, kind: str, dim: int, max_positions: int) -> None:
        super().__init__()
        self.kind = kind
        self.max_positions = max_positions
        if kind == "sinusoidal":
            self.register_buffer("table", sinusoidal_table(max_positions, dim), persistent=False)
        elif kind == "learned":
            self.table = nn.Parameter(torch.randn(max_positions, dim) * dim ** -0.5)
        else:
            raise ValueError(f"unknown positions kind {kind!r} (expected sinusoidal or learned)")

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        """x ``(B, T, D)`` -> x + PE[offset : offset + T]."""
        end = offset + x.size(1)
        if end > self.max_positions:
            raise ValueError(f"sequence position {end} exceeds max_positions={self.max_positions}")
        return x + self.table[offset:end]


class TokenEmbedding(nn.Embedding):
    """Token embedding scaled by sqrt(D) (Vaswani et al. 2017 §3.4); row ``PAD_ID`` is zero.

    tokens ``(B, T)`` long -> ``(B, T, D)``.
    """

    def __init__(self, vocab_size: int, dim: int, scale: bool = True) -> None:
        super().__init__(vocab_size, dim, padding_idx=PAD_ID)
        nn.init.normal_(self.weight, mean=0.0, std=dim ** -0.5)
        with torch.no_grad():
            self.weight[PAD_ID].zero_()
        self.scale = math.sqrt(dim) if scale else 1.0

    def forward(self, tokens: Tensor) -> Tensor:
        return super().forward(tokens) * self.scale

"""The one batch type; the only place padding masks are built."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3


@dataclass
class Batch:
    """A padded batch of sentence pairs (batch-first).

    Attributes:
        src_tokens: ``(B, S)`` long, source ids followed by EOS, right-padded with ``PAD_ID``.
        src_lengths: ``(B,)`` long, real source lengths (EOS included).
        src_mask: ``(B, S)`` bool, True at real positions (True = attend).
        tgt_in: ``(B, T)`` long, BOS + target ids (decoder input, teacher forcing), or None.
        tgt_out: ``(B, T)`` long, target ids + EOS (what the decoder predicts), or None.
        indices: ``(B,)`` long, positions of the examples in their dataset (restores order).
    """

    src_tokens: Tensor
    src_lengths: Tensor
    src_mask: Tensor
    tgt_in: Optional[Tensor]
    tgt_out: Optional[Tensor]
    indices: Tensor

    @property
    def size(self) -> int:
        """Number of sentences B."""
        return self.src_tokens.size(0)

    @property
    def ntokens(self) -> int:
        """Number of real target tokens (EOS included), the loss normaliser."""
        return 0 if self.tgt_out is None else int((self.tgt_out != PAD_ID).sum())

    @property
    def tgt_mask(self) -> Optional[Tensor]:
        """``(B, T)`` bool, True at real target positions."""
        return None if self.tgt_out is None else self.tgt_out != PAD_ID

    def to(self, device: torch.device | str) -> "Batch":
        """Move every tensor to ``device``."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        return Batch(move(self.src_tokens), move(self.src_lengths), move(self.src_mask),
                     move(self.tgt_in), move(self.tgt_out), move(self.indices))

    @classmethod
    def collate(cls, src: Sequence[Sequence[int]], tgt: Optional[Sequence[Sequence[int]]] = None,
                indices: Optional[Sequence[int]] = None) -> "Batch":
        """Pad id sequences (without BOS/EOS) into a :class:`Batch`.

        Args:
            src: B source id lists (EOS is appended here).
            tgt: B target id lists or None (translation); BOS/EOS are added here.
            indices: dataset positions of the B examples (default ``range(B)``).
        Raises:
            ValueError: when ``src`` is empty or ``tgt`` has a different length.
        """
        if len(src) == 0:
            raise ValueError("cannot collate an empty batch")
        if tgt is not None and len(tgt) != len(src):
            raise ValueError(f"{len(src)} source but {len(tgt)} target sequences")
        bsz = len(src)
        src_lengths = torch.tensor([len(s) + 1 for s in src], dtype=torch.long)
        src_tokens = torch.full((bsz, int(src_lengths.max())), PAD_ID, dtype=torch.long)
        for i, s in enumerate(src):
            src_tokens[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            src_tokens[i, len(s)] = EOS_ID
        src_mask = src_tokens != PAD_ID
        tgt_in = tgt_out = None
        if tgt is not None:
            tlen = max(len(t) for t in tgt) + 1
            tgt_in = torch.full((bsz, tlen), PAD_ID, dtype=torch.long)
            tgt_out = torch.full((bsz, tlen), PAD_ID, dtype=torch.long)
            for i, t in enumerate(tgt):
                ids = torch.as_tensor(t, dtype=torch.long)
                tgt_in[i, 0] = BOS_ID
                tgt_in[i, 1 : len(t) + 1] = ids
                tgt_out[i, : len(t)] = ids
                tgt_out[i, len(t)] = EOS_ID
        idx = torch.arange(bsz) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
        return cls(src_tokens, src_lengths, src_mask, tgt_in, tgt_out, idx)

"""Variable-length id sequences stored flat: one array of ids and one of offsets.

A corpus of millions of sentences held as one Python list per sentence costs ~100 bytes of
object overhead per sentence before its ids; stored flat it costs its ids and one offset, and a
flat array can be a ``numpy.memmap`` of a file (:mod:`nmt.data.id_cache`), so the operating
system pages it in as batches touch it.
"""
from __future__ import annotations

from typing import Iterator, Optional, Sequence

import numpy as np


class IdSequences:
    """Indexing shared by the flat id stores: ``s[k]`` (negative ``k`` from the end), ``s[a:b]``
    (a list) and iteration, all through :meth:`item`."""

    def __len__(self) -> int:
        raise NotImplementedError

    def item(self, k: int) -> np.ndarray:
        """``(length,)`` int64 ids of item ``0 <= k < len(self)``."""
        raise NotImplementedError

    def __getitem__(self, k):
        if isinstance(k, slice):
            return [self.item(i) for i in range(*k.indices(len(self)))]
        k = int(k) + len(self) if int(k) < 0 else int(k)
        if not 0 <= k < len(self):
            raise IndexError(f"index {k} out of range for {len(self)} sequences")
        return self.item(k)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self)):
            yield self.item(k)


class Ragged(IdSequences):
    """Item ``k`` is ``flat[offsets[j]:offsets[j + 1]]`` with ``j = selection[k]`` (``j = k`` without one).

    Args:
        flat: ``(total,)`` ids of every sequence, end to end (any integer dtype; a memmap is fine).
        offsets: ``(n + 1,)`` int64 start of each sequence in ``flat`` and the end of the last.
        selection: optional ``(m,)`` int64 positions of the items among the ``n`` sequences.
    Raises:
        ValueError: offsets that do not start at 0, decrease, or end past ``flat``.
    """

    def __init__(self, flat: np.ndarray, offsets: np.ndarray, selection: Optional[np.ndarray] = None) -> None:
        offsets = np.asarray(offsets, dtype=np.int64)
        if offsets.ndim != 1 or len(offsets) == 0 or offsets[0] != 0 or offsets[-1] > len(flat):
            raise ValueError(f"offsets must run from 0 to at most {len(flat)}")
        if len(offsets) > 1 and bool((np.diff(offsets) < 0).any()):
            raise ValueError("offsets must not decrease")
        self.flat, self.offsets = flat, offsets
        self.selection = None if selection is None else np.asarray(selection, dtype=np.int64)

    @classmethod
    def from_lengths(cls, flat: np.ndarray, lengths: np.ndarray) -> "Ragged":
        """Sequences of ``lengths[i]`` ids each, end to end in ``flat``."""
        offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        return cls(flat, offsets)

    @classmethod
    def from_lists(cls, seqs: Sequence[Sequence[int]], dtype=np.int32) -> "Ragged":
        """Pack Python lists (or arrays) of ids."""
        lengths = np.fromiter((len(s) for s in seqs), dtype=np.int64, count=len(seqs))
        flat = np.fromiter((i for s in seqs for i in s), dtype=dtype, count=int(lengths.sum()))
        return cls.from_lengths(flat, lengths)

    def __len__(self) -> int:
        return len(self.offsets) - 1 if self.selection is None else len(self.selection)

    def item(self, k: int) -> np.ndarray:
        """Item ``k``'s ids as int64 (a copy, so a memmap page is not kept referenced)."""
        j = k if self.selection is None else int(self.selection[k])
        return np.array(self.flat[self.offsets[j]:self.offsets[j + 1]], dtype=np.int64)

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` int64 length of every item."""
        lengths = np.diff(self.offsets)
        return lengths if self.selection is None else lengths[self.selection]

    def take(self, indices: Sequence[int] | np.ndarray) -> "Ragged":
        """The items at ``indices`` (no ids are copied)."""
        idx = np.asarray(indices, dtype=np.int64)
        return Ragged(self.flat, self.offsets, idx if self.selection is None else self.selection[idx])

    def count_id(self, value: int) -> int:
        """How many ids of the selected items equal ``value`` (all items: one pass over ``flat``)."""
        if self.selection is None:
            return int(np.count_nonzero(self.flat[: self.offsets[-1]] == value))
        return sum(int(np.count_nonzero(self[k] == value)) for k in range(len(self)))

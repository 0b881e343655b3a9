"""A uniform sample of a stream of unknown length in one pass (reservoir sampling).

The vocabulary of a large corpus is trained on a sample of its sentence pairs, as
sentencepiece's ``input_sentence_size`` and Marian do, so that start-up memory does not grow
with the corpus. The sample is drawn with the run's seed, so the tokenizer, and with it
everything after, is deterministic (RELIABILITY.md R27).
"""
from __future__ import annotations

import math
import random
from typing import Generic, TypeVar

T = TypeVar("T")


class Reservoir(Generic[T]):
    """Keep ``size`` items chosen uniformly from all items offered (Li 1994, "Reservoir-sampling
    algorithms of time complexity O(n(1 + log(N/n)))", Algorithm L).

    Until ``size`` items have been offered every item is kept, so a stream no longer than
    ``size`` is kept whole and in order. After that, the number of items to skip before the next
    replacement is drawn from its geometric distribution, so the cost is a counter comparison per
    item and O(size · log(N / size)) random draws in all.

    Args:
        size: items to keep (> 0).
        seed: the generator's seed (``random.Random``; the same seed and stream give the same sample).
    Raises:
        ValueError: ``size`` < 1.
    """

    def __init__(self, size: int, seed: int) -> None:
        if size < 1:
            raise ValueError(f"a reservoir keeps at least one item, got size={size}")
        self.size = int(size)
        self._rng = random.Random(seed)
        self._items: list[tuple[int, T]] = []
        self._seen = 0
        self._w = 1.0
        self._next = self.size  # 0-based position of the next item that enters a full reservoir

    def offer(self, item: T) -> None:
        """Consider the next item of the stream."""
        position = self._seen
        self._seen += 1
        if position < self.size:
            self._items.append((position, item))
            if self._seen == self.size:
                self._advance()
            return
        if position == self._next:
            self._items[self._rng.randrange(self.size)] = (position, item)
            self._advance()

    def wants(self) -> bool:
        """Whether the next item offered will be kept (callers may skip preparing the others)."""
        return self._seen < self.size or self._seen == self._next

    def skip(self) -> None:
        """Offer an item that :meth:`wants` said is not kept, without building it."""
        if self.wants():
            raise ValueError("skip() called for an item the reservoir keeps")
        self._seen += 1

    def _advance(self) -> None:
        self._w *= math.exp(math.log(1.0 - self._rng.random()) / self.size)
        gap = math.floor(math.log(1.0 - self._rng.random()) / math.log1p(-self._w)) if self._w < 1 else 0
        self._next = self._seen + gap

    @property
    def seen(self) -> int:
        """Items offered so far."""
        return self._seen

    def items(self) -> list[T]:
        """The sample, in stream order."""
        return [item for _, item in sorted(self._items, key=lambda pair: pair[0])]

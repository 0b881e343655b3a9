"""Several training corpora mixed by weight (``data.train=[{dir: ..., weight: 2}, ...]``).

As OpenNMT-py/Eole's corpus weights: a corpus of weight 2 gives two pairs for every pair of a
weight-1 corpus, whatever their sizes. An epoch has as many pairs as all corpora together; corpus
``i`` gives ``weight_i / sum(weights)`` of them, drawn from a permutation of its pairs seeded by
``(seed, epoch, i)`` (a small corpus is repeated, every pair once before any twice; a large one is
subsampled, a different part each epoch). Each corpus stays in its own memory-mapped cache; an
epoch's pairs are index arrays into them, so the mixture costs 16 bytes per pair of the epoch.
The epoch's pairs depend only on the seed and the epoch, so resuming is exact.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from nmt.data.dataset import TokenizedDataset
from nmt.data.ragged import IdSequences, Ragged

log = logging.getLogger(__name__)


class MixedRagged(IdSequences):
    """Item ``k`` is item ``local[k]`` of ``parts[part[k]]`` (the :class:`Ragged` interface that
    :class:`TokenizedDataset` and the batching use)."""

    def __init__(self, parts: Sequence[Ragged], part: np.ndarray, local: np.ndarray) -> None:
        self.parts, self.part, self.local = list(parts), np.asarray(part, np.int64), np.asarray(local, np.int64)

    def __len__(self) -> int:
        return len(self.part)

    def item(self, k: int) -> np.ndarray:
        return self.parts[int(self.part[k])].item(int(self.local[k]))

    def lengths(self) -> np.ndarray:
        """``(len(self),)`` int64 length of every item."""
        out = np.empty(len(self), dtype=np.int64)
        for i, ragged in enumerate(self.parts):
            mine = self.part == i
            out[mine] = ragged.lengths()[self.local[mine]]
        return out

    def take(self, indices) -> "MixedRagged":
        idx = np.asarray(indices, dtype=np.int64)
        return MixedRagged(self.parts, self.part[idx], self.local[idx])


def quotas(total: int, weights: Sequence[float]) -> list[int]:
    """Pairs per corpus in an epoch of ``total`` pairs: proportional to ``weights``, the remainder
    to the largest fractions (ties to the first corpus), so they add up to ``total``."""
    w = np.asarray(weights, dtype=float)
    exact = total * w / w.sum()
    base = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - base), kind="stable")
    base[order[: total - int(base.sum())]] += 1
    return base.tolist()


class CorpusMixture:
    """The training pairs of every epoch, mixed by weight from corpora that share one tokenizer.

    Args:
        corpora: each corpus's (length-filtered) ids.
        weights: positive weights, one per corpus.
        seed: the run's seed.
        names: labels for the log.
    Raises:
        ValueError: a weight that is not positive, or an empty corpus.
    """

    def __init__(self, corpora: Sequence[TokenizedDataset], weights: Sequence[float], seed: int,
                 names: Optional[Sequence[str]] = None) -> None:
        if len(corpora) != len(weights) or not corpora:
            raise ValueError(f"{len(corpora)} corpora but {len(weights)} weights")
        if any(not w > 0 for w in weights) or any(len(c) == 0 for c in corpora):
            raise ValueError("every corpus of a mixture needs a positive weight and at least one pair")
        self.corpora, self.weights, self.seed = list(corpora), [float(w) for w in weights], int(seed)
        self.quotas = quotas(sum(len(c) for c in corpora), self.weights)
        self._cache: Optional[tuple[int, TokenizedDataset]] = None
        for name, corpus, quota in zip(names or range(len(corpora)), corpora, self.quotas):
            log.info("mixture: %s gives %d pairs an epoch (%d pairs, %.2f passes)", name, quota, len(corpus),
                     quota / len(corpus))

    def dataset(self, epoch: int) -> TokenizedDataset:
        """The pairs of ``epoch`` (1-based), corpus by corpus (the sampler shuffles them); the same
        number every epoch. The last epoch's is cached."""
        epoch = int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        parts, locals_ = [], []
        for i, (corpus, quota) in enumerate(zip(self.corpora, self.quotas)):
            rng = np.random.default_rng([self.seed, epoch, i])
            passes = -(-quota // len(corpus))
            order = np.concatenate([rng.permutation(len(corpus)) for _ in range(passes)])[:quota]
            parts.append(np.full(quota, i, dtype=np.int64))
            locals_.append(order)
        part, local = np.concatenate(parts), np.concatenate(locals_)
        src = MixedRagged([c.src for c in self.corpora], part, local)
        tgt = MixedRagged([c.tgt for c in self.corpora], part, local)
        unk = {side: float(np.average([c.unk_rate[side] for c in self.corpora], weights=self.quotas))
               for side in ("src", "tgt")}
        data = TokenizedDataset(src, tgt, unk_rate=unk)
        self._cache = (epoch, data)
        return data

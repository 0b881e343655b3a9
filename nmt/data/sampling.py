"""Subword regularisation: the training text segmented anew every epoch (Kudo 2018).

A sentence has many segmentations into pieces of one sentencepiece vocabulary. Training on a
different sampled one each epoch, instead of always the best, acts as data augmentation and
makes the model robust to segmentation (Kudo 2018, "Subword Regularization", ACL). It costs no
model change: dev, test and translation keep the best (Viterbi) segmentation, and the
vocabulary is the same.

This is Kudo's l-best sampling (§3.2): each sentence's ``l`` best segmentations under the
unigram model are computed once, and every epoch one of them is drawn with probability
``P(x) ** alpha / sum_j P(x_j) ** alpha``. sentencepiece's own sampler
(``encode(enable_sampling=True)``) draws the same distribution, but its generator is seeded
differently in every process (sentencepiece 0.2.3: the same seed gives other samples in a new
process), which would break exact resume and reproducible runs. Here the draw uses numpy's
generator seeded by ``(seed, epoch, side)``, so epoch ``e``'s segmentation is a pure function
of the run seed and ``e`` and a resumed run trains on exactly the batches of the uninterrupted
one.
"""
from __future__ import annotations

import logging
from itertools import chain
from typing import Optional, Sequence

import numpy as np

from nmt.data.dataset import TokenizedDataset, passes_length_filters

log = logging.getLogger(__name__)

_CHUNK = 4096  # sentences per n-best call (bounds the temporary Python lists)


class _NBest:
    """One side's l-best segmentations, stored flat.

    Attributes:
        ids: ``(T,)`` int32, every candidate's ids one after another.
        bounds: ``(M + 1,)`` int64, candidate ``m`` is ``ids[bounds[m]:bounds[m + 1]]``.
        first: ``(N,)`` int64, sentence ``i``'s best candidate (the others follow it).
        log_probs: ``(N, l)`` float64, log P(x) of each sentence's candidates (-inf past its last).
    """

    def __init__(self, tokenizer, texts: Sequence[str], side: str, nbest_size: int) -> None:
        flat: list[int] = []
        lengths: list[int] = []
        counts: list[int] = []
        for start in range(0, len(texts), _CHUNK):
            for cands in tokenizer.nbest_encode(texts[start:start + _CHUNK], side, nbest_size):
                counts.append(len(cands))
                lengths.extend(map(len, cands))
                flat.extend(chain.from_iterable(cands))
        self.ids = np.array(flat, dtype=np.int32)
        self.bounds = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
        counts_arr = np.asarray(counts, dtype=np.int64)
        self.first = np.concatenate([[0], np.cumsum(counts_arr)[:-1]]).astype(np.int64)
        # log P(x) = sum of its pieces' log probabilities, from a running sum (empty candidates: 0)
        running = np.concatenate([[0.0], np.cumsum(tokenizer.piece_log_probs(side)[self.ids])])
        scores = running[self.bounds[1:]] - running[self.bounds[:-1]]
        self.log_probs = np.full((len(counts), nbest_size), -np.inf)
        rank = np.arange(len(scores)) - np.repeat(self.first, counts_arr)
        self.log_probs[np.repeat(np.arange(len(counts)), counts_arr), rank] = scores

    def sample(self, alpha: float, rng: np.random.Generator) -> list[np.ndarray]:
        """One candidate per sentence, drawn with probability ∝ P(x) ** alpha (Gumbel-max)."""
        if not len(self.first):
            return []
        choice = np.argmax(alpha * self.log_probs + rng.gumbel(size=self.log_probs.shape), axis=1)
        m = self.first + choice
        return [self.ids[a:b] for a, b in zip(self.bounds[m].tolist(), self.bounds[m + 1].tolist())]

    @property
    def nbytes(self) -> int:
        return self.ids.nbytes + self.bounds.nbytes + self.first.nbytes + self.log_probs.nbytes


class SubwordSampling:
    """The training pairs' sampled segmentation for each epoch (l-best sampling, Kudo 2018 §3.2).

    Args:
        tokenizer: the run's :class:`nmt.data.tokenizer.Tokenizer`, a unigram model.
        src_texts, tgt_texts: the N training sentences, aligned with ``best``.
        best: their best segmentation (the length-filtered training ids).
        alpha: the smoothing exponent: a small one draws the l candidates nearly uniformly, a
            large one nearly always the best.
        nbest_size: l, the candidates per sentence. Memory is N x l x (mean length) int32 per
            side: Multi30k (29k pairs) with l = 16 holds about 70 MB for both sides.
        seed: the run seed.
        max_len, max_ratio: the training length filters (``data.max_len``,
            ``data.max_len_ratio``). A pair whose sampled segmentation fails them keeps its best
            segmentation that epoch, so the set of training pairs never changes.
    Raises:
        ValueError: the texts and ``best`` have different lengths, ``best`` has no targets, or
            ``nbest_size < 2``.
    """

    def __init__(self, tokenizer, src_texts: Sequence[str], tgt_texts: Sequence[str], best: TokenizedDataset,
                 alpha: float, nbest_size: int, seed: int, max_len: int, max_ratio: float) -> None:
        if best.tgt is None or not len(src_texts) == len(tgt_texts) == len(best):
            raise ValueError(f"{len(src_texts)} source and {len(tgt_texts)} target sentences for "
                             f"{len(best)} tokenized pairs (with targets)")
        if nbest_size < 2:
            raise ValueError(f"nbest_size must be >= 2 (1 is the best segmentation only), got {nbest_size}")
        self.best = best
        self.alpha, self.nbest_size, self.seed = float(alpha), int(nbest_size), int(seed)
        self.max_len, self.max_ratio = int(max_len), float(max_ratio)
        self._nbest = {"src": _NBest(tokenizer, list(src_texts), "src", self.nbest_size),
                       "tgt": _NBest(tokenizer, list(tgt_texts), "tgt", self.nbest_size)}
        log.info("subword sampling: the %d best segmentations of %d training pairs (%.0f MB), alpha %g",
                 self.nbest_size, len(best), sum(n.nbytes for n in self._nbest.values()) / 2 ** 20, self.alpha)
        self._cache: Optional[tuple[int, TokenizedDataset]] = None

    def dataset(self, epoch: int) -> TokenizedDataset:
        """The training pairs of ``epoch`` (1-based), each side sampled; the last epoch's is cached.

        Returns:
            a :class:`TokenizedDataset` of the same N pairs in the same order (only the ids and
            lengths differ from ``best``).
        """
        epoch = int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        src, tgt = (self._nbest[side].sample(self.alpha, np.random.default_rng([self.seed, epoch, k]))
                    for k, side in enumerate(("src", "tgt")))
        ok = passes_length_filters([len(s) for s in src], [len(t) for t in tgt], self.max_len, self.max_ratio)
        for i in np.flatnonzero(~ok).tolist():
            src[i], tgt[i] = self.best.src[i], self.best.tgt[i]
        data = TokenizedDataset(src, tgt)
        changed = sum(not np.array_equal(a, b) or not np.array_equal(c, d)
                      for a, b, c, d in zip(data.src, self.best.src, data.tgt, self.best.tgt))
        log.info("epoch %d: sampled segmentation: %d of %d pairs differ from the best one, %+.1f%% tokens; "
                 "%d kept the best for the length filters", epoch, changed, len(data),
                 100 * (self._tokens(data) / max(1, self._tokens(self.best)) - 1), int((~ok).sum()))
        self._cache = (epoch, data)
        return data

    @staticmethod
    def _tokens(data: TokenizedDataset) -> int:
        return int(data.src_lengths.sum() + data.tgt_lengths.sum())

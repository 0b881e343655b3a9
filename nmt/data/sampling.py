"""Subword regularisation: the training text segmented anew every epoch (Kudo 2018).

A sentence has many segmentations into pieces of one sentencepiece vocabulary. Training on a
different sampled one each epoch, instead of always the best, acts as data augmentation and
makes the model robust to segmentation (Kudo 2018, "Subword Regularization", ACL; for BPE
models, BPE-dropout, Provilkov et al. 2020). It costs no model change: dev, test and
translation keep the best (Viterbi) segmentation, and the vocabulary is the same.

Epoch ``e``'s segmentation is a pure function of the run seed and ``e``, so a resumed run
trains on exactly the batches of the uninterrupted one.
"""
from __future__ import annotations

import logging
from typing import Optional, Sequence

import numpy as np

from nmt.data.corpus import passes_length_filters
from nmt.data.dataset import TokenizedDataset

log = logging.getLogger(__name__)


class SubwordSampling:
    """The training pairs' sampled segmentation for each epoch.

    Args:
        tokenizer: the run's :class:`nmt.data.tokenizer.Tokenizer`.
        src_texts, tgt_texts: the N training sentences, aligned with ``best``.
        best: ``(N,)`` pairs: their best segmentation (the length-filtered training ids).
        alpha, nbest_size: sentencepiece's sampling parameters
            (:meth:`nmt.data.tokenizer.Tokenizer.encode_sampled`).
        seed: the run seed.
        max_len, max_ratio: the training length filters (``data.max_len``,
            ``data.max_len_ratio``). A pair whose sampled segmentation fails them (sampling
            lengthens sentences: about +3% tokens on Multi30k at alpha 0.5) keeps its best
            segmentation that epoch, so the set of training pairs never changes.
    Raises:
        ValueError: the texts and ``best`` have different lengths, or ``best`` has no targets.
    """

    def __init__(self, tokenizer, src_texts: Sequence[str], tgt_texts: Sequence[str], best: TokenizedDataset,
                 alpha: float, nbest_size: int, seed: int, max_len: int, max_ratio: float) -> None:
        if best.tgt is None or not len(src_texts) == len(tgt_texts) == len(best):
            raise ValueError(f"{len(src_texts)} source and {len(tgt_texts)} target sentences for "
                             f"{len(best)} tokenized pairs (with targets)")
        self.tokenizer, self.best = tokenizer, best
        self.src_texts, self.tgt_texts = list(src_texts), list(tgt_texts)
        self.alpha, self.nbest_size, self.seed = float(alpha), int(nbest_size), int(seed)
        self.max_len, self.max_ratio = int(max_len), float(max_ratio)
        self._cache: Optional[tuple[int, TokenizedDataset]] = None

    def epoch_seed(self, epoch: int, side: str) -> int:
        """sentencepiece's generator seed for ``side`` (``"src"``/``"tgt"``) in ``epoch``: distinct
        per run seed, epoch and side."""
        return (self.seed * 1_000_003 + int(epoch) * 2 + (side == "tgt")) % 2 ** 32

    def dataset(self, epoch: int) -> TokenizedDataset:
        """The training pairs of ``epoch`` (1-based), each side sampled; the last epoch's is cached.

        Returns:
            a :class:`TokenizedDataset` of the same N pairs in the same order (only the ids and
            lengths differ from ``best``).
        """
        epoch = int(epoch)
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        tok = self.tokenizer
        src = tok.encode_sampled(self.src_texts, "src", self.alpha, self.nbest_size, self.epoch_seed(epoch, "src"))
        tgt = tok.encode_sampled(self.tgt_texts, "tgt", self.alpha, self.nbest_size, self.epoch_seed(epoch, "tgt"))
        ok = passes_length_filters([len(s) for s in src], [len(t) for t in tgt], self.max_len, self.max_ratio)
        for i in np.flatnonzero(~ok).tolist():
            src[i], tgt[i] = self.best.src[i], self.best.tgt[i]
        data = TokenizedDataset(src, tgt)
        changed = sum(not np.array_equal(a, b) or not np.array_equal(c, d)
                      for a, b, c, d in zip(data.src, self.best.src, data.tgt, self.best.tgt))
        log.info("epoch %d: sampled segmentation (alpha %g, nbest %d): %d of %d pairs differ from the best one, "
                 "%.1f%% more tokens; %d kept the best for the length filters", epoch, self.alpha, self.nbest_size,
                 changed, len(data), 100 * (self._tokens(data) / max(1, self._tokens(self.best)) - 1),
                 int((~ok).sum()))
        self._cache = (epoch, data)
        return data

    @staticmethod
    def _tokens(data: TokenizedDataset) -> int:
        return int(data.src_lengths.sum() + data.tgt_lengths.sum())

"""Token ids per sentence and a token-budget bucketing sampler.

Lengths are counted without BOS/EOS; a batch of B pairs costs
``B * (max(longest source, longest target) + 1)`` tokens (the +1 is EOS on the source and
BOS/EOS on the target), which is what :meth:`nmt.data.batch.Batch.collate` allocates.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterator, Optional, Sequence

import numpy as np

from nmt.data.batch import UNK_ID, Batch
from nmt.data.errors import DataError
from nmt.data.ragged import Ragged

logger = logging.getLogger(__name__)

UNK_WARN_RATE = 0.01  # warn above 1 % unknown tokens on a side (R24)


class TokenizedDataset:
    """Id sequences of aligned sentences (without BOS/EOS), stored flat (:class:`Ragged`).

    Attributes:
        src: N source id sequences (``src[i]`` is an int64 array).
        tgt: N target id sequences, or None (translation input).
        src_lengths, tgt_lengths: ``(N,)`` int64 lengths (``tgt_lengths`` None without tgt).
        unk_rate: fraction of UNK ids per side, ``{"src": r, "tgt": r}`` (R24).
    Args:
        src, tgt: lists of ids, or :class:`Ragged` (a memory-mapped corpus stays mapped) or
            another sequence of id arrays with ``lengths()`` and ``take()``
            (:class:`nmt.data.mixture.MixedRagged`).
        unk_rate: the rates when already counted (:mod:`nmt.data.id_cache` counts them while
            encoding), else they are counted here.
    Raises:
        ValueError: when ``src`` and ``tgt`` have different lengths.
    """

    def __init__(self, src: Sequence[Sequence[int]] | Ragged, tgt: Optional[Sequence[Sequence[int]] | Ragged] = None,
                 unk_rate: Optional[dict[str, float]] = None) -> None:
        if tgt is not None and len(tgt) != len(src):
            raise ValueError(f"{len(src)} source but {len(tgt)} target sequences")
        self.src = src if hasattr(src, "lengths") else Ragged.from_lists(src)
        self.tgt = None if tgt is None else tgt if hasattr(tgt, "lengths") else Ragged.from_lists(tgt)
        self.src_lengths = self.src.lengths()
        self.tgt_lengths = None if self.tgt is None else self.tgt.lengths()
        self.unk_rate = dict(unk_rate) if unk_rate is not None else {"src": _unk_rate(self.src)}
        if unk_rate is None and self.tgt is not None:
            self.unk_rate["tgt"] = _unk_rate(self.tgt)

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``(src ids, tgt ids or None)`` of example ``i``."""
        return self.src[i], None if self.tgt is None else self.tgt[i]

    def subset(self, indices: Sequence[int]) -> "TokenizedDataset":
        """The examples at ``indices`` (e.g. from :func:`filter_by_length`); no ids are copied."""
        return TokenizedDataset(self.src.take(indices), None if self.tgt is None else self.tgt.take(indices),
                                unk_rate=self.unk_rate)

    @classmethod
    def from_text(cls, tokenizer, src_texts: Sequence[str], tgt_texts: Optional[Sequence[str]] = None,
                  name: str = "", max_len: Optional[int] = None) -> "TokenizedDataset":
        """Encode with a :class:`nmt.data.tokenizer.Tokenizer` and report UNK rates (R24).

        ``max_len``: sentences longer than this many tokens (a side) are truncated, with a warning
        giving their number and the first line (dev data a model's positions cannot hold).
        """
        src = tokenizer.encode_src(src_texts)
        tgt = None if tgt_texts is None else tokenizer.encode_tgt(tgt_texts)
        if max_len is not None:
            for side, seqs in (("source", src), ("target", tgt or [])):
                long = [i for i, ids in enumerate(seqs) if len(ids) > max_len]
                for i in long:
                    seqs[i] = seqs[i][:max_len]
                if long:
                    logger.warning("%s: %d %s sentences longer than %d tokens truncated (first: line %d)",
                                   name or "data", len(long), side, max_len, long[0] + 1)
        data = cls(src, tgt)
        report_unk(data, name or "data")
        return data


def report_unk(dataset: TokenizedDataset, name: str) -> None:
    """Log the UNK rate per side: a warning with advice above :data:`UNK_WARN_RATE` (R24)."""
    for side, rate in dataset.unk_rate.items():
        if rate > UNK_WARN_RATE:
            logger.warning("%s: %.2f%% of %s tokens are <unk>; train the tokenizer on this language pair, or set "
                           "tokenizer.byte_fallback=true / raise tokenizer.character_coverage", name, 100 * rate, side)
        else:
            logger.info("%s: %.3f%% of %s tokens are <unk>", name, 100 * rate, side)


def _unk_rate(seqs: Ragged) -> float:
    total = int(seqs.lengths().sum())
    return seqs.count_id(UNK_ID) / total if total else 0.0


class BucketingSampler:
    """Batches of similar-length pairs under a token budget, reproducible and resumable.

    Per epoch: sort by ``(max(src, tgt), src_len, tgt_len)`` with a random tie-break from
    ``numpy.random.default_rng(seed + epoch)`` (no tie-break without shuffle), fill batches
    greedily while ``B * (max length + 1) <= max_tokens`` (and ``B <= max_sentences`` when
    > 0; an over-long example forms a batch of one), then shuffle the batch order with the
    same generator. Without shuffle the order is the sorted order (translation; restore the
    input order with ``Batch.indices``). Putting ``max(src, tgt)`` first makes batches
    similar on both sides: on Multi30k it halves the padding of a plain
    ``(src_len, tgt_len)`` sort.

    Iteration yields the remaining batches of the current epoch (``list[int]`` dataset
    indices), counting each as consumed when it is yielded; when the epoch is exhausted the
    sampler moves to ``epoch + 1``. :meth:`state_dict` / :meth:`load_state_dict` resume at
    the next batch (R8).

    ``epoch_lengths``: when the examples' lengths change from epoch to epoch (subword
    sampling, :class:`nmt.data.sampling.SubwordSampling`), a function ``epoch -> (src_lengths,
    tgt_lengths)`` of the same N examples, used in place of the fixed lengths; an epoch's
    batches are then built from that epoch's lengths.
    """

    def __init__(self, src_lengths: Sequence[int], tgt_lengths: Optional[Sequence[int]] = None,
                 max_tokens: int = 4096, max_sentences: int = 0, shuffle: bool = True, seed: int = 1,
                 epoch_lengths: Optional[Callable[[int], tuple[Sequence[int], Optional[Sequence[int]]]]] = None
                 ) -> None:
        self.src_lengths = np.asarray(src_lengths, dtype=np.int64)
        self.tgt_lengths = None if tgt_lengths is None else np.asarray(tgt_lengths, dtype=np.int64)
        if self.tgt_lengths is not None and self.tgt_lengths.shape != self.src_lengths.shape:
            raise ValueError(f"{len(self.src_lengths)} source but {len(self.tgt_lengths)} target lengths")
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.max_tokens, self.max_sentences = int(max_tokens), int(max_sentences)
        self.shuffle, self.seed = bool(shuffle), int(seed)
        self.epoch, self.batches_consumed = 1, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None
        self._epoch_lengths = epoch_lengths

    def lengths(self, epoch: int) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """``(src_lengths, tgt_lengths)`` of ``epoch``'s examples, each ``(N,)`` int64.

        Raises:
            ValueError: ``epoch_lengths`` returned another number of examples.
        """
        if self._epoch_lengths is None:
            return self.src_lengths, self.tgt_lengths
        src, tgt = self._epoch_lengths(int(epoch))
        src = np.asarray(src, dtype=np.int64)
        tgt = None if tgt is None else np.asarray(tgt, dtype=np.int64)
        if src.shape != self.src_lengths.shape or (tgt is not None and tgt.shape != src.shape):
            raise ValueError(f"epoch {epoch} has {len(src)} examples, the sampler {len(self.src_lengths)}")
        return src, tgt

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` at its first batch; a no-op when it is already the current epoch
        (so a position restored by :meth:`load_state_dict` is kept)."""
        if int(epoch) != self.epoch:
            self.epoch, self.batches_consumed = int(epoch), 0

    def batches(self, epoch: Optional[int] = None) -> list[np.ndarray]:
        """All batches of ``epoch`` (default: the current one) in iteration order, each an int64
        array of dataset indices."""
        epoch = self.epoch if epoch is None else int(epoch)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, self._build(epoch))
        return self._cache[1]

    def _build(self, epoch: int) -> list[np.ndarray]:
        src, tgt = self.lengths(epoch)
        longest = src if tgt is None else np.maximum(src, tgt)
        keys = [longest, src] + ([] if tgt is None else [tgt])
        rng = np.random.default_rng(self.seed + epoch) if self.shuffle else None
        if rng is not None:
            keys.append(rng.random(len(src)))
        order = np.lexsort(keys[::-1]) if len(src) else np.zeros(0, np.int64)  # last key primary
        starts = fill_batches(longest[order], self.max_tokens, self.max_sentences)
        batches = np.split(order, starts[1:])
        if rng is not None:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        """Number of batches in the current epoch."""
        return len(self.batches())

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.batches()
        while self.batches_consumed < len(batches):
            self.batches_consumed += 1
            yield batches[self.batches_consumed - 1].tolist()
        self.epoch, self.batches_consumed = self.epoch + 1, 0

    def state_dict(self) -> dict[str, int]:
        """``{"epoch", "batches_consumed", "seed"}`` (plain ints, for checkpoints, R6)."""
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next batch yielded is batch ``batches_consumed`` of ``epoch``."""
        self.epoch = int(state["epoch"])
        self.batches_consumed = int(state["batches_consumed"])
        self.seed = int(state.get("seed", self.seed))
        self._cache = None

    def padding_fraction(self, epoch: Optional[int] = None) -> float:
        """Padding over all positions of ``epoch``'s batches, source and target together:
        ``sum(B * (max + 1) - sum(len + 1)) / sum(B * (max + 1))`` per side."""
        pad = total = 0
        epoch = self.epoch if epoch is None else int(epoch)
        sides = self.lengths(epoch)
        for batch in self.batches(epoch):
            idx = np.asarray(batch)
            for lengths in sides:
                if lengths is None:
                    continue
                width = int(lengths[idx].max()) + 1
                total += len(idx) * width
                pad += len(idx) * width - int((lengths[idx] + 1).sum())
        return pad / total if total else 0.0


def fill_batches(widths: np.ndarray, max_tokens: int, max_sentences: int = 0) -> np.ndarray:
    """Start positions of the batches that fill ``widths`` in order under a token budget.

    Greedy, as a loop over the examples would be: an example joins the current batch while
    ``(B + 1) * (width + 1) <= max_tokens`` (and ``B < max_sentences`` when > 0), else it starts
    the next one; an example too wide for any batch is a batch of one. ``widths`` must not
    decrease (the sampler sorts by them), so a batch's width is its last example's and the loop
    runs once per distinct width rather than once per example.

    Args:
        widths: ``(N,)`` non-decreasing example widths in tokens (``max(src_len, tgt_len)``).
    Returns:
        ``(num_batches,)`` int64 start positions into ``widths`` (the first is 0; none when N = 0).
    """
    starts: list[int] = []
    values, counts = np.unique(np.asarray(widths, dtype=np.int64), return_counts=True)
    filled = pos = 0  # examples in the open batch; examples placed so far
    for width, count in zip(values.tolist(), counts.tolist()):
        cap = max_tokens // (width + 1)
        if max_sentences > 0:
            cap = min(cap, max_sentences)
        if filled:
            joining = min(count, max(0, cap - filled))
            filled, pos, count = filled + joining, pos + joining, count - joining
            if not count:
                continue
        per_batch = max(1, cap)
        new = -(-count // per_batch)
        starts.extend(range(pos, pos + new * per_batch, per_batch))
        filled, pos = count - (new - 1) * per_batch, pos + count
    return np.asarray(starts, dtype=np.int64)


def make_batch(dataset: TokenizedDataset, indices: Sequence[int]) -> Batch:
    """Collate the examples at ``indices`` into a :class:`Batch` (``Batch.indices`` = them)."""
    idx = [int(i) for i in indices]
    tgt = None if dataset.tgt is None else [dataset.tgt[i] for i in idx]
    return Batch.collate([dataset.src[i] for i in idx], tgt, idx)


def filter_by_length(src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_len: int,
                     max_ratio: float, max_drop_fraction: float, name: str,
                     line_numbers: Optional[Sequence[int]] = None) -> list[int]:
    """Indices of training pairs that pass the length filters (R23; never for dev/test).

    A pair is dropped when either side has more than ``max_len`` tokens (``max_len <= 0``:
    off) or when ``max(a, b) / min(a, b) > max_ratio`` with ``a, b = max(1, len)``
    (``max_ratio <= 0``: off). Lengths are in tokens.

    Args:
        line_numbers: original 1-based lines, for the report (default ``index + 1``).
    Returns:
        Sorted list of kept indices.
    Raises:
        DataError: when every pair is dropped or more than ``max_drop_fraction`` are.
    """
    s = np.asarray(src_lengths, dtype=np.int64)
    t = np.asarray(tgt_lengths, dtype=np.int64)
    if s.shape != t.shape:
        raise ValueError(f"{name}: {len(s)} source but {len(t)} target lengths")
    too_long, bad_ratio = _length_violations(s, t, max_len, max_ratio)
    keep = ~(too_long | bad_ratio)
    n, dropped = len(s), int((~keep).sum())
    if dropped:
        first = int(np.flatnonzero(~keep)[0])
        line = line_numbers[first] if line_numbers is not None else first + 1
        logger.info("%s: length filter dropped %d of %d pairs (%d longer than %d tokens, %d with "
                    "length ratio > %g; first: line %d)", name, dropped, n, int(too_long.sum()),
                    max_len, int(bad_ratio.sum()), max_ratio, line)
    if n and dropped == n:
        raise DataError(f"{name}: the length filters drop all {n} pairs (max_len={max_len}, "
                        f"max_len_ratio={max_ratio}); raise data.max_len or data.max_len_ratio")
    if n and dropped / n > max_drop_fraction:
        raise DataError(f"{name}: the length filters drop {dropped} of {n} pairs "
                        f"({dropped / n:.1%} > data.max_drop_fraction={max_drop_fraction:.1%}); "
                        "check the data or raise data.max_len / data.max_len_ratio")
    return np.flatnonzero(keep).tolist()


def passes_length_filters(src_lengths: Sequence[int], tgt_lengths: Sequence[int], max_len: int,
                          max_ratio: float) -> np.ndarray:
    """``(N,)`` bool: which pairs pass the filters of :func:`filter_by_length` (same rules),
    without its report or drop limits (used to check sampled segmentations of kept pairs)."""
    too_long, bad_ratio = _length_violations(np.asarray(src_lengths, dtype=np.int64),
                                             np.asarray(tgt_lengths, dtype=np.int64), max_len, max_ratio)
    return ~(too_long | bad_ratio)


def _length_violations(s: np.ndarray, t: np.ndarray, max_len: int, max_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """``(too_long, bad_ratio)`` bool masks; a too-long pair is not also counted as a bad ratio."""
    too_long = ((s > max_len) | (t > max_len)) if max_len > 0 else np.zeros(len(s), bool)
    bad_ratio = np.zeros(len(s), bool)
    if max_ratio > 0:
        a, b = np.maximum(s, 1), np.maximum(t, 1)
        bad_ratio = (np.maximum(a, b) / np.minimum(a, b) > max_ratio) & ~too_long
    return too_long, bad_ratio

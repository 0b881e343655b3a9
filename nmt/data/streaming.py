"""Token-budget batches from a streamed corpus (``datasets.IterableDataset``), exactly resumable.

For corpora larger than memory (``data.streaming=true``). Per epoch the stream's shards are read
in an order drawn from ``(seed, epoch)``; rows are read in chunks of ``buffer_size`` pairs (the
shuffle buffer, OpenNMT-py's ``bucket_size``); each chunk is cleaned like a file corpus (R21,
R26), tokenised, length-filtered (R23) and cut into batches by
:class:`nmt.data.dataset.BucketingSampler` (same token budget and order rules) with a generator
drawn from ``(seed, epoch, chunk)``, so every epoch batches and orders pairs differently.

Pairs are mixed within a chunk and shards are reordered per epoch; pairs of one shard are never
mixed with pairs far away in it (split a big corpus into several files for more mixing, as
``datasets`` advises for its own shuffle buffer).

Resuming is exact: the position is the stream state at the start of the current chunk
(``datasets``' ``IterableDataset.state_dict()`` of the current shard, >= 2.18) plus the number of
batches already yielded from that chunk. ``datasets``' own buffer shuffle cannot do this: it loses
the buffer's content on resume (see ``IterableDataset.state_dict``'s documentation).
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Iterator, Optional

import numpy as np

from nmt.config import DataConfig
from nmt.data.batch import Batch
from nmt.data.dataset import BucketingSampler, TokenizedDataset, filter_by_length
from nmt.data.errors import DataError
from nmt.data.hf import TextColumns, clean_pairs

logger = logging.getLogger(__name__)


class StreamingBatches:
    """Batches (:class:`nmt.data.batch.Batch`, CPU tensors) of a streamed training corpus.

    Args:
        source: a ``datasets.IterableDataset`` (``n_shards``, ``shard``, ``take``, ``state_dict``).
        columns: where the texts are (:class:`nmt.data.hf.TextColumns`).
        tokenizer: a :class:`nmt.data.tokenizer.Tokenizer`.
        cfg: the :class:`nmt.config.DataConfig` (languages, ``on_empty``, ``max_len``,
            ``max_len_ratio``, ``shuffle_buffer``, ``max_train_pairs``).
        max_tokens: token budget per batch, ``B * (max(longest src, longest tgt) + 1)``.
        max_sentences: at most this many pairs per batch (0 = no limit).
        seed: shard order and bucketing are drawn from ``(seed, epoch[, chunk])``.
        name: label in logs and errors.

    ``max_train_pairs`` reads the first N pairs in stream order (no shard reordering). Iteration
    yields the remaining batches of the current epoch, counting a batch as consumed when it is
    yielded, then moves to ``epoch + 1`` (as :class:`~nmt.data.dataset.BucketingSampler`).
    ``Batch.indices`` are 0-based positions in this epoch's stream (rows read, dropped ones
    included). The number of batches is unknown in advance: ``len()`` raises TypeError.

    Raises:
        ValueError: ``max_tokens`` or ``cfg.shuffle_buffer`` not positive.
    """

    def __init__(self, source: Any, columns: TextColumns, tokenizer: Any, cfg: DataConfig, max_tokens: int = 4096,
                 max_sentences: int = 0, seed: int = 1, name: str = "stream") -> None:
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        if cfg.shuffle_buffer <= 0:
            raise ValueError(f"data.shuffle_buffer must be positive, got {cfg.shuffle_buffer}")
        self.source, self.columns, self.tokenizer, self.cfg = source, columns, tokenizer, cfg
        self.max_tokens, self.max_sentences, self.seed, self.name = int(max_tokens), int(max_sentences), int(seed), name
        self.buffer_size = int(cfg.shuffle_buffer)
        self.epoch = 1
        self._restart_epoch()

    # ------------------------------------------------------------------ position
    def _restart_epoch(self) -> None:
        self.batches_consumed = 0  # batches yielded in this epoch (the global position, for DDP)
        self._chunk = 0  # chunk index in this epoch
        self._in_chunk = 0  # batches of the current chunk already yielded
        self._shard_pos, self._shard_state = 0, None  # stream position at the start of the current chunk
        self._rows_read = 0  # rows read in this epoch before the current chunk

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` at its first batch; a no-op when it is already the current epoch
        (so a position restored by :meth:`load_state_dict` is kept)."""
        if int(epoch) != self.epoch:
            self.epoch = int(epoch)
            self._restart_epoch()

    def state_dict(self) -> dict:
        """The position as plain Python values (JSON- and ``torch.load(weights_only=True)``-safe):
        ``epoch``, ``batches_consumed``, ``chunk``, ``batches_in_chunk``, ``shard_pos``,
        ``shard_state`` (``datasets`` state at the chunk start, or None), ``rows_read``, ``seed``,
        ``buffer_size``, ``max_tokens``, ``max_sentences``."""
        return {"epoch": self.epoch, "batches_consumed": self.batches_consumed, "chunk": self._chunk,
                "batches_in_chunk": self._in_chunk, "shard_pos": self._shard_pos, "shard_state": self._shard_state,
                "rows_read": self._rows_read, "seed": self.seed, "buffer_size": self.buffer_size,
                "max_tokens": self.max_tokens, "max_sentences": self.max_sentences}

    def load_state_dict(self, state: dict) -> None:
        """Resume: the next batch is the one the saved object would have yielded next.

        When ``buffer_size``, ``max_tokens`` or ``max_sentences`` differ from the saved ones the
        current chunk is read again from its start with the new settings (a warning says so):
        its pairs already trained on are seen again; later chunks are as usual.
        """
        self.epoch = int(state["epoch"])
        self.seed = int(state.get("seed", self.seed))
        self.batches_consumed = int(state["batches_consumed"])
        self._chunk, self._in_chunk = int(state["chunk"]), int(state["batches_in_chunk"])
        self._shard_pos, self._shard_state = int(state["shard_pos"]), state.get("shard_state")
        self._rows_read = int(state["rows_read"])
        saved = (state.get("buffer_size"), state.get("max_tokens"), state.get("max_sentences"))
        if saved != (self.buffer_size, self.max_tokens, self.max_sentences) and self._in_chunk:
            logger.warning("%s: (shuffle_buffer, max_tokens, max_sentences) changed from %s to %s; the current chunk "
                           "is read again from its start (%d batches of it were trained on)", self.name, saved,
                           (self.buffer_size, self.max_tokens, self.max_sentences), self._in_chunk)
            self._in_chunk = 0

    def __len__(self) -> int:
        raise TypeError(f"{type(self).__name__} has no length: a streamed corpus is not counted in advance "
                        "(use batches_consumed for the position in the epoch)")

    # ------------------------------------------------------------------ reading
    def _shards(self, epoch: int) -> list[Any]:
        """This epoch's shards in reading order (one stream when ``max_train_pairs`` is set)."""
        if self.cfg.max_train_pairs is not None:
            return [lambda: self.source.take(int(self.cfg.max_train_pairs))]
        n = max(1, int(getattr(self.source, "n_shards", 1)))
        if n == 1:
            return [lambda: self.source]
        order = np.random.default_rng([self.seed, epoch]).permutation(n).tolist()
        return [lambda i=i: self.source.shard(num_shards=n, index=i, contiguous=True) for i in order]

    def _read_chunk(self, shard_pos: int, shard_state: Optional[dict]) -> tuple[list, int, Optional[dict]]:
        """Up to ``buffer_size`` raw pairs from ``(shard_pos, shard_state)``, and the position after them."""
        shards, pairs = self._shards(self.epoch), []
        while shard_pos < len(shards):
            ds = shards[shard_pos]()
            if shard_state is not None:
                ds.load_state_dict(shard_state)
            for row in ds:
                pairs.append(self.columns.pair(row))
                if len(pairs) == self.buffer_size:
                    return pairs, shard_pos, ds.state_dict()
            shard_pos, shard_state = shard_pos + 1, None
        return pairs, shard_pos, None

    def _chunk_batches(self, pairs: list) -> tuple[TokenizedDataset, list[int], list[list[int]]]:
        """Clean, encode, filter and bucket one chunk: ``(ids, stream positions, batches)``."""
        first = self._rows_read
        label = f"{self.name} epoch {self.epoch} rows {first + 1}-{first + len(pairs)}"
        text = clean_pairs([p[0] for p in pairs], [p[1] for p in pairs],
                           list(range(first + 1, first + len(pairs) + 1)), label, self.cfg.on_empty, True, self.cfg)
        if not len(text):
            return TokenizedDataset([], []), [], []
        ids = TokenizedDataset(self.tokenizer.encode_src(text.src), self.tokenizer.encode_tgt(text.tgt))
        try:
            keep = filter_by_length(ids.src_lengths, ids.tgt_lengths, self.cfg.max_len, self.cfg.max_len_ratio,
                                    1.0, name=label, line_numbers=text.line_numbers)
        except DataError:  # every pair of this chunk is too long; the drop rate was checked on the sample
            keep = []
        ids = ids.subset(keep)
        positions = [text.line_numbers[i] - 1 for i in keep]
        seed = int(np.random.SeedSequence([self.seed, self.epoch, self._chunk]).generate_state(1)[0])
        sampler = BucketingSampler(ids.src_lengths, ids.tgt_lengths, max_tokens=self.max_tokens,
                                   max_sentences=self.max_sentences, shuffle=True, seed=seed)
        return ids, positions, sampler.batches(epoch=0)

    def __iter__(self) -> Iterator[Batch]:
        return self.iterate()

    def iterate(self, keep: Optional[Callable[[int], bool]] = None) -> Iterator[Batch]:
        """The remaining batches of the epoch. ``keep(position)`` (0-based batch position in the
        epoch, the same on every process) selects the batches to collate and yield; the others are
        counted as consumed and skipped (data-parallel ranks read the same stream).

        Raises:
            DataError: a whole epoch without one usable pair; an empty side under ``on_empty=error``.
        """
        started_empty = self.batches_consumed == 0 and self._chunk == 0
        while True:
            pairs, next_pos, next_state = self._read_chunk(self._shard_pos, self._shard_state)
            if not pairs:
                break
            ids, positions, batches = self._chunk_batches(pairs)
            for j in range(self._in_chunk, len(batches)):
                if j == len(batches) - 1:  # last batch of the chunk: the position moves to the next chunk
                    self._advance(len(pairs), next_pos, next_state)
                else:
                    self._in_chunk = j + 1
                self.batches_consumed += 1
                if keep is None or keep(self.batches_consumed - 1):
                    idx = batches[j]
                    yield Batch.collate([ids.src[i] for i in idx], [ids.tgt[i] for i in idx],
                                        [positions[i] for i in idx])
            if not batches or self._in_chunk >= len(batches):  # nothing (left) in this chunk
                self._advance(len(pairs), next_pos, next_state)
        if started_empty and self.batches_consumed == 0:
            raise DataError(f"{self.name}: epoch {self.epoch} of the stream has no usable training pair")
        self.epoch += 1
        self._restart_epoch()

    def _advance(self, rows: int, shard_pos: int, shard_state: Optional[dict]) -> None:
        """Move the position to the chunk after the current one (``rows`` pairs long)."""
        self._rows_read += rows
        self._shard_pos, self._shard_state = shard_pos, shard_state
        self._chunk += 1
        self._in_chunk = 0

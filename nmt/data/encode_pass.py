"""One streaming pass over two aligned files: check, clean, encode and append the ids to disk.

The checks and counts are those of :func:`nmt.data.text.read_parallel` (R19, R21, R22, R26), made
line by line so memory holds one chunk of ``CHUNK_PAIRS`` pairs; sentencepiece encodes each chunk
with its own threads (``Tokenizer.encode_*``), which release the GIL.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Optional

import numpy as np

from nmt.config import DataConfig, Policy
from nmt.data.batch import UNK_ID
from nmt.data.errors import DataError
from nmt.data.text import CONTROL, clean, decode_line, empty_policy, raw_line, report_invalid_utf8, utf8_policy

log = logging.getLogger(__name__)

#: pairs encoded at a time: large enough for sentencepiece's threads, small enough to bound memory
CHUNK_PAIRS = 50_000
_SHOW = 5  # line numbers shown in reports


@dataclass
class EncodedCorpus:
    """What :func:`encode_files` wrote: ``pairs`` kept, ``tokens`` and ``unk`` ids per side, the
    id ``dtype`` name and the ``stats`` of :class:`nmt.data.text.ParallelText`."""

    pairs: int
    tokens: dict[str, int]
    unk: dict[str, int]
    dtype: str
    stats: dict[str, int]


@dataclass
class _Counts:
    """Running counts of the pass, reported as :func:`nmt.data.text.report` and ``make_parallel`` do."""

    stats: dict[str, int] = field(default_factory=lambda: dict.fromkeys(
        ("read", "kept", "empty_dropped", "invalid_dropped", "invalid_utf8", "replaced_utf8", "control_chars"), 0))
    invalid: dict[str, list] = field(default_factory=lambda: {"src": [0, None], "tgt": [0, None]})
    first_control: Optional[int] = None
    empty_lines: list[int] = field(default_factory=list)
    first_empty_side: str = ""


class _Writer:
    """Appends chunks of encoded pairs to ``src.bin``/``tgt.bin`` and keeps their lengths."""

    def __init__(self, folder: Path, tokenizer, dtype: np.dtype) -> None:
        self.folder, self.tokenizer, self.dtype = folder, tokenizer, dtype
        self.files: dict[str, BinaryIO] = {side: open(folder / f"{side}.bin", "wb") for side in ("src", "tgt")}
        self.lengths: dict[str, list[np.ndarray]] = {"src": [], "tgt": []}
        self.lines: list[np.ndarray] = []
        self.tokens = {"src": 0, "tgt": 0}
        self.unk = {"src": 0, "tgt": 0}

    def write(self, src: list[str], tgt: list[str], lines: list[int]) -> None:
        for side, texts in (("src", src), ("tgt", tgt)):
            ids = self.tokenizer.encode_src(texts) if side == "src" else self.tokenizer.encode_tgt(texts)
            lengths = np.fromiter(map(len, ids), dtype=np.int32, count=len(ids))
            flat = np.fromiter((i for seq in ids for i in seq), dtype=self.dtype, count=int(lengths.sum()))
            self.files[side].write(flat.tobytes())
            self.lengths[side].append(lengths)
            self.tokens[side] += len(flat)
            self.unk[side] += int(np.count_nonzero(flat == UNK_ID))
        self.lines.append(np.asarray(lines, dtype=np.int64))

    def close(self) -> None:
        for side, f in self.files.items():
            f.flush()
            os.fsync(f.fileno())
            f.close()
            np.save(self.folder / f"{side}_len.npy", _concat(self.lengths[side], np.int32))
        np.save(self.folder / "lines.npy", _concat(self.lines, np.int64))


def _concat(parts: list[np.ndarray], dtype) -> np.ndarray:
    return np.concatenate(parts) if parts else np.zeros(0, dtype)


def id_dtype(vocab_size: int) -> np.dtype:
    """``uint16`` when every id fits (half the disk and page cache), else ``int32``."""
    return np.dtype(np.uint16) if vocab_size <= 2 ** 16 else np.dtype(np.int32)


def encode_files(src_path: Path, tgt_path: Path, tokenizer, cfg: DataConfig, folder: Path,
                 name: str) -> EncodedCorpus:
    """Read, check, clean and encode every pair of two aligned files into ``folder``.

    The line counts must already be checked equal (:func:`nmt.data.id_cache.sample_pairs`).
    Pairs with an invalid (``skip``) or empty side are dropped as pairs and counted; under
    ``data.on_empty=error`` the pass stops encoding at the first empty side, counts the rest and
    raises.

    Raises:
        DataError: invalid UTF-8 under ``error`` (file, line, byte), an empty side under
            ``on_empty=error``, or no usable pair.
    """
    utf8, on_empty = utf8_policy(cfg.on_invalid_utf8), empty_policy(cfg.on_empty)
    counts = _Counts()
    writer = _Writer(folder, tokenizer, id_dtype(max(tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)))
    chunk: tuple[list[str], list[str], list[int]] = ([], [], [])
    try:
        with open(src_path, "rb") as fs, open(tgt_path, "rb") as ft:
            for line, (a, b) in enumerate(zip(fs, ft), 1):
                if cfg.max_train_pairs is not None and line > cfg.max_train_pairs:
                    break
                pair = _pair(a, b, line, (src_path, tgt_path), utf8, counts)
                if pair is None:
                    continue
                if not (pair[0] and pair[1]):
                    counts.empty_lines.append(line)
                    counts.first_empty_side = counts.first_empty_side or str(src_path if not pair[0] else tgt_path)
                    continue
                if on_empty is Policy.error and counts.empty_lines:
                    continue  # failing: count the rest, encode nothing more
                chunk[0].append(pair[0])
                chunk[1].append(pair[1])
                chunk[2].append(line)
                if len(chunk[2]) == CHUNK_PAIRS:
                    writer.write(*chunk)
                    chunk = ([], [], [])
        if chunk[2]:
            writer.write(*chunk)
    finally:
        writer.close()
    return _finish(counts, writer, on_empty, utf8, (src_path, tgt_path), name)


def _pair(a: bytes, b: bytes, line: int, paths: tuple[Path, Path], utf8: Policy,
          counts: _Counts) -> Optional[tuple[str, str]]:
    """The cleaned pair of one line, or None when a side is invalid UTF-8 under skip/warn."""
    counts.stats["read"] += 1
    texts = []
    for side, raw, path in (("src", a, paths[0]), ("tgt", b, paths[1])):
        text, valid = decode_line(raw_line(raw, line), path, line, utf8)
        if not valid:
            counts.stats["invalid_utf8"] += 1
            counts.invalid[side][0] += 1
            counts.invalid[side][1] = counts.invalid[side][1] or line
            counts.stats["replaced_utf8"] += text is not None
        if text is not None and CONTROL.search(text):
            counts.stats["control_chars"] += 1
            counts.first_control = counts.first_control or line
        texts.append(None if text is None else clean(text))
    if texts[0] is None or texts[1] is None:
        counts.stats["invalid_dropped"] += 1
        return None
    return texts[0], texts[1]


def _finish(counts: _Counts, writer: _Writer, on_empty: Policy, utf8: Policy, paths: tuple[Path, Path],
            name: str) -> EncodedCorpus:
    """Report what the pass kept and dropped, as reading the files whole does, and raise its errors."""
    for side, path in zip(("src", "tgt"), paths):
        report_invalid_utf8(path, counts.invalid[side][0], counts.invalid[side][1], utf8)
    if counts.first_control is not None:
        log.warning("%s: replaced control characters by spaces in %d lines (first: line %d)", name,
                    counts.stats["control_chars"], counts.first_control)
    empty = counts.empty_lines
    if empty and on_empty is Policy.error:
        raise DataError(f"{counts.first_empty_side}: line {empty[0]}: empty line (its pair cannot be used; "
                        f"{len(empty)} such pairs in all); set data.on_empty=skip to drop them")
    if empty:
        (log.warning if on_empty is Policy.warn else log.info)(
            "%s: dropped %d pairs with an empty side (first lines: %s)", name, len(empty),
            ", ".join(map(str, empty[:_SHOW])))
    stats = counts.stats
    stats.update(empty_dropped=len(empty), kept=stats["read"] - len(empty) - stats["invalid_dropped"])
    log.info("%s: read %d pairs, kept %d (dropped %d with an empty side, %d with invalid UTF-8; %d lines had "
             "control characters)", name, stats["read"], stats["kept"], stats["empty_dropped"],
             stats["invalid_dropped"], stats["control_chars"])
    if not stats["kept"]:
        raise DataError(f"{name}: no usable training pairs ({stats})")
    return EncodedCorpus(stats["kept"], writer.tokens, writer.unk, writer.dtype.name, stats)

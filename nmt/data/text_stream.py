"""Plain-text ``{train}.{src}``/``.{tgt}`` files as a stream, for ``data.streaming=true``.

For corpora the disk cache should not hold (:mod:`nmt.data.id_cache` stores every id once), the
files are read as a ``datasets.IterableDataset`` built from a generator, and
:class:`nmt.data.streaming.StreamingBatches` cleans, tokenises and batches them chunk by chunk
exactly as it does a hub stream, with the same exact resume: the generator's state is the
number of pairs it has yielded, and ``datasets`` skips that many lines on resume.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

from nmt.config import DataConfig
from nmt.data.hf import TextColumns
from nmt.data.splits import split_files
from nmt.data.text import check_line_counts, decode_line, raw_line, utf8_policy


def count_lines(path: Path) -> int:
    """Lines of ``path`` split on ``\\n`` only, as ``wc -l`` plus a last line without newline (R19)."""
    lines, last = 0, b"\n"
    with open(path, "rb") as f:
        while block := f.read(1 << 24):
            lines += block.count(b"\n")
            last = block[-1:]
    return lines + (last != b"\n")


def text_pairs(src_paths: list[str], tgt_paths: list[str], on_invalid_utf8: str) -> Iterator[dict[str, str]]:
    """``{"src", "tgt"}`` rows of aligned files, decoded under the UTF-8 policy (R22; a line skipped
    for invalid UTF-8 becomes empty, so its pair is dropped by the stream's cleaning).

    Raises:
        DataError: invalid UTF-8 under ``error`` (file, line, byte offset).
    """
    policy = utf8_policy(on_invalid_utf8)
    for src_path, tgt_path in zip(src_paths, tgt_paths):
        with open(src_path, "rb") as fs, open(tgt_path, "rb") as ft:
            for line, (a, b) in enumerate(zip(fs, ft), 1):
                row = {}
                for key, raw, path in (("src", a, src_path), ("tgt", b, tgt_path)):
                    row[key] = decode_line(raw_line(raw, line), path, line, policy)[0] or ""
                yield row


def open_text_stream(cfg: DataConfig):
    """``(IterableDataset, TextColumns, label)`` of the training files, after the line-count check (R20).

    Raises:
        DataError: missing files, or files whose line counts differ.
    """
    import datasets

    src_path, tgt_path = split_files(cfg, "train")
    check_line_counts(src_path, count_lines(src_path), tgt_path, count_lines(tgt_path))
    source = datasets.IterableDataset.from_generator(
        text_pairs, gen_kwargs={"src_paths": [str(src_path)], "tgt_paths": [str(tgt_path)],
                                "on_invalid_utf8": str(getattr(cfg.on_invalid_utf8, "value", cfg.on_invalid_utf8))})
    return source, TextColumns(None, "src", "tgt"), f"{cfg.corpus}/{cfg.role_of('train')[1]}"

"""``nmt-translate`` input and output: a chunked line reader, the output formats, a flushing writer.

Input (RELIABILITY.md R19, R25, R26): lines are split on ``\\n`` only (counts match ``wc -l``);
a line that is not valid UTF-8 becomes an empty line and control characters such as NUL
become spaces, each with a warning naming the line, so that there is always one output per
input line. Lines are read ``chunk_size`` at a time, so memory is bounded by a chunk.

Output formats (one entry per input line, in input order; ``id`` = 0-based input line):

* ``plain``: the best translation (``nbest=1``), or Moses n-best blocks ``id ||| text ||| score``;
* ``score``: ``score<TAB>text`` (``nbest=1``), or the same n-best blocks;
* ``tsv``: ``id<TAB>rank<TAB>score<TAB>text`` per hypothesis (rank 1 = best);
* ``jsonl``: ``{"id", "src", "hyps": [{"text", "score", "alignment"}]}`` per input line.

Scores are printed with 4 decimals (jsonl: rounded to 4), as batching moves them by ~1e-7.

With alignments (``print_alignment=true``) the Pharaoh links follow the text as a tab-separated
column (n-best blocks: a fourth ``|||`` field) or fill ``"alignment"`` (else null).
"""
from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, Optional, Sequence

from nmt.data.text import CONTROL
from nmt.io import open_temp

log = logging.getLogger("nmt.translate")

FORMATS = ("plain", "score", "tsv", "jsonl")


@dataclass
class Translated:
    """One hypothesis as the formats print it.

    Attributes:
        text: detokenised translation.
        score: the engine's ranking score (ours: ``log P / lp``, Wu et al. 2016 eq. 14).
        alignment: Pharaoh word links ``"i-j ..."`` (source i, target j, 0-based) or None.
    """

    text: str
    score: float
    alignment: Optional[str] = None


def clean_line(text: str, where: str, n: int) -> str:
    """Control characters (NUL, ...) -> spaces with a warning naming ``where`` line ``n``; stripped."""
    if CONTROL.search(text):
        log.warning("%s line %d: control characters (NUL, ...) replaced by spaces", where, n)
        text = CONTROL.sub(" ", text)
    return text.strip()


def read_chunks(path: Optional[str], sentences: Sequence[str], chunk_size: int,
                stream: Optional[IO[bytes]] = None) -> Iterator[list[str]]:
    """The lines to translate, ``chunk_size`` at a time, cleaned (see the module docstring).

    Sentences given as arguments take precedence, then ``path``, then ``stream`` (default: the
    binary stdin). A generator: the file is read lazily, one chunk ahead of what was yielded.

    Raises:
        SystemExit: no input at all, ``path`` cannot be read, or ``chunk_size < 1``.
    """
    if chunk_size < 1:
        raise SystemExit(f"error: chunk_size must be at least 1, got {chunk_size}")
    if sentences:
        lines = [clean_line(s, "<arguments>", n) for n, s in enumerate(sentences, 1)]
        for start in range(0, len(lines), chunk_size):
            yield lines[start : start + chunk_size]
        return
    where = path or "<stdin>"
    try:
        f = open(path, "rb") if path else (stream if stream is not None else sys.stdin.buffer)
    except OSError as err:
        raise SystemExit(f"error: cannot read {where}: {err.strerror or err}") from None
    try:
        chunk: list[str] = []
        n = 0
        for n, raw in enumerate(_raw_lines(f, where), 1):
            chunk.append(_decode(raw, where, n))
            if len(chunk) == chunk_size:
                yield chunk
                chunk = []
        if n == 0:
            raise SystemExit(f"error: no input in {where}: give sentences as arguments, input=FILE, or lines on stdin")
        if chunk:
            yield chunk
    finally:
        if path:
            f.close()


def _raw_lines(f: IO[bytes], where: str) -> Iterator[bytes]:
    """Lines split on ``\\n`` only (binary readline), without it; a final line without ``\\n`` counts."""
    while True:
        try:
            raw = f.readline()
        except OSError as err:
            raise SystemExit(f"error: cannot read {where}: {err.strerror or err}") from None
        if not raw:
            return
        yield raw[:-1] if raw.endswith(b"\n") else raw


def _decode(raw: bytes, where: str, n: int) -> str:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        log.warning("%s line %d: invalid UTF-8 at byte %d; its output line is empty", where, n, err.start)
        text = ""
    return clean_line(text.rstrip("\r"), where, n)


def format_chunk(first_id: int, sources: Sequence[str], hyps_per_line: Sequence[Sequence[Translated]], fmt: str,
                 nbest: int) -> str:
    """The output text of one chunk (newline-terminated lines).

    Args:
        first_id: 0-based index of the chunk's first input line (ids continue across chunks).
        sources: the cleaned input lines; hyps_per_line: per line, its hypotheses, best first.
        fmt: one of :data:`FORMATS`.
    Raises:
        ValueError: an unknown format.
    """
    out = []
    for i, (src, hyps) in enumerate(zip(sources, hyps_per_line), first_id):
        if fmt == "jsonl":
            obj = {"id": i, "src": src, "hyps": [{"text": h.text, "score": round(h.score, 4), "alignment": h.alignment}
                                                 for h in hyps]}
            out.append(json.dumps(obj, ensure_ascii=False))
        elif fmt == "tsv":
            out += [f"{i}\t{rank}\t{h.score:.4f}\t{h.text}" + _column(h, "\t")
                    for rank, h in enumerate(hyps, 1)]
        elif fmt not in ("plain", "score"):
            raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
        elif nbest > 1:
            out += [f"{i} ||| {h.text} ||| {h.score:.4f}" + _column(h, " ||| ") for h in hyps]
        else:
            h = hyps[0]
            out.append((f"{h.score:.4f}\t{h.text}" if fmt == "score" else h.text) + _column(h, "\t"))
    return "".join(line + "\n" for line in out)


def _column(h: Translated, sep: str) -> str:
    return "" if h.alignment is None else sep + h.alignment


class OutputWriter:
    """Write text chunk by chunk and flush after each: to stdout (streamed), or to ``path``
    through a temporary file in the same directory renamed into place by :meth:`close`
    (readers see the old file or the whole new one, R1). When translation fails part way, the
    chunks already written are kept as ``<path>.partial`` (R25).

    Raises:
        SystemExit: the output file cannot be created or written.
    """

    def __init__(self, path: Optional[str] = None, stream: Optional[IO[str]] = None) -> None:
        self.path = Path(path) if path else None
        self._tmp: Optional[str] = None
        self.lines = 0  # lines written so far
        if self.path is None:
            self.stream = stream if stream is not None else sys.stdout
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream, self._tmp = open_temp(self.path, "w")
        except OSError as err:
            raise SystemExit(f"error: cannot write {self.path}: {err.strerror or err}") from None

    def write(self, text: str) -> None:
        """Write and flush ``text``."""
        try:
            self.stream.write(text)
            self.stream.flush()
            self.lines += text.count("\n")
        except BrokenPipeError:
            if self.path is not None:
                raise SystemExit(f"error: cannot write {self.path}: broken pipe") from None
            # the reader left (``nmt-translate ... | head``): stop quietly, as Unix tools do
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, self.stream.fileno())
            raise SystemExit(0) from None
        except OSError as err:
            raise SystemExit(f"error: cannot write {self.path or '<stdout>'}: {err.strerror or err}") from None

    @property
    def partial_path(self) -> Optional[Path]:
        """Where :meth:`close` keeps the finished chunks of a failed run."""
        return None if self.path is None else self.path.with_name(self.path.name + ".partial")

    def close(self, ok: bool = True) -> None:
        """Finish: rename the temporary file into place (``ok``), or keep what was written as
        :attr:`partial_path` (nothing written: delete it)."""
        if self._tmp is None:
            return
        from nmt.io import fsync_dir

        tmp, self._tmp = self._tmp, None
        target = self.path if ok else self.partial_path if self.lines else None
        try:
            if target is not None:
                os.fsync(self.stream.fileno())
            self.stream.close()
            if target is not None:
                os.replace(tmp, target)
                fsync_dir(target.parent)
            if not ok and target is not None:
                log.error("the %d lines translated before the failure are in %s", self.lines, target)
        except OSError as err:
            raise SystemExit(f"error: cannot write {target}: {err.strerror or err}") from None
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)


def progress_bar(setting: str, stream: IO[str] = sys.stderr):
    """A tqdm bar counting translated lines on ``stream``, or None.

    ``setting``: ``auto`` (only when ``stream`` is a terminal), ``true`` or ``false``.

    Raises:
        SystemExit: any other setting.
    """
    setting = str(setting).lower()
    if setting not in ("auto", "true", "false"):
        raise SystemExit(f"error: progress={setting!r}; expected auto, true or false")
    isatty = getattr(stream, "isatty", None)
    if setting == "false" or setting == "auto" and not (isatty and isatty()):
        return None
    from tqdm import tqdm

    return tqdm(file=stream, unit=" lines", desc="translating", dynamic_ncols=True)

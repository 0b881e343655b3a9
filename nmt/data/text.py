"""The cleaning rule of every text nmt reads: parallel files and Hugging Face rows are read,
validated and cleaned the same way (RELIABILITY.md R19-R23, R26).

Text comes from two aligned files (line i of the source file translates line i of the
target file) or from a Hugging Face ``datasets`` source. Every problem with the input is
a :class:`DataError` whose message names the file(s), the 1-based line and the problem.

Rules:
- Files are read as bytes and split on ``b"\\n"`` only, so line counts equal ``wc -l``
  (plus one for a last line without a newline); U+2028, U+0085, form feed and a lone
  ``\\r`` never split a line (R19). A trailing ``\\r`` (CRLF files) is removed.
- Source and target line counts are compared before anything else (R20).
- On the training split a pair with an empty side is dropped as a pair (R21); dev and test
  text is never dropped or filtered (R23).
- Invalid UTF-8 raises by default, with the byte offset; ``replace``/``skip`` are counted (R22).
- NUL and other C0 control characters except tab become spaces, counted (R26).
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from nmt.config import Policy
from nmt.data.errors import DataError

logger = logging.getLogger(__name__)

#: control characters replaced by a space in every input line (R26): C0 but tab, DEL, C1 (U+0085,
#: NEL, among them) and the Unicode line and paragraph separators, which split lines elsewhere
CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
#: in text nmt writes (R33): the same and tab, so that a hypothesis never splits a line or a column
OUTPUT_SEPARATORS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
BOM = b"\xef\xbb\xbf"
_SHOW = 5  # line numbers shown in reports


@dataclass
class ParallelText:
    """Aligned sentence pairs after cleaning.

    Attributes:
        src, tgt: the sentences (stripped); ``src[i]`` translates ``tgt[i]``.
        line_numbers: 1-based line (or row) of each pair in the original files.
        name: label used in reports, e.g. ``"multi30k/train"``.
        stats: counts: ``read``, ``kept``, ``empty_dropped``, ``invalid_dropped``,
            ``invalid_utf8``, ``replaced_utf8``, ``control_chars`` (lines on either side).
    """

    src: list[str]
    tgt: list[str]
    line_numbers: list[int]
    name: str = ""
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.src)

    def select(self, indices: Sequence[int]) -> "ParallelText":
        """The pairs at ``indices`` (e.g. from :func:`nmt.data.dataset.filter_by_length`); stats are copied."""
        idx = [int(i) for i in indices]
        stats = dict(self.stats, kept=len(idx))
        return ParallelText([self.src[i] for i in idx], [self.tgt[i] for i in idx],
                            [self.line_numbers[i] for i in idx], self.name, stats)


class TextLines(list):
    """``list[str]`` of one side plus ``invalid`` (0-based indices of lines skipped for
    invalid UTF-8, returned as ``""``) and ``stats`` (``lines``, ``invalid_utf8``,
    ``replaced_utf8``, ``control_chars``)."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        super().__init__(lines)
        self.invalid: list[int] = []
        self.stats: dict[str, int] = {"lines": 0, "invalid_utf8": 0, "replaced_utf8": 0,
                                      "control_chars": 0}


def _policy(value: Policy | str, allowed: Sequence[Policy], what: str) -> Policy:
    """``value`` as a :class:`Policy`; ValueError when it is not one of ``allowed``."""
    policy = Policy(value)
    if policy not in allowed:
        raise ValueError(f"{what} must be one of {[p.value for p in allowed]}, got {policy.value!r}")
    return policy


def _split_bytes(path: Path | str) -> list[bytes]:
    """Raw lines of ``path`` split on ``b"\\n"`` only (R19); a final line without newline counts.

    Raises:
        DataError: when the file cannot be read.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read: {err}") from None
    if data.startswith(BOM):
        data = data[len(BOM):]
        logger.info("%s: removed a UTF-8 byte-order mark", path)
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    return lines


def raw_line(raw: bytes, line_number: int) -> bytes:
    """A line as read from a binary file, without its ``\\n`` and, on line 1, a UTF-8 byte-order
    mark (R19); the ``\\r`` of CRLF is :func:`decode_line`'s."""
    raw = raw[:-1] if raw.endswith(b"\n") else raw
    return raw[len(BOM):] if line_number == 1 and raw.startswith(BOM) else raw


def clean(text: str) -> str:
    """The cleaning rule (R26): :data:`CONTROL` characters become spaces, the ends are stripped."""
    return (CONTROL.sub(" ", text) if CONTROL.search(text) else text).strip()


def normalise(texts: Sequence[str], label: str, out: TextLines,
              line_numbers: Optional[Sequence[int]] = None) -> TextLines:
    """:func:`clean` every text into ``out``, counting and reporting lines with controls (R26)."""
    first = None
    for i, text in enumerate(texts):
        if CONTROL.search(text):
            out.stats["control_chars"] += 1
            first = first if first is not None else (line_numbers[i] if line_numbers else i + 1)
        out.append(clean(text))
    out.stats["lines"] = len(out)
    if first is not None:
        logger.warning("%s: replaced control characters by spaces in %d lines (first: line %d)",
                       label, out.stats["control_chars"], first)
    return out


def decode_line(line: bytes, path: Path | str, line_number: int, policy: Policy) -> tuple[Optional[str], bool]:
    """One raw line as ``(text, valid)`` under the UTF-8 policy (R22): a trailing ``\\r`` is
    removed; an invalid line is, under ``replace``, decoded with U+FFFD for the bad bytes and,
    under ``skip``/``warn``, None.

    Raises:
        DataError: ``error`` policy and a line that is not UTF-8 (file, line, byte offset).
    """
    if line.endswith(b"\r"):
        line = line[:-1]
    try:
        return line.decode("utf-8"), True
    except UnicodeDecodeError as err:
        if policy is Policy.error:
            raise DataError(
                f"{path}: line {line_number}: invalid UTF-8 at byte offset {err.start} of the line "
                f"({err.reason}); fix the file or set data.on_invalid_utf8=replace|skip") from None
    return (line.decode("utf-8", errors="replace") if policy is Policy.replace else None), False


def utf8_policy(value: Policy | str) -> Policy:
    """``data.on_invalid_utf8`` as a :class:`Policy` (ValueError for one that does not apply)."""
    return _policy(value, (Policy.error, Policy.replace, Policy.skip, Policy.warn), "data.on_invalid_utf8")


def empty_policy(value: Policy | str) -> Policy:
    """``data.on_empty`` as a :class:`Policy` (ValueError for one that does not apply)."""
    return _policy(value, (Policy.skip, Policy.warn, Policy.error), "data.on_empty")


def report_invalid_utf8(path: Path | str, count: int, first_line: Optional[int], policy: Policy) -> None:
    """Warn once about a file's invalid UTF-8 lines (R22)."""
    if first_line is not None:
        action = "replaced bad bytes by U+FFFD" if policy is Policy.replace else "skipping the pairs"
        logger.warning("%s: %d lines are not valid UTF-8 (first: line %d); %s", path, count, first_line, action)


def _decode(raw: Sequence[bytes], path: Path | str, on_invalid_utf8: Policy | str) -> TextLines:
    """Decode raw lines as UTF-8 under the policy (R22, :func:`decode_line`), then :func:`normalise`.

    Raises:
        DataError: ``error`` policy and a line that is not UTF-8 (file, line, byte offset).
    """
    policy = utf8_policy(on_invalid_utf8)
    out = TextLines()
    texts: list[str] = []
    first_bad = None
    for i, line in enumerate(raw):
        text, valid = decode_line(line, path, i + 1, policy)
        if valid:
            texts.append(text)
            continue
        first_bad = first_bad or i + 1
        out.stats["invalid_utf8"] += 1
        if text is not None:
            out.stats["replaced_utf8"] += 1
            texts.append(text)
        else:
            out.invalid.append(i)
            texts.append("")
    report_invalid_utf8(path, out.stats["invalid_utf8"], first_bad, policy)
    return normalise(texts, str(path), out)


def read_lines(path: Path | str, on_invalid_utf8: Policy | str = Policy.error) -> TextLines:
    """Read one text file as stripped lines (R19, R22, R26).

    Args:
        path: UTF-8 text file, one sentence per line.
        on_invalid_utf8: ``error`` (raise), ``replace`` (U+FFFD, counted), ``skip``/``warn``
            (line returned as ``""`` and its index listed in ``.invalid`` so the pair can be
            dropped).
    Returns:
        A :class:`TextLines` (a ``list[str]``) with ``len`` equal to ``wc -l`` (+1 when the
        last line has no newline).
    Raises:
        DataError: unreadable file, or invalid UTF-8 under ``error`` (file, line, byte offset).
    """
    return _decode(_split_bytes(path), path, on_invalid_utf8)


def check_line_counts(src_path: Path | str, n_src: int, tgt_path: Path | str, n_tgt: int) -> None:
    """R20: equal line counts, else DataError naming both files, counts and first lone line."""
    if n_src == n_tgt:
        return
    shorter, longer = (src_path, tgt_path) if n_src < n_tgt else (tgt_path, src_path)
    n = min(n_src, n_tgt)
    raise DataError(
        f"line counts differ: {src_path} has {n_src} lines, {tgt_path} has {n_tgt} lines; "
        f"{shorter} ends after line {n}, so line {n + 1} of {longer} has no partner. "
        "The files must be aligned line by line (nothing is truncated silently).")


def make_parallel(src: TextLines, tgt: TextLines, line_numbers: list[int], names: tuple[str, str],
                   on_empty: Policy | str, drop_empty: bool, name: str) -> ParallelText:
    """Pair the two sides; when ``drop_empty`` drop invalid and empty pairs (R21)."""
    policy = empty_policy(on_empty)
    n = len(src)
    stats = {"read": n, "kept": n, "empty_dropped": 0, "invalid_dropped": 0}
    for key in ("invalid_utf8", "replaced_utf8", "control_chars"):
        stats[key] = src.stats[key] + tgt.stats[key]
    if not drop_empty:
        return ParallelText(list(src), list(tgt), line_numbers, name, stats)
    invalid = set(src.invalid) | set(tgt.invalid)
    empty = [i for i in range(n) if i not in invalid and (not src[i] or not tgt[i])]
    if empty:
        i = empty[0]
        if policy is Policy.error:
            side = names[0] if not src[i] else names[1]
            raise DataError(f"{side}: line {line_numbers[i]}: empty line (its pair cannot be "
                            f"used; {len(empty)} such pairs in all); set data.on_empty=skip to drop them")
        log = logger.warning if policy is Policy.warn else logger.info
        log("%s: dropped %d pairs with an empty side (first lines: %s)", name, len(empty),
            ", ".join(str(line_numbers[j]) for j in empty[:_SHOW]))
    drop = invalid.union(empty)
    keep = [i for i in range(n) if i not in drop]
    stats.update(kept=len(keep), empty_dropped=len(empty), invalid_dropped=len(invalid))
    return ParallelText([src[i] for i in keep], [tgt[i] for i in keep],
                        [line_numbers[i] for i in keep], name, stats)


def report(text: ParallelText) -> None:
    """Log what reading ``text`` kept and dropped."""
    s = text.stats
    logger.info("%s: read %d pairs, kept %d (dropped %d with an empty side, %d with invalid "
                "UTF-8; %d lines had control characters)", text.name, s["read"], s["kept"],
                s["empty_dropped"], s["invalid_dropped"], s["control_chars"])


def read_parallel(src_path: Path | str, tgt_path: Path | str, *, on_empty: Policy | str = Policy.skip,
                  on_invalid_utf8: Policy | str = Policy.error, max_pairs: Optional[int] = None,
                  drop_empty: bool = True, name: str = "") -> ParallelText:
    """Read two aligned files into a :class:`ParallelText`.

    Line counts are checked first (R20); then ``max_pairs`` keeps the first N lines; then
    lines are decoded (R22) and normalised (R26); then, when ``drop_empty``, pairs with an
    empty side or an invalid (``skip``) line are dropped as pairs (R21). With
    ``drop_empty=False`` (dev/test, R23) every line is kept, invalid ones as ``""``.

    Args:
        on_empty: ``skip`` (log info), ``warn`` (log warning with first lines), ``error``.
    Raises:
        DataError: unreadable file, different line counts, invalid UTF-8 under ``error``, or
            an empty side under ``on_empty=error``.
    """
    raw_src, raw_tgt = _split_bytes(src_path), _split_bytes(tgt_path)
    check_line_counts(src_path, len(raw_src), tgt_path, len(raw_tgt))
    if max_pairs is not None:
        raw_src, raw_tgt = raw_src[:max_pairs], raw_tgt[:max_pairs]
    src = _decode(raw_src, src_path, on_invalid_utf8)
    tgt = _decode(raw_tgt, tgt_path, on_invalid_utf8)
    text = make_parallel(src, tgt, list(range(1, len(src) + 1)), (str(src_path), str(tgt_path)),
                          on_empty, drop_empty, name or f"{src_path} + {tgt_path}")
    report(text)
    return text

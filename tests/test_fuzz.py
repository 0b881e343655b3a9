"""Property tests with hypothesis: random bytes and unicode never crash the corpus reader or
nmt-translate's input handling, and alignment (one item per input line) is always kept
(RELIABILITY.md R19-R22, R25, R26)."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nmt.cli.translate import read_input
from nmt.data.errors import DataError
from nmt.data.text import read_parallel

# bytes, with the characters R26 normalises spliced in: C0, DEL, C1 (NEL among them) and the
# Unicode line and paragraph separators, which random bytes almost never form as UTF-8
SPECIAL = ["\x00", "\x07", "\x0b", "\x0c", "\r", "\x1b", "\x7f", "\x80", "\x85", "\x9f", "\u2028", "\u2029"]
line_bytes = st.lists(st.one_of(st.binary(max_size=8), st.sampled_from(SPECIAL).map(lambda c: c.encode())),
                      max_size=8).map(lambda parts: b"".join(parts).replace(b"\n", b""))
lines_bytes = st.lists(line_bytes, min_size=1, max_size=12)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _join(lines: list[bytes], final_newline: bool) -> bytes:
    return b"\n".join(lines) + (b"\n" if final_newline else b"")


def _count_lines(data: bytes) -> int:
    """Lines in a file (a last line without newline counts; ``[b"", b""]`` joined is one line;
    a leading UTF-8 byte order mark is not content)."""
    data = data[3:] if data.startswith(b"\xef\xbb\xbf") else data
    return data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)


@FUZZ
@given(src=lines_bytes, tgt=lines_bytes, final=st.booleans(), policy=st.sampled_from(["error", "replace", "skip"]))
def test_reader_never_crashes_and_keeps_pairs_aligned(src, tgt, final, policy):
    """R19-R22, R26: any bytes give either a DataError naming the file, or aligned clean pairs."""
    with tempfile.TemporaryDirectory() as d:
        s, t = Path(d) / "x.en", Path(d) / "x.de"
        s.write_bytes(_join(src, final))
        t.write_bytes(_join(tgt, final))
        n_src, n_tgt = _count_lines(_join(src, final)), _count_lines(_join(tgt, final))
        try:
            text = read_parallel(s, t, on_invalid_utf8=policy)
        except DataError as err:
            assert str(s) in str(err) or str(t) in str(err)
            return
    assert n_src == n_tgt  # different counts always raise (R20)
    assert len(text.src) == len(text.tgt) == len(text.line_numbers) <= n_src
    for a, b, n in zip(text.src, text.tgt, text.line_numbers):
        assert a and b and 1 <= n <= n_src  # no empty side survives (R21)
        assert not any(c in a + b for c in SPECIAL + ["\n"])  # controls normalised (R26)
        assert len(a.splitlines()) == len(b.splitlines()) == 1


@FUZZ
@given(lines=st.lists(st.lists(st.one_of(st.text(max_size=6), st.sampled_from(SPECIAL)), max_size=6)
                     .map(lambda parts: "".join(parts).replace("\n", " ")), min_size=1, max_size=10),
       junk=st.lists(st.tuples(st.integers(0, 9), st.binary(min_size=1, max_size=4)), max_size=3),
       final=st.booleans())
def test_translate_input_keeps_one_line_per_input_line(lines, junk, final):
    """R25: whatever the bytes, nmt-translate reads exactly one (cleaned) line per input line."""
    raw = [t.encode("utf-8") for t in lines]
    for i, b in junk:  # splice arbitrary (often invalid UTF-8) bytes into some lines
        if i < len(raw):
            raw[i] += b.replace(b"\n", b"")
    data = _join(raw, final)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "in.txt"
        path.write_bytes(data)
        if not data:
            with pytest.raises(SystemExit, match="no input"):
                read_input(str(path), [])
            return
        got = read_input(str(path), [])
    expected = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
    assert len(got) == expected
    assert all(not any(c in g for c in SPECIAL + ["\n"]) and g == g.strip() for g in got)

"""nmt.data.text, nmt.data.splits and the length filter of nmt.data.dataset: reading, validation
and cleaning (RELIABILITY.md R19-R23, R26)."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest

from nmt.config import DataConfig, Policy
from nmt.data import download as corpus  # resolve_data_dir lives beside the download of a missing corpus
from nmt.data.dataset import filter_by_length
from nmt.data.errors import DataError
from nmt.data.splits import load_split
from nmt.data.text import read_lines, read_parallel


def write(path: Path, data: bytes | str) -> Path:
    path.write_bytes(data.encode("utf-8") if isinstance(data, str) else data)
    return path


def pair(tmp_path: Path, src: bytes | str, tgt: bytes | str, split: str = "train") -> tuple[Path, Path]:
    return write(tmp_path / f"{split}.en", src), write(tmp_path / f"{split}.de", tgt)


def make_corpus(folder: Path, train=("a b\n", "x y\n"), valid=("v\n", "w\n"), test=("t\n", "u\n")) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, (src, tgt) in (("train", train), ("valid", valid), ("test2016", test)):
        pair(folder, src, tgt, split)
    return folder


# --- R20: line counts -------------------------------------------------------------------------
def test_line_count_mismatch_names_files_counts_and_first_line(tmp_path):
    src, tgt = pair(tmp_path, "a\nb\nc\n", "x\ny\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    msg = str(err.value)
    assert str(src) in msg and str(tgt) in msg
    assert "3 lines" in msg and "2 lines" in msg
    assert "line 3" in msg


def test_count_checked_before_decoding(tmp_path):
    # invalid UTF-8 on the source, but the count mismatch is reported first (R20 before R22)
    src, tgt = pair(tmp_path, b"\xff\nb\n", b"x\n")
    with pytest.raises(DataError, match="line counts differ"):
        read_parallel(src, tgt)


# --- R19: line splitting ----------------------------------------------------------------------
def test_only_newline_splits(tmp_path):
    text = "a\u2028b\nc\x85d\ne\x0cf\ng\rh\nlast-without-newline"
    path = write(tmp_path / "f.txt", text)
    lines = read_lines(path)
    assert len(lines) == path.read_bytes().count(b"\n") + 1 == 5
    # never split on them (R19), and U+2028, NEL (U+0085) and C0 controls become spaces (R26)
    assert lines[0] == "a b" and lines[1] == "c d"
    assert lines[2] == "e f" and lines[3] == "g h"
    assert lines[4] == "last-without-newline"


def test_count_equals_wc_l_with_final_newline_and_empty_file(tmp_path):
    assert len(read_lines(write(tmp_path / "a", "x\n\ny\n"))) == 3
    assert len(read_lines(write(tmp_path / "b", ""))) == 0
    assert len(read_lines(write(tmp_path / "c", "\n"))) == 1


def test_crlf_and_whitespace_stripped(tmp_path):
    lines = read_lines(write(tmp_path / "f", "  a b \r\nc\r\n\tend\t\r\n"))
    assert list(lines) == ["a b", "c", "end"]
    assert lines.stats["control_chars"] == 0  # a line-final CR is not a control character


def test_control_characters_replaced_and_counted(tmp_path, caplog):
    path = write(tmp_path / "f", "ok\na\x00b\nc\x1bd\ttab\n")
    with caplog.at_level(logging.WARNING, logger="nmt.data.text"):
        lines = read_lines(path)
    assert list(lines) == ["ok", "a b", "c d\ttab"]
    assert lines.stats["control_chars"] == 2
    assert "first: line 2" in caplog.text


# --- R21: empty sides -------------------------------------------------------------------------
def test_one_sided_empty_line_drops_the_pair(tmp_path):
    src, tgt = pair(tmp_path, "a\n\nc\nd\n", "w\nx\n  \nz\n")
    text = read_parallel(src, tgt)
    assert text.src == ["a", "d"] and text.tgt == ["w", "z"]
    assert text.line_numbers == [1, 4]
    assert text.stats["empty_dropped"] == 2 and text.stats["kept"] == 2 and text.stats["read"] == 4


def test_empty_policy_warn_reports_first_lines(tmp_path, caplog):
    src, tgt = pair(tmp_path, "a\n\nc\n", "w\nx\ny\n")
    with caplog.at_level(logging.WARNING, logger="nmt.data.text"):
        text = read_parallel(src, tgt, on_empty=Policy.warn)
    assert len(text) == 2
    assert "dropped 1 pairs" in caplog.text and "first lines: 2" in caplog.text


def test_empty_policy_error_names_file_and_line(tmp_path):
    src, tgt = pair(tmp_path, "a\nb\nc\n", "w\nx\n\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt, on_empty="error")
    assert str(tgt) in str(err.value) and "line 3" in str(err.value)


# --- R22: invalid UTF-8 -----------------------------------------------------------------------
def test_invalid_utf8_error_gives_file_line_and_byte_offset(tmp_path):
    src, tgt = pair(tmp_path, b"ok\nab\xffc\n", b"x\ny\n")
    with pytest.raises(DataError) as err:
        read_parallel(src, tgt)
    msg = str(err.value)
    assert str(src) in msg and "line 2" in msg and "byte offset 2" in msg


def test_invalid_utf8_replace_counts(tmp_path):
    src, tgt = pair(tmp_path, b"ok\nab\xffc\n", b"x\ny\n")
    text = read_parallel(src, tgt, on_invalid_utf8="replace")
    assert text.src == ["ok", "ab\ufffdc"]
    assert text.stats["replaced_utf8"] == 1 and text.stats["kept"] == 2


def test_invalid_utf8_skip_drops_the_pair(tmp_path):
    src, tgt = pair(tmp_path, b"ok\nab\xffc\nz\n", b"x\ny\n\xc3\n")
    text = read_parallel(src, tgt, on_invalid_utf8=Policy.skip)
    assert text.src == ["ok"] and text.tgt == ["x"] and text.line_numbers == [1]
    assert text.stats["invalid_dropped"] == 2 and text.stats["invalid_utf8"] == 2


def test_max_pairs_takes_first_lines(tmp_path):
    src, tgt = pair(tmp_path, "a\nb\nc\n", "x\ny\nz\n")
    text = read_parallel(src, tgt, max_pairs=2)
    assert text.src == ["a", "b"] and text.stats["read"] == 2


# --- R23: length filters, dev/test untouched --------------------------------------------------
def test_filter_by_length_counts_and_reports(caplog):
    src = [3, 300, 4, 1, 10]
    tgt = [3, 5, 40, 0, 11]
    with caplog.at_level(logging.INFO, logger="nmt.data.dataset"):
        kept = filter_by_length(src, tgt, max_len=250, max_ratio=3.0, max_drop_fraction=0.9,
                                name="t", line_numbers=[10, 20, 30, 40, 50])
    assert kept == [0, 3, 4]  # (1, 0) -> max(1, len) ratio 1
    assert "dropped 2 of 5" in caplog.text and "first: line 20" in caplog.text


def test_filter_refuses_dropping_everything_or_too_much():
    with pytest.raises(DataError, match="all 2 pairs"):
        filter_by_length([500, 600], [5, 6], 250, 3.0, 1.0, "t")
    with pytest.raises(DataError, match="max_drop_fraction"):
        filter_by_length([500, 6, 7], [5, 6, 7], 250, 0.0, 0.2, "t")
    assert filter_by_length([5, 50], [5, 5], 0, 0.0, 0.0, "t") == [0, 1]  # both filters off


def test_dev_and_test_are_never_filtered(tmp_path):
    folder = make_corpus(tmp_path / "m", train=("a\n\nc\n", "x\ny\nz\n"),
                         valid=("a\n\nc\n", "x\ny\n\n"), test=(b"a\n\xff\n", b"x\ny\n"))
    cfg = DataConfig(dir=str(folder), on_invalid_utf8=Policy.skip, download=False)
    train = load_split(cfg, "train")
    assert len(train) == 2 and train.stats["empty_dropped"] == 1
    valid = load_split(cfg, "valid")
    assert valid.src == ["a", "", "c"] and valid.tgt == ["x", "y", ""]
    test = load_split(cfg, "test2016")  # a literal split name works too
    assert test.src == ["a", ""] and test.line_numbers == [1, 2]
    assert load_split(cfg, "test").src == test.src


def test_load_split_max_pairs(tmp_path):
    folder = make_corpus(tmp_path / "m", train=("a\nb\nc\n", "x\ny\nz\n"))
    cfg = DataConfig(dir=str(folder), max_train_pairs=2, download=False)
    assert load_split(cfg, "train").src == ["a", "b"]


def test_missing_files_message(tmp_path):
    cfg = DataConfig(dir=str(tmp_path / "nowhere"), download=False)
    with pytest.raises(DataError) as err:
        load_split(cfg, "train")
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / "train.en") in msg and "NMT_DATA_DIR" in msg


# --- data folder ------------------------------------------------------------------------------
def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("NMT_DATA_DIR", str(tmp_path / "env"))
    assert corpus.resolve_data_dir("multi30k", str(tmp_path / "explicit")) == tmp_path / "explicit"
    assert corpus.resolve_data_dir("multi30k", None) == tmp_path / "env" / "multi30k"
    monkeypatch.delenv("NMT_DATA_DIR")
    root = Path(corpus.__file__).resolve().parents[2]
    assert corpus.resolve_data_dir("multi30k") == root / "data" / "multi30k"


# --- Hugging Face datasets (offline, save_to_disk) --------------------------------------------
def _hf_rows(n: int, start: int = 0) -> list[tuple[str, str]]:
    return [(f"en {i}", f"de {i}") for i in range(start, start + n)]


def test_hf_nested_translation_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = {"train": _hf_rows(4) + [("", "leer")], "validation": _hf_rows(2, 10) + [("", "")],
            "test": _hf_rows(3, 20)}
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"translation": [{"en": e, "de": d} for e, d in r]})
        for split, r in rows.items()})
    dd.save_to_disk(str(tmp_path / "hf"))
    cfg = DataConfig(hf_name=str(tmp_path / "hf"))
    train = load_split(cfg, "train")
    assert train.src == ["en 0", "en 1", "en 2", "en 3"] and train.tgt[0] == "de 0"
    assert train.stats["empty_dropped"] == 1 and train.line_numbers == [1, 2, 3, 4]
    valid = load_split(cfg, "valid")  # "valid" missing -> falls back to "validation"
    assert valid.src == ["en 10", "en 11", ""]  # dev keeps empty lines
    assert load_split(cfg, "test").tgt == ["de 20", "de 21", "de 22"]  # test2016 -> "test"


def test_hf_flat_columns_layout(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"en": [e for e, _ in r], "de": [d for _, d in r]})
        for split, r in {"train": _hf_rows(5), "validation": _hf_rows(2), "test": _hf_rows(2)}.items()})
    dd.save_to_disk(str(tmp_path / "flat"))
    cfg = DataConfig(hf_name=str(tmp_path / "flat"), src_lang="de", tgt_lang="en", max_train_pairs=3)
    train = load_split(cfg, "train")
    assert train.src == ["de 0", "de 1", "de 2"] and train.tgt == ["en 0", "en 1", "en 2"]
    bad = DataConfig(hf_name=str(tmp_path / "flat"), hf_src_column="source", hf_tgt_column="en")
    with pytest.raises(DataError, match="no column 'source'"):
        load_split(bad, "train")
    missing = DataConfig(hf_name=str(tmp_path / "flat"), hf_valid_split="dev")
    with pytest.raises(DataError, match="available"):
        load_split(missing, "valid")


# --- real data --------------------------------------------------------------------------------
def test_real_multi30k_counts(multi30k_dir):  # fixture in conftest.py (NMT_DATA_DIR)
    cfg = DataConfig(dir=str(multi30k_dir / "multi30k"), download=False)
    sizes = {split: len(load_split(cfg, split)) for split in ("train", "valid", "test")}
    assert sizes == {"train": 29000, "valid": 1014, "test": 1000}

"""Alignment data: subword merging, hard alignments, Pharaoh I/O, AER, attention statistics."""
import math

import pytest
import torch

from nmt.alignment import (alignment_error_rate, attention_entropy, coverage_deviation, format_pharaoh,
                           hard_alignment, merge_subwords, parse_pharaoh, read_pharaoh, word_spans)


def test_word_spans_follow_sentencepiece_marks_and_isolate_specials():
    pieces = ["▁Ein", "▁Hund", "e", "▁", ".", "</s>"]
    assert word_spans(pieces) == [[0], [1, 2], [3, 4], [5]]
    assert word_spans(["ab", "▁c", "</s>", "d"]) == [[0], [1], [2], [3]]


def test_merge_subwords_sums_source_pieces_and_averages_target_pieces():
    torch.manual_seed(0)
    src = ["▁Zwei", "▁Hund", "e", "</s>"]
    tgt = ["▁Two", "▁do", "gs", "</s>"]
    m = torch.softmax(torch.randn(4, 4), -1)
    merged, tgt_words, src_words = merge_subwords(m, tgt, src)
    assert src_words == ["Zwei", "Hunde", "</s>"] and tgt_words == ["Two", "dogs", "</s>"]
    assert merged.shape == (3, 3)
    torch.testing.assert_close(merged.sum(-1), torch.ones(3))  # rows still sum to one
    torch.testing.assert_close(merged[0, 1], m[0, 1] + m[0, 2])
    torch.testing.assert_close(merged[1, 0], (m[1, 0] + m[2, 0]) / 2)
    heads = torch.softmax(torch.randn(2, 4, 4), -1)
    assert merge_subwords(heads, tgt, src)[0].shape == (2, 3, 3)
    with pytest.raises(ValueError, match="does not match"):
        merge_subwords(m, tgt[:3], src)


def test_hard_alignment_takes_the_argmax_and_skips_eos():
    m = torch.tensor([[0.1, 0.8, 0.1], [0.7, 0.2, 0.1], [0.0, 0.1, 0.9]])
    assert hard_alignment(m) == [(0, 1), (1, 0), (2, 2)]
    # EOS column never chosen, EOS row never linked
    assert hard_alignment(m, ["a", "b", "</s>"], ["x", "y", "</s>"]) == [(0, 1), (1, 0)]
    assert format_pharaoh([(2, 1), (0, 0)]) == "0-0 2-1"


def test_parse_pharaoh_formats():
    sure, possible = parse_pharaoh("0-0 1?2 3p4 2-3-P 4-4-s")
    assert sure == {(0, 0), (4, 4)}
    assert possible == {(0, 0), (1, 2), (3, 4), (2, 3), (4, 4)}
    assert parse_pharaoh("") == (set(), set())
    with pytest.raises(ValueError, match="gold.txt line 7.*'1:2'"):
        parse_pharaoh("0-0 1:2", "gold.txt line 7")


def test_read_pharaoh_names_file_and_line(tmp_path):
    path = tmp_path / "gold.wa"
    path.write_text("0-0 1-1\n\n2?0\n")
    gold = read_pharaoh(str(path))
    assert len(gold) == 3 and gold[1] == (set(), set()) and gold[2] == (set(), {(2, 0)})
    path.write_bytes(b"0-0\n1-x\n")
    with pytest.raises(ValueError, match=r"gold.wa line 2"):
        read_pharaoh(str(path))


def test_aer_known_answers():
    gold = [({(0, 0), (1, 1)}, {(0, 0), (1, 1), (1, 2)})]
    perfect = alignment_error_rate([{(0, 0), (1, 1)}], gold)
    assert perfect.aer == 0.0 and perfect.precision == 1.0 and perfect.recall == 1.0
    disjoint = alignment_error_rate([{(0, 1), (1, 0)}], gold)
    assert disjoint.aer == 1.0 and disjoint.precision == 0.0 and disjoint.recall == 0.0
    # a possible link costs no precision, and only sure links count for recall
    partial = alignment_error_rate([{(0, 0), (1, 2)}], gold)
    assert partial.precision == 1.0 and partial.recall == 0.5
    assert partial.aer == pytest.approx(1 - (1 + 2) / (2 + 2))
    # corpus level: counts are summed over sentences, not averaged
    two = alignment_error_rate([{(0, 0)}, {(5, 5)}], [({(0, 0)}, {(0, 0)}), ({(1, 1), (2, 2), (3, 3)}, set())])
    assert two.recall == pytest.approx(1 / 4) and two.precision == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="1 predicted alignments but 2 gold"):
        alignment_error_rate([set()], gold * 2)


def test_entropy_and_coverage_statistics():
    one_hot = torch.eye(3)[None, None]  # (1,1,3,3)
    uniform = torch.full((1, 1, 3, 4), 0.25)
    assert attention_entropy(one_hot) == pytest.approx(0.0, abs=1e-6)
    assert attention_entropy(uniform) == pytest.approx(math.log(4))
    rows = torch.tensor([[True, True, False]])
    mixed = torch.cat([uniform[:, :, :2], torch.eye(4)[None, None, :1]], dim=2)  # padding row is one-hot
    assert attention_entropy(mixed, rows) == pytest.approx(math.log(4))
    src_mask = torch.ones(1, 3, dtype=torch.bool)
    assert coverage_deviation(one_hot, torch.ones(1, 3, dtype=torch.bool), src_mask) == pytest.approx(0.0)
    # every target row on source 0: coverage (3, 0, 0) -> deviations (2, 1, 1)
    piled = torch.zeros(1, 1, 3, 3)
    piled[..., 0] = 1.0
    assert coverage_deviation(piled, torch.ones(1, 3, dtype=torch.bool), src_mask) == pytest.approx(4 / 3)

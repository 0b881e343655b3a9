"""Attention maps from the search's hypotheses, labelled figures, text heatmaps."""
from __future__ import annotations

import pytest
import torch

from nmt.attention_maps import attention_statistics, collect_attention
from nmt.config import AttentionConfig, ModelConfig
from nmt.data.batch import Batch
from nmt.models import build_model
from nmt.search import beam_search
from nmt.viz import alignment_figures, ascii_heatmap, check_rows, head_grid, heatmap


class PieceTokenizer:
    """Labels id k as a word-initial piece ``▁wk`` when k is even, a continuation ``k`` when odd."""

    def src_pieces(self, ids):
        return [f"▁w{i}" if i % 2 == 0 else f"{i}" for i in ids]

    tgt_pieces = src_pieces


def transformer(layers=2, heads=4):
    torch.manual_seed(0)
    cfg = ModelConfig(d_model=32, num_heads=heads, ffn_dim=64, encoder_layers=layers, decoder_layers=layers,
                      dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)
    return build_model(cfg, 40, 40).eval()


def rnn(window="local_p"):
    torch.manual_seed(0)
    cfg = ModelConfig(arch="rnn", embed_dim=16, hidden_size=24, encoder_layers=1, decoder_layers=1, dropout=0.0,
                      attention=AttentionConfig(score="general", window=window, window_size=2, max_src_len=32))
    return build_model(cfg, 40, 40).eval()


SRC = [[4, 5, 6, 8, 9, 10, 12], [14, 15, 16]]


@pytest.mark.parametrize("make", [transformer, rnn])
def test_teacher_forced_maps_reproduce_the_beam_search_alignment(make):
    model = make()
    batch = Batch.collate(SRC)
    hyps = beam_search(model, batch, beam_size=3, max_len_a=0.0, max_len_b=6, need_attn=True)
    tokens = [h[0].tokens for h in hyps]
    maps = collect_attention(model, PieceTokenizer(), SRC, tokens)
    for m, h, src in zip(maps, hyps, SRC):
        assert m.src_pieces[-1] == "</s>" and len(m.src_pieces) == len(src) + 1
        assert len(m.tgt_pieces) == len(h[0].tokens) + 1
        torch.testing.assert_close(m.alignment(), h[0].alignment, rtol=1e-4, atol=1e-5)
        for w in m.cross + m.decoder_self + m.encoder_self:
            torch.testing.assert_close(w.sum(-1), torch.ones(w.shape[:-1]), rtol=0, atol=1e-4)


def test_transformer_figures_cover_every_layer_and_head_with_real_labels():
    model = transformer(layers=2, heads=4)
    maps = collect_attention(model, PieceTokenizer(), SRC[:1], [[20, 21, 22]])[0]
    assert len(maps.cross) == 2 and maps.cross[0].shape == (4, 4, 8)
    assert len(maps.encoder_self) == 2 and maps.encoder_self[0].shape == (4, 8, 8)
    assert len(maps.decoder_self) == 2 and maps.decoder_self[0].shape == (4, 4, 4)
    figs = alignment_figures(maps, "dev0")
    assert set(figs) == {"dev0/alignment", "dev0/alignment_words", "dev0/cross_layer0", "dev0/cross_layer1",
                         "dev0/encoder_self_layer0", "dev0/encoder_self_layer1", "dev0/decoder_self_layer0",
                         "dev0/decoder_self_layer1"}
    ax = figs["dev0/alignment"].axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == maps.src_pieces
    assert [t.get_text() for t in ax.get_yticklabels()] == maps.tgt_pieces
    assert len(figs["dev0/alignment"].axes) == 2  # the heatmap and its colour bar
    words = figs["dev0/alignment_words"].axes[0]
    assert [t.get_text() for t in words.get_xticklabels()] == ["w45", "w6", "w89", "w10", "w12", "</s>"]
    assert [t.get_text() for t in words.get_yticklabels()] == ["w2021", "w22", "</s>"]
    grid = figs["dev0/cross_layer1"]
    assert sum(1 for a in grid.axes if a.get_title().startswith("head ")) == 4
    import matplotlib.pyplot as plt

    for fig in figs.values():
        plt.close(fig)


def test_local_p_figure_draws_the_predicted_positions_and_window_edges():
    model = rnn("local_p")
    maps = collect_attention(model, PieceTokenizer(), SRC[:1], [[20, 21, 22, 23]])[0]
    assert maps.positions is not None and maps.positions.shape == (5,) and maps.window_size == 2
    figs = alignment_figures(maps, "dev0")
    assert set(figs) == {"dev0/alignment", "dev0/alignment_words"}  # one matrix for an RNN
    lines = figs["dev0/alignment"].axes[0].get_lines()
    assert len(lines) == 3  # p_t and the two window edges
    torch.testing.assert_close(torch.as_tensor(lines[0].get_xdata()).float(), maps.positions)
    torch.testing.assert_close(torch.as_tensor(lines[1].get_xdata()).float(), maps.positions - 2)


def test_rows_must_sum_to_one_before_rendering():
    good = torch.softmax(torch.randn(3, 4), -1)
    check_rows(good)
    with pytest.raises(ValueError, match="rows must sum to one"):
        heatmap(good * 0.5, list("abcd"), list("xyz"))
    with pytest.raises(ValueError, match="does not match"):
        head_grid(good[None], list("abc"), list("xyz"))


def test_ascii_heatmap_marks_the_peak_of_each_row():
    m = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    text = ascii_heatmap(m, ["ab", "c", "d"], ["x", "y"], label_width=4)
    lines = text.splitlines()
    assert lines[0] == "     acd" and lines[1] == "     b  "
    assert lines[2] == "   x @  " and lines[3] == "   y   @"


def test_attention_statistics_per_layer_and_kind():
    model = transformer(layers=2, heads=4)
    stats = attention_statistics(model, SRC, [[20, 21], [22, 23, 24]])
    assert set(stats) == {"entropy/cross_layer0", "entropy/cross_layer1", "entropy/decoder_self_layer0",
                          "entropy/decoder_self_layer1", "entropy/encoder_self_layer0",
                          "entropy/encoder_self_layer1", "coverage_deviation"}
    assert all(v >= 0 for v in stats.values())
    assert stats["entropy/encoder_self_layer0"] <= torch.log(torch.tensor(8.0)).item() + 1e-5
    rnn_stats = attention_statistics(rnn("global"), SRC, [[20, 21], [22, 23, 24]])
    assert set(rnn_stats) == {"entropy/cross_layer0", "coverage_deviation"}

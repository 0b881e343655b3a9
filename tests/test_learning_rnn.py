"""Bahdanau, Luong general with input feeding, and Luong local-p each learn to reverse random
sequences, and their attention concentrates on the anti-diagonal (the test that attention is real)."""
from __future__ import annotations

import random

import pytest
import torch

from nmt.config import AttentionConfig, ModelConfig, RNNDecoderConfig
from nmt.data.batch import Batch
from nmt.models import build_model
from nmt.search import greedy_search
from test_learning import reverse_task_aer, train_on_reverse

SYMBOLS = list(range(4, 20))


def _pairs(n, rng):
    src = [[rng.choice(SYMBOLS) for _ in range(rng.randint(3, 8))] for _ in range(n)]
    return src, [list(reversed(s)) for s in src]


@pytest.mark.parametrize("style,score,window", [("bahdanau", "additive", "global"),
                                                ("luong", "general", "global"),
                                                ("luong", "general", "local_p")])
def test_rnn_learns_to_reverse_with_anti_diagonal_attention(style, score, window):
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = ModelConfig(arch="rnn", embed_dim=32, hidden_size=64, encoder_layers=1, decoder_layers=1, dropout=0.0,
                      decoder=RNNDecoderConfig(style=style, input_feeding=True),
                      attention=AttentionConfig(score=score, window=window, window_size=3))
    model = build_model(cfg, 20, 20)
    train_on_reverse(model, lambda: _pairs(64, rng), updates=700)
    src, tgt = _pairs(200, random.Random(123))
    hyps = greedy_search(model, Batch.collate(src))
    accuracy = sum(h[0].tokens == t for h, t in zip(hyps, tgt)) / len(tgt)
    assert accuracy > 0.9, accuracy
    # mass of each output row within one position of the mirrored source position
    mass = []
    for s, h in zip(src, hyps):
        n = len(s)
        align = h[0].alignment[: min(n, len(h[0].tokens))]  # rows of the real tokens (not EOS)
        for i, row in enumerate(align):
            j = n - 1 - i
            mass.append(float(row[max(0, j - 1) : j + 2].sum()))
    assert sum(mass) / len(mass) > 0.8, sum(mass) / len(mass)
    assert reverse_task_aer(src, hyps) < 0.1

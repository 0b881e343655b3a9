"""A tiny Transformer learns to reverse sequences and its cross-attention becomes the anti-diagonal
(ARCHITECTURE.md example 6)."""
from __future__ import annotations

import random

import torch

from nmt.alignment import alignment_error_rate
from nmt.attention_maps import word_alignment
from nmt.config import ModelConfig
from nmt.data.batch import Batch
from nmt.models import build_model
from nmt.search import beam_search, greedy_search
from nmt.models.loss import label_smoothed_nll
from nmt.train.optim import build_optimizer, build_scheduler

SYMBOLS = list(range(4, 24))


def _pairs(n, rng):
    src = [[rng.choice(SYMBOLS) for _ in range(rng.randint(3, 10))] for _ in range(n)]
    return src, [list(reversed(s)) for s in src]


def test_transformer_learns_to_reverse_with_anti_diagonal_attention():
    torch.manual_seed(0)
    rng = random.Random(0)
    cfg = ModelConfig(d_model=64, num_heads=2, ffn_dim=128, encoder_layers=2, decoder_layers=2, dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0, positions="learned", max_positions=64)
    model = build_model(cfg, 24, 24)
    train_on_reverse(model, lambda: _pairs(64, rng), updates=1100, warmup_steps=100)
    src, tgt = _pairs(200, random.Random(123))
    batch = Batch.collate(src)
    greedy = greedy_search(model, batch)
    accuracy = sum(h[0].tokens == t for h, t in zip(greedy, tgt)) / len(tgt)
    assert accuracy > 0.95, accuracy
    beam = beam_search(model, batch, beam_size=4)
    assert sum(h[0].tokens == t for h, t in zip(beam, tgt)) / len(tgt) > 0.95
    # head-averaged cross-attention of the last layer peaks on the mirrored source position
    hits = total = 0
    for s, h in zip(src, greedy):
        if h[0].tokens != list(reversed(s)):
            continue
        n = len(s)
        peaks = h[0].alignment[:n, :n].argmax(dim=-1)
        hits += int((peaks == torch.arange(n - 1, -1, -1)).sum())
        total += n
    assert hits / total > 0.9, hits / total
    # the extracted hard word alignment is the anti-diagonal: AER against it below 0.1
    assert reverse_task_aer(src, greedy) < 0.1


def train_on_reverse(model, sample, updates: int, warmup_steps: int = 0) -> None:
    """``updates`` Adam steps (lr 3e-3, clipping 1.0, no label smoothing) on batches from
    ``sample() -> (src, tgt)``; inverse-sqrt warmup over ``warmup_steps`` when > 0, else a constant
    rate. Leaves the model in eval mode."""
    opt = build_optimizer(model, "adam", 3e-3, (0.9, 0.98), 1e-8, 0.0)
    sched = build_scheduler(opt, scheduler="inverse_sqrt", lr=3e-3, warmup_steps=warmup_steps, warmup_init_lr=1e-5,
                            min_lr=0.0) if warmup_steps > 0 else None
    model.train()
    for _ in range(updates):
        b = Batch.collate(*sample())
        out = model(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in)
        loss, _ = label_smoothed_nll(out.logits, b.tgt_out, 0.0)
        (loss / b.ntokens).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if sched is not None:
            sched.step()
    model.eval()


def reverse_task_aer(src, hyps) -> float:
    """AER of the search's hard alignments against the mirrored-position gold (every symbol a word)."""
    predicted, gold = [], []
    for s, h in zip(src, hyps):
        pieces = [f"\u2581s{k}" for k in s] + ["</s>"]
        out = [f"\u2581s{k}" for k in h[0].tokens] + ["</s>"]
        predicted.append(set(word_alignment(h[0].alignment, out, pieces)))
        sure = {(len(s) - 1 - j, j) for j in range(min(len(s), len(h[0].tokens)))}
        gold.append((sure, sure))
    return alignment_error_rate(predicted, gold).aer

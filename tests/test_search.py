"""Search: a scripted decoder gives exact beams; beam 1 equals greedy; batching changes nothing."""
from __future__ import annotations

import math

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data.batch import BOS_ID, EOS_ID, Batch
from nmt.models import build_model
from nmt.models.interfaces import DecoderState, EncoderOutput
from nmt.search import beam_search, greedy_search
from nmt.search.penalties import gnmt_length_penalty, max_output_lengths

A, B_, C = 4, 5, 6
V = 7


class ScriptedModel:
    """Emits fixed probabilities per (step, previous token); attention is one-hot on ``step``."""

    def __init__(self, table):
        self.table = table  # {step: {prev_token or None: {token: prob}}}

    def encode(self, src_tokens, src_lengths, src_mask):
        return EncoderOutput(src_tokens.float()[..., None], src_mask, src_lengths)

    def init_state(self, enc):
        return DecoderState(0, {"src_len": enc.src_lengths})

    def step(self, tokens, state, need_attn=True):
        rows = []
        for prev in tokens[:, -1].tolist():
            probs = self.table.get(state.step, {})
            probs = probs.get(prev, probs.get(None, {EOS_ID: 1.0}))
            row = torch.full((V,), -1e9)
            for tok, p in probs.items():
                row[tok] = math.log(p)
            rows.append(row)
        src_len = state.cache["src_len"]
        attn = torch.zeros(len(rows), int(src_len.max()))
        attn[:, min(state.step, attn.size(1) - 1)] = 1.0
        return torch.stack(rows), attn, DecoderState(state.step + 1, state.cache)


TABLE = {
    0: {None: {A: 0.5, B_: 0.4, EOS_ID: 0.1}},
    1: {A: {A: 0.1, B_: 0.2, EOS_ID: 0.7}, B_: {EOS_ID: 0.7, B_: 0.2, A: 0.1}},
}


def test_scripted_beam_exact_hypotheses_and_scores():
    batch = Batch.collate([[8, 8, 8]])
    hyps = beam_search(ScriptedModel(TABLE), batch, beam_size=2, length_penalty=0.0, nbest=2)[0]
    assert [h.tokens for h in hyps] == [[A], [B_]]
    assert hyps[0].log_prob == pytest.approx(math.log(0.5) + math.log(0.7), abs=1e-5)
    assert hyps[1].log_prob == pytest.approx(math.log(0.4) + math.log(0.7), abs=1e-5)
    # alignment: one row per output token incl. EOS, one-hot on the step, cropped to the source
    assert hyps[0].alignment.shape == (2, 4)
    assert hyps[0].alignment.argmax(-1).tolist() == [0, 1]


def test_scripted_beam_length_penalty_changes_ranking():
    # K=2. step 1 keeps "B B" and "A C" alive (the EOS candidates rank 3rd and 4th, so they are
    # not finalised); step 2 finishes "B B" (p=.45*.9*.9); step 3 finishes "A C C" (p=.5*.7*.9).
    table = {0: {None: {A: 0.5, B_: 0.45, EOS_ID: 0.05}},
             1: {A: {EOS_ID: 0.3, C: 0.7}, B_: {B_: 0.9, EOS_ID: 0.1}},
             2: {C: {EOS_ID: 0.1, C: 0.9}, B_: {EOS_ID: 0.9, B_: 0.1}}}
    batch = Batch.collate([[8, 8, 8, 8]])
    plain = beam_search(ScriptedModel(table), batch, beam_size=2, length_penalty=0.0, nbest=2)[0]
    assert [h.tokens for h in plain] == [[B_, B_], [A, C, C]]
    assert [h.log_prob for h in plain] == pytest.approx([math.log(0.45 * 0.81), math.log(0.5 * 0.7 * 0.9)], abs=1e-5)
    # GNMT alpha=2: lp(3) = (8/6)^2, lp(4) = (9/6)^2 -> the longer hypothesis wins
    penalised = beam_search(ScriptedModel(table), batch, beam_size=2, length_penalty=2.0, nbest=2)[0]
    assert [h.tokens for h in penalised] == [[A, C, C], [B_, B_]]
    assert penalised[0].score == pytest.approx(math.log(0.5 * 0.7 * 0.9) / (9 / 6) ** 2, abs=1e-5)
    assert penalised[1].score == pytest.approx(math.log(0.45 * 0.81) / gnmt_length_penalty(3, 2.0), abs=1e-5)


def test_max_length_forces_eos():
    table = {s: {None: {A: 0.9, EOS_ID: 0.1}} for s in range(100)}
    batch = Batch.collate([[8, 8]])  # src_len 3 -> max 1*3 + 2 = 5 tokens
    hyps = beam_search(ScriptedModel(table), batch, beam_size=1, max_len_a=1.0, max_len_b=2)[0]
    assert hyps[0].tokens == [A] * 5  # EOS (p=0.1) never ranks first, so it is forced at step 5
    greedy = greedy_search(ScriptedModel(table), batch, max_len_a=1.0, max_len_b=2)[0][0]
    assert greedy.tokens == [A] * 5
    assert max_output_lengths(torch.tensor([3]), 1.0, 2).tolist() == [5]


def _greedy_oracle(model, src):
    """15-line greedy decoder used as a test oracle (the Annotated Transformer's shape)."""
    batch = Batch.collate([src])
    state = model.init_state(model.encode(batch.src_tokens, batch.src_lengths, batch.src_mask))
    out, token = [], BOS_ID
    for _ in range(int(1.2 * (len(src) + 1) + 10)):
        lprobs, _, state = model.step(torch.tensor([[token]]), state)
        lprobs[0, :4] = torch.where(torch.arange(4) == EOS_ID, lprobs[0, :4], torch.tensor(-1e9))
        token = int(lprobs.argmax())
        if token == EOS_ID:
            return out
        out.append(token)
    return out


@pytest.fixture(scope="module")
def random_model():
    torch.manual_seed(3)
    cfg = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=2)
    return build_model(cfg, 40, 40).eval()


SOURCES = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]


def test_beam_size_one_equals_greedy(random_model):
    batch = Batch.collate(SOURCES)
    beam1 = beam_search(random_model, batch, beam_size=1, length_penalty=0.0)
    greedy = greedy_search(random_model, batch)
    for src, b, g in zip(SOURCES, beam1, greedy):
        assert b[0].tokens == g[0].tokens == _greedy_oracle(random_model, src)
        assert b[0].log_prob == pytest.approx(g[0].log_prob, abs=1e-4)


@pytest.mark.parametrize("search", ["beam", "greedy"])
def test_batch_equals_one_sentence_at_a_time(random_model, search):
    run = (lambda b: beam_search(random_model, b, beam_size=4, nbest=3)) if search == "beam" else \
        (lambda b: greedy_search(random_model, b))
    together = run(Batch.collate(SOURCES))
    for src, hyps in zip(SOURCES, together):
        alone = run(Batch.collate([src]))[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        for h, a in zip(hyps, alone):
            assert h.score == pytest.approx(a.score, abs=1e-4)
            torch.testing.assert_close(h.alignment, a.alignment, rtol=1e-4, atol=1e-5)


def test_nbest_sorted_and_alignment_shapes(random_model):
    hyps = beam_search(random_model, Batch.collate(SOURCES), beam_size=5, nbest=5)
    for src, hs in zip(SOURCES, hyps):
        assert len(hs) == 5
        assert [h.score for h in hs] == sorted((h.score for h in hs), reverse=True)
        for h in hs:
            assert h.alignment.shape == (len(h.tokens) + 1, len(src) + 1)
            torch.testing.assert_close(h.alignment.sum(-1), torch.ones(len(h.tokens) + 1))


def test_nbest_larger_than_beam_is_refused(random_model):
    with pytest.raises(ValueError, match="nbest"):
        beam_search(random_model, Batch.collate(SOURCES), beam_size=2, nbest=3)


class NeverEnds(ScriptedModel):
    """A scripted model that never wants EOS, with a position table of ``max_positions``."""

    def __init__(self, max_positions):
        super().__init__({})
        self.max_positions = max_positions

    def step(self, tokens, state, need_attn=True):
        lprobs, attn, new = super().step(tokens, state, need_attn)
        lprobs[:] = math.log(1e-3)
        lprobs[:, A] = math.log(0.9)
        return lprobs, attn, new


@pytest.mark.parametrize("search", ["beam", "greedy"])
def test_output_length_is_capped_at_the_models_positions(search):
    """R25 (issue 36 B5): however large max_len_a/max_len_b, search never decodes a position the
    model does not have: at most max_positions - 1 tokens before EOS (a looping model, a long input)."""
    batch = Batch.collate([[8] * 30, [8, 8]])
    model = NeverEnds(max_positions=12)
    hyps = (beam_search(model, batch, beam_size=2, max_len_a=10.0, max_len_b=500) if search == "beam"
            else greedy_search(model, batch, max_len_a=10.0, max_len_b=500))
    assert [len(h[0].tokens) for h in hyps] == [11, 11]
    assert max_output_lengths(torch.tensor([5]), 1e12, 10**12).item() >= 10**9  # no overflow


@pytest.mark.parametrize("arch", ["transformer", "rnn"])
def test_a_real_model_decodes_a_source_as_long_as_its_positions(arch):
    """R25: a Transformer (and an RNN, bounded by the same setting) decodes a source of
    max_positions - 1 tokens with the default max_len_a=1.2 without a position error."""
    cfg = ModelConfig(arch=arch, d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                      embed_dim=16, hidden_size=16, max_positions=20)
    torch.manual_seed(0)
    model = build_model(cfg, 12, 12).eval()
    batch = Batch.collate([[5 + i % 6 for i in range(19)]])
    for hyps in (beam_search(model, batch, beam_size=2), greedy_search(model, batch)):
        assert len(hyps[0][0].tokens) <= 19

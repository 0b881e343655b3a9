"""BiRNN + attention: every decoder style x score function x window obeys the decoder contract."""
from __future__ import annotations

import itertools

import pytest
import torch

from nmt.config import AttentionConfig, ModelConfig, RNNDecoderConfig
from nmt.data.batch import Batch
from nmt.models import build_model
from nmt.models.rnn_attention import RNNAttention
from nmt.search import beam_search, greedy_search

STYLES = ["bahdanau", "luong"]
SCORES = ["additive", "dot", "general", "scaled_dot", "cosine", "location"]
WINDOWS = ["global", "local_m", "local_p"]
D = 2


def rnn_model(style="bahdanau", score="additive", window="global", rnn_type="gru", input_feeding=True,
              dropout=0.0, layers=2):
    cfg = ModelConfig(arch="rnn", rnn_type=rnn_type, embed_dim=16, hidden_size=24, encoder_layers=layers,
                      decoder_layers=layers, dropout=dropout,
                      decoder=RNNDecoderConfig(style=style, input_feeding=input_feeding),
                      attention=AttentionConfig(score=score, window=window, window_size=D, max_src_len=32))
    return build_model(cfg, 50, 50)


def _batch():
    return Batch.collate([[5, 6, 7, 8, 9, 10, 11, 12], [9, 10]],
                         [[11, 12, 13], [14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24]])


@pytest.mark.parametrize("style,score,window", list(itertools.product(STYLES, SCORES, WINDOWS)))
def test_incremental_equals_teacher_forcing_and_weights_are_valid(style, score, window):
    torch.manual_seed(0)
    model = rnn_model(style, score, window).eval()
    b = _batch()
    full, _ = model.decoder(b.tgt_in, model.init_state(model.encode(b.src_tokens, b.src_lengths, b.src_mask)),
                            need_attn=True)
    state = model.init_state(model.encode(b.src_tokens, b.src_lengths, b.src_mask))
    logits, attns, centres = [], [], []
    for t in range(b.tgt_in.size(1)):
        out, state = model.decoder(b.tgt_in[:, t : t + 1], state, need_attn=True, incremental=True)
        logits.append(out.logits)
        attns.append(out.attn)
        centres.append(out.extra.get("positions"))
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(attns, 2), full.attn, rtol=1e-4, atol=1e-5)
    attn = full.attn  # (B,1,T,S)
    assert attn.shape == (2, 1, b.tgt_in.size(1), b.src_tokens.size(1))
    assert attn[1, :, :, int(b.src_lengths[1]):].abs().max() == 0  # padding gets exactly zero
    torch.testing.assert_close(attn.sum(-1), torch.ones(attn.shape[:-1]))
    if window != "global":
        p = full.extra["positions"]  # (B,T)
        torch.testing.assert_close(torch.cat(centres, 1), p, rtol=1e-4, atol=1e-5)
        s = torch.arange(attn.size(-1)).float()
        outside = (s[None, None, :] - p[..., None]).abs() > D
        assert attn[:, 0][outside].abs().max() == 0  # nothing outside [p_t - D, p_t + D]
        if window == "local_m":
            expected = torch.minimum(torch.arange(p.size(1)).float()[None], b.src_lengths[:, None].float() - 1)
            torch.testing.assert_close(p, expected)


@pytest.mark.parametrize("style,rnn_type,input_feeding", [("bahdanau", "lstm", False), ("luong", "lstm", True),
                                                          ("luong", "gru", False)])
def test_lstm_and_no_input_feeding_keep_the_contract(style, rnn_type, input_feeding):
    torch.manual_seed(0)
    model = rnn_model(style, "general", "local_p", rnn_type, input_feeding).eval()
    b = _batch()
    enc = model.encode(b.src_tokens, b.src_lengths, b.src_mask)
    full, _ = model.decoder(b.tgt_in, model.init_state(enc), need_attn=True)
    state, logits = model.init_state(enc), []
    for t in range(b.tgt_in.size(1)):
        out, state = model.decoder(b.tgt_in[:, t : t + 1], state, incremental=True)
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-4, atol=1e-5)


def test_encoder_ignores_padding():
    torch.manual_seed(0)
    model = rnn_model().eval()
    alone = Batch.collate([[9, 10]])
    padded = Batch.collate([[9, 10], [5, 6, 7, 8, 9, 10, 11, 12]])
    a = model.encode(alone.src_tokens, alone.src_lengths, alone.src_mask)
    p = model.encode(padded.src_tokens, padded.src_lengths, padded.src_mask)
    torch.testing.assert_close(p.encoder_out[0, :3], a.encoder_out[0])
    assert p.encoder_out[0, 3:].abs().max() == 0
    torch.testing.assert_close(p.extra["backward_first"][0], a.extra["backward_first"][0])


@pytest.mark.parametrize("style,score,window", [("bahdanau", "additive", "local_p"), ("luong", "general", "local_p"),
                                                ("luong", "cosine", "global"), ("bahdanau", "location", "local_m")])
def test_gradients_reach_every_parameter(style, score, window):
    torch.manual_seed(0)
    model = rnn_model(style, score, window)
    b = _batch()
    out = model(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in)
    out.logits.log_softmax(-1).gather(-1, b.tgt_out[..., None]).sum().neg().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    if window == "local_p":
        names = dict(model.named_parameters())
        assert names["decoder.attention.pos_v.weight"].grad.abs().sum() > 0


def test_invalid_combinations_fail_clearly():
    with pytest.raises(ValueError, match="equal query and key sizes"):
        RNNAttention(24, 32, score="dot")
    with pytest.raises(ValueError, match="window"):
        rnn_model(window="sideways")
    with pytest.raises(ValueError, match="style"):
        rnn_model(style="vaswani")
    with pytest.raises(ValueError, match="rnn_type"):
        rnn_model(rnn_type="elman")
    from nmt.config import Config
    from nmt.config_checks import validate

    with pytest.raises(ValueError, match="even"):  # a config rule: checked once, before anything is built
        validate(Config(model=ModelConfig(arch="rnn", hidden_size=25)), training=False)


SOURCES = [[5, 6, 7], [9, 10, 11, 12, 13, 14, 15], [20], [30, 31, 32, 33]]


@pytest.mark.parametrize("style,window", [("bahdanau", "global"), ("luong", "local_p"), ("luong", "local_m")])
def test_rnn_beam_batch_equals_single_and_beam1_equals_greedy(style, window):
    torch.manual_seed(1)
    model = rnn_model(style, "general", window).eval()
    together = beam_search(model, Batch.collate(SOURCES), beam_size=3, nbest=2)
    for src, hyps in zip(SOURCES, together):
        alone = beam_search(model, Batch.collate([src]), beam_size=3, nbest=2)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]
        for h, a in zip(hyps, alone):
            assert h.score == pytest.approx(a.score, abs=1e-4)
            torch.testing.assert_close(h.alignment, a.alignment, rtol=1e-4, atol=1e-5)
    beam1 = beam_search(model, Batch.collate(SOURCES), beam_size=1, length_penalty=0.0)
    greedy = greedy_search(model, Batch.collate(SOURCES))
    assert [h[0].tokens for h in beam1] == [h[0].tokens for h in greedy]


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_decoder_cell_equals_the_torch_rnn_module(rnn_type, layers):
    """The decoder's hand-unrolled first layer (input projection precomputed) and fused cells
    above it compute exactly what nn.GRU / nn.LSTM compute for one step (dropout off)."""
    torch.manual_seed(0)
    model = rnn_model("luong", "general", "global", rnn_type=rnn_type, layers=layers).eval()
    dec = model.decoder
    bsz, size = 3, dec.hidden_size
    x = torch.randn(bsz, dec.rnn.input_size)
    h0 = torch.randn(layers, bsz, size)
    c0 = torch.randn(layers, bsz, size)
    if rnn_type == "gru":
        want, h_want = dec.rnn(x[:, None], h0)
        cells = None
    else:
        want, (h_want, c_want) = dec.rnn(x[:, None], (h0, c0))
        cells = list(c0.unbind(0))
    hidden = list(h0.unbind(0))
    gates_in = torch.nn.functional.linear(x, dec.rnn.weight_ih_l0, dec.rnn.bias_ih_l0)
    with torch.no_grad():
        dec._cell(gates_in, hidden, cells)
    torch.testing.assert_close(hidden[-1], want[:, 0].detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.stack(hidden), h_want.detach(), rtol=1e-5, atol=1e-6)
    if cells is not None:
        torch.testing.assert_close(torch.stack(cells), c_want.detach(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
def test_decoder_cell_gradients_equal_the_torch_rnn_module(rnn_type):
    """Backward through the hand-unrolled first layer gives nn.GRU's / nn.LSTM's gradients for
    the input, the state and every weight (the gates are split, not sliced, for speed)."""
    torch.manual_seed(1)
    dec = rnn_model("luong", "general", "global", rnn_type=rnn_type, layers=1).double().decoder
    bsz, size = 3, dec.hidden_size
    x = torch.randn(bsz, dec.rnn.input_size, dtype=torch.double, requires_grad=True)
    h0 = torch.randn(1, bsz, size, dtype=torch.double, requires_grad=True)
    c0 = torch.randn(1, bsz, size, dtype=torch.double, requires_grad=True)
    probe = torch.randn(bsz, size, dtype=torch.double)
    params = [dec.rnn.weight_ih_l0, dec.rnn.weight_hh_l0, dec.rnn.bias_ih_l0, dec.rnn.bias_hh_l0]

    def grads(out):
        return torch.autograd.grad((out * probe).sum(), [x, h0] + ([c0] if rnn_type == "lstm" else []) + params)

    want = grads(dec.rnn(x[:, None], h0 if rnn_type == "gru" else (h0, c0))[0][:, 0])
    hidden, cells = list(h0.unbind(0)), (list(c0.unbind(0)) if rnn_type == "lstm" else None)
    dec._cell(torch.nn.functional.linear(x, dec.rnn.weight_ih_l0, dec.rnn.bias_ih_l0), hidden, cells)
    for got, ref in zip(grads(hidden[-1]), want):
        torch.testing.assert_close(got, ref)


@pytest.mark.parametrize("score", ["additive", "concat"])
def test_additive_scores_and_gradients_follow_bahdanau_eq6(score):
    """e_ts = v_a^T tanh(W_q q_t + b + W_k h_s) (Bahdanau et al. 2015 eq. 6), and its gradients
    for the query, the annotations and every weight, against the formula written out."""
    torch.manual_seed(2)
    attn = RNNAttention(query_dim=6, value_dim=10, score=score, attention_dim=7).double()
    query = torch.randn(2, 3, 6, dtype=torch.double, requires_grad=True)
    annotations = torch.randn(2, 5, 10, dtype=torch.double, requires_grad=True)
    probe = torch.randn(2, 3, 5, dtype=torch.double)
    inputs = [query, annotations, attn.query_proj.weight, attn.query_proj.bias, attn.key_proj.weight, attn.v.weight]

    keys = attn.memory(annotations, annotations).keys[:, 0]
    got = attn.scores(query, keys)
    q = query @ attn.query_proj.weight.T + attn.query_proj.bias
    k = annotations @ attn.key_proj.weight.T
    want = torch.einsum("btsa,a->bts", torch.tanh(q[:, :, None] + k[:, None]), attn.v.weight[0])
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad((got * probe).sum(), inputs),
                    torch.autograd.grad((want * probe).sum(), inputs)):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("rnn_type", ["gru", "lstm"])
@pytest.mark.parametrize("layers", [1, 2])
def test_encoder_equals_a_packed_bidirectional_rnn(rnn_type, layers):
    """The encoder's two unidirectional passes (the backward one over each sentence reversed
    within its length) give the annotations and gradients of the packed bidirectional
    ``nn.GRU``/``nn.LSTM`` whose parameters it uses."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(4)
    model = rnn_model(rnn_type=rnn_type, layers=layers).eval()
    enc = model.encoder
    b = Batch.collate([[5, 6, 7, 8, 9, 10, 11, 12], [9, 10], [13, 14, 15, 16, 17]])
    x = enc.embed(b.src_tokens).detach().requires_grad_()
    probe = torch.randn(3, b.src_tokens.size(1), 2 * enc.hidden_size)

    enc.embed.forward = lambda tokens: x  # feed the same leaf to both implementations
    got = enc(b.src_tokens, b.src_lengths, b.src_mask).encoder_out
    got_grads = torch.autograd.grad((got * probe).sum(), [x, *enc.rnn.parameters()])

    packed = pack_padded_sequence(x, b.src_lengths, batch_first=True, enforce_sorted=False)
    want, _ = pad_packed_sequence(enc.rnn(packed)[0], batch_first=True, total_length=b.src_tokens.size(1))
    want_grads = torch.autograd.grad((want * probe).sum(), [x, *enc.rnn.parameters()])
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w)


def test_reverse_within_lengths_is_an_involution_and_keeps_padding():
    from nmt.models.rnn import reverse_within_lengths

    x = torch.arange(3 * 4, dtype=torch.float).view(3, 4, 1).requires_grad_()
    y = reverse_within_lengths(x, torch.tensor([4, 2, 1]))
    assert y[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7], [8, 9, 10, 11]]
    torch.testing.assert_close(reverse_within_lengths(y, torch.tensor([4, 2, 1])), x)
    (grad,) = torch.autograd.grad((y * torch.arange(12.0).view(3, 4, 1)).sum(), x)
    assert grad[..., 0].tolist() == [[3, 2, 1, 0], [5, 4, 6, 7], [8, 9, 10, 11]]


@pytest.mark.parametrize("style,score,window", [("luong", "general", "global"), ("luong", "dot", "local_p"),
                                                ("luong", "cosine", "global"), ("bahdanau", "additive", "global"),
                                                ("luong", "location", "local_m")])
def test_step_memory_gradients_equal_per_step_autograd(style, score, window, monkeypatch):
    """Training sums the attention memory's gradient over the decoder steps in one matmul
    (nmt.models.step_memory); every parameter's gradient equals plain per-step autograd."""
    import nmt.models.rnn as rnn_module

    class PerStep:  # the plain bmm calls, no tape
        def wrap(self, keys, values):
            return keys, values

        def scores(self, query, keys):
            return torch.bmm(query, keys.transpose(1, 2))

        def context(self, weights, values):
            return torch.bmm(weights, values)

    torch.manual_seed(5)
    model = rnn_model(style, score, window).double().train()
    b = _batch()
    calls = []

    def grads():
        model.zero_grad(set_to_none=True)
        enc = model.encode(b.src_tokens, b.src_lengths, b.src_mask)
        out, _ = model.decoder(b.tgt_in, model.init_state(enc))
        torch.nn.functional.cross_entropy(out.logits.flatten(0, 1), b.tgt_out.flatten()).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    real = rnn_module.StepMemory
    monkeypatch.setattr(rnn_module, "StepMemory", lambda: calls.append(1) or real())
    deferred = grads()
    assert calls, "training should wrap the memory"
    monkeypatch.setattr(rnn_module, "StepMemory", PerStep)
    plain = grads()
    assert deferred.keys() == plain.keys()
    for name in plain:
        torch.testing.assert_close(deferred[name], plain[name], msg=name)

"""Transformer: incremental decoding equals teacher forcing; padding gets no attention."""
from __future__ import annotations

import pytest
import torch

from nmt.config import ModelConfig
from nmt.data.batch import Batch
from nmt.models import build_model, count_parameters
from nmt.models.attention import MultiHeadAttention


def _model(**kw):
    cfg = ModelConfig(d_model=32, num_heads=4, ffn_dim=64, encoder_layers=2, decoder_layers=2, dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0, **kw)
    return build_model(cfg, 50, 50).eval()


def _batch():
    return Batch.collate([[5, 6, 7, 8, 9], [10, 11]], [[12, 13, 14], [15, 16, 17, 18, 19, 20]])


@pytest.mark.parametrize("pre_norm", [False, True])
@pytest.mark.parametrize("positions", ["sinusoidal", "learned"])
@pytest.mark.parametrize("activation", ["relu", "swiglu"])
def test_incremental_equals_teacher_forcing(pre_norm, positions, activation):
    model = _model(pre_norm=pre_norm, positions=positions, activation=activation)
    b = _batch()
    full = model(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in, need_attn=True)
    state = model.init_state(model.encode(b.src_tokens, b.src_lengths, b.src_mask))
    logits, attns = [], []
    for t in range(b.tgt_in.size(1)):
        out, state = model.decoder(b.tgt_in[:, t : t + 1], state, need_attn=True, incremental=True)
        logits.append(out.logits)
        attns.append(out.attn)
    torch.testing.assert_close(torch.cat(logits, 1), full.logits, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(torch.cat(attns, 2), full.attn, rtol=1e-4, atol=1e-5)
    assert state.step == b.tgt_in.size(1)


def test_incremental_with_a_prefix_chunk_then_steps():
    model = _model()
    b = _batch()
    full = model(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in).logits
    state = model.init_state(model.encode(b.src_tokens, b.src_lengths, b.src_mask))
    out1, state = model.decoder(b.tgt_in[:, :3], state, incremental=True)
    out2, state = model.decoder(b.tgt_in[:, 3:], state, incremental=True)
    torch.testing.assert_close(torch.cat([out1.logits, out2.logits], 1), full, rtol=1e-4, atol=1e-5)


def test_padding_gets_zero_attention():
    model = _model()
    b = _batch()
    out = model(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in, need_attn=True)
    assert out.attn.shape == (2, 4, b.tgt_in.size(1), b.src_tokens.size(1))
    assert out.attn[1, :, :, int(b.src_lengths[1]):].abs().max() == 0
    torch.testing.assert_close(out.attn.sum(-1), torch.ones(out.attn.shape[:-1]))
    enc = model.encoder(b.src_tokens, b.src_lengths, b.src_mask, need_weights=True)
    assert enc.extra["self_attn.0"][1, :, :, int(b.src_lengths[1]):].abs().max() == 0


def test_padding_does_not_change_the_output():
    model = _model()
    alone = Batch.collate([[10, 11]], [[15, 16, 17]])
    padded = Batch.collate([[10, 11], [5, 6, 7, 8, 9, 10, 11]], [[15, 16, 17], [1, 2, 3, 4, 5, 6]])
    a = model(alone.src_tokens, alone.src_lengths, alone.src_mask, alone.tgt_in).logits
    p = model(padded.src_tokens, padded.src_lengths, padded.src_mask, padded.tgt_in).logits
    torch.testing.assert_close(p[0, : a.size(1)], a[0], rtol=1e-4, atol=1e-5)


def test_fast_and_explicit_attention_agree():
    torch.manual_seed(1)
    mha = MultiHeadAttention(32, 4).eval()
    q, kv = torch.randn(3, 5, 32), torch.randn(3, 7, 32)
    mask = torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    fast, none = mha(q, kv, kv, mask, need_weights=False)
    slow, w = mha(q, kv, kv, mask, need_weights=True)
    assert none is None and w.shape == (3, 4, 5, 7)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    x = torch.randn(2, 6, 32)
    fast, _ = mha(x, x, x, causal=True, need_weights=False)
    slow, w = mha(x, x, x, causal=True, need_weights=True)
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5)
    assert torch.all(w.triu(1) == 0)


@pytest.mark.parametrize("causal", [False, True])
def test_short_training_attention_matches_the_fused_kernel(monkeypatch, causal):
    """In training on a CPU short key sets take the explicit path; values and gradients equal the fused kernel's."""
    import nmt.models.attention as attention
    torch.manual_seed(2)
    mha = MultiHeadAttention(32, 4).train()
    x = torch.randn(3, 6, 32, requires_grad=True)
    mask = None if causal else torch.ones(3, 6, dtype=torch.bool).index_fill_(1, torch.tensor([4, 5]), False)
    grad_out = torch.randn(3, 6, 32)
    results = []
    real = attention.scaled_dot_product
    for max_keys in (0, attention.CPU_EXPLICIT_MAX_KEYS):
        monkeypatch.setattr(attention, "CPU_EXPLICIT_MAX_KEYS", max_keys)
        calls = []
        monkeypatch.setattr(attention, "scaled_dot_product", lambda *a, **k: calls.append(1) or real(*a, **k))
        mha.zero_grad()
        x.grad = None
        out, weights = mha(x, x, x, mask, need_weights=False, causal=causal)
        out.backward(grad_out)
        assert weights is None and len(calls) == (0 if max_keys == 0 else 1)
        results.append((out.detach(), x.grad.clone(), mha.q_proj.weight.grad.clone(), mha.kv_proj.weight.grad.clone()))
    for fused, explicit in zip(*results):
        torch.testing.assert_close(explicit, fused, rtol=1e-4, atol=1e-5)


def test_tied_and_shared_embeddings():
    tied = _model()
    untied = _model(tie_output=False, share_embeddings=False)
    assert tied.encoder.embed is tied.decoder.embed
    assert tied.decoder.output_proj is None
    assert count_parameters(untied) - count_parameters(tied) == 2 * 50 * 32


def test_shared_embeddings_need_joint_vocabulary():
    with pytest.raises(ValueError, match="joint"):
        build_model(ModelConfig(), 50, 60)


def test_bad_heads_and_arch_raise():
    with pytest.raises(ValueError, match="divisible"):
        build_model(ModelConfig(d_model=30, num_heads=4), 50, 50)
    with pytest.raises(ValueError, match="arch"):
        build_model(ModelConfig(arch="lstm9000"), 50, 50)


@pytest.mark.parametrize("activation,act", [("swiglu", torch.nn.functional.silu), ("geglu", torch.nn.functional.gelu)])
def test_gated_ffn_is_shazeer_2020_and_matches_relu_parameters_at_two_thirds_width(activation, act):
    from nmt.models.transformer import FeedForward

    torch.manual_seed(0)
    ffn = FeedForward(256, 344, activation, 0.0)
    x = torch.randn(2, 5, 256)
    w_gate, w_value = ffn.fc1.weight.chunk(2)
    b_gate, b_value = ffn.fc1.bias.chunk(2)
    with torch.no_grad():
        ffn.fc1.bias.normal_()
        expected = (act(x @ w_gate.T + b_gate) * (x @ w_value.T + b_value)) @ ffn.fc2.weight.T + ffn.fc2.bias
        torch.testing.assert_close(ffn(x), expected, rtol=1e-5, atol=1e-5)
    relu = FeedForward(256, 512, "relu", 0.0)
    n_gated, n_relu = (sum(p.numel() for p in m.parameters()) for m in (ffn, relu))
    assert abs(n_gated - n_relu) / n_relu < 0.01  # SwiGLU 344 ~ ReLU 512 at d_model 256
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        FeedForward(256, 344, "swish", 0.0)


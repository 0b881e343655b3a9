"""Ensembles at decoding time: the mean of the members' probabilities, driven by the unchanged searches."""
from __future__ import annotations

import pytest
import torch

from nmt.config import Config, ModelConfig, TokenizerConfig
from nmt.data.batch import Batch
from nmt.models import build_model
from nmt.checkpoint import load_ensemble
from nmt.models.ensemble import Ensemble
from nmt.search import beam_search, greedy_search

V = 40


def _transformer(seed: int, vocab: int = V):
    torch.manual_seed(seed)
    cfg = ModelConfig(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=2, dropout=0.0,
                      attention_dropout=0.0, activation_dropout=0.0)
    return build_model(cfg, vocab, vocab).eval()


def _rnn(seed: int):
    torch.manual_seed(seed)
    cfg = ModelConfig(arch="rnn", embed_dim=16, hidden_size=24, encoder_layers=1, decoder_layers=1, dropout=0.0)
    return build_model(cfg, V, V).eval()


def _batch():
    return Batch.collate([[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15, 16]],
                         [[17, 18, 19], [20, 21, 22, 23, 24], [25]])


def _same(hyps_a, hyps_b):
    assert [[h.tokens for h in hs] for hs in hyps_a] == [[h.tokens for h in hs] for hs in hyps_b]
    for hs_a, hs_b in zip(hyps_a, hyps_b):
        for a, b in zip(hs_a, hs_b):
            assert a.score == pytest.approx(b.score, abs=1e-4)
            assert a.log_prob == pytest.approx(b.log_prob, abs=1e-4)
            torch.testing.assert_close(a.alignment, b.alignment, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("copies", [1, 2])
def test_ensemble_of_copies_of_one_model_decodes_like_the_model(copies):
    model = _transformer(0)
    ensemble = Ensemble([model] * copies).eval()
    b = _batch()
    _same(beam_search(ensemble, b, beam_size=3, nbest=3, max_len_b=8),
          beam_search(model, b, beam_size=3, nbest=3, max_len_b=8))
    _same(greedy_search(ensemble, b, max_len_b=8), greedy_search(model, b, max_len_b=8))


def test_step_gives_log_of_mean_probability_and_mean_attention_through_reordering():
    """RNN + Transformer: each incremental step (after expand and an index_select that swaps the
    hypotheses) equals the log of the mean of the two teacher-forced softmaxes."""
    members = [_transformer(1), _rnn(2)]
    ensemble = Ensemble(members).eval()
    b = _batch()
    with torch.no_grad():
        full = [m(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in, need_attn=True) for m in members]
    probs = torch.stack([torch.softmax(o.logits, -1) for o in full]).mean(0)  # (B, T, V)
    attn = torch.stack([o.attn.mean(1) for o in full]).mean(0)  # (B, T, S)
    k = 2
    state = ensemble.init_state(ensemble.encode(b.src_tokens, b.src_lengths, b.src_mask)).expand(k)
    assert {key.split(".")[0] for key in state.cache} == {"m0", "m1"}
    assert state.shared and all(key.startswith("m0.") for key in state.shared)  # the Transformer's memory
    swap = torch.arange(b.size * k).view(-1, k).flip(1).reshape(-1)  # hypotheses swap within each sentence
    for t in range(b.tgt_in.size(1)):
        tokens = b.tgt_in[:, t : t + 1].repeat_interleave(k, 0)
        lprobs, step_attn, state = ensemble.step(tokens, state)
        expected = torch.log(probs[:, t]).repeat_interleave(k, 0)
        torch.testing.assert_close(lprobs, expected, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(step_attn, attn[:, t].repeat_interleave(k, 0), rtol=1e-4, atol=1e-5)
        state = state.index_select(swap)
    assert state.step == b.tgt_in.size(1)
    out = ensemble(b.src_tokens, b.src_lengths, b.src_mask, b.tgt_in, need_attn=True)
    torch.testing.assert_close(torch.log_softmax(out.logits, -1), torch.log(probs), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.attn[:, 0], attn, rtol=1e-4, atol=1e-5)


def test_beam_search_over_rnn_and_transformer_ensemble():
    ensemble = Ensemble([_transformer(3), _rnn(4)]).eval()
    b = _batch()
    hyps = beam_search(ensemble, b, beam_size=4, nbest=2, max_len_b=6)
    assert len(hyps) == b.size and all(len(h) == 2 for h in hyps)
    for hs, n in zip(hyps, b.src_lengths.tolist()):
        assert hs[0].score >= hs[1].score
        assert hs[0].alignment.shape == (len(hs[0].tokens) + 1, n)
        torch.testing.assert_close(hs[0].alignment.sum(-1), torch.ones(len(hs[0].tokens) + 1))
    # one sentence at a time gives the same results (state splitting keeps sentences apart)
    single = beam_search(ensemble, Batch.collate([[11, 12]]), beam_size=4, nbest=2, max_len_b=6)
    assert [h.tokens for h in single[0]] == [h.tokens for h in hyps[1]]


def test_members_with_different_vocabulary_sizes_are_refused():
    ensemble = Ensemble([_transformer(0, V), _transformer(0, V + 3)])
    b = _batch()
    with pytest.raises(ValueError, match="different sizes"):
        greedy_search(ensemble, b)
    with pytest.raises(ValueError, match="at least one"):
        Ensemble([])


TEXTS = ["a man walks a dog in the park", "two women sing a song", "the dog runs in the grass",
         "a child plays with a ball", "ein Mann geht mit einem Hund", "zwei Frauen singen ein Lied",
         "der Hund rennt im Gras", "ein Kind spielt mit einem Ball"]


def tiny_tokenizer(vocab_size: int = 60):
    """A joint sentencepiece model trained in memory on :data:`TEXTS` (well under a second)."""
    from nmt.data.tokenizer import train_tokenizer

    return train_tokenizer(TEXTS * 3, TEXTS * 3, TokenizerConfig(vocab_size=vocab_size, byte_fallback=False),
                           cache_dir=None)


def make_checkpoint(root, name: str, tokenizer, seed: int, arch: str = "transformer", max_positions: int = 1024):
    """An untrained tiny model saved as ``root/name/checkpoints/step-1`` (a loadable run directory)."""
    from nmt.train.checkpoint import save_checkpoint

    cfg = Config()
    if arch == "rnn":
        cfg.model = ModelConfig(arch="rnn", embed_dim=16, hidden_size=24, encoder_layers=1, decoder_layers=1,
                                dropout=0.0)
    else:
        cfg.model = ModelConfig(d_model=16, num_heads=2, ffn_dim=32, encoder_layers=1, decoder_layers=1,
                                dropout=0.0, max_positions=max_positions)
    cfg.search.beam_size = 2
    torch.manual_seed(seed)
    model = build_model(cfg.model, tokenizer.src_vocab_size, tokenizer.tgt_vocab_size)
    return save_checkpoint(root / name / "checkpoints", "step-1", model, cfg, tokenizer, {"step": 1})


@pytest.fixture(scope="module")
def tokenizers():
    return tiny_tokenizer(60), tiny_tokenizer(64)


def test_load_ensemble_one_path_gives_the_model_several_give_an_ensemble(tmp_path, tokenizers):
    tok, _ = tokenizers
    a = make_checkpoint(tmp_path, "a", tok, 1, max_positions=65)
    b = make_checkpoint(tmp_path, "b", tok, 2, arch="rnn")
    single = load_ensemble([str(tmp_path / "a")])
    assert not isinstance(single.model, Ensemble) and single.path == a
    both = load_ensemble([str(tmp_path / "a"), str(tmp_path / "b")])
    assert isinstance(both.model, Ensemble) and len(both.model) == 2 and not both.model.training
    assert both.meta["ensemble"] == [str(a), str(b)] and both.path == a
    assert both.config.model.max_positions == 65  # the smallest of the members' (65, 1024)
    for member, path in zip(both.model.models, (a, b)):  # the members are the checkpoints' weights
        alone = load_ensemble([str(path)]).model.state_dict()
        assert all(torch.equal(v, alone[k]) for k, v in member.state_dict().items())


def test_load_ensemble_refuses_members_with_different_tokenizers(tmp_path, tokenizers):
    from nmt.train.checkpoint import CheckpointError

    make_checkpoint(tmp_path, "a", tokenizers[0], 1)
    make_checkpoint(tmp_path, "b", tokenizers[1], 2)
    with pytest.raises(CheckpointError) as err:
        load_ensemble([str(tmp_path / "a"), str(tmp_path / "b")])
    assert str(tmp_path / "a") in str(err.value) and str(tmp_path / "b") in str(err.value)
    assert "sentencepiece" in str(err.value)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_ensemble([])

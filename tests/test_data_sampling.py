"""Subword regularisation (Kudo 2018, l-best sampling): a sampled segmentation per epoch that
is lossless, varied, distributed as P(x)^alpha, reproducible across processes and inside the
length filters; the bucketing sampler follows each epoch's lengths; the config rejects bad
options; a sampled run resumes bit for bit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nmt.config import ConfigError, TokenizerConfig
from nmt.config_checks import validate
from nmt.data.dataset import BucketingSampler, TokenizedDataset
from nmt.data.sampling import SubwordSampling
from nmt.data.tokenizer import train_tokenizer
from test_data_tokenizer import SRC, TGT


@pytest.fixture(scope="module")
def unigram(tmp_path_factory):
    return train_tokenizer(SRC, TGT, TokenizerConfig(vocab_size=200, byte_fallback=False),
                           tmp_path_factory.mktemp("spm"))


def _sampling(tok, alpha=0.2, seed=1, max_len=250, max_ratio=0.0, nbest_size=16):
    best = TokenizedDataset.from_text(tok, SRC, TGT)
    return SubwordSampling(tok, SRC, TGT, best, alpha, nbest_size, seed, max_len, max_ratio)


def _same(a: TokenizedDataset, b: TokenizedDataset) -> list[bool]:
    return [np.array_equal(x, y) and np.array_equal(u, v) for x, y, u, v in zip(a.src, b.src, a.tgt, b.tgt)]


def test_sampled_segmentations_are_lossless_varied_and_reproducible(unigram):
    sampling = _sampling(unigram)
    best, first = sampling.best, sampling.dataset(1)
    assert len(first) == len(best) == len(SRC)
    # the same sentences, other pieces: decoding gives the text back (the model is joint)
    assert unigram.decode_tgt(first.tgt) == TGT and unigram.decode_tgt(first.src) == SRC
    assert sum(_same(first, best)) < 0.8 * len(best)  # most pairs are segmented otherwise
    assert first.tgt_lengths.sum() > best.tgt_lengths.sum()  # the best segmentation is the shortest here
    # a pure function of (seed, epoch): a new object gives the same ids; another epoch or seed does not
    assert all(_same(_sampling(unigram).dataset(1), first))
    assert sampling.dataset(1) is first  # the current epoch is cached
    second = sampling.dataset(2)
    assert sum(_same(second, first)) < 0.8 * len(best)
    assert unigram.decode_tgt(second.tgt) == TGT
    assert sum(_same(_sampling(unigram, seed=2).dataset(1), first)) < 0.8 * len(best)
    # a large alpha concentrates on the best segmentation
    assert sum(_same(_sampling(unigram, alpha=5.0).dataset(1), best)) > 0.9 * len(best)


def test_the_draw_follows_p_to_the_alpha_over_the_l_best(unigram):
    """Kudo 2018 §3.2: candidate x_j of the l best is drawn with P(x_j)^a / sum_k P(x_k)^a."""
    import math

    sentence, alpha, l, draws = SRC[7], 0.5, 4, 4000
    cands = unigram.nbest_encode([sentence], "src", l)[0]
    assert len(cands) == l and cands[0] == unigram.encode_src([sentence])[0]  # best first
    scores = unigram.piece_log_probs("src")
    weights = [math.exp(alpha * sum(scores[i] for i in c)) for c in cands]
    want = [w / sum(weights) for w in weights]
    tokens = TokenizedDataset.from_text(unigram, [sentence] * draws, [sentence] * draws)
    got = SubwordSampling(unigram, [sentence] * draws, [sentence] * draws, tokens, alpha, l, 5, 250, 0.0).dataset(1)
    freq = [sum(list(x) == c for x in got.src) / draws for c in cands]
    assert sum(freq) == 1.0
    for f, w in zip(freq, want):
        assert abs(f - w) < 4 * math.sqrt(w * (1 - w) / draws) + 1e-9, (freq, want)


def test_the_same_seed_gives_the_same_segmentation_in_a_new_process(unigram, tmp_path):
    """sentencepiece's own sampler is seeded per process; ours must not be (exact resume, R27)."""
    import json
    import subprocess
    import sys

    unigram.save(tmp_path)
    code = ("import json, sys; sys.path.insert(0, 'tests'); from test_data_sampling import _sampling; "
            "from nmt.data.tokenizer import Tokenizer; "
            f"d = _sampling(Tokenizer.load({str(tmp_path)!r})).dataset(2); "
            "print(json.dumps([a.tolist() for a in [*d.src, *d.tgt]]))")
    here = _sampling(unigram).dataset(2)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=str(Path(__file__).resolve().parents[1]))
    assert json.loads(out.stdout) == [a.tolist() for a in [*here.src, *here.tgt]]


def test_a_sampled_pair_outside_the_length_filters_keeps_its_best_segmentation(unigram):
    free = _sampling(unigram, alpha=0.1).dataset(3)
    best = _sampling(unigram).best
    limit = int(max(best.src_lengths.max(), best.tgt_lengths.max()))  # the longest best segmentation
    capped_sampling = _sampling(unigram, alpha=0.1, max_len=limit)
    capped = capped_sampling.dataset(3)
    over = (free.src_lengths > limit) | (free.tgt_lengths > limit)
    assert over.any() and not over.all()
    assert capped.src_lengths.max() <= limit and capped.tgt_lengths.max() <= limit
    same_as_best = np.array(_same(capped, capped_sampling.best))
    same_as_free = np.array(_same(capped, free))
    assert same_as_best[over].all()  # the pairs the filter would drop fell back to the best segmentation
    assert same_as_free[~over].all()  # every other pair kept its sample


def test_bad_arguments_are_refused(unigram):
    best = TokenizedDataset.from_text(unigram, SRC, TGT)
    with pytest.raises(ValueError, match="nbest_size must be >= 2"):
        SubwordSampling(unigram, SRC, TGT, best, 0.5, 1, 1, 250, 0.0)
    with pytest.raises(ValueError, match="target sentences"):
        SubwordSampling(unigram, SRC[:-1], TGT, best, 0.5, 4, 1, 250, 0.0)
    with pytest.raises(ValueError, match="side"):
        unigram.nbest_encode(SRC[:1], "both", 4)


def test_the_bucketing_sampler_builds_each_epoch_from_that_epochs_lengths():
    rng = np.random.default_rng(0)
    fixed = rng.integers(1, 30, 200)
    per_epoch = {e: (fixed + rng.integers(0, 8, 200), fixed + rng.integers(0, 8, 200)) for e in (1, 2, 3)}
    sampler = BucketingSampler(fixed, fixed, max_tokens=256, seed=3, epoch_lengths=lambda e: per_epoch[e])
    plain = BucketingSampler(fixed, fixed, max_tokens=256, seed=3)
    for epoch in (1, 2, 3):
        src, tgt = per_epoch[epoch]
        batches = sampler.batches(epoch)
        assert sorted(i for b in batches for i in b) == list(range(200))
        assert all(len(b) * (max(max(src[b]), max(tgt[b])) + 1) <= 256 for b in map(np.asarray, batches))
        assert batches != plain.batches(epoch)
        pad = sum(len(b) * (int(side[b].max()) + 1) - int((side[b] + 1).sum())
                  for b in map(np.asarray, batches) for side in (src, tgt))
        total = sum(len(b) * (int(side[b].max()) + 1) for b in map(np.asarray, batches) for side in (src, tgt))
        assert sampler.padding_fraction(epoch) == pytest.approx(pad / total)
    wrong = BucketingSampler(fixed, fixed, epoch_lengths=lambda e: (fixed[:-1], fixed[:-1]))
    with pytest.raises(ValueError, match="199 examples"):
        wrong.batches(1)


@pytest.mark.parametrize("options, message", [
    ({"alpha": 0.0}, "exponent must be > 0"),
    ({"nbest_size": 1}, "nbest_size=1"),
    ({"nbest_size": -1}, "nbest_size=-1"),
    ({"model_type": "bpe"}, "use unigram"),
])
def test_bad_sampling_options_are_refused(options, message):
    from nmt.config import Config

    cfg = Config()
    cfg.data.tokenizer = TokenizerConfig(enable_sampling=True, **options)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)
    cfg.data.tokenizer.enable_sampling = False
    validate(cfg)  # the options only matter when sampling is on


def test_sampling_is_refused_with_a_streamed_corpus():
    from nmt.config import Config

    cfg = Config()
    cfg.data.tokenizer.enable_sampling = True
    cfg.data.streaming, cfg.data.hf_name = True, "some/dataset"
    with pytest.raises(ConfigError, match="data.streaming=true"):
        validate(cfg)


def test_a_sampled_run_differs_from_the_best_segmentation_and_resumes_bit_for_bit(tmp_path, multi30k_dir):
    """R6-R8 with data.tokenizer.enable_sampling: stop in epoch 2, resume, equal losses and weights."""
    import torch

    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer, TrainingInterrupted
    from test_resume import _params, _record
    from test_train_overfit import _config

    def trainer(run_dir, sample=True):
        cfg = _config(tmp_path, multi30k_dir, ["train.max_steps=9", "train.max_tokens=600", "model.dropout=0.1",
                                               f"data.tokenizer.enable_sampling={str(sample).lower()}",
                                               "data.tokenizer.alpha=0.1"])
        return Trainer(cfg, prepare_data(cfg.data, seed=cfg.train.seed, with_test=False), run_dir)

    straight = trainer(tmp_path / "straight")
    assert straight.data.train_sampling is not None and 3 <= len(straight.sampler) < 9  # the run crosses an epoch
    expected = _record(straight)
    straight.train()
    plain = trainer(tmp_path / "plain", sample=False)
    assert plain.data.train_sampling is None
    unsampled = _record(plain)
    plain.train()
    assert len(unsampled) == len(expected) == 9 and unsampled != expected

    stop = len(straight.sampler) + 1
    first = trainer(tmp_path / "resumed")
    got = _record(first, stop_at=stop)
    with pytest.raises(TrainingInterrupted):
        first.train()
    second = trainer(tmp_path / "resumed")
    assert second.progress.step == stop
    rest = _record(second)
    second.train()
    got += rest
    assert got == expected
    want, have = _params(straight), _params(second)
    assert all(torch.equal(want[k], have[k]) for k in want)

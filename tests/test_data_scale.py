"""Large corpora (issue 39): the tokenizer's seeded sample, the memory-mapped id cache, the
vectorised bucketing, and the benchmark corpus script."""
from __future__ import annotations

import logging
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from nmt.config import DataConfig, Policy
from nmt.data.dataset import BucketingSampler, TokenizedDataset, fill_batches, filter_by_length
from nmt.data.errors import DataError
from nmt.data.id_cache import cached_train_ids
from nmt.data.reservoir import Reservoir
from nmt.data.text import read_parallel
from nmt.data.tokenizer import train_tokenizer

ROOT = Path(__file__).resolve().parents[1]


# --- the reservoir ---------------------------------------------------------------------------

def test_a_stream_no_longer_than_the_reservoir_is_kept_whole_and_in_order():
    r = Reservoir(10, seed=1)
    for i in range(7):
        r.offer(i)
    assert r.items() == list(range(7))


def test_the_sample_is_seeded_and_uniform():
    def draw(seed):
        r = Reservoir(5, seed)
        for i in range(50):
            r.offer(i)
        return r.items()

    assert draw(3) == draw(3) and draw(3) != draw(4)
    assert all(a < b for a, b in zip(draw(3), draw(3)[1:]))  # stream order
    counts = Counter(i for seed in range(4000) for i in draw(seed))
    expected = 4000 * 5 / 50  # every item with probability size / N
    assert set(counts) == set(range(50))
    assert max(abs(c - expected) for c in counts.values()) < 5 * expected ** 0.5, counts


def test_skip_and_wants_agree_with_offer():
    a, b = Reservoir(4, 9), Reservoir(4, 9)
    for i in range(1000):
        a.offer(i)
        if b.wants():
            b.offer(i)
        else:
            b.skip()
    assert a.items() == b.items() and len(a.items()) == 4


# --- bucketing on the lengths only ---------------------------------------------------------------

def _per_example(widths, max_tokens, max_sentences):
    """The greedy fill as a loop over the examples (the sampler's rule before it was vectorised)."""
    starts, count, width = [], 0, 0
    for i, n in enumerate(widths.tolist()):
        w = max(width, n)
        full = max_sentences > 0 and count >= max_sentences
        if not count or full or (count + 1) * (w + 1) > max_tokens:
            starts.append(i)
            count, w = 0, n
        count += 1
        width = w
    return starts


def test_fill_batches_equals_the_per_example_loop():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        widths = np.sort(rng.integers(0, int(rng.integers(1, 120)), int(rng.integers(0, 200))))
        max_tokens, max_sentences = int(rng.integers(1, 300)), int(rng.integers(0, 6))
        assert fill_batches(widths, max_tokens, max_sentences).tolist() == \
            _per_example(widths, max_tokens, max_sentences), (widths, max_tokens, max_sentences)


def test_the_sampler_handles_a_million_pairs_from_arrays():
    rng = np.random.default_rng(1)
    src = rng.integers(1, 80, 1_000_000)
    tgt = np.clip(src + rng.integers(-5, 6, src.size), 1, None)
    sampler = BucketingSampler(src, tgt, max_tokens=4096, seed=2)
    batches = sampler.batches()
    assert all(isinstance(b, np.ndarray) for b in batches[:10])
    order = np.concatenate(batches)
    assert np.array_equal(np.sort(order), np.arange(src.size))
    widths = np.array([(np.maximum(src[b], tgt[b]).max() + 1) * len(b) for b in batches])
    assert (widths <= 4096).all()


# --- the id cache ------------------------------------------------------------------------------

def _write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.fixture()
def corpus(tmp_path):
    """A small corpus with every case the cleaning rule handles: BOM, CRLF, an empty side, invalid
    UTF-8, control characters, U+2028 inside a line, a last line without newline."""
    base = [f"sentence number {i} about a dog and a cat".encode() for i in range(300)]
    src = [b"\xef\xbb\xbf" + base[0] + b"\n"] + [s + b"\n" for s in base[1:]]
    tgt = [f"Satz Nummer {i} ueber einen Hund und eine Katze".encode() + b"\n" for i in range(300)]
    src[5] = b"with crlf\r\n"
    src[9] = b"   \n"  # an empty side
    tgt[12] = b"bad \xff byte\n"
    src[20] = b"tab\tand\x07bell\n"
    tgt[21] = "line\u2028separator\n".encode()
    tgt[-1] = tgt[-1].rstrip(b"\n")
    return _write(tmp_path / "train.en", src), _write(tmp_path / "train.de", tgt)


def _cfg(tmp_path, **kw) -> DataConfig:
    cfg = DataConfig(**kw)
    cfg.tokenizer.vocab_size = 300
    cfg.tokenizer.cache_dir = str(tmp_path / "cache")
    return cfg


@pytest.mark.parametrize("utf8", [Policy.skip, Policy.replace])
def test_cached_ids_equal_reading_the_files_whole(tmp_path, corpus, utf8):
    cfg = _cfg(tmp_path, on_invalid_utf8=utf8)
    tok, ids, lines = cached_train_ids(cfg, *corpus, 1, tmp_path / "ids", tmp_path / "spm", "t")
    text = read_parallel(*corpus, on_invalid_utf8=utf8, name="t")
    reference = train_tokenizer(text.src, text.tgt, cfg.tokenizer, None, seed=1)
    assert tok.sha256() == reference.sha256()  # a corpus within the sample size trains on every pair, in order
    whole = TokenizedDataset.from_text(reference, text.src, text.tgt)
    assert len(ids) == len(whole) and lines.tolist() == text.line_numbers
    for i in range(len(whole)):
        assert ids.src[i].tolist() == whole.src[i].tolist() and ids.tgt[i].tolist() == whole.tgt[i].tolist()
    assert ids.unk_rate == pytest.approx(whole.unk_rate)
    assert ids.src.flat.dtype == np.uint16 and isinstance(ids.src.flat, np.memmap)


def test_a_second_start_maps_the_cache_and_a_damaged_one_is_rebuilt(tmp_path, corpus, caplog):
    cfg = _cfg(tmp_path, on_invalid_utf8=Policy.skip)
    args = (cfg, *corpus, 1, tmp_path / "ids", tmp_path / "spm", "t")
    first = cached_train_ids(*args)[1]
    caplog.set_level(logging.INFO)
    caplog.clear()
    second = cached_train_ids(*args)[1]
    assert "memory-mapped" in caplog.text and "encoded" not in caplog.text
    assert np.array_equal(first.src_lengths, second.src_lengths)
    folder = next((tmp_path / "ids").glob("ids-*"))
    data = (folder / "src.bin").read_bytes()
    (folder / "src.bin").write_bytes(data[:-2])
    caplog.clear()
    third = cached_train_ids(*args)[1]
    assert "unusable" in caplog.text and np.array_equal(third.src.flat, np.frombuffer(data, np.uint16))
    assert not list((tmp_path / "ids").glob(".tmp-*"))


def test_a_changed_file_is_encoded_again(tmp_path, corpus):
    cfg = _cfg(tmp_path, on_invalid_utf8=Policy.replace)
    cached_train_ids(cfg, *corpus, 1, tmp_path / "ids", tmp_path / "spm", "t")
    corpus[1].write_bytes(corpus[1].read_bytes().replace(b"Hund", b"Vogel"))
    cached_train_ids(cfg, *corpus, 1, tmp_path / "ids", tmp_path / "spm", "t")
    assert len(list((tmp_path / "ids").glob("ids-*"))) == 2


def test_the_checks_of_reading_whole_files_hold_in_the_streaming_pass(tmp_path, corpus):
    src, tgt = corpus
    cfg = _cfg(tmp_path)
    with pytest.raises(DataError) as streamed:
        cached_train_ids(cfg, src, tgt, 1, tmp_path / "ids", None, "t")  # invalid UTF-8 under error
    with pytest.raises(DataError) as whole:
        read_parallel(src, tgt, name="t")
    assert str(streamed.value) == str(whole.value)
    short = _write(tmp_path / "short.de", tgt.read_bytes().split(b"\n", 1)[1:])
    with pytest.raises(DataError) as streamed:
        cached_train_ids(_cfg(tmp_path, on_invalid_utf8=Policy.skip), src, short, 1, tmp_path / "ids", None, "t")
    with pytest.raises(DataError) as whole:
        read_parallel(src, short, on_invalid_utf8=Policy.skip)
    assert str(streamed.value) == str(whole.value) and "line counts differ" in str(whole.value)
    strict = _cfg(tmp_path, on_invalid_utf8=Policy.skip, on_empty=Policy.error)
    with pytest.raises(DataError) as streamed:
        cached_train_ids(strict, src, tgt, 1, tmp_path / "ids", None, "t")
    with pytest.raises(DataError) as whole:
        read_parallel(src, tgt, on_invalid_utf8=Policy.skip, on_empty=Policy.error)
    assert str(streamed.value) == str(whole.value) and "1 such pairs" in str(whole.value)
    assert not list((tmp_path / "ids").glob("ids-*")) and not list((tmp_path / "ids").glob(".tmp-*"))  # nothing half-written


def test_the_vocabulary_is_trained_on_a_seeded_sample(tmp_path, corpus, caplog):
    caplog.set_level(logging.INFO)
    cfg = _cfg(tmp_path, on_invalid_utf8=Policy.skip)
    cfg.tokenizer.input_sentence_size = 50
    a = cached_train_ids(cfg, *corpus, 1, tmp_path / "a", None, "t")[0]
    b = cached_train_ids(cfg, *corpus, 1, tmp_path / "b", None, "t")[0]
    c = cached_train_ids(cfg, *corpus, 2, tmp_path / "c", None, "t")[0]
    assert a.sha256() == b.sha256() != c.sha256()
    assert "trains on 50 sampled pairs" in caplog.text or "trains on 49 sampled pairs" in caplog.text


def test_filters_run_on_the_mapped_lengths(tmp_path, corpus):
    cfg = _cfg(tmp_path, on_invalid_utf8=Policy.skip)
    _, ids, lines = cached_train_ids(cfg, *corpus, 1, tmp_path / "ids", None, "t")
    limit = int(np.maximum(ids.src_lengths, ids.tgt_lengths).max()) - 1
    keep = filter_by_length(ids.src_lengths, ids.tgt_lengths, limit, 0, 1.0, "t", line_numbers=lines)
    kept = ids.subset(keep)
    assert len(kept) == len(keep) and 0 < len(keep) < len(ids)
    assert (kept.src_lengths <= limit).all() and (kept.tgt_lengths <= limit).all()
    assert kept.src[0].tolist() == ids.src[keep[0]].tolist()


# --- the benchmark corpus ------------------------------------------------------------------------

def test_make_scale_corpus_is_deterministic(tmp_path):
    m30k = tmp_path / "m30k"
    m30k.mkdir()
    for split in ("train", "valid", "test2016"):
        for lang in ("en", "de"):
            (m30k / f"{split}.{lang}").write_text("".join(f"{lang} {split} {i}\n" for i in range(20)))
    outs = []
    for name in ("a", "b"):
        subprocess.run([sys.executable, str(ROOT / "scripts" / "make_scale_corpus.py"), "1234", "--out",
                        str(tmp_path / name), "--multi30k", str(m30k)], check=True, capture_output=True)
        outs.append({f.name: f.read_bytes() for f in (tmp_path / name).iterdir()})
    assert outs[0] == outs[1]
    en, de = outs[0]["train.en"].decode().splitlines(), outs[0]["train.de"].decode().splitlines()
    assert len(en) == len(de) == 1234
    assert [s.split()[2::3] for s in en[:50]] == [s.split()[2::3] for s in de[:50]]  # aligned joins


# --- several corpora mixed by weight ----------------------------------------------------------------

def test_quotas_follow_the_weights_and_add_up():
    from nmt.data.mixture import quotas

    assert quotas(10, [1, 1]) == [5, 5]
    assert quotas(10, [2, 1, 1]) == [5, 3, 2] or quotas(10, [2, 1, 1]) == [5, 2, 3]
    assert sum(quotas(1001, [0.3, 2.5, 7])) == 1001


def test_a_mixture_repeats_a_small_corpus_and_subsamples_a_large_one():
    from nmt.data.mixture import CorpusMixture

    big = TokenizedDataset([[1, i % 7 + 4] for i in range(90)], [[2, 5] for _ in range(90)])
    small = TokenizedDataset([[3, i + 4] for i in range(10)], [[6] * (i + 1) for i in range(10)])
    mix = CorpusMixture([big, small], [1.0, 1.0], seed=4)
    one, two = mix.dataset(1), mix.dataset(2)
    assert len(one) == len(two) == 100 and mix.quotas == [50, 50]
    from_small = [tuple(one.src[k].tolist()) for k in range(len(one)) if one.src[k][0] == 3]
    counts = Counter(from_small)
    assert len(from_small) == 50 and set(counts.values()) == {5}  # every pair once before any twice
    assert [one.src[k].tolist() for k in range(100)] != [two.src[k].tolist() for k in range(100)]
    assert [a.tolist() for a in CorpusMixture([big, small], [1.0, 1.0], seed=4).dataset(2).src] == \
        [a.tolist() for a in two.src]
    for k in range(100):  # source and target stay paired, and lengths agree with the ids
        src, tgt = one[k]
        assert (src[0] == 3) == (tgt[0] == 6) and one.src_lengths[k] == len(src) and one.tgt_lengths[k] == len(tgt)


def _mixture_dirs(tmp_path, m30k):
    dirs = []
    for name, (start, stop) in (("a", (0, 200)), ("b", (200, 300))):
        folder = tmp_path / name
        folder.mkdir()
        for split, source in (("train", "train"), ("valid", "valid")):
            for lang in ("en", "de"):
                lines = (m30k / f"{source}.{lang}").read_text(encoding="utf-8").splitlines()
                chosen = lines[start:stop] if split == "train" else lines[:20]
                (folder / f"{split}.{lang}").write_text("\n".join(chosen) + "\n", encoding="utf-8")
        dirs.append(folder)
    return dirs


def test_mixture_from_the_command_line_composes_and_is_checked():
    from hydra import compose, initialize_config_dir

    from nmt.config import ConfigError, register_configs, to_config
    from nmt.config_checks import validate

    register_configs()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=["data.train=[{dir: /x, weight: 2}, {dir: /y}]"]))
        assert [(c.dir, c.weight) for c in cfg.data.train] == [("/x", 2.0), ("/y", 1.0)]
        with pytest.raises(ConfigError, match="weight=0"):
            validate(to_config(compose(config_name="config", overrides=["data.train=[{dir: /x, weight: 0}]"])))


def test_training_on_a_mixture_resumes_bitwise(tmp_path, multi30k_dir):
    import torch

    from nmt.config import AttentionPlotConfig, Config, ModelConfig, OptimConfig, SearchConfig, TokenizerConfig, \
        TrainConfig, TrainCorpus
    from nmt.train.data import prepare_data
    from nmt.train.trainer import Trainer, TrainingInterrupted
    from test_resume import _record

    a, b = _mixture_dirs(tmp_path, multi30k_dir / "multi30k")

    def trainer(run_dir):
        cfg = Config(data=DataConfig(dir=str(a), download=False, train=[TrainCorpus(str(a), 1.0), TrainCorpus(str(b), 3.0)],
                                     tokenizer=TokenizerConfig(vocab_size=400, cache_dir=str(tmp_path / "cache"))),
                     model=ModelConfig(d_model=32, num_heads=2, ffn_dim=64, encoder_layers=1, decoder_layers=1),
                     optim=OptimConfig(lr=3e-3, warmup_steps=5),
                     train=TrainConfig(max_tokens=800, max_epochs=3, max_steps=30, log_every_steps=1, eval_test=False,
                                       progress_bar=False, patience=0,
                                       attention=AttentionPlotConfig(sentences=0, stats_sentences=0)),
                     search=SearchConfig(beam_size=1, max_len_b=5))
        data = prepare_data(cfg.data, seed=cfg.train.seed, with_test=False)
        assert data.train_sampling.quotas == [75, 225]  # weights 1:3 over 300 pairs an epoch
        return Trainer(cfg, data, run_dir)

    straight = trainer(tmp_path / "straight")
    expected = _record(straight)
    assert straight.train()["epochs_completed"] >= 1
    first = trainer(tmp_path / "resumed")
    got = _record(first, stop_at=25)  # in the second epoch: another mixture
    with pytest.raises(TrainingInterrupted):
        first.train()
    second = trainer(tmp_path / "resumed")
    rest = _record(second)
    second.train()
    assert second.progress.step == 30 and got + rest == expected
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[name]), name

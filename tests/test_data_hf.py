"""Hugging Face datasets: local JSONL/CSV/Parquet, Dataset.map tokenisation cache, streaming batches.

Offline: every dataset is written in the test (``save_to_disk`` folders or data files in tmp_path);
``datasets``' cache goes to tmp_path too (``data.hf_cache_dir``).
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import pytest

datasets = pytest.importorskip("datasets")

from nmt.config import DataConfig, HFDataFiles, TokenizerConfig  # noqa: E402
from nmt.data import hf  # noqa: E402
from nmt.data.errors import DataError  # noqa: E402
from nmt.data.splits import load_split  # noqa: E402
from nmt.data.streaming import StreamingBatches  # noqa: E402
from nmt.data.tokenizer import train_tokenizer  # noqa: E402
from nmt.train.data import map_cache_dir, prepare_data  # noqa: E402

WORDS = "house tree river dog cat small big red green walks runs sees the a on under".split()


def _pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` pairs of different lengths; every target is unique (it ends with its number)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = [rng.choice(WORDS) for _ in range(2 + i % 9)]
        out.append((" ".join(words) + f" {i}", "satz " + " ".join(w.upper() for w in words) + f" {i}"))
    return out


def _tok_cfg(tmp_path, vocab_size: int = 120) -> TokenizerConfig:
    return TokenizerConfig(vocab_size=vocab_size, byte_fallback=False, cache_dir=str(tmp_path / "nmt-cache"))


def _save_flat(path, splits: dict[str, list[tuple[str, str]]]) -> str:
    datasets.DatasetDict({name: datasets.Dataset.from_dict({"en": [e for e, _ in rows], "de": [d for _, d in rows]})
                          for name, rows in splits.items()}).save_to_disk(str(path))
    return str(path)


# --- local JSON Lines / CSV / Parquet through datasets' builders --------------------------------
def test_local_jsonl_csv_parquet_files(tmp_path):
    train, dev = _pairs(6) + [("", "leer")], _pairs(3, seed=1) + [("", "")]
    jl = {}
    for split, rows in (("train", train), ("validation", dev)):  # nested layout
        jl[split] = tmp_path / f"{split}.jsonl"
        jl[split].write_text("".join(json.dumps({"translation": {"en": e, "de": d}}) + "\n" for e, d in rows))
    csv, pq = {}, {}
    for split, rows in (("train", train), ("validation", dev)):  # flat layout
        frame = datasets.Dataset.from_dict({"en": [e for e, _ in rows], "de": [d for _, d in rows]})
        csv[split], pq[split] = tmp_path / f"{split}.csv", tmp_path / f"{split}.parquet"
        frame.to_csv(str(csv[split]), index=False)
        frame.to_parquet(str(pq[split]))
    for builder, files in (("json", jl), ("csv", csv), ("parquet", pq)):
        cfg = DataConfig(hf_name=builder, hf_data_files=HFDataFiles(**{k: str(v) for k, v in files.items()}),
                         hf_cache_dir=str(tmp_path / "hf-cache"))
        text = load_split(cfg, "train")
        assert text.src == [e for e, _ in train[:6]] and text.tgt == [d for _, d in train[:6]], builder
        assert text.stats["empty_dropped"] == 1, builder
        valid = load_split(cfg, "valid")  # "valid" -> "validation"; dev keeps the empty line (R23)
        assert valid.src == [e for e, _ in dev[:3]] + [""], builder
    with pytest.raises(DataError, match="hf_data_files"):
        load_split(DataConfig(hf_name="json", hf_cache_dir=str(tmp_path / "hf-cache")), "train")


def test_streamed_dev_split_equals_loaded(tmp_path):
    folder = _save_flat(tmp_path / "flat", {"train": _pairs(8), "validation": _pairs(5, seed=2)})
    loaded = load_split(DataConfig(hf_name=folder), "valid")
    streamed = load_split(DataConfig(hf_name=folder, streaming=True), "valid")
    assert (streamed.src, streamed.tgt) == (loaded.src, loaded.tgt) and len(loaded) == 5


# --- Dataset.map tokenisation with a fingerprinted cache ----------------------------------------
def test_map_tokenisation_cache_is_reused_and_keyed_by_the_model(tmp_path, monkeypatch):
    rows = _pairs(60) + [("", "ohne quelle"), ("the\x07 dog 61", " satz THE DOG 61\x00")]  # cleaned as files
    folder = _save_flat(tmp_path / "flat", {"train": rows, "validation": _pairs(4, seed=3)})
    cfg = DataConfig(hf_name=folder, tokenizer=_tok_cfg(tmp_path))
    text = load_split(cfg, "train")
    assert len(text) == 61 and text.src[-1] == "the  dog 61" and text.tgt[-1] == "satz THE DOG 61"
    calls = []
    original = hf._EncodeColumns.__call__
    monkeypatch.setattr(hf._EncodeColumns, "__call__", lambda self, b: calls.append(1) or original(self, b))

    first = prepare_data(cfg, seed=1, with_test=False)
    assert calls, "map ran"
    tok = first.tokenizer
    assert [a.tolist() for a in first.train.src] == tok.encode_src(text.src)  # the ids of the in-memory path
    assert [a.tolist() for a in first.train.tgt] == tok.encode_tgt(text.tgt)
    cache_files = sorted(map_cache_dir(cfg).glob("tokenized-*.arrow"))
    assert len(cache_files) == 1  # under data.tokenizer.cache_dir for a save_to_disk folder, not in the folder
    assert not list((tmp_path / "flat").rglob("tokenized-*"))

    calls.clear()
    again = prepare_data(cfg, seed=1, with_test=False)
    assert not calls, "the second call loads the cache instead of encoding again"
    assert [a.tolist() for a in again.train.src] == [a.tolist() for a in first.train.src]

    other = DataConfig(hf_name=folder, tokenizer=_tok_cfg(tmp_path, vocab_size=60))  # another spm model
    changed = prepare_data(other, seed=1, with_test=False)
    assert calls, "a different sentencepiece model never reuses the cache"
    assert changed.tokenizer.sha256() != tok.sha256()
    assert [a.tolist() for a in changed.train.src] == changed.tokenizer.encode_src(text.src)
    assert len(sorted(map_cache_dir(cfg).glob("tokenized-*.arrow"))) == 2
    cols = hf.TextColumns(None, "en", "de")
    assert hf.map_fingerprint("x", tok.sha256(), cols) != hf.map_fingerprint("x", changed.tokenizer.sha256(), cols)


def test_map_with_two_processes_and_length_filter(tmp_path):
    rows = _pairs(40) + [("a " * 30, "b")]  # the last pair fails the length ratio filter
    folder = _save_flat(tmp_path / "flat", {"train": rows, "validation": _pairs(3)})
    cfg = DataConfig(hf_name=folder, tokenizer=_tok_cfg(tmp_path), num_proc=2, max_len_ratio=3.0)
    data = prepare_data(cfg, seed=1, with_test=False)
    assert len(data.train) == 40
    assert [a.tolist() for a in data.train.tgt] == data.tokenizer.encode_tgt([d for _, d in rows[:40]])


# --- streaming ------------------------------------------------------------------------------------
def _stream(tmp_path, rows, buffer: int = 16, shards: int = 4, max_tokens: int = 120, **kw) -> StreamingBatches:
    cfg = DataConfig(shuffle_buffer=buffer, tokenizer=_tok_cfg(tmp_path), **kw)
    tok = train_tokenizer([e for e, _ in rows if e], [d for _, d in rows if d], cfg.tokenizer, None)
    source = datasets.Dataset.from_dict({"translation": [{"en": e, "de": d} for e, d in rows]}) \
        .to_iterable_dataset(num_shards=shards)
    return StreamingBatches(source, hf.TextColumns("translation", "en", "de"), tok, cfg, max_tokens=max_tokens, seed=3)


def _epoch(stream: StreamingBatches) -> list:
    return [stream.tokenizer.decode_tgt(b.tgt_out) for b in stream]


def test_stream_covers_every_pair_once_per_epoch_within_budget_and_reshuffles(tmp_path):
    rows = _pairs(70) + [("", "leer"), ("x", "")]
    stream = _stream(tmp_path, rows)
    with pytest.raises(TypeError, match="no length"):
        len(stream)
    expected = Counter(d for _, d in rows[:70])
    batches = []
    for b in stream:
        width = max(int(b.src_lengths.max()), b.tgt_out.size(1))
        assert b.size == 1 or b.size * width <= 120  # the BucketingSampler budget (EOS/BOS included)
        assert b.src_tokens.device.type == "cpu"
        batches.append(stream.tokenizer.decode_tgt(b.tgt_out))
    assert stream.epoch == 2 and stream.batches_consumed == 0  # moved on after the epoch
    assert Counter(s for batch in batches for s in batch) == expected
    second = _epoch(stream)
    assert Counter(s for batch in second for s in batch) == expected
    assert second != batches  # another shard order and bucketing in epoch 2
    stream.set_epoch(2)
    assert _epoch(stream) == second  # an epoch is reproducible from (seed, epoch)


def _two_epochs(stream: StreamingBatches) -> list:
    out = []
    while stream.epoch < 3:
        out.extend(stream)
    return out


# with these settings chunk 0 has batches 1-5: cut 4 is inside a chunk, 5 at a chunk boundary, 9 inside
# the second chunk (which starts inside a shard); -1 is the last batch of epoch 1
@pytest.mark.parametrize("cut", [1, 4, 5, 9, -1])
def test_stream_resumes_exactly_from_state_dict(tmp_path, cut):
    rows = _pairs(50)
    reference = _stream(tmp_path, rows)
    first_epoch = len(list(reference))
    reference.set_epoch(1)
    full = _two_epochs(reference)
    cut = first_epoch if cut < 0 else cut
    run = _stream(tmp_path, rows)
    it = iter(run)
    seen = [next(it) for _ in range(cut)]
    state = json.loads(json.dumps(run.state_dict()))  # what a checkpoint keeps
    assert state["epoch"] == 1 and state["batches_consumed"] == cut
    fresh = _stream(tmp_path, rows)
    fresh.load_state_dict(state)
    fresh.set_epoch(state["epoch"])  # the trainer calls this before each epoch: keeps the position
    got = seen + _two_epochs(fresh)  # the rest of epoch 1, then epoch 2
    assert len(got) == len(full) and first_epoch > 9
    for a, b in zip(got, full):
        assert a.src_tokens.equal(b.src_tokens) and a.tgt_out.equal(b.tgt_out) and a.indices.equal(b.indices)


def test_stream_ranks_keep_disjoint_batches_of_one_epoch(tmp_path):
    rows = _pairs(30)
    run = _stream(tmp_path, rows, buffer=8)
    n = len(list(run))
    assert run.state_dict()["epoch"] == 2
    owned = []
    for rank in range(2):  # each data-parallel process reads the same stream and keeps its positions
        stream = _stream(tmp_path, rows, buffer=8)
        owned.append([b.indices.tolist() for b in stream.iterate(keep=lambda p, r=rank: p % 2 == r)])
        assert stream.epoch == 2
    assert len(owned[0]) + len(owned[1]) == n and abs(len(owned[0]) - len(owned[1])) <= 1
    assert sorted(i for rank in owned for b in rank for i in b) == list(range(30))  # stream positions


def test_stream_max_train_pairs_reads_the_first_pairs(tmp_path):
    rows = _pairs(40)
    stream = _stream(tmp_path, rows, max_train_pairs=10)
    got = Counter(s for batch in _epoch(stream) for s in batch)
    assert got == Counter(d for _, d in rows[:10])


def test_prepare_data_streams_json_files(tmp_path):
    rows = _pairs(60)
    files = []
    for k in range(3):  # three files = three shards
        files.append(tmp_path / f"train-{k}.jsonl")
        files[-1].write_text("".join(json.dumps({"en": e, "de": d}) + "\n" for e, d in rows[k * 20:(k + 1) * 20]))
    (tmp_path / "dev.jsonl").write_text("".join(json.dumps({"en": e, "de": d}) + "\n" for e, d in _pairs(4, 5)))
    cfg = DataConfig(hf_name="json", hf_data_files=HFDataFiles(train=str(tmp_path / "train-*.jsonl"),
                                                               validation=str(tmp_path / "dev.jsonl")),
                     hf_cache_dir=str(tmp_path / "hf-cache"), streaming=True, shuffle_buffer=16,
                     stream_spm_sentences=25, tokenizer=_tok_cfg(tmp_path))
    data = prepare_data(cfg, seed=1, with_test=False, max_tokens=150)
    assert data.train is None and len(data.valid) == 4
    stream = data.train_stream
    assert stream.source.n_shards == 3 and stream.max_tokens == 150
    got = [s for b in stream for s in data.tokenizer.decode_tgt(b.tgt_out)]
    assert Counter(got) == Counter(d for _, d in rows)
    # plain-text files stream the same way (issue 39; this used to be refused for want of hf_name)
    for split, pairs in (("train", rows), ("valid", list(_pairs(4, 5)))):
        (tmp_path / f"{split}.en").write_text("".join(e + "\n" for e, _ in pairs))
        (tmp_path / f"{split}.de").write_text("".join(d + "\n" for _, d in pairs))
    files = prepare_data(DataConfig(dir=str(tmp_path), download=False, streaming=True, shuffle_buffer=16,
                                    stream_spm_sentences=25, tokenizer=_tok_cfg(tmp_path)),
                         seed=1, with_test=False, max_tokens=150)
    assert files.train is None and len(files.valid) == 4
    got = [s for b in files.train_stream for s in files.tokenizer.decode_tgt(b.tgt_out)]
    assert Counter(got) == Counter(d for _, d in rows)


# --- shipped data configs -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["hf", "wmt14_hf", "iwslt2017_hf"])
def test_hf_data_configs_compose(name):
    from hydra import compose, initialize_config_dir

    from nmt.config import register_configs, to_config

    register_configs()
    conf = str(Path(__file__).resolve().parents[1] / "conf")
    with initialize_config_dir(config_dir=conf, version_base="1.3"):
        cfg = to_config(compose(config_name="config", overrides=[
            f"data={name}", "data.hf_data_files={train: a.jsonl, validation: b.jsonl}"]))
    assert cfg.data.hf_name and cfg.data.hf_data_files == HFDataFiles(train="a.jsonl", validation="b.jsonl")
    assert cfg.data.streaming == (name == "wmt14_hf")


def test_rows_missing_a_language_are_reported(tmp_path, caplog):
    """Issue 36 C18: a dev row whose nested translation lacks the target language became an
    empty reference without a word; now each side's count and first row are reported."""
    import logging

    path = tmp_path / "validation.jsonl"
    rows = [{"translation": {"en": "a house", "de": "ein Haus"}}, {"translation": {"en": "a tree"}},
            {"translation": {"en": "the dog", "de": None}}, {"translation": {"de": "die Katze"}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = DataConfig(hf_name="json", hf_data_files=HFDataFiles(validation=str(path)),
                     hf_cache_dir=str(tmp_path / "hf-cache"))
    with caplog.at_level(logging.WARNING):
        text = load_split(cfg, "valid")
    assert text.tgt == ["ein Haus", "", "", "die Katze"]  # dev keeps every row (R23)
    assert "2 rows have no 'de' text (first: row 2)" in caplog.text
    assert "1 rows have no 'en' text (first: row 4)" in caplog.text

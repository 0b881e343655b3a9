"""nmt.data.tokenizer: training, caching, determinism, round trip."""
from __future__ import annotations

import logging
import random

import pytest

from nmt.config import TokenizerConfig
from nmt.data.errors import DataError
from nmt.data.tokenizer import Tokenizer, train_tokenizer

EN = "a the man woman dog cat runs walks red blue big small in on with street park ball green house".split()
DE = "ein der die das Mann Frau Hund Katze läuft geht rot blau groß klein im auf mit Straße Park Ball grün Haus".split()


def sentences(words: list[str], n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(n)]


SRC = sentences(EN, 300, 1)
TGT = sentences(DE, 300, 2)
CFG = TokenizerConfig(vocab_size=200, byte_fallback=False)


@pytest.fixture(scope="module")
def joint(tmp_path_factory) -> Tokenizer:
    return train_tokenizer(SRC, TGT, CFG, tmp_path_factory.mktemp("cache"))


def test_fixed_special_ids(joint):
    assert joint.joint
    assert joint.src_pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert joint.src_vocab_size == joint.tgt_vocab_size <= 200


def test_round_trip(joint):
    texts = SRC[:20] + TGT[:20] + ["Straße über Haus"]
    ids = joint.encode_tgt(texts)
    assert all(0 not in s and 2 not in s and 3 not in s for s in ids)  # no pad/bos/eos added
    assert joint.decode_tgt(ids) == texts


def test_decode_strips_specials_and_stops_at_eos(joint):
    ids = joint.encode_tgt(["der Mann läuft"])[0]
    assert joint.decode_tgt([[2, *ids, 3, *ids, 0, 0], [3, *ids], [0, 0]]) == ["der Mann läuft", "", ""]
    with pytest.raises(ValueError, match="outside the vocabulary"):
        joint.decode_tgt([[10**6]])


def test_pieces_are_strings(joint):
    ids = joint.encode_src(["the dog runs"])[0]
    pieces = joint.src_pieces(ids)
    assert "".join(pieces).replace("\u2581", " ").strip() == "the dog runs"
    assert joint.tgt_pieces(ids) == pieces  # joint model


def test_cache_hit(tmp_path, caplog):
    first = train_tokenizer(SRC, TGT, CFG, tmp_path)
    with caplog.at_level(logging.INFO, logger="nmt.data.tokenizer"):
        second = train_tokenizer(SRC, TGT, CFG, tmp_path)
    assert "loaded cached tokenizer" in caplog.text
    assert second.to_bytes() == first.to_bytes()
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("spm-")]) == 1
    train_tokenizer(SRC, TGT[:-1] + ["other"], CFG, tmp_path)  # different text -> new entry
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("spm-")]) == 2


def test_bytes_save_load_and_sha(joint, tmp_path):
    copy = Tokenizer.from_bytes(joint.to_bytes())
    assert copy.to_bytes() == joint.to_bytes() and list(joint.to_bytes()) == ["spm.model"]
    paths = joint.save(tmp_path / "model")
    assert [p.name for p in paths] == ["spm.model"]
    loaded = Tokenizer.load(tmp_path / "model")
    assert loaded.sha256() == joint.sha256()
    assert loaded.encode_src(SRC[:5]) == joint.encode_src(SRC[:5])
    with pytest.raises(DataError, match="no tokenizer model"):
        Tokenizer.load(tmp_path)


def test_deterministic_training(tmp_path):
    cfg = TokenizerConfig(vocab_size=300, byte_fallback=True)
    a = train_tokenizer(SRC, TGT, cfg, tmp_path / "a")
    b = train_tokenizer(SRC, TGT, cfg, tmp_path / "b")
    assert a.to_bytes() == b.to_bytes()
    assert a.decode_tgt(a.encode_tgt(["Qatar ẞ 😀"])) == ["Qatar ẞ 😀"]  # unseen chars: bytes


def test_separate_models(tmp_path):
    cfg = TokenizerConfig(vocab_size=200, byte_fallback=False, joint=False)
    tok = train_tokenizer(SRC, TGT, cfg, tmp_path)
    assert not tok.joint
    assert sorted(tok.to_bytes()) == ["src.spm.model", "tgt.spm.model"]
    assert tok.decode_tgt(tok.encode_tgt(TGT[:10])) == TGT[:10]
    assert tok.src_pieces([0, 1, 2, 3]) == ["<pad>", "<unk>", "<s>", "</s>"]
    assert Tokenizer.load(tok.save(tmp_path / "m")[0].parent).to_bytes() == tok.to_bytes()


def test_vocab_too_small_for_byte_fallback(tmp_path):
    with pytest.raises(DataError, match="vocab_size"):
        train_tokenizer(SRC, TGT, TokenizerConfig(vocab_size=100, byte_fallback=True), None)


def test_byte_fallback_pieces_never_split_a_line_or_a_column(tmp_path):
    """R33 (issue 36 B6): byte-fallback pieces <0x0A>, <0x0D>, <0x09>, ... decode to newlines and
    tabs; in nmt's text outputs they become spaces, so hypothesis files and nmt-translate keep
    one line per input line and their columns."""
    tok = train_tokenizer(SRC, TGT, TokenizerConfig(vocab_size=400, byte_fallback=True), tmp_path)
    word = tok.encode_tgt(["Mann"])[0]
    for char in "\n\r\t\x0b\x0c\x1c\x85\u2028\u2029\x00":
        pieces = [tok._tgt.piece_to_id(f"<0x{b:02X}>") for b in char.encode("utf-8")]
        assert all(p > 3 for p in pieces), char  # real byte-fallback pieces
        (text,) = tok.decode_tgt([word + pieces + word])
        assert len(f"{text}\n".splitlines()) == 1 and "\t" not in text and text.split() == ["Mann", "Mann"], repr(text)

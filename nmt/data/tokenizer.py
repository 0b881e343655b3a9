"""sentencepiece subwords (Kudo & Richardson 2018): train, cache, encode, decode.

One joint model for both languages (needed for shared embeddings) or one per side. The
special ids are fixed everywhere: pad 0, unk 1, bos 2, eos 3 (:mod:`nmt.data.batch`).
Encoding adds no BOS/EOS; :meth:`nmt.data.batch.Batch.collate` adds them.

Training is deterministic (R27): the sentences given are used in order (a large corpus is
sampled before, with the run's seed: :class:`nmt.data.reservoir.Reservoir`), the random
generator is seeded and the thread count is fixed (the unigram EM sums depend on it). The
trained model is cached under ``cache_dir/spm-<hash>/`` keyed by the training text and every
option.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Iterable, Optional, Sequence

import numpy as np
import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.data.batch import BOS_ID, EOS_ID, PAD_ID, UNK_ID
from nmt.data.errors import DataError
from nmt.data.text import OUTPUT_SEPARATORS
from nmt.io import atomic_write_bytes

logger = logging.getLogger(__name__)

JOINT_FILE = "spm.model"
SRC_FILE = "src.spm.model"
TGT_FILE = "tgt.spm.model"
_DONE = "done.json"  # written last into a cache folder (completeness marker)
_SPECIAL = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}


def _processor(proto: bytes, label: str) -> spm.SentencePieceProcessor:
    """Processor from a serialized model; DataError when ids differ from pad/unk/bos/eos 0-3."""
    sp = spm.SentencePieceProcessor()
    try:
        sp.LoadFromSerializedProto(proto)
    except Exception as err:  # sentencepiece raises RuntimeError/OSError on a bad proto
        raise DataError(f"{label}: not a sentencepiece model ({err})") from err
    ids = {"pad": sp.pad_id(), "unk": sp.unk_id(), "bos": sp.bos_id(), "eos": sp.eos_id()}
    if ids != _SPECIAL:
        raise DataError(f"{label}: special ids are {ids}, expected {_SPECIAL}")
    return sp


class Tokenizer:
    """One joint sentencepiece model or a source and a target model.

    Args:
        models: serialized model protos, ``{"spm.model": b}`` (joint) or
            ``{"src.spm.model": b, "tgt.spm.model": b}``.
        num_threads: encode/decode threads (-1: sentencepiece default).
    Raises:
        DataError: wrong keys, a bad model, or special ids other than 0-3.
    """

    def __init__(self, models: dict[str, bytes], num_threads: int = -1) -> None:
        if set(models) == {JOINT_FILE}:
            self._src = self._tgt = _processor(models[JOINT_FILE], JOINT_FILE)
        elif set(models) == {SRC_FILE, TGT_FILE}:
            self._src = _processor(models[SRC_FILE], SRC_FILE)
            self._tgt = _processor(models[TGT_FILE], TGT_FILE)
        else:
            raise DataError(f"tokenizer models must be {{{JOINT_FILE!r}}} or {{{SRC_FILE!r}, "
                            f"{TGT_FILE!r}}}, got {sorted(models)}")
        self._models = {k: bytes(v) for k, v in models.items()}
        self.num_threads = num_threads

    @property
    def joint(self) -> bool:
        """True when one model serves both languages."""
        return JOINT_FILE in self._models

    @property
    def src_vocab_size(self) -> int:
        """Number of source pieces V_src (ids 0..V_src-1; 0-3 are pad/unk/bos/eos)."""
        return self._src.get_piece_size()

    @property
    def tgt_vocab_size(self) -> int:
        """Number of target pieces V_tgt."""
        return self._tgt.get_piece_size()

    def encode_src(self, texts: Sequence[str]) -> list[list[int]]:
        """Source sentences -> id lists (no BOS/EOS)."""
        return self._src.encode(list(texts), out_type=int, num_threads=self.num_threads)

    def encode_tgt(self, texts: Sequence[str]) -> list[list[int]]:
        """Target sentences -> id lists (no BOS/EOS)."""
        return self._tgt.encode(list(texts), out_type=int, num_threads=self.num_threads)

    def nbest_encode(self, texts: Sequence[str], side: str, nbest_size: int) -> list[list[list[int]]]:
        """Sentences -> their ``nbest_size`` best segmentations each, best first, as id lists (no
        BOS/EOS); a sentence with fewer segmentations gets them all. Deterministic (no sampling).

        Args:
            side: ``"src"`` or ``"tgt"`` (which model, when they are separate).
        Raises:
            ValueError: an unknown ``side`` or ``nbest_size < 1``.
        """
        processor = self._processor(side)
        if nbest_size < 1:
            raise ValueError(f"nbest_size must be >= 1, got {nbest_size}")
        return processor.nbest_encode(list(texts), nbest_size=int(nbest_size), out_type=int)

    def piece_log_probs(self, side: str) -> np.ndarray:
        """``(V,)`` float64: each piece's score in the model, the unigram log probability
        log p(piece) of Kudo 2018 eq. 1 for a unigram model (for BPE, the merge order instead).

        Raises:
            ValueError: an unknown ``side``.
        """
        processor = self._processor(side)
        return np.array([processor.get_score(i) for i in range(processor.get_piece_size())], dtype=np.float64)

    def _processor(self, side: str) -> spm.SentencePieceProcessor:
        """The model of ``side`` (``"src"`` or ``"tgt"``); ValueError for another side."""
        if side not in ("src", "tgt"):
            raise ValueError(f"side must be 'src' or 'tgt', got {side!r}")
        return self._src if side == "src" else self._tgt

    def decode_tgt(self, ids: Iterable[Sequence[int]]) -> list[str]:
        """Target id lists -> detokenised sentences.

        Each list is cut at its first EOS; PAD and BOS are removed. Accepts lists, numpy
        arrays or tensors. Byte-fallback pieces can decode to any character: line and column
        separators (newline, tab, U+2028, ... :data:`nmt.data.text.OUTPUT_SEPARATORS`) become
        spaces, so one sentence is always one line of any text nmt writes (R33).

        Raises:
            ValueError: an id outside ``[0, tgt_vocab_size)``.
        """
        clean = []
        size = self.tgt_vocab_size
        for seq in ids:
            seq = [int(x) for x in (seq.tolist() if hasattr(seq, "tolist") else seq)]
            if EOS_ID in seq:
                seq = seq[: seq.index(EOS_ID)]
            seq = [x for x in seq if x != PAD_ID and x != BOS_ID]
            bad = [x for x in seq if not 0 <= x < size]
            if bad:
                raise ValueError(f"target id {bad[0]} outside the vocabulary [0, {size})")
            clean.append(seq)
        texts = self._tgt.decode(clean, num_threads=self.num_threads) if clean else []
        return [OUTPUT_SEPARATORS.sub(" ", t) if OUTPUT_SEPARATORS.search(t) else t for t in texts]

    def src_pieces(self, ids: Sequence[int]) -> list[str]:
        """Source ids -> subword strings (plot labels)."""
        return [self._src.id_to_piece(int(i)) for i in ids]

    def tgt_pieces(self, ids: Sequence[int]) -> list[str]:
        """Target ids -> subword strings (plot labels)."""
        return [self._tgt.id_to_piece(int(i)) for i in ids]

    def to_bytes(self) -> dict[str, bytes]:
        """File name -> serialized model proto (what :meth:`save` writes)."""
        return dict(self._models)

    @classmethod
    def from_bytes(cls, models: dict[str, bytes]) -> "Tokenizer":
        """Inverse of :meth:`to_bytes`."""
        return cls(models)

    def sha256(self) -> dict[str, str]:
        """File name -> hex sha256 of the model bytes (stored in model directories, R12)."""
        return {k: hashlib.sha256(v).hexdigest() for k, v in self._models.items()}

    def save(self, directory: Path | str) -> list[Path]:
        """Write the model file(s) atomically into ``directory``; returns their paths."""
        return [atomic_write_bytes(Path(directory) / k, v) for k, v in sorted(self._models.items())]

    @classmethod
    def load(cls, directory: Path | str) -> "Tokenizer":
        """Load ``spm.model`` or ``src.spm.model`` + ``tgt.spm.model`` from ``directory``.

        Raises:
            DataError: no model file there, or a bad model.
        """
        directory = Path(directory)
        for names in ((JOINT_FILE,), (SRC_FILE, TGT_FILE)):
            if all((directory / n).is_file() for n in names):
                return cls({n: (directory / n).read_bytes() for n in names})
        raise DataError(f"{directory}: no tokenizer model (expected {JOINT_FILE} or "
                        f"{SRC_FILE} + {TGT_FILE})")


def _train_options(cfg: TokenizerConfig) -> dict:
    """sentencepiece trainer options (everything but the input and output)."""
    return dict(
        model_type=cfg.model_type, vocab_size=cfg.vocab_size,
        character_coverage=cfg.character_coverage, byte_fallback=cfg.byte_fallback,
        pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
        hard_vocab_limit=False,  # tiny corpora get a smaller vocabulary instead of an error
        input_sentence_size=0, shuffle_input_sentence=False,  # the caller samples, with the run's seed
        num_threads=max(1, cfg.num_threads), minloglevel=2)


def _cache_key(src_texts: Sequence[str], tgt_texts: Sequence[str], options: dict, joint: bool,
               seed: int) -> str:
    """Hex sha256 over both sides' text (in order) and every option."""
    digest = hashlib.sha256()
    meta = {"options": options, "joint": joint, "seed": seed, "sentencepiece": spm.__version__}
    digest.update(json.dumps(meta, sort_keys=True).encode())
    for side, texts in (("src", src_texts), ("tgt", tgt_texts)):
        digest.update(f"\x00{side}:{len(texts)}\x00".encode())
        for text in texts:
            data = text.encode("utf-8")
            digest.update(len(data).to_bytes(8, "little"))
            digest.update(data)
    return digest.hexdigest()


def _train_one(texts: Sequence[str], options: dict, seed: int, label: str) -> bytes:
    """Train one model on the non-empty ``texts``; returns its serialized proto."""
    sentences = [t for t in texts if t]
    if not sentences:
        raise DataError(f"tokenizer {label}: no non-empty training sentences")
    spm.set_random_generator_seed(seed)
    start, out = time.perf_counter(), bytearray()

    class _Writer:  # model_writer needs only .write()
        def write(self, data: bytes) -> None:
            out.extend(data)

    try:
        spm.SentencePieceTrainer.train(sentence_iterator=iter(sentences), model_writer=_Writer(),
                                       **options)
    except RuntimeError as err:
        hint = (" (byte_fallback needs 256 byte pieces plus every character: raise "
                "tokenizer.vocab_size or set tokenizer.byte_fallback=false)"
                if "smaller than required_chars" in str(err) else "")
        raise DataError(f"sentencepiece training of {label} failed: {err}{hint}") from err
    logger.info("trained sentencepiece %s (%s, %d pieces) on %d sentences in %.1f s", label,
                options["model_type"], spm.SentencePieceProcessor(model_proto=bytes(out)).get_piece_size(),
                len(sentences), time.perf_counter() - start)
    return bytes(out)


def train_tokenizer(src_texts: Sequence[str], tgt_texts: Sequence[str], cfg: TokenizerConfig,
                    cache_dir: Optional[Path | str], seed: int = 1) -> Tokenizer:
    """Train (or load from cache) sentencepiece on the TRAINING split only.

    Joint (``cfg.joint``): one model on source then target sentences; else one per side.
    The result is cached in ``cache_dir/spm-<hash>/`` (hash of the text of both sides in
    order and all options, seed and sentencepiece version); a second call with the same
    inputs loads it (logged as "loaded cached tokenizer"). ``cache_dir=None``: no cache.

    Raises:
        DataError: no training sentences, or sentencepiece rejects the options (e.g. a
            vocabulary too small for ``byte_fallback``).
    """
    options = _train_options(cfg)
    folder = None
    if cache_dir is not None:
        key = _cache_key(src_texts, tgt_texts, options, cfg.joint, seed)
        folder = Path(cache_dir) / f"spm-{key[:20]}"
        if (folder / _DONE).is_file():
            try:
                tok = Tokenizer.load(folder)
                logger.info("loaded cached tokenizer from %s", folder)
                return tok
            except DataError as err:
                logger.warning("cached tokenizer in %s is unusable (%s); training again", folder, err)
    if cfg.joint:
        models = {JOINT_FILE: _train_one([*src_texts, *tgt_texts], options, seed, "joint")}
    else:
        models = {SRC_FILE: _train_one(src_texts, options, seed, "source"),
                  TGT_FILE: _train_one(tgt_texts, options, seed, "target")}
    tok = Tokenizer(models)
    if folder is not None:
        tok.save(folder)
        meta = {"config": asdict(cfg), "seed": seed, "sentencepiece": spm.__version__,
                "sha256": tok.sha256()}
        atomic_write_bytes(folder / _DONE, json.dumps(meta, indent=1, sort_keys=True).encode())
        logger.info("cached tokenizer in %s", folder)
    return tok

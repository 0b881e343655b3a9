"""Training ids of a plain-text corpus: encoded once, memory-mapped on every later start.

The first start makes two streaming passes over the ``{train}.{src}``/``.{tgt}`` files, so the raw
text is never held whole:

1. count both files' lines (R20, before anything else) and draw ``data.tokenizer.input_sentence_size``
   pairs with the run's seed (:class:`~nmt.data.reservoir.Reservoir`) to train sentencepiece on;
2. read, check and clean every pair exactly as :mod:`nmt.data.text` does (R19, R21, R22, R26,
   counted in the same pass), encode them in chunks with sentencepiece's threads, and append the
   ids to one flat file per side.

Two caches, each built in a temporary folder and renamed into place (a killed start leaves no
half cache under a final name): ``tok-<hash>/`` (hash of the files' sha256, the weights, the
tokenizer options and the seed) holds the sentencepiece model, so a later start neither samples
nor trains; ``ids-<hash>/`` (hash of the files' sha256 and the tokenizer's) holds
``src.bin``/``tgt.bin`` (``uint16`` ids when the vocabulary fits, else ``int32``),
``src_len.npy``/``tgt_len.npy`` (int32), ``lines.npy`` (int64 line number of each kept pair) and
``meta.json``, written last. Both hashes cover the cleaning options and this format's version.
Later starts hash the files, check the folder against ``meta.json`` and open the ids with
``numpy.memmap``: no per-sentence Python object exists for the training set.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from itertools import zip_longest
from dataclasses import asdict
from pathlib import Path
from typing import Optional

import numpy as np

from nmt.config import DataConfig
from nmt.data.dataset import TokenizedDataset
from nmt.data.download import sha256_file
from nmt.data.encode_pass import encode_files
from nmt.data.errors import DataError
from nmt.data.ragged import Ragged
from nmt.data.reservoir import Reservoir
from nmt.data.text import check_line_counts, clean, decode_line, raw_line, utf8_policy
from nmt.data.tokenizer import Tokenizer, train_tokenizer
from nmt.io import fsync_dir

log = logging.getLogger(__name__)

#: bumped whenever the files or their meaning change, so an old cache is never misread
FORMAT_VERSION = 1
_META = "meta.json"


def cache_key(cfg: DataConfig, **parts) -> str:
    """Hex sha256 over ``parts`` and the options every cache depends on (cleaning, ``max_train_pairs``,
    this format's version)."""
    meta = {"version": FORMAT_VERSION, "on_empty": str(cfg.on_empty), "on_invalid_utf8": str(cfg.on_invalid_utf8),
            "max_train_pairs": cfg.max_train_pairs, **parts}
    return hashlib.sha256(json.dumps(meta, sort_keys=True, default=str).encode()).hexdigest()


def _tokenizer_options(cfg: DataConfig) -> dict:
    return {k: v for k, v in asdict(cfg.tokenizer).items()
            if k not in ("cache_dir", "enable_sampling", "alpha", "nbest_size")}


def sample_pairs(src_path: Path, tgt_path: Path, cfg: DataConfig, seed: int,
                 size: int) -> tuple[list[str], list[str], int]:
    """Pass 1: count both files' lines (R20) and draw the tokenizer's training pairs.

    ``size`` pairs (0: all) are drawn uniformly from the first
    ``data.max_train_pairs`` lines with ``seed``; a corpus no larger than the sample is used whole
    and in order. Sampled pairs are cleaned like every pair; those with an empty or invalid side
    are left out of the sample.

    Returns:
        ``(src sentences, tgt sentences, lines)``: the sample in file order and the line count.
    Raises:
        DataError: unreadable files, different line counts, or invalid UTF-8 in a sampled line
            under ``data.on_invalid_utf8=error``.
    """
    limit = cfg.max_train_pairs
    reservoir: Reservoir[tuple[int, bytes, bytes]] = Reservoir(size if size > 0 else 2 ** 62, seed)
    n_src = n_tgt = 0
    try:
        with open(src_path, "rb") as fs, open(tgt_path, "rb") as ft:
            for line, (a, b) in enumerate(zip_longest(fs, ft), 1):
                n_src += a is not None
                n_tgt += b is not None
                if a is None or b is None or (limit is not None and line > limit):
                    continue
                if reservoir.wants():
                    reservoir.offer((line, a, b))
                else:
                    reservoir.skip()
    except OSError as err:
        raise DataError(f"{src_path} + {tgt_path}: cannot read: {err}") from None
    check_line_counts(src_path, n_src, tgt_path, n_tgt)
    policy = utf8_policy(cfg.on_invalid_utf8)
    src, tgt = [], []
    for line, a, b in reservoir.items():
        pair = [decode_line(raw_line(raw, line), path, line, policy)[0] for raw, path in ((a, src_path), (b, tgt_path))]
        if pair[0] is not None and pair[1] is not None:
            s, t = clean(pair[0]), clean(pair[1])
            if s and t:
                src.append(s)
                tgt.append(t)
    return src, tgt, n_src


def cached_train_ids(cfg: DataConfig, src_path: Path, tgt_path: Path, seed: int, cache_root: Path,
                     spm_cache: Optional[Path], name: str) -> tuple[Tokenizer, TokenizedDataset, np.ndarray]:
    """The tokenizer and the training ids of two aligned files, from the caches or built into them.

    Args:
        cache_root: folder of the ``tok-<hash>/`` and ``ids-<hash>/`` caches.
        spm_cache: folder of the sentencepiece cache (:func:`nmt.data.tokenizer.train_tokenizer`).
        name: label for reports (``multi30k/train``).
    Returns:
        ``(tokenizer, ids, line_numbers)``: ids memory-mapped from the cache, every kept pair
        (the length filters are applied by the caller), and each pair's 1-based line.
    Raises:
        DataError: bad input (file and line named), or a cache folder that cannot be written.
    """
    digests = (sha256_file(src_path), sha256_file(tgt_path))
    tokenizer = corpus_tokenizer(cfg, [(src_path, tgt_path, 1.0)], [digests], seed, cache_root, spm_cache, name)
    ids, lines = cached_ids(cfg, src_path, tgt_path, digests, tokenizer, cache_root, name)
    return tokenizer, ids, lines


def sample_sizes(size: int, weights: list[float]) -> list[int]:
    """Pairs sampled from each corpus for the tokenizer: ``size`` split by weight (0: all of each)."""
    if size <= 0:
        return [0] * len(weights)
    return [max(1, round(size * w / sum(weights))) for w in weights]


def corpus_tokenizer(cfg: DataConfig, corpora: list[tuple[Path, Path, float]], digests: list[tuple[str, str]],
                     seed: int, cache_root: Path, spm_cache: Optional[Path], name: str) -> Tokenizer:
    """The sentencepiece model of one corpus or a weighted mixture: trained on a seeded sample of
    each corpus (``data.tokenizer.input_sentence_size`` pairs split by weight), cached in
    ``tok-<hash>/`` so a later start neither samples nor trains.

    Raises:
        DataError: bad input in a sampled line, different line counts, or no usable sampled pair.
    """
    weights = [w for _, _, w in corpora]
    key = cache_key(cfg, files=digests, weights=weights, seed=seed, tokenizer=_tokenizer_options(cfg))
    folder = Path(cache_root) / f"tok-{key[:24]}"
    if (folder / _META).is_file():
        try:
            return Tokenizer.load(folder)
        except DataError as err:
            log.warning("%s is unusable (%s); training the tokenizer again", folder, err)
            _discard(folder)
    src, tgt = [], []
    for (src_path, tgt_path, _), size in zip(corpora, sample_sizes(cfg.tokenizer.input_sentence_size, weights)):
        a, b, lines = sample_pairs(src_path, tgt_path, cfg, seed, size)
        log.info("%s: %d lines; sentencepiece trains on %d sampled pairs", src_path.parent, lines, len(a))
        src += a
        tgt += b
    if not src:
        raise DataError(f"{name}: no usable training pairs among the sampled lines")
    tokenizer = train_tokenizer(src, tgt, cfg.tokenizer, spm_cache, seed=seed)
    _publish(folder, lambda tmp: (tokenizer.save(tmp), _write_json(tmp / _META, {"sha256": tokenizer.sha256()})))
    return tokenizer


def cached_ids(cfg: DataConfig, src_path: Path, tgt_path: Path, digests: tuple[str, str], tokenizer: Tokenizer,
               cache_root: Path, name: str) -> tuple[TokenizedDataset, np.ndarray]:
    """The memory-mapped ids of two files under ``tokenizer``: ``ids-<hash>/`` opened, or built.

    Raises:
        DataError: bad input (file and line named), or a cache folder that cannot be written.
    """
    start = time.perf_counter()
    key = cache_key(cfg, files=digests, tokenizer=tokenizer.sha256())
    folder = Path(cache_root) / f"ids-{key[:24]}"
    if (folder / _META).is_file():
        try:
            ids, lines = open_cache(folder, tokenizer)
            log.info("%s: %d pairs memory-mapped from %s in %.1f s", name, len(ids), folder,
                     time.perf_counter() - start)
            return ids, lines
        except DataError as err:
            log.warning("%s is unusable (%s); encoding the corpus again", folder, err)
            _discard(folder)
    build_cache(cfg, src_path, tgt_path, tokenizer, folder, name)
    ids, lines = open_cache(folder, tokenizer)
    log.info("%s: %d pairs encoded and cached in %s in %.1f s", name, len(ids), folder, time.perf_counter() - start)
    return ids, lines


def _discard(folder: Path) -> None:
    """Remove a damaged cache folder of ours: renamed aside first, so no reader sees it half-deleted."""
    aside = folder.parent / f".tmp-stale-{folder.name}.{os.getpid()}.{os.urandom(4).hex()}"
    try:
        os.rename(folder, aside)
    except OSError:
        return
    shutil.rmtree(aside, ignore_errors=True)


def build_cache(cfg: DataConfig, src_path: Path, tgt_path: Path, tokenizer: Tokenizer, folder: Path,
                name: str) -> None:
    """Pass 2 into a temporary folder beside ``folder``, renamed into place when complete."""
    def fill(tmp: Path) -> None:
        start = time.perf_counter()
        corpus = encode_files(src_path, tgt_path, tokenizer, cfg, tmp, name)
        seconds = time.perf_counter() - start
        log.info("%s: encoded %d pairs in %.1f s (%.0f sentences/s, %s sentencepiece threads)", name, corpus.pairs,
                 seconds, 2 * corpus.stats["read"] / max(seconds, 1e-9),
                 tokenizer.num_threads if tokenizer.num_threads > 0 else os.cpu_count())
        _write_json(tmp / _META, {"version": FORMAT_VERSION, "pairs": corpus.pairs, "dtype": corpus.dtype,
                                  "tokens": corpus.tokens, "unk": corpus.unk, "stats": corpus.stats,
                                  "tokenizer_sha256": tokenizer.sha256()})

    _publish(folder, fill)


def _publish(folder: Path, fill) -> None:
    """Run ``fill(tmp)`` on a fresh temporary folder beside ``folder`` and rename it into place, so
    a reader never sees a half-written cache; a folder another process published first is kept."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".tmp-{folder.name}.{os.getpid()}.{os.urandom(4).hex()}"
    tmp.mkdir()
    try:
        fill(tmp)
        fsync_dir(tmp)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / _META).is_file():
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_json(path: Path, value: dict) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())


def open_cache(folder: Path, tokenizer: Tokenizer) -> tuple[TokenizedDataset, np.ndarray]:
    """Open a complete cache: its memory-mapped ids and line numbers, checked against ``meta.json``
    (and ``tokenizer`` against the one the ids were encoded with).

    Raises:
        DataError: a missing or damaged file, or sizes that disagree with ``meta.json``.
    """
    try:
        meta = json.loads((folder / _META).read_text(encoding="utf-8"))
        if meta.get("version") != FORMAT_VERSION:
            raise DataError(f"{folder}: cache format {meta.get('version')}, expected {FORMAT_VERSION}")
        if tokenizer.sha256() != meta["tokenizer_sha256"]:
            raise DataError(f"{folder}: encoded with another tokenizer")
        pairs, dtype = int(meta["pairs"]), np.dtype(meta["dtype"])
        sides = {}
        for side in ("src", "tgt"):
            lengths = np.load(folder / f"{side}_len.npy", mmap_mode="r")
            flat_path = folder / f"{side}.bin"
            tokens = int(meta["tokens"][side])
            if len(lengths) != pairs or flat_path.stat().st_size != tokens * dtype.itemsize:
                raise DataError(f"{flat_path}: {flat_path.stat().st_size} bytes and {len(lengths)} lengths, "
                                f"meta.json says {tokens} ids and {pairs} pairs")
            flat = np.memmap(flat_path, dtype=dtype, mode="r") if tokens else np.zeros(0, dtype)
            ragged = Ragged.from_lengths(flat, np.asarray(lengths, dtype=np.int64))
            if int(ragged.offsets[-1]) != tokens:
                raise DataError(f"{folder / (side + '_len.npy')}: lengths add up to {int(ragged.offsets[-1])}, "
                                f"not the {tokens} ids of {flat_path.name}")
            sides[side] = ragged
        lines = np.load(folder / "lines.npy")
        if len(lines) != pairs:
            raise DataError(f"{folder / 'lines.npy'}: {len(lines)} line numbers for {pairs} pairs")
    except (OSError, ValueError, KeyError, TypeError) as err:
        if isinstance(err, DataError):
            raise
        raise DataError(f"{folder}: {err}") from None
    unk = {side: meta["unk"][side] / max(1, meta["tokens"][side]) for side in ("src", "tgt")}
    return TokenizedDataset(sides["src"], sides["tgt"], unk_rate=unk), lines

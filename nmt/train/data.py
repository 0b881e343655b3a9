"""Data preparation for training: read splits, train/load the tokenizer, build the id datasets.

Three sources of training ids:

- files (``data.corpus``/``data.dir``): encoded once into a memory-mapped cache, sentencepiece
  trained on a seeded sample (:mod:`nmt.data.id_cache`); with subword sampling, read into memory;
- a Hugging Face dataset (``data.hf_name``): read and cleaned like files, encoded with
  ``Dataset.map(num_proc=data.num_proc)`` into a cache keyed by the sentencepiece model
  (:func:`nmt.data.hf.tokenize_split`);
- a stream (``data.streaming=true``, hub data or files, :mod:`nmt.data.text_stream`): never held
  in memory. sentencepiece is trained on the first ``data.stream_spm_sentences`` pairs of the
  stream, and :attr:`PreparedData.train_stream` yields the batches
  (:class:`nmt.data.streaming.StreamingBatches`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from nmt.config import DataConfig
from nmt.data.dataset import filter_by_length
from nmt.data.download import resolve_data_dir, sha256_file
from nmt.data.errors import DataError
from nmt.data.id_cache import cached_ids, cached_train_ids, corpus_tokenizer
from nmt.data.mixture import CorpusMixture
from nmt.data.reservoir import Reservoir
from nmt.data.splits import check_not_empty, load_split, split_files
from nmt.data.text import ParallelText
from nmt.data.dataset import TokenizedDataset, report_unk
from nmt.data.sampling import SubwordSampling
from nmt.data.streaming import StreamingBatches
from nmt.data.tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything the trainer reads: the tokenizer, training ids and raw dev/test text.

    Attributes:
        tokenizer: the sentencepiece model(s).
        train: training ids in memory, or None when streaming.
        valid, test: raw dev/test text (``test`` None unless asked for).
        train_stream: with ``data.streaming=true``, the training batches (``train`` is None then).
            The trainer uses it in place of ``BucketingSampler`` + ``make_batch``: set
            ``train_stream.max_tokens`` (done by :func:`prepare_data` from its ``max_tokens``),
            call ``set_epoch(epoch)`` before each epoch, iterate it (``iterate(keep=...)`` to let
            each data-parallel rank keep its own batch positions; ``batches_consumed - 1`` is the
            position of the batch just yielded), move each :class:`~nmt.data.batch.Batch` to the
            device, and save ``state_dict()`` in the checkpoint where the sampler's goes
            (``load_state_dict`` on resume). It has no ``len()`` (TypeError): the progress bar and
            the "skip the last partial update of an epoch" rule need another form; the largest
            batch for the memory preflight is not known in advance either.
        train_sampling: the pairs of each epoch when they change from epoch to epoch: with
            ``data.tokenizer.enable_sampling=true`` each epoch's sampled segmentation of the same
            pairs as ``train`` (which keeps the best one); with ``data.train`` the epoch's weighted
            mixture (:class:`nmt.data.mixture.CorpusMixture`; ``train`` is epoch 1's). The trainer
            batches ``train_sampling.dataset(epoch)`` instead of ``train``.
    """

    tokenizer: Tokenizer
    train: Optional[TokenizedDataset]
    valid: ParallelText
    test: ParallelText | None
    train_stream: Optional[StreamingBatches] = None
    train_sampling: Optional[SubwordSampling | CorpusMixture] = None


def tokenizer_cache_dir(cfg: DataConfig) -> Path:
    """Where trained sentencepiece models are cached (keyed by a hash of data and options)."""
    if cfg.tokenizer.cache_dir:
        return Path(cfg.tokenizer.cache_dir)
    return Path.home() / ".cache" / "nmt" / "spm"


def _cache_base(cfg: DataConfig) -> Path:
    return Path(cfg.tokenizer.cache_dir) if cfg.tokenizer.cache_dir else Path.home() / ".cache" / "nmt"


def ids_cache_dir(cfg: DataConfig) -> Path:
    """Where encoded training ids of file corpora are cached (``<tokenizer.cache_dir>/ids`` or
    ``~/.cache/nmt/ids``; :mod:`nmt.data.id_cache`)."""
    return _cache_base(cfg) / "ids"


def map_cache_dir(cfg: DataConfig) -> Path:
    """Where tokenised ``save_to_disk`` / in-memory Hugging Face datasets are cached
    (``<tokenizer.cache_dir>/hf_map`` or ``~/.cache/nmt/hf_map``); hub and data-file datasets use
    ``datasets``' own cache instead."""
    return _cache_base(cfg) / "hf_map"


def prepare_data(cfg: DataConfig, seed: int, with_test: bool = True, max_tokens: int = 4096) -> PreparedData:
    """Read and clean the splits, train (or load) sentencepiece on train, filter train by length.

    Args:
        seed: sentencepiece seed; also the streamed batches' shuffle seed.
        max_tokens: token budget of the streamed batches (``train.max_tokens``); unused otherwise.
    Raises:
        nmt.data.errors.DataError: bad or missing input (the message says where and what).
    """
    if cfg.streaming:
        valid = load_split(cfg, "valid")
        test = load_split(cfg, "test") if with_test else None
        return _prepare_stream(cfg, seed, max_tokens, valid, test)
    if cfg.train:
        return _prepare_mixture(cfg, seed, with_test)
    if not cfg.hf_name and not cfg.tokenizer.enable_sampling:
        return _prepare_cached(cfg, seed, with_test)
    hf_train = None
    if cfg.hf_name:  # opened and read once: its text trains sentencepiece, its dataset is tokenised below
        from nmt.data.hf import read_hf_split

        hf_train = read_hf_split(cfg, "train")
        train = check_not_empty(hf_train.text, "train", cfg.train_split)
    else:
        train = load_split(cfg, "train")
    valid = load_split(cfg, "valid")
    test = load_split(cfg, "test") if with_test else None
    where = cfg.hf_name or resolve_data_dir(cfg.corpus, cfg.dir)
    log.info("data %s %s-%s: train %d, valid %d, test %s pairs", where, cfg.src_lang, cfg.tgt_lang, len(train.src),
             len(valid.src), "-" if test is None else len(test.src))
    sample = _spm_sample(len(train.src), cfg.tokenizer.input_sentence_size, seed)
    tokenizer = train_tokenizer([train.src[i] for i in sample], [train.tgt[i] for i in sample], cfg.tokenizer,
                                tokenizer_cache_dir(cfg), seed=seed)
    if cfg.hf_name:
        from nmt.data.hf import load_tokenized_train

        src, tgt = load_tokenized_train(cfg, tokenizer, hf_train, map_cache_dir(cfg))
        dataset = TokenizedDataset(src, tgt)
        report_unk(dataset, train.name)
    else:
        dataset = TokenizedDataset.from_text(tokenizer, train.src, train.tgt, name=train.name)
    keep = filter_by_length(dataset.src_lengths, dataset.tgt_lengths, cfg.max_len, cfg.max_len_ratio,
                            cfg.max_drop_fraction, name=train.name,
                            line_numbers=train.line_numbers)
    if len(keep) < len(dataset):
        dataset = dataset.subset(keep)
    sampling = None
    if cfg.tokenizer.enable_sampling:
        tk = cfg.tokenizer
        sampling = SubwordSampling(tokenizer, [train.src[i] for i in keep], [train.tgt[i] for i in keep], dataset,
                                   tk.alpha, tk.nbest_size, seed, cfg.max_len, cfg.max_len_ratio)
    return PreparedData(tokenizer, dataset, valid, test, train_sampling=sampling)


def _spm_sample(n: int, size: int, seed: int) -> list[int]:
    """Indices of the pairs sentencepiece trains on: all (``size`` 0 or >= n), else a seeded
    reservoir sample in order, the same draw as a file corpus gets (:mod:`nmt.data.id_cache`)."""
    if size <= 0 or size >= n:
        return list(range(n))
    reservoir: Reservoir[int] = Reservoir(size, seed)
    for i in range(n):
        reservoir.offer(i)
    return reservoir.items()


def _prepare_cached(cfg: DataConfig, seed: int, with_test: bool) -> PreparedData:
    """A file corpus: training ids from the memory-mapped cache (:mod:`nmt.data.id_cache`), filtered by length."""
    name = f"{cfg.corpus}/{cfg.train_split}"
    src_path, tgt_path = split_files(cfg, "train")
    valid = load_split(cfg, "valid")  # small: read first, so a missing dev set fails before encoding
    test = load_split(cfg, "test") if with_test else None
    tokenizer, dataset, lines = cached_train_ids(cfg, src_path, tgt_path, seed, ids_cache_dir(cfg),
                                                 tokenizer_cache_dir(cfg), name)
    log.info("data %s %s-%s: train %d, valid %d, test %s pairs", src_path.parent, cfg.src_lang, cfg.tgt_lang,
             len(dataset), len(valid.src), "-" if test is None else len(test.src))
    report_unk(dataset, name)
    keep = filter_by_length(dataset.src_lengths, dataset.tgt_lengths, cfg.max_len, cfg.max_len_ratio,
                            cfg.max_drop_fraction, name=name, line_numbers=lines)
    if len(keep) < len(dataset):
        dataset = dataset.subset(keep)
    return PreparedData(tokenizer, dataset, valid, test)


def _prepare_mixture(cfg: DataConfig, seed: int, with_test: bool) -> PreparedData:
    """``data.train``: one tokenizer over a weighted sample of every corpus, each corpus's ids in its
    own cache, length-filtered, and every epoch's pairs mixed by weight (:class:`CorpusMixture`)."""
    corpora = []
    for entry in cfg.train:
        paths = [Path(entry.dir).expanduser() / f"{cfg.train_split}.{lang}" for lang in (cfg.src_lang, cfg.tgt_lang)]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"data.train: {', '.join(missing)} not found (each corpus needs "
                            f"{cfg.train_split}.{cfg.src_lang} and {cfg.train_split}.{cfg.tgt_lang})")
        corpora.append((paths[0], paths[1], entry.weight))
    valid = load_split(cfg, "valid")
    test = load_split(cfg, "test") if with_test else None
    digests = [(sha256_file(s), sha256_file(t)) for s, t, _ in corpora]
    tokenizer = corpus_tokenizer(cfg, corpora, digests, seed, ids_cache_dir(cfg), tokenizer_cache_dir(cfg),
                                 "data.train")
    parts, names = [], []
    for (src_path, tgt_path, _), digest in zip(corpora, digests):
        name = f"{src_path.parent}/{cfg.train_split}"
        ids, lines = cached_ids(cfg, src_path, tgt_path, digest, tokenizer, ids_cache_dir(cfg), name)
        report_unk(ids, name)
        keep = filter_by_length(ids.src_lengths, ids.tgt_lengths, cfg.max_len, cfg.max_len_ratio,
                                cfg.max_drop_fraction, name=name, line_numbers=lines)
        parts.append(ids.subset(keep) if len(keep) < len(ids) else ids)
        names.append(name)
    mixture = CorpusMixture(parts, [w for _, _, w in corpora], seed, names)
    log.info("data: %d training corpora mixed by weight, %d pairs an epoch; valid %d, test %s pairs", len(parts),
             sum(mixture.quotas), len(valid.src), "-" if test is None else len(test.src))
    return PreparedData(tokenizer, mixture.dataset(1), valid, test, train_sampling=mixture)


def _prepare_stream(cfg: DataConfig, seed: int, max_tokens: int, valid: ParallelText,
                    test: Optional[ParallelText]) -> PreparedData:
    """Train sentencepiece on the first ``stream_spm_sentences`` pairs of the stream (cleaned), check
    UNK rate and length-filter drop rate on them, and wrap the stream in :class:`StreamingBatches`."""
    from nmt.data.hf import clean_pairs, open_train_stream
    from nmt.data.text_stream import open_text_stream

    source, columns, label = open_train_stream(cfg) if cfg.hf_name else open_text_stream(cfg)
    n = cfg.stream_spm_sentences if cfg.max_train_pairs is None else min(cfg.stream_spm_sentences, cfg.max_train_pairs)
    if n <= 0:
        raise DataError(f"data.stream_spm_sentences must be positive, got {cfg.stream_spm_sentences}")
    pairs = [columns.pair(row) for row in source.take(n)]
    sample = clean_pairs([p[0] for p in pairs], [p[1] for p in pairs], list(range(1, len(pairs) + 1)),
                         f"{label} (first {len(pairs)} rows)", cfg.on_empty, True, cfg)
    if not len(sample):
        raise DataError(f"{label}: no usable training pairs in the first {len(pairs)} rows of the stream")
    log.info("data %s %s-%s (streamed): sentencepiece sample %d pairs, valid %d, test %s pairs", label,
             cfg.src_lang, cfg.tgt_lang, len(sample), len(valid.src), "-" if test is None else len(test.src))
    tokenizer = train_tokenizer(sample.src, sample.tgt, cfg.tokenizer, tokenizer_cache_dir(cfg), seed=seed)
    ids = TokenizedDataset.from_text(tokenizer, sample.src, sample.tgt, name=sample.name)
    filter_by_length(ids.src_lengths, ids.tgt_lengths, cfg.max_len, cfg.max_len_ratio, cfg.max_drop_fraction,
                     name=sample.name, line_numbers=sample.line_numbers)
    stream = StreamingBatches(source, columns, tokenizer, cfg, max_tokens=max_tokens, seed=seed, name=label)
    return PreparedData(tokenizer, None, valid, test, train_stream=stream)

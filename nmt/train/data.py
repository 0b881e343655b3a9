"""Data preparation for training: read splits, train/load the tokenizer, build the id datasets."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from nmt.config import DataConfig
from nmt.data.corpus import ParallelText, filter_by_length, load_split, resolve_data_dir
from nmt.data.dataset import TokenizedDataset
from nmt.data.tokenizer import Tokenizer, train_tokenizer

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Everything the trainer reads: the tokenizer, training ids and raw dev/test text."""

    tokenizer: Tokenizer
    train: TokenizedDataset
    valid: ParallelText
    test: ParallelText | None


def tokenizer_cache_dir(cfg: DataConfig) -> Path:
    """Where trained sentencepiece models are cached (keyed by a hash of data and options)."""
    if cfg.tokenizer.cache_dir:
        return Path(cfg.tokenizer.cache_dir)
    return Path.home() / ".cache" / "nmt" / "spm"


def prepare_data(cfg: DataConfig, seed: int, with_test: bool = True) -> PreparedData:
    """Read and clean the splits, train (or load) sentencepiece on train, filter train by length.

    Raises:
        nmt.data.corpus.DataError: bad or missing input (the message says where and what).
    """
    train = load_split(cfg, "train")
    valid = load_split(cfg, "valid")
    test = load_split(cfg, "test") if with_test else None
    where = cfg.hf_name or resolve_data_dir(cfg.corpus, cfg.dir)
    log.info("data %s %s-%s: train %d, valid %d, test %s pairs", where, cfg.src_lang, cfg.tgt_lang, len(train.src),
             len(valid.src), "-" if test is None else len(test.src))
    tokenizer = train_tokenizer(train.src, train.tgt, cfg.tokenizer, tokenizer_cache_dir(cfg), seed=seed)
    dataset = TokenizedDataset.from_text(tokenizer, train.src, train.tgt)
    keep = filter_by_length(dataset.src_lengths, dataset.tgt_lengths, cfg.max_len, cfg.max_len_ratio,
                            cfg.max_drop_fraction, name=train.name,
                            line_numbers=train.line_numbers)
    if len(keep) < len(dataset):
        dataset = dataset.subset(keep)
    return PreparedData(tokenizer, dataset, valid, test)

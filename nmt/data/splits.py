"""Where a split comes from: files in the corpus folder (downloaded when missing and known)
or a Hugging Face dataset; read and cleaned by :mod:`nmt.data.text` either way."""
from __future__ import annotations

from pathlib import Path

from nmt.config import DataConfig, Policy
from nmt.data.download import ensure_corpus, resolve_data_dir
from nmt.data.errors import DataError
from nmt.data.text import ParallelText, read_parallel


def load_split(cfg: DataConfig, split: str) -> ParallelText:
    """Load one split (``train``/``valid``/``test`` or a literal name like ``test2016``).

    Files ``{dir}/{split}.{src_lang}`` and ``.{tgt_lang}``; missing files go through
    :func:`nmt.data.download.ensure_corpus`. With ``cfg.hf_name`` set, the split comes from
    :func:`nmt.data.hf.load_hf_split`. The training split drops empty pairs per ``cfg.on_empty``; other
    splits keep every line unchanged in count (R23). ``max_*_pairs`` take the first N.

    Raises:
        DataError: missing corpus, bad input (see :func:`read_parallel`), a training split
            with no usable pair, or an empty split.
    """
    role, name = cfg.role_of(split)
    if cfg.hf_name:
        from nmt.data.hf import load_hf_split  # datasets is imported only for hub data

        text = load_hf_split(cfg, split)
    else:
        src_path, tgt_path = split_files(cfg, split)
        text = read_parallel(src_path, tgt_path, on_empty=cfg.on_empty if role == "train" else Policy.skip,
                             on_invalid_utf8=cfg.on_invalid_utf8, max_pairs=cfg.max_pairs(role),
                             drop_empty=role == "train", name=f"{cfg.corpus}/{name}")
    return check_not_empty(text, role, name)


def split_files(cfg: DataConfig, split: str) -> tuple[Path, Path]:
    """The two files of a split, ``{dir}/{name}.{src_lang}`` and ``.{tgt_lang}``, fetched through
    :func:`nmt.data.download.ensure_corpus` when missing.

    Raises:
        DataError: a missing corpus that cannot be fetched (the message says which files to put where).
    """
    name = cfg.role_of(split)[1]
    folder = resolve_data_dir(cfg.corpus, cfg.dir)
    src_path, tgt_path = folder / f"{name}.{cfg.src_lang}", folder / f"{name}.{cfg.tgt_lang}"
    if not (src_path.is_file() and tgt_path.is_file()):
        ensure_corpus(cfg, splits=[name])
    return src_path, tgt_path


def check_not_empty(text: ParallelText, role, name: str) -> ParallelText:
    """``text``, unless it has no pair: a training split without usable pairs, or an empty dev or
    test split, fails now rather than after an epoch (a ZeroDivisionError at validation).

    Raises:
        DataError: naming the split.
    """
    if role == "train" and len(text) == 0:
        raise DataError(f"{text.name}: no usable training pairs ({text.stats})")
    if len(text) == 0:
        raise DataError(f"{text.name}: the {role or name} split {name!r} is empty; validation and scoring need "
                        "at least one sentence pair")
    return text

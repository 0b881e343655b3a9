"""Parallel text from Hugging Face ``datasets``: a hub dataset or a ``save_to_disk`` folder.

Two layouts: nested ``{translation: {lang: text}}`` (wmt14, iwslt2017) and flat columns
(bentrevett/multi30k). Cleaning is the same as for files (:mod:`nmt.data.corpus`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from nmt.config import DataConfig, Policy
from nmt.data.corpus import (DataError, ParallelText, TextLines, _make_parallel, _max_pairs, _normalise, _report,
                             split_role)


def _open_hf(cfg: DataConfig) -> dict:
    """``cfg.hf_name`` as ``{split name: datasets.Dataset}`` (local ``save_to_disk`` folder
    or a hub dataset). Raises DataError when it cannot be loaded."""
    import datasets

    try:
        if Path(cfg.hf_name).is_dir():
            obj = datasets.load_from_disk(cfg.hf_name)
        else:
            obj = datasets.load_dataset(cfg.hf_name, cfg.hf_config)
    except Exception as err:  # datasets raises many types (network, missing files, ...)
        raise DataError(f"cannot load Hugging Face dataset {cfg.hf_name!r} (config "
                        f"{cfg.hf_config!r}): {type(err).__name__}: {err}") from err
    if isinstance(obj, datasets.Dataset):
        return {str(obj.split) if obj.split is not None else "train": obj}
    return dict(obj)


def _hf_split_name(cfg: DataConfig, role: Optional[str], split: str, available: list[str]) -> str:
    """The dataset's split name for a role (with ``validation``/``test`` fallbacks)."""
    if role == "train":
        tried = [cfg.train_split]
    elif role == "valid":
        tried = [cfg.hf_valid_split] if cfg.hf_valid_split else [cfg.valid_split, "validation"]
    elif role == "test":
        tried = [cfg.hf_test_split] if cfg.hf_test_split else [cfg.test_split, "test"]
    else:
        tried = [split]
    for name in tried:
        if name in available:
            return name
    key = {"train": "train_split", "valid": "hf_valid_split", "test": "hf_test_split"}.get(role or "")
    hint = f"; set data.{key}=<name>" if key else ""
    raise DataError(f"Hugging Face dataset {cfg.hf_name!r} has no split for {split!r} (tried "
                    f"{tried}; available: {available}){hint}")


def _hf_columns(ds, cfg: DataConfig, label: str) -> tuple[list, list]:
    """Source and target texts of a split, nested (``translation``) or flat layout."""
    cols = list(ds.column_names)
    if not cfg.hf_src_column and not cfg.hf_tgt_column and cfg.hf_translation_column in cols:
        rows = list(ds[cfg.hf_translation_column])
        langs = sorted(rows[0]) if rows and isinstance(rows[0], dict) else []
        for lang in (cfg.src_lang, cfg.tgt_lang):
            if rows and lang not in langs:
                raise DataError(f"{label}: column {cfg.hf_translation_column!r} has no language "
                                f"{lang!r} (row 1 has {langs}); set data.src_lang/tgt_lang")
        return [r.get(cfg.src_lang) for r in rows], [r.get(cfg.tgt_lang) for r in rows]
    src_col = cfg.hf_src_column or cfg.src_lang
    tgt_col = cfg.hf_tgt_column or cfg.tgt_lang
    for col in (src_col, tgt_col):
        if col not in cols:
            raise DataError(f"{label}: no column {col!r} (columns: {cols}); set "
                            "data.hf_src_column/hf_tgt_column or data.hf_translation_column")
    return list(ds[src_col]), list(ds[tgt_col])


def load_hf_split(cfg: DataConfig, split_name: str) -> ParallelText:
    """Load a split from Hugging Face ``datasets`` (``cfg.hf_name``: hub id or local folder).

    ``split_name`` is a role (``train``/``valid``/``test``) or a literal split name. Layouts:
    nested ``{cfg.hf_translation_column: {lang: text}}`` or flat columns
    (``cfg.hf_src_column``/``hf_tgt_column``, default the language codes). ``line_numbers``
    are 1-based row numbers. Cleaning is the same as for files.

    Raises:
        DataError: dataset, split or column not found; empty side under ``on_empty=error``.
    """
    role, _ = split_role(cfg, split_name)
    source = _open_hf(cfg)
    hub_split = _hf_split_name(cfg, role, split_name, list(source))
    ds = source[hub_split]
    limit = _max_pairs(cfg, role)
    if limit is not None:
        ds = ds.select(range(min(limit, len(ds))))
    label = f"{cfg.hf_name}[{hub_split}]"
    src_raw, tgt_raw = _hf_columns(ds, cfg, label)
    as_text = lambda xs: ["" if x is None else str(x) for x in xs]  # noqa: E731
    src = _normalise(as_text(src_raw), f"{label}.{cfg.src_lang}", TextLines())
    tgt = _normalise(as_text(tgt_raw), f"{label}.{cfg.tgt_lang}", TextLines())
    text = _make_parallel(src, tgt, list(range(1, len(src) + 1)),
                          (f"{label}.{cfg.src_lang}", f"{label}.{cfg.tgt_lang}"),
                          cfg.on_empty if role == "train" else Policy.skip, role == "train", label)
    _report(text)
    return text

"""Parallel text from Hugging Face ``datasets``: hub datasets, ``save_to_disk`` folders and local
JSON Lines / CSV / Parquet files (``hf_name=json|csv|parquet`` with ``hf_data_files``).

Two layouts: nested ``{translation: {lang: text}}`` (wmt14, iwslt2017) and flat columns
(bentrevett/multi30k). Cleaning is the same as for files (:mod:`nmt.data.text`). With
``data.streaming=true`` splits are ``datasets.IterableDataset`` (read row by row; the training
split goes to :class:`nmt.data.streaming.StreamingBatches`). Tokenisation of a whole split runs
through ``Dataset.map`` with a cache keyed by the sentencepiece model (:func:`tokenize_split`).
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from nmt.config import DataConfig, Policy
from nmt.data.errors import DataError
from nmt.data.text import ParallelText, TextLines, clean, make_parallel, normalise, report

logger = logging.getLogger(__name__)

_SAVED_MARKERS = ("dataset_dict.json", "state.json")  # written by save_to_disk
_TOKENIZE_VERSION = "nmt-tokenize-1"  # bump when the cleaning or the id layout changes


def is_saved_folder(name: Optional[str]) -> bool:
    """True when ``name`` is a folder written by ``Dataset(Dict).save_to_disk``."""
    return bool(name) and any((Path(name) / m).is_file() for m in _SAVED_MARKERS)


def open_hf(cfg: DataConfig, streaming: bool = False) -> dict:
    """``cfg.hf_name`` as ``{split name: Dataset}`` (``IterableDataset`` when ``streaming``).

    A ``save_to_disk`` folder is loaded with ``load_from_disk`` (streamed through
    ``to_iterable_dataset`` with up to 64 shards, so shard order can change per epoch); anything
    else with ``load_dataset(hf_name, hf_config, data_files=<hf_data_files set>, revision=hf_revision,
    cache_dir=hf_cache_dir, streaming=...)``, which covers hub ids, folders of data files and the
    ``json``/``csv``/``parquet`` builders.

    Raises:
        DataError: the dataset cannot be loaded (the message names it and says why).
    """
    import datasets

    files = cfg.hf_data_files
    data_files = {k: v for k, v in (files.items() if isinstance(files, Mapping) else asdict(files).items())
                  if v} or None
    try:
        if is_saved_folder(cfg.hf_name):
            obj = datasets.load_from_disk(cfg.hf_name)
            splits = {str(obj.split) if obj.split is not None else "train": obj} \
                if isinstance(obj, datasets.Dataset) else dict(obj)
            if streaming:
                splits = {k: v.to_iterable_dataset(num_shards=max(1, min(64, len(v)))) for k, v in splits.items()}
            return splits
        # no dataset script ever runs (datasets >= 3 refuses them without trust_remote_code; R30)
        obj = datasets.load_dataset(cfg.hf_name, cfg.hf_config, data_files=data_files,
                                    revision=cfg.hf_revision, cache_dir=cfg.hf_cache_dir, streaming=streaming,
                                    trust_remote_code=False)
    except Exception as err:  # datasets raises many types (network, missing files, ...)
        hint = ("; give the files with data.hf_data_files={train: ..., validation: ...}"
                if cfg.hf_name in ("json", "csv", "parquet", "text") and not data_files else "")
        raise DataError(f"cannot load Hugging Face dataset {cfg.hf_name!r} (config {cfg.hf_config!r}, data_files "
                        f"{data_files}): {type(err).__name__}: {err}{hint}") from err
    if isinstance(obj, (datasets.Dataset, datasets.IterableDataset)):
        return {str(obj.split) if obj.split is not None else "train": obj}
    return dict(obj)


def hf_split_name(cfg: DataConfig, role: Optional[str], split: str, available: list[str]) -> str:
    """The dataset's split name for a role (with ``validation``/``test`` fallbacks).

    Raises:
        DataError: no such split (the message lists the available ones and the key to set).
    """
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


@dataclass(frozen=True)
class TextColumns:
    """Where a pair's texts are: ``nested`` column ``{src: text, tgt: text}`` or flat columns.

    Attributes:
        nested: the nested column (e.g. ``"translation"``), or None for the flat layout.
        src, tgt: language keys inside ``nested``, or column names (flat layout).
    """

    nested: Optional[str]
    src: str
    tgt: str

    @classmethod
    def resolve(cls, cfg: DataConfig, column_names: Sequence[str], label: str,
                first: Optional[Mapping[str, Any]] = None) -> "TextColumns":
        """Columns from ``cfg`` (``hf_src_column``/``hf_tgt_column``, else ``hf_translation_column``
        when present, else columns named after the languages); ``first`` (a row) checks that a
        nested column has both languages.

        Raises:
            DataError: a column or language is missing (names the split, the columns and the key to set).
        """
        cols = list(column_names)
        if not cfg.hf_src_column and not cfg.hf_tgt_column and cfg.hf_translation_column in cols:
            value = None if first is None else first.get(cfg.hf_translation_column)
            langs = sorted(value) if isinstance(value, Mapping) else []
            for lang in (cfg.src_lang, cfg.tgt_lang):
                if first is not None and lang not in langs:
                    raise DataError(f"{label}: column {cfg.hf_translation_column!r} has no language "
                                    f"{lang!r} (row 1 has {langs}); set data.src_lang/tgt_lang")
            return cls(cfg.hf_translation_column, cfg.src_lang, cfg.tgt_lang)
        src_col, tgt_col = cfg.hf_src_column or cfg.src_lang, cfg.hf_tgt_column or cfg.tgt_lang
        for col in (src_col, tgt_col):
            if col not in cols:
                raise DataError(f"{label}: no column {col!r} (columns: {cols}); set "
                                "data.hf_src_column/hf_tgt_column or data.hf_translation_column")
        return cls(None, src_col, tgt_col)

    def texts(self, batch: Mapping[str, list]) -> tuple[list[str], list[str]]:
        """Raw source and target texts of a column batch ``{column: [values]}`` (None -> ``""``)."""
        if self.nested is None:
            return _as_text(batch[self.src]), _as_text(batch[self.tgt])
        rows = [r if isinstance(r, Mapping) else {} for r in batch[self.nested]]
        return _as_text([r.get(self.src) for r in rows]), _as_text([r.get(self.tgt) for r in rows])

    def missing(self, batch: Mapping[str, list]) -> tuple[list[int], list[int]]:
        """0-based rows of a column batch whose source, and whose target, text is absent (None, or
        a nested row without that language): :meth:`texts` gives ``""`` for them."""
        if self.nested is None:
            src, tgt = batch[self.src], batch[self.tgt]
        else:
            rows = [r if isinstance(r, Mapping) else {} for r in batch[self.nested]]
            src, tgt = [r.get(self.src) for r in rows], [r.get(self.tgt) for r in rows]
        return [i for i, v in enumerate(src) if v is None], [i for i, v in enumerate(tgt) if v is None]

    def pair(self, row: Mapping[str, Any]) -> tuple[str, str]:
        """Raw ``(source, target)`` of one row."""
        (src,), (tgt,) = self.texts({k: [v] for k, v in row.items()})
        return src, tgt


def _as_text(values: Sequence[Any]) -> list[str]:
    return ["" if v is None else str(v) for v in values]


def columns_of(ds, cfg: DataConfig, label: str) -> TextColumns:
    """:class:`TextColumns` of a ``Dataset`` or ``IterableDataset`` (its first row is read)."""
    import datasets

    if isinstance(ds, datasets.IterableDataset):
        first = next(iter(ds.take(1)), None)
    else:
        first = ds[0] if len(ds) else None
    names = ds.column_names or (list(first) if first else [])
    return TextColumns.resolve(cfg, names, label, first)


def column_batch(ds, columns: TextColumns) -> dict[str, list]:
    """The text columns of a whole ``Dataset`` as ``{column: [values]}``."""
    names = [columns.nested] if columns.nested else [columns.src, columns.tgt]
    return {c: list(ds[c]) for c in names}


def clean_pairs(src_raw: Sequence[str], tgt_raw: Sequence[str], line_numbers: list[int], label: str,
                on_empty: Policy | str, train: bool, cfg: DataConfig) -> ParallelText:
    """Normalise both sides (R26) and, for training (``train``), drop pairs with an empty side
    under ``on_empty`` (R21) -- the cleaning :func:`nmt.data.text.read_parallel` applies to files.

    Raises:
        DataError: an empty side under ``on_empty=error`` (names the row).
    """
    names = (f"{label}.{cfg.src_lang}", f"{label}.{cfg.tgt_lang}")
    src = normalise(src_raw, names[0], TextLines(), line_numbers)
    tgt = normalise(tgt_raw, names[1], TextLines(), line_numbers)
    return make_parallel(src, tgt, line_numbers, names, on_empty if train else Policy.skip, train, label)


def _split(cfg: DataConfig, split_name: str, streaming: bool):
    """``(role, split label, dataset limited to max_*_pairs)`` for a role or literal split name."""
    role, _ = cfg.role_of(split_name)
    source = open_hf(cfg, streaming)
    name = hf_split_name(cfg, role, split_name, list(source))
    ds, limit = source[name], cfg.max_pairs(role)
    if limit is not None:
        ds = ds.take(limit) if streaming else ds.select(range(min(limit, len(ds))))
    return role, f"{cfg.hf_name}[{name}]", ds


@dataclass
class HFSplit:
    """A split read from ``datasets``: its cleaned text and the dataset it came from (which
    :func:`load_tokenized_train` tokenises without opening the dataset again)."""

    text: ParallelText
    dataset: Any
    columns: "TextColumns"
    label: str


def load_hf_split(cfg: DataConfig, split_name: str) -> ParallelText:
    """The cleaned text of :func:`read_hf_split`."""
    return read_hf_split(cfg, split_name).text


def read_hf_split(cfg: DataConfig, split_name: str) -> HFSplit:
    """Read a split from Hugging Face ``datasets`` (``cfg.hf_name``: hub id, folder or builder).

    ``split_name`` is a role (``train``/``valid``/``test``) or a literal split name. Layouts:
    nested ``{cfg.hf_translation_column: {lang: text}}`` or flat columns
    (``cfg.hf_src_column``/``hf_tgt_column``, default the language codes). ``line_numbers``
    are 1-based row numbers. Cleaning is the same as for files. With ``cfg.streaming`` the split
    is read row by row (dev/test sets are small; the training split is streamed by
    :func:`nmt.train.data.prepare_data` instead of coming here).

    Raises:
        DataError: dataset, split or column not found; empty side under ``on_empty=error``.
    """
    role, label, ds = _split(cfg, split_name, cfg.streaming)
    columns = columns_of(ds, cfg, label)
    if cfg.streaming:
        rows = list(ds)
        batch = {k: [row.get(k) for row in rows] for k in ([columns.nested] if columns.nested else
                                                           [columns.src, columns.tgt])}
    else:
        batch = column_batch(ds, columns)
    src_raw, tgt_raw = columns.texts(batch)
    for lang, rows_missing in zip((cfg.src_lang, cfg.tgt_lang), columns.missing(batch)):
        if rows_missing:
            logger.warning("%s: %d rows have no %r text (first: row %d); that side is empty%s", label,
                           len(rows_missing), lang, rows_missing[0] + 1,
                           "" if role == "train" else ", and so is the reference or source scored against it")
    text = clean_pairs(src_raw, tgt_raw, list(range(1, len(src_raw) + 1)), label, cfg.on_empty, role == "train", cfg)
    report(text)
    return HFSplit(text, ds, columns, label)


def open_train_stream(cfg: DataConfig):
    """``(IterableDataset, TextColumns, label)`` of the training split for streaming (all of it:
    ``max_train_pairs`` is applied by the stream reader, so shards stay available)."""
    role, _ = cfg.role_of("train")
    source = open_hf(cfg, streaming=True)
    name = hf_split_name(cfg, role, "train", list(source))
    label = f"{cfg.hf_name}[{name}]"
    return source[name], columns_of(source[name], cfg, label), label


# --- tokenisation through Dataset.map, cached by fingerprint ----------------------------------------
class _EncodeColumns:
    """Batched ``Dataset.map`` function: text columns -> ``src_ids``/``tgt_ids`` (no BOS/EOS), after the
    same cleaning as :func:`clean_pairs`. Picklable (holds model bytes) for ``num_proc > 1``."""

    def __init__(self, models: dict[str, bytes], columns: TextColumns) -> None:
        self.models, self.columns, self._tok = models, columns, None

    def __getstate__(self) -> dict:
        return {"models": self.models, "columns": self.columns, "_tok": None}

    def __call__(self, batch: Mapping[str, list]) -> dict[str, list]:
        from nmt.data.tokenizer import Tokenizer

        if self._tok is None:
            self._tok = Tokenizer(self.models, num_threads=1)
        src, tgt = self.columns.texts(batch)
        return {"src_ids": self._tok.encode_src([clean(x) for x in src]),
                "tgt_ids": self._tok.encode_tgt([clean(x) for x in tgt])}


def map_fingerprint(ds_fingerprint: str, tokenizer_sha256: Mapping[str, str], columns: TextColumns) -> str:
    """The ``new_fingerprint`` of the tokenising ``map``: sha256 over the input dataset's
    fingerprint, every sentencepiece model's sha256, the columns and :data:`_TOKENIZE_VERSION`
    (so a changed model or layout never reuses a stale cache). 40 hex characters."""
    meta = {"dataset": ds_fingerprint, "spm": dict(sorted(tokenizer_sha256.items())),
            "columns": asdict(columns), "version": _TOKENIZE_VERSION}
    return hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:40]


def _ragged(column) -> list[np.ndarray]:
    """A pyarrow list column -> one int32 array per row (views into one flat, writable copy)."""
    column = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    offsets = column.offsets.to_numpy()
    values = np.array(column.flatten().to_numpy(zero_copy_only=False), dtype=np.int32)  # writable, for torch
    return np.split(values, offsets[1:-1] - offsets[0]) if len(offsets) > 1 else []


def tokenize_split(ds, columns: TextColumns, tokenizer, num_proc: int = 1,
                   cache_dir: Optional[Path | str] = None) -> tuple[list[np.ndarray], list[np.ndarray], Any]:
    """Encode every row of a ``datasets.Dataset`` with ``Dataset.map(batched=True, num_proc=...)``.

    The result is cached by ``datasets`` under :func:`map_fingerprint`: a second call with the same
    dataset and model loads it instead of encoding again, a different model gets a new cache.
    ``cache_dir``: where the cache file goes (``<cache_dir>/tokenized-<fingerprint>.arrow``); None
    uses ``datasets``' own cache next to the dataset's files (hub and data-file datasets). A
    dataset without cache files (in memory) is not cached unless ``cache_dir`` is given.

    Returns:
        ``(src_ids, tgt_ids, mapped)``: per row an int32 array without BOS/EOS (rows in order,
        none dropped) and the mapped ``Dataset`` (``mapped.cache_files`` names the cache).
    """
    import datasets

    fingerprint = map_fingerprint(ds._fingerprint, tokenizer.sha256(), columns)
    cache_file = None
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
        cache_file = str(Path(cache_dir) / f"tokenized-{fingerprint}.arrow")
    features = datasets.Features({"src_ids": datasets.Sequence(datasets.Value("int32")),
                                  "tgt_ids": datasets.Sequence(datasets.Value("int32"))})
    mapped = ds.map(_EncodeColumns(tokenizer.to_bytes(), columns), batched=True, batch_size=1000,
                    num_proc=num_proc if num_proc > 1 else None, remove_columns=ds.column_names,
                    features=features, new_fingerprint=fingerprint, cache_file_name=cache_file,
                    desc="sentencepiece")
    table = mapped.with_format("arrow")[:]
    return _ragged(table.column("src_ids")), _ragged(table.column("tgt_ids")), mapped


def load_tokenized_train(cfg: DataConfig, tokenizer, split: HFSplit, cache_dir: Optional[Path]):
    """Ids of the (non-streamed) training split ``split`` (read by :func:`read_hf_split`) via
    :func:`tokenize_split`, at the rows that survived cleaning, in order. ``cache_dir`` is used
    for ``save_to_disk`` folders and in-memory datasets only; hub and data-file datasets use
    ``datasets``' cache.

    Returns:
        ``(src_ids, tgt_ids)``: lists of int32 arrays, one per kept row.
    """
    ds, label = split.dataset, split.label
    own = is_saved_folder(cfg.hf_name) or not ds.cache_files
    src, tgt, mapped = tokenize_split(ds, split.columns, tokenizer, cfg.num_proc, cache_dir if own else None)
    logger.info("%s: sentencepiece ids in %s", label, [f["filename"] for f in mapped.cache_files] or "memory")
    rows = [n - 1 for n in split.text.line_numbers]
    return [src[i] for i in rows], [tgt[i] for i in rows]

"""Writing the Attention dashboard's summaries (:mod:`nmt.tensorboard.records`) into a
TensorBoard event file: the trainer at every validation, ``nmt-translate attention.logdir=``
and ``nmt-align logdir=``.

A record is built from :class:`~nmt.attention_maps.AttentionMaps` (every layer and head of one
teacher-forced pass over the search's own output, so the matrices are what the search saw)
and written as float16 tensors plus a JSON ``meta`` part.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from nmt.alignment import parse_pharaoh, word_spans
from nmt.attention_maps import AttentionMaps
from nmt.tensorboard.records import PLUGIN_NAME, Record, content, tag


@dataclass
class Probe:
    """A sentence whose attention is logged: its source, and optionally a reference and gold links.

    Attributes:
        gold: ``(sure, possible)`` word links (source i, target j) of the reference, or None.
    """

    source: str
    reference: str = ""
    gold: Optional[tuple[set, set]] = None


def read_probe(path: str | Path) -> list[Probe]:
    """A probe file: one sentence per line, ``source[<TAB>reference[<TAB>gold Pharaoh links]]``
    (``train.attention.probe=``).

    Raises:
        nmt.data.errors.DataError: unreadable, not UTF-8, an empty source, or bad links (file and line).
    """
    from nmt.data.errors import DataError
    from nmt.data.text import read_lines

    probes = []
    for n, line in enumerate(read_lines(path), 1):
        fields = line.split("\t")
        if not fields[0].strip() or len(fields) > 3:
            raise DataError(f"{path} line {n}: expected source[<TAB>reference[<TAB>gold links]], got {line[:80]!r}")
        gold = None
        if len(fields) == 3:
            try:
                gold = parse_pharaoh(fields[2], where=f"{path} line {n}")
            except ValueError as err:
                raise DataError(str(err)) from None
        probes.append(Probe(fields[0].strip(), fields[1].strip() if len(fields) > 1 else "", gold))
    if not probes:
        raise DataError(f"{path}: no probe sentences")
    return probes


def _stack(layers: Sequence[torch.Tensor]) -> np.ndarray:
    """Per-layer ``(H, X, Y)`` tensors -> ``(L, H, X, Y)`` float16."""
    return torch.stack([w.float() for w in layers]).numpy().astype(np.float16)


def sentence_chrf(hypothesis: str, reference: str) -> Optional[float]:
    """sacrebleu's sentence chrF (Popović 2015), or None without a reference."""
    if not reference:
        return None
    from sacrebleu.metrics import CHRF

    return round(float(CHRF().sentence_score(hypothesis, [reference]).score), 2)


def make_record(maps: AttentionMaps, sentence: int, step: int, source: str, hypothesis: str, reference: str = "",
                score: Optional[float] = None, search: Optional[dict] = None, arch: Optional[str] = None,
                gold: Optional[tuple[set, set]] = None) -> Record:
    """A :class:`Record` of one sentence from its attention maps (``arch`` default: ``rnn`` when
    the maps have no self-attention, else ``transformer``).

    Raises:
        ValueError: the maps' shapes do not match their labels.
    """
    matrices = {"cross": _stack(maps.cross)}
    if maps.encoder_self:
        matrices["encoder_self"] = _stack(maps.encoder_self)
    if maps.decoder_self:
        matrices["decoder_self"] = _stack(maps.decoder_self)
    record = Record(
        sentence=sentence, step=step, source=source, reference=reference, hypothesis=hypothesis,
        src_pieces=list(maps.src_pieces), tgt_pieces=list(maps.tgt_pieces),
        src_words=word_spans(maps.src_pieces), tgt_words=word_spans(maps.tgt_pieces), matrices=matrices,
        score=None if score is None else round(float(score), 4), search=dict(search or {}),
        arch=arch or ("transformer" if maps.encoder_self else "rnn"),
        alignment_layer=maps.alignment_layer,
        positions=None if maps.positions is None else [round(float(p), 3) for p in maps.positions],
        window_size=maps.window_size,
        gold=None if gold is None else {"sure": sorted(map(list, gold[0])), "possible": sorted(map(list, gold[1]))},
        chrf=sentence_chrf(hypothesis, reference))
    record.check()
    return record


def summary(record: Record):
    """The ``tensorboard`` ``Summary`` proto of one record (its parts as tensor summaries)."""
    from tensorboard.compat.proto.summary_pb2 import DATA_CLASS_TENSOR, Summary, SummaryMetadata
    from tensorboard.util import tensor_util

    values = []
    parts = {"meta": np.array(json.dumps(record.meta(), ensure_ascii=False).encode("utf-8"), dtype=object),
             **record.matrices}
    for part, array in parts.items():
        metadata = SummaryMetadata(plugin_data=SummaryMetadata.PluginData(plugin_name=PLUGIN_NAME,
                                                                          content=content(part, record)),
                                   data_class=DATA_CLASS_TENSOR)
        tensor = tensor_util.make_tensor_proto(array) if part == "meta" else _half_proto(array)
        values.append(Summary.Value(tag=tag(record.sentence, record.step, part), metadata=metadata, tensor=tensor))
    return Summary(value=values)


def _half_proto(array: np.ndarray):
    """A float16 ``TensorProto`` holding the raw little-endian bytes (2 bytes per value;
    ``make_tensor_proto`` would store varint-coded ``half_val``)."""
    from tensorboard.compat.proto import tensor_shape_pb2, types_pb2
    from tensorboard.compat.proto.tensor_pb2 import TensorProto

    shape = tensor_shape_pb2.TensorShapeProto(dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in array.shape])
    return TensorProto(dtype=types_pb2.DT_HALF, tensor_shape=shape,
                       tensor_content=np.ascontiguousarray(array, dtype="<f2").tobytes())


def write_event_file(logdir: str, records: Sequence[Record]) -> int:
    """Write ``records`` into a new event file under ``logdir`` (``nmt-translate attention.logdir=``,
    ``nmt-align logdir=``); returns the bytes written, as :func:`write_records`."""
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(logdir)
    try:
        return write_records(writer, records)
    finally:
        writer.close()


def write_records(writer, records: Sequence[Record]) -> int:
    """Append ``records`` to a ``torch.utils.tensorboard.SummaryWriter``'s event file; returns
    the bytes of the serialized summaries (what the event file grows by, before framing)."""
    size = 0
    file_writer = writer._get_file_writer()  # the public API has no tensor summaries with plugin metadata
    for record in records:
        proto = summary(record)
        size += proto.ByteSize()
        file_writer.add_summary(proto, record.step)
    return size

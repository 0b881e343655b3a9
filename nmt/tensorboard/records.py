"""The attention summaries' format, shared by the writer (training, ``nmt-translate``,
``nmt-align``) and the TensorBoard plugin. numpy and the standard library only.

One *record* is one probe sentence at one step. It is written as tensor summaries whose
metadata names this plugin, one tag per part, each tag written once::

    nmt_attention/<sentence:04d>/<step:010d>/meta          string scalar: JSON (tokens, texts, ...)
    nmt_attention/<sentence:04d>/<step:010d>/cross         float16 (layers, heads, T, S)
    nmt_attention/<sentence:04d>/<step:010d>/encoder_self  float16 (layers, heads, S, S)  Transformer
    nmt_attention/<sentence:04d>/<step:010d>/decoder_self  float16 (layers, heads, T, T)  Transformer

TensorBoard keeps only a sample of the values of one tag (10 for tensors by default,
``--samples_per_plugin``); a tag per step keeps every logged step and sentence reachable. Each
tag's plugin content (small JSON) repeats what the plugin needs to list sentences and steps
without reading any tensor: ``{"v", "part", "sentence", "step"}`` and, for ``meta``, the source
text, its length and the sentence chrF.

Rows are target pieces (the output tokens and ``</s>``; row t is the step that produced token
t), columns source pieces (and ``</s>``); every row is a distribution.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

import numpy as np

PLUGIN_NAME = "nmt_attention"
VERSION = 1
KINDS = ("cross", "encoder_self", "decoder_self")
PARTS = ("meta", *KINDS)
_TAG = re.compile(rf"^{PLUGIN_NAME}/(\d{{4,}})/(\d{{10,}})/({'|'.join(PARTS)})$")


def tag(sentence: int, step: int, part: str) -> str:
    """The tag of one part of a record.

    Raises:
        ValueError: an unknown part or a negative sentence or step.
    """
    if part not in PARTS or sentence < 0 or step < 0:
        raise ValueError(f"no record part {part!r} for sentence {sentence}, step {step}")
    return f"{PLUGIN_NAME}/{sentence:04d}/{step:010d}/{part}"


def parse_tag(name: str) -> Optional[tuple[int, int, str]]:
    """``(sentence, step, part)`` of a record tag, or None for any other tag."""
    found = _TAG.match(name)
    return None if found is None else (int(found.group(1)), int(found.group(2)), found.group(3))


@dataclass
class Record:
    """One probe sentence at one step, as the plugin shows it.

    Attributes:
        sentence: 0-based number of the probe sentence (input line - 1 for ``nmt-translate``).
        step: training update (0 outside training).
        source, reference, hypothesis: texts ('' when there is no reference).
        src_pieces: S column labels (source pieces and ``</s>``); tgt_pieces: T row labels.
        src_words, tgt_words: word boundaries: each word's piece indices (sentencepiece's ``▁``).
        matrices: ``{"cross": (L, H, T, S), "encoder_self": (L, H, S, S), "decoder_self":
            (L, H, T, T)}`` float arrays (self-attention only for the Transformer).
        score: the search's score of the hypothesis (log P / lp, Wu et al. 2016 eq. 14), None when forced.
        search: how the hypothesis was made: ``{"beam_size", "length_penalty"}`` or ``{"forced": True}``.
        arch: ``transformer`` or ``rnn``; alignment_layer: the layer whose head mean is the model's alignment.
        positions: local attention's predicted centres p_t ``(T,)``; window_size: its D (None: global).
        gold: ``{"sure": [[i, j], ...], "possible": [...]}`` word links (source i, target j), or None.
        chrf: sentence chrF of the hypothesis against the reference (None without a reference).
    """

    sentence: int
    step: int
    source: str
    reference: str
    hypothesis: str
    src_pieces: list[str]
    tgt_pieces: list[str]
    src_words: list[list[int]]
    tgt_words: list[list[int]]
    matrices: dict[str, np.ndarray] = field(default_factory=dict)
    score: Optional[float] = None
    search: dict = field(default_factory=dict)
    arch: str = "transformer"
    alignment_layer: int = -1
    positions: Optional[list[float]] = None
    window_size: Optional[int] = None
    gold: Optional[dict] = None
    chrf: Optional[float] = None

    def meta(self) -> dict:
        """Everything but the matrices, with their shapes (the ``meta`` part)."""
        out = {k: v for k, v in asdict(self).items() if k != "matrices"}
        out.update(v=VERSION, shapes={k: list(m.shape) for k, m in self.matrices.items()})
        return out

    def check(self) -> None:
        """Shapes agree with the labels.

        Raises:
            ValueError: naming the part and both shapes.
        """
        T, S = len(self.tgt_pieces), len(self.src_pieces)
        expected = {"cross": (T, S), "encoder_self": (S, S), "decoder_self": (T, T)}
        for kind, m in self.matrices.items():
            if kind not in expected or m.ndim != 4 or tuple(m.shape[2:]) != expected[kind]:
                raise ValueError(f"record part {kind}: shape {tuple(m.shape)} does not match {T} target "
                                 f"and {S} source pieces")
        if "cross" not in self.matrices:
            raise ValueError("a record needs the cross-attention")


def content(part: str, record: Record) -> bytes:
    """The plugin content (tag metadata) of one part of ``record``."""
    info: dict[str, Any] = {"v": VERSION, "part": part, "sentence": record.sentence, "step": record.step}
    if part == "meta":
        info.update(source=record.source, chrf=record.chrf, length=len(record.src_pieces) - 1)
    return json.dumps(info, ensure_ascii=False).encode("utf-8")


def parse_content(data: bytes) -> Optional[dict]:
    """The dict of a part's plugin content, or None when it is not this format's (another version)."""
    try:
        info = json.loads(bytes(data).decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) and info.get("v") == VERSION else None

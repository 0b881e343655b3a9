"""Every attention matrix of a sentence pair, from one teacher-forced pass of the model.

The search produces the tokens; teacher-forcing those tokens reproduces exactly the attention
the search saw (incremental decoding equals full decoding, a tested property), but for every
layer and head at once. With a reference or user-given target instead of a hypothesis this
is forced alignment (``nmt-align``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import torch
from torch import Tensor

from nmt.alignment import Link, coverage_deviation_sum, entropy_sum, hard_alignment, merge_subwords
from nmt.data.batch import Batch

EOS_PIECE = "</s>"


@dataclass
class AttentionMaps:
    """The attention of one sentence pair, on the CPU, real tokens only.

    Attributes:
        src_pieces: S column labels: the source pieces and ``</s>``.
        tgt_pieces: T row labels: the output pieces and ``</s>`` (row t is the step that
            produced token t).
        cross: per decoder layer, cross-attention ``(H, T, S)`` (H = 1 for RNN attention).
        decoder_self: per decoder layer, masked self-attention ``(H, T, T)`` (empty for RNNs).
        encoder_self: per encoder layer, self-attention ``(H, S, S)`` (empty for RNNs).
        positions: ``(T,)`` predicted window centres p_t of local attention, or None.
        window_size: D, the half-width of a local window, or None for global attention.
        alignment_layer: the decoder layer whose head average is the model's alignment.
    """

    src_pieces: list[str]
    tgt_pieces: list[str]
    cross: list[Tensor]
    decoder_self: list[Tensor] = field(default_factory=list)
    encoder_self: list[Tensor] = field(default_factory=list)
    positions: Optional[Tensor] = None
    window_size: Optional[int] = None
    alignment_layer: int = 0

    def alignment(self, layer: Optional[int] = None, head: Optional[int] = None) -> Tensor:
        """``(T, S)`` cross-attention of ``layer`` (default: the alignment layer), averaged over
        heads or of one ``head``.

        Raises:
            IndexError: for a layer or head the model does not have.
        """
        weights = self.cross[self.alignment_layer if layer is None else layer]
        return weights.mean(0) if head is None else weights[head]


def word_alignment(matrix: Tensor, tgt_pieces: Sequence[str], src_pieces: Sequence[str],
                   shift: bool = False) -> list[Link]:
    """Hard word alignment of one sentence pair from a piece-level attention matrix.

    Pieces are merged into words (words = the whitespace-separated tokens of the text, which
    is what sentencepiece's ``▁`` marks), then each target word is linked to its most
    attended source word (:func:`~nmt.alignment.hard_alignment`); ``</s>`` is never linked.

    Args:
        matrix: ``(T, S)`` rows = output steps (the last one emits ``</s>``), columns = source
            pieces and ``</s>``.
        shift: read target token t from row t + 1, the step where t is the decoder's *input*
            (Chen et al. 2020 "shift-att", who found it better in middle layers of models
            whose attention at the emitting step already looks at the next source word).
            Without it, token t uses row t, the step that emits it. Which one suits a model
            is an empirical question: measure it with ``nmt-align gold=...``.
    Returns:
        ``(source word, target word)`` links, 0-based, sorted.
    """
    if shift:
        matrix, tgt_pieces = matrix[1:], list(tgt_pieces)[:-1]
    merged, tgt_words, src_words = merge_subwords(matrix, tgt_pieces, src_pieces)
    return hard_alignment(merged, tgt_words, src_words)


def model_alignment_layer(model) -> int:
    """The decoder layer a model uses for alignments (0 for single-attention RNN decoders)."""
    return int(getattr(model.decoder, "alignment_layer", 0))


def local_window_size(model) -> Optional[int]:
    """D of a local RNN attention window, or None for global and multi-head attention."""
    attention = getattr(model.decoder, "attention", None)
    if attention is None or getattr(attention, "window", "global") == "global":
        return None
    return int(attention.window_size)


@torch.no_grad()
def collect_attention(model, tokenizer, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
                      batch_size: int = 32) -> list[AttentionMaps]:
    """Teacher-force ``tgt_ids`` and return every attention matrix, one :class:`AttentionMaps`
    per sentence pair (in input order).

    Args:
        model: a :class:`~nmt.models.seq2seq.Seq2Seq` (Transformer or RNN).
        tokenizer: the model's tokenizer (for the piece labels).
        src_ids, tgt_ids: id sequences without BOS/EOS (EOS is appended by the batch).
    Raises:
        ValueError: when the two lists differ in length or a source is empty.
    """
    maps: list[AttentionMaps] = []
    for src, tgt, _, out in _teacher_forced(model, src_ids, tgt_ids, batch_size):
        maps += _split(out.extra, src, tgt, tokenizer, model)
    return maps


def _teacher_forced(model, src_ids, tgt_ids, batch_size: int):
    """Yield ``(src, tgt, batch, output)`` per batch of one eval-mode, every-attention pass;
    the model's training mode is restored afterwards.

    Raises:
        ValueError: when the two lists differ in length or a source is empty.
    """
    if len(src_ids) != len(tgt_ids):
        raise ValueError(f"{len(src_ids)} sources but {len(tgt_ids)} targets")
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(src_ids), batch_size):
            src = [list(s) for s in src_ids[start : start + batch_size]]
            tgt = [list(t) for t in tgt_ids[start : start + batch_size]]
            if any(len(s) == 0 for s in src):
                raise ValueError("cannot align an empty source sentence")
            batch = Batch.collate(src, tgt).to(device)
            yield src, tgt, batch, model(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in,
                                         all_attn=True)
    finally:
        model.train(was_training)


@torch.no_grad()
def attention_statistics(model, src_ids: Sequence[Sequence[int]], tgt_ids: Sequence[Sequence[int]],
                         batch_size: int = 64) -> dict[str, float]:
    """Mean attention entropy per layer and kind, and the coverage deviation of the alignment
    layer, over teacher-forced sentence pairs.

    Returns:
        ``{"entropy/cross_layer<i>", "entropy/decoder_self_layer<i>",
        "entropy/encoder_self_layer<i>", "coverage_deviation": float}`` in nats (entropy) and
        attention mass (coverage); self-attention keys only for models that have it.
    """
    sums: dict[str, list[float]] = {}

    def add(key: str, pair: tuple[float, int]) -> None:
        acc = sums.setdefault(key, [0.0, 0])
        acc[0] += pair[0]
        acc[1] += pair[1]

    layer = model_alignment_layer(model)
    for _, _, batch, out in _teacher_forced(model, src_ids, tgt_ids, batch_size):
        tgt_mask = batch.tgt_mask
        for key, w in out.extra.items():
            kind, _, index = key.rpartition(".")
            if kind == "cross_attn":
                add(f"entropy/cross_layer{index}", entropy_sum(w, tgt_mask))
                if int(index) == layer:
                    add("coverage_deviation", coverage_deviation_sum(w, tgt_mask, batch.src_mask))
            elif kind == "self_attn":
                add(f"entropy/decoder_self_layer{index}", entropy_sum(w, tgt_mask))
            elif kind == "encoder.self_attn":
                add(f"entropy/encoder_self_layer{index}", entropy_sum(w, batch.src_mask))
    return {k: total / count for k, (total, count) in sorted(sums.items()) if count}


def _layers(extra: dict[str, Tensor], prefix: str) -> list[Tensor]:
    keys = sorted((k for k in extra if k.startswith(prefix) and k[len(prefix):].isdigit()),
                  key=lambda k: int(k[len(prefix):]))
    return [extra[k].float().cpu() for k in keys]


def _split(extra: dict[str, Tensor], src: list[list[int]], tgt: list[list[int]], tokenizer, model
           ) -> list[AttentionMaps]:
    cross, dec_self, enc_self = _layers(extra, "cross_attn."), _layers(extra, "self_attn."), \
        _layers(extra, "encoder.self_attn.")
    positions = extra.get("positions")
    layer, window = model_alignment_layer(model), local_window_size(model)
    out = []
    for b, (s, t) in enumerate(zip(src, tgt)):
        S, T = len(s) + 1, len(t) + 1
        out.append(AttentionMaps(
            src_pieces=tokenizer.src_pieces(s) + [EOS_PIECE],
            tgt_pieces=tokenizer.tgt_pieces(t) + [EOS_PIECE],
            cross=[w[b, :, :T, :S] for w in cross],
            decoder_self=[w[b, :, :T, :T] for w in dec_self],
            encoder_self=[w[b, :, :S, :S] for w in enc_self],
            positions=None if positions is None else positions[b, :T].float().cpu(),
            window_size=window, alignment_layer=layer))
    return out

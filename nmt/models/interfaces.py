"""Contracts shared by every encoder and decoder (ARCHITECTURE.md "Interfaces").

Every tensor is batch-first. Letters: B batch (x beam), S source length, T target length,
D model size, H heads, V vocabulary. Masks are bool with True = attend (a real token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch
from torch import Tensor, nn


@dataclass
class EncoderOutput:
    """What an encoder hands the decoder.

    Attributes:
        encoder_out: ``(B, S, D)`` annotations of the source tokens.
        src_mask: ``(B, S)`` bool, True at real source positions.
        src_lengths: ``(B,)`` long, number of real source tokens.
        extra: family-specific tensors, batch-first (e.g. the RNN's final states).
    """

    encoder_out: Tensor
    src_mask: Tensor
    src_lengths: Tensor
    extra: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class DecoderState:
    """Everything a decoder needs between incremental steps.

    ``cache`` holds batch-first tensors only, so that :meth:`index_select` is the single hook a
    search needs to reorder, expand or prune hypotheses. ``step`` counts target positions
    already consumed (the position offset). Entries named in ``shared`` (e.g. the projected
    encoder keys/values) have one row per *sentence* rather than per hypothesis: after
    :meth:`expand` to ``beam`` hypotheses per sentence they are neither copied K times nor
    reordered when hypotheses are, only when sentences leave the batch; the decoder reads
    them with the hypotheses of a sentence grouped (``beam`` consecutive rows).
    """

    step: int
    cache: dict[str, Tensor]
    shared: frozenset = frozenset()
    beam: int = 1

    def expand(self, beam: int) -> "DecoderState":
        """``beam`` consecutive hypotheses per sentence (rows ``i*beam .. i*beam+beam-1`` copy
        row i); shared entries are kept once per sentence."""
        if self.beam != 1:
            raise ValueError("expand() is for a state with one row per sentence")
        order = torch.arange(next(iter(self.cache.values())).size(0) if self.cache else 0).repeat_interleave(beam)
        cache = {k: v if k in self.shared else v.index_select(0, order.to(v.device)) for k, v in self.cache.items()}
        return DecoderState(self.step, cache, self.shared, beam)

    def index_select(self, order: Tensor) -> "DecoderState":
        """Return a state whose row i is row ``order[i]`` of this one. order: ``(B',)`` long.

        With ``beam > 1``, ``order`` must keep hypotheses grouped by sentence (rows
        ``j*beam ..`` all come from one sentence, as beam search reorders them); shared
        entries then follow the sentences (``order[j*beam] // beam``).
        """
        sentences = None
        if self.beam > 1 and self.shared:
            sentences = order.view(-1, self.beam)[:, 0] // self.beam
            rows = next(v.size(0) for k, v in self.cache.items() if k in self.shared)
            if sentences.numel() == rows and bool((sentences == torch.arange(rows, device=order.device)).all()):
                sentences = None  # the same sentences in the same order: shared entries stay as they are
        cache = {}
        for k, v in self.cache.items():
            if k in self.shared and self.beam > 1:
                cache[k] = v if sentences is None else v.index_select(0, sentences.to(v.device))
            else:
                cache[k] = v.index_select(0, order)
        return DecoderState(self.step, cache, self.shared, self.beam)


@dataclass
class DecoderOutput:
    """Result of a decoder call.

    Attributes:
        logits: ``(B, T, V)`` unnormalised scores of the next token; None when the decoder was
            called with ``features_only=True``.
        attn: ``(B, H, T, S)`` cross-attention weights of the alignment layer, or None when
            not requested (H = 1 for RNN attention).
        extra: optional tensors for inspection (e.g. all layers' weights), keyed by name.
        features: ``(B, T, D_out)`` the input of the output projection, set only with
            ``features_only=True`` (the trainer then fuses projection and loss, see
            :meth:`Decoder.output_projection`).
    """

    logits: Optional[Tensor]
    attn: Optional[Tensor] = None
    extra: dict[str, Tensor] = field(default_factory=dict)
    features: Optional[Tensor] = None


class Encoder(nn.Module):
    """Contract: ``forward(src_tokens (B,S), src_lengths (B,), src_mask (B,S), need_weights=False)
    -> EncoderOutput``; with ``need_weights`` an encoder that has self-attention puts each
    layer's weights ``(B,H,S,S)`` in ``extra['self_attn.<i>']``."""

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor,
                need_weights: bool = False) -> EncoderOutput:  # pragma: no cover
        raise NotImplementedError


class Decoder(nn.Module):
    """Contract shared by every decoder so one search and one trainer serve them all.

    * ``init_state(enc) -> DecoderState``: project the encoder memory once per sentence.
    * ``forward(tgt_in (B,T), state, need_attn=False, incremental=False, all_attn=False)
      -> (DecoderOutput, DecoderState)``: consumes ``T`` target tokens starting at position
      ``state.step``. Training passes the whole ``tgt_in`` at once (teacher forcing); decoding
      passes one token at a time with ``incremental=True``. Both must give the same logits and
      attention (the incremental-equals-full test). ``all_attn`` puts every layer's
      cross-attention ``(B,H,T,S)`` in ``extra['cross_attn.<i>']`` (and self-attention
      ``(B,H,T,T)`` in ``extra['self_attn.<i>']`` where the decoder has it).
      ``features_only=True`` skips the output projection and returns its input in
      ``DecoderOutput.features`` (logits None).
    * ``output_projection() -> (weight (V, D_out), bias (V,) or None)``: the final linear layer,
      so that ``logits = F.linear(features, weight, bias)``.
    """

    def init_state(self, enc: EncoderOutput) -> DecoderState:  # pragma: no cover
        """State before the first target token, with the encoder memory projected once."""
        raise NotImplementedError

    def forward(self, tgt_in: Tensor, state: DecoderState, need_attn: bool = False, incremental: bool = False,
                all_attn: bool = False, features_only: bool = False
                ) -> tuple[DecoderOutput, DecoderState]:  # pragma: no cover
        raise NotImplementedError

    def output_projection(self) -> tuple[Tensor, Optional[Tensor]]:  # pragma: no cover
        """``(weight (V, D_out), bias (V,) or None)`` of the output layer."""
        raise NotImplementedError

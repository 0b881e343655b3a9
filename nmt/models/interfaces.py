"""Contracts shared by every encoder and decoder (ARCHITECTURE.md "Interfaces").

Every tensor is batch-first. Letters: B batch (x beam), S source length, T target length,
D model size, H heads, V vocabulary. Masks are bool with True = attend (a real token).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

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

    ``cache`` holds batch-first tensors only (dim 0 = batch x beam), so that
    :meth:`index_select` is the single hook a search needs to reorder, expand or prune
    hypotheses. ``step`` counts target positions already consumed (the position offset).
    """

    step: int
    cache: dict[str, Tensor]

    def index_select(self, order: Tensor) -> "DecoderState":
        """Return a state whose row i is row ``order[i]`` of this one. order: ``(B',)`` long."""
        return DecoderState(self.step, {k: v.index_select(0, order) for k, v in self.cache.items()})


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

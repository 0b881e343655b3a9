"""Seq2Seq: an encoder and a decoder behind the interface that training and search use."""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor, nn

from nmt.models.interfaces import Decoder, DecoderOutput, DecoderState, Encoder, EncoderOutput
from nmt.models.loss import label_smoothed_nll, linear_label_smoothed_nll


class Seq2Seq(nn.Module):
    """Encoder-decoder model.

    Training calls :meth:`forward` (teacher forcing); search calls :meth:`encode`,
    :meth:`init_state` and :meth:`step`, and reorders the state with ``state.index_select``.

    Args:
        max_positions: the longest sequence the model takes, BOS or EOS included (the
            Transformer's position table; for an RNN, the decoding bound of the same setting).
            Search never decodes a position beyond it (None: unbounded).
    """

    def __init__(self, encoder: Encoder, decoder: Decoder, max_positions: Optional[int] = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.max_positions = max_positions

    def encode(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor) -> EncoderOutput:
        """src_tokens ``(B,S)`` -> :class:`EncoderOutput` with encoder_out ``(B,S,D)``."""
        return self.encoder(src_tokens, src_lengths, src_mask)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """Decoder state before the first target token (projected encoder memory)."""
        return self.decoder.init_state(enc)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor, tgt_in: Tensor,
                need_attn: bool = False, all_attn: bool = False, features_only: bool = False) -> DecoderOutput:
        """Teacher forcing: src ``(B,S)``, tgt_in ``(B,T)`` -> logits ``(B,T,V)`` (+ attn ``(B,H,T,S)``).

        With ``all_attn`` the output's ``extra`` also holds every attention matrix: the
        decoder's ``cross_attn.<i>`` ``(B,H,T,S)`` and ``self_attn.<i>`` ``(B,H,T,T)``, and the
        encoder's ``encoder.self_attn.<i>`` ``(B,H,S,S)`` (what the alignment plots show).
        With ``features_only`` the output carries the decoder's final features ``(B,T,D_out)``
        instead of logits (see :func:`nmt.models.loss.linear_label_smoothed_nll`).
        """
        enc = self.encoder(src_tokens, src_lengths, src_mask, need_weights=all_attn)
        out, _ = self.decoder(tgt_in, self.decoder.init_state(enc), need_attn=need_attn, all_attn=all_attn,
                              features_only=features_only)
        if all_attn:
            out.extra.update({f"encoder.{k}": v for k, v in enc.extra.items() if k.startswith("self_attn.")})
        return out

    def loss(self, batch, label_smoothing: float, fused: bool = True) -> tuple[Tensor, Tensor]:
        """Teacher-forced ``(loss_sum, nll_sum)`` of a :class:`~nmt.data.batch.Batch`: summed
        label-smoothed cross-entropy (Szegedy et al. 2016; Vaswani et al. 2017 §5.4) and summed
        NLL over its non-pad target tokens.

        With ``fused`` the output projection and the loss are computed together
        (:func:`~nmt.models.loss.linear_label_smoothed_nll`: the ``(B, T, V)`` logits are never
        materialised; for fp32); otherwise the logits are computed and cast to float32 (autocast).
        """
        if fused:
            out = self(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in, features_only=True)
            weight, bias = self.decoder.output_projection()
            return linear_label_smoothed_nll(out.features, weight, bias, batch.tgt_out, label_smoothing)
        out = self(batch.src_tokens, batch.src_lengths, batch.src_mask, batch.tgt_in)
        return label_smoothed_nll(out.logits, batch.tgt_out, label_smoothing)

    @torch.no_grad()
    def step(self, tokens: Tensor, state: DecoderState, need_attn: bool = True
             ) -> tuple[Tensor, Optional[Tensor], DecoderState]:
        """One incremental decoding step.

        Args:
            tokens: ``(B, 1)`` the previous output token of each hypothesis (BOS first).
            state: decoder state after ``state.step`` tokens.
        Returns:
            log-probabilities ``(B, V)`` of the next token, head-averaged alignment
            ``(B, S)`` (or None), and the new state.
        """
        out, state = self.decoder(tokens, state, need_attn=need_attn, incremental=True)
        lprobs = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        attn = None if out.attn is None else out.attn[:, :, -1].mean(dim=1)
        return lprobs, attn, state


class TrainingLoss(nn.Module):
    """``forward(batch) -> (loss_sum, nll_sum)`` of a :class:`Seq2Seq` (:meth:`Seq2Seq.loss`): the
    module a data-parallel wrapper runs, so that the whole loss, output projection included, is
    inside its ``forward``."""

    def __init__(self, model: Seq2Seq, label_smoothing: float, fused: bool = True) -> None:
        super().__init__()
        self.model = model
        self.label_smoothing = label_smoothing
        self.fused = fused

    def forward(self, batch) -> tuple[Tensor, Tensor]:
        return self.model.loss(batch, self.label_smoothing, self.fused)

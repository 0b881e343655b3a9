"""Transformer encoder-decoder (Vaswani et al. 2017 §3) with a K/V cache in the decoder state."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.models.attention import Memory, MultiHeadAttention
from nmt.models.dropout import dropout as apply_dropout
from nmt.models.embeddings import PositionalEncoding, TokenEmbedding
from nmt.models.interfaces import Decoder, DecoderOutput, DecoderState, Encoder, EncoderOutput

# relu in place: one (N, F) tensor less. FeedForward applies it to a 2-D matmul output, never to a
# view of one: an in-place op on a view makes autograd rebuild the base in backward (CopySlices: a
# clone, a zero-filled buffer and a copy of the whole (N, F) tensor per layer)
ACTIVATIONS = {"relu": lambda x: F.relu(x, inplace=True), "gelu": F.gelu}
# gated linear units (Shazeer 2020, "GLU Variants Improve Transformer", eqs. 5-6): the gate's
# activation; the gate and the linear branch are one fused (D, 2F) matmul
GATED_ACTIVATIONS = {"swiglu": F.silu, "geglu": F.gelu}


class FeedForward(nn.Module):
    """Position-wise feed-forward sublayer. ``(B, T, d_model) -> (B, T, d_model)``.

    * ``relu`` / ``gelu``: FFN(x) = W_2 act(W_1 x + b_1) + b_2 (Vaswani et al. 2017 eq. 2), with
      ``2 * d_model * ffn_dim`` weights.
    * ``swiglu`` / ``geglu``: FFN(x) = W_2 (act(W x + b) * (V x + c)) + b_2 with act = Swish_1
      (SiLU) or GELU (Shazeer 2020 eqs. 5-6, with biases), ``3 * d_model * ffn_dim`` weights: at
      equal parameters and FLOPs a gated FFN has 2/3 of the hidden width (ReLU 512 ~ SwiGLU 344).
      ``fc1`` holds ``[W; V]`` as one ``(2 * ffn_dim, d_model)`` matrix (gate rows first).

    Raises:
        ValueError: for an activation that is none of the above.
    """

    def __init__(self, d_model: int, ffn_dim: int, activation: str, activation_dropout: float) -> None:
        super().__init__()
        if activation not in ACTIVATIONS and activation not in GATED_ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; expected one of "
                             f"{sorted(ACTIVATIONS) + sorted(GATED_ACTIVATIONS)}")
        self.gated = activation in GATED_ACTIVATIONS
        self.fc1 = nn.Linear(d_model, 2 * ffn_dim if self.gated else ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, d_model)
        self.act = GATED_ACTIVATIONS[activation] if self.gated else ACTIVATIONS[activation]
        self.activation_dropout = activation_dropout
        for lin in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        h = self.fc1(x.reshape(-1, shape[-1]))  # (B*T, F) or (B*T, 2F): a base tensor, see ACTIVATIONS
        if self.gated:
            gate, value = h.chunk(2, dim=-1)
            h = self.act(gate) * value  # (B*T, F)
        else:
            h = self.act(h)
        if self.activation_dropout > 0:
            h = apply_dropout(h, self.activation_dropout, self.training)
        return self.fc2(h).view(shape)


class Sublayer(nn.Module):
    """Residual wrapper: post-norm LN(x + drop(f(x))) or pre-norm x + drop(f(LN(x)))."""

    def __init__(self, d_model: int, dropout: float, pre_norm: bool) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.dropout = dropout
        self.pre_norm = pre_norm

    def before(self, x: Tensor) -> Tensor:
        """Input of the sublayer function: LN(x) with pre-norm, x with post-norm. ``(B,T,D)``."""
        return self.norm(x) if self.pre_norm else x

    def after(self, x: Tensor, h: Tensor) -> Tensor:
        """Residual connection around the sublayer output ``h`` ``(B,T,D)`` (+ LN with post-norm)."""
        out = x + apply_dropout(h, self.dropout, self.training)
        return out if self.pre_norm else self.norm(out)


class EncoderLayer(nn.Module):
    """Self-attention + FFN (Vaswani et al. 2017 §3.1). ``(B,S,D) -> (B,S,D)``."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.ffn = FeedForward(d_model, ffn_dim, activation, activation_dropout)
        self.attn_block = Sublayer(d_model, dropout, pre_norm)
        self.ffn_block = Sublayer(d_model, dropout, pre_norm)

    def forward(self, x: Tensor, src_mask: Tensor, need_weights: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """x ``(B,S,D)``, src_mask ``(B,S)`` -> ``(B,S,D)``, self-attention weights ``(B,H,S,S)`` or None."""
        h = self.attn_block.before(x)
        h, weights = self.self_attn(h, h, h, src_mask, need_weights=need_weights)
        x = self.attn_block.after(x, h)
        x = self.ffn_block.after(x, self.ffn(self.ffn_block.before(x)))
        return x, weights


class DecoderLayer(nn.Module):
    """Masked self-attention, cross-attention, FFN (Vaswani et al. 2017 §3.1). ``(B,T,D) -> (B,T,D)``."""

    def __init__(self, d_model: int, num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, pre_norm: bool) -> None:
        super().__init__()
        self.self_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.cross_attn = MultiHeadAttention(d_model, num_heads, attention_dropout)
        self.ffn = FeedForward(d_model, ffn_dim, activation, activation_dropout)
        self.self_block = Sublayer(d_model, dropout, pre_norm)
        self.cross_block = Sublayer(d_model, dropout, pre_norm)
        self.ffn_block = Sublayer(d_model, dropout, pre_norm)

    def forward(self, x: Tensor, self_memory: Memory, cross_memory: Memory, src_mask: Tensor,
                need_weights: bool = False) -> tuple[Tensor, Optional[Tensor], Optional[Tensor]]:
        """x ``(B,T,D)``; self_memory: keys/values of all target positions so far ``(B,H,t,Dh)``
        (the last T of them belong to x); cross_memory ``(B,H,S,Dh)`` -> ``(B,T,D)``,
        self weights ``(B,H,T,t)`` and cross weights ``(B,H,T,S)`` (None unless ``need_weights``)."""
        h, self_w = self.self_attn.attend(self.self_block.before(x), self_memory, None,
                                          need_weights=need_weights, causal=True)
        x = self.self_block.after(x, h)
        h, cross_w = self.cross_attn.attend(self.cross_block.before(x), cross_memory, src_mask,
                                            need_weights=need_weights)
        x = self.cross_block.after(x, h)
        x = self.ffn_block.after(x, self.ffn(self.ffn_block.before(x)))
        return x, self_w, cross_w


class TransformerEncoder(Encoder):
    """Embedding + positions + N encoder layers. src_tokens ``(B,S)`` -> encoder_out ``(B,S,D)``."""

    def __init__(self, embed: TokenEmbedding, positions: PositionalEncoding, num_layers: int, d_model: int,
                 num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, pre_norm: bool) -> None:
        super().__init__()
        self.embed = embed
        self.positions = positions
        self.dropout = dropout
        self.layers = nn.ModuleList(
            EncoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout, activation_dropout, activation,
                         pre_norm) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else None

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor,
                need_weights: bool = False) -> EncoderOutput:
        """With ``need_weights`` the self-attention weights ``(B,H,S,S)`` of each layer are in
        ``extra['self_attn.<i>']``."""
        x = apply_dropout(self.positions(self.embed(src_tokens)), self.dropout, self.training)
        extra: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            x, w = layer(x, src_mask, need_weights)
            if w is not None:
                extra[f"self_attn.{i}"] = w
        if self.final_norm is not None:
            x = self.final_norm(x)
        return EncoderOutput(x, src_mask, src_lengths, extra)


class TransformerDecoder(Decoder):
    """Embedding + positions + N decoder layers + output projection (tied or not).

    The state caches, per layer, the projected encoder keys/values (``l<i>.cross_k/v``,
    computed once by :meth:`init_state`) and the self-attention keys/values of the target
    prefix (``l<i>.self_k/v``, grown by incremental calls), plus ``src_mask``.
    """

    def __init__(self, embed: TokenEmbedding, positions: PositionalEncoding, num_layers: int, d_model: int,
                 num_heads: int, ffn_dim: int, dropout: float, attention_dropout: float,
                 activation_dropout: float, activation: str, pre_norm: bool, tie_output: bool,
                 alignment_layer: int = -1) -> None:
        super().__init__()
        self.embed = embed
        self.positions = positions
        self.dropout = dropout
        self.layers = nn.ModuleList(
            DecoderLayer(d_model, num_heads, ffn_dim, dropout, attention_dropout, activation_dropout, activation,
                         pre_norm) for _ in range(num_layers))
        self.final_norm = nn.LayerNorm(d_model) if pre_norm else None
        vocab = embed.num_embeddings
        self.output_proj = None if tie_output else nn.Linear(d_model, vocab, bias=False)
        if self.output_proj is not None:
            nn.init.normal_(self.output_proj.weight, mean=0.0, std=d_model ** -0.5)
        self.alignment_layer = alignment_layer % num_layers

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """Project encoder_out ``(B,S,D)`` into every layer's cross-attention keys/values
        ``(B,H,S,Dh)`` once per sentence; the self-attention cache starts empty (step 0).
        The encoder entries are ``shared`` (see :class:`DecoderState`): with ``state.expand(K)``
        the decoder runs ``B*K`` hypotheses against ``B`` sentences' keys/values."""
        cache = {"src_mask": enc.src_mask}
        for i, layer in enumerate(self.layers):
            mem = layer.cross_attn.memory(enc.encoder_out, enc.encoder_out)
            cache[f"l{i}.cross_k"], cache[f"l{i}.cross_v"] = mem
        # the encoder side is the same for every hypothesis of a sentence: kept once per sentence
        # in beam search (never copied K times or reordered), read with grouped queries
        return DecoderState(0, cache, shared=frozenset(cache))

    def forward(self, tgt_in: Tensor, state: DecoderState, need_attn: bool = False,
                incremental: bool = False, all_attn: bool = False, features_only: bool = False
                ) -> tuple[DecoderOutput, DecoderState]:
        """tgt_in ``(B,T)`` at positions ``state.step ..`` -> logits ``(B,T,V)``, alignment-layer
        cross-attention ``(B,H,T,S)`` when ``need_attn``. With ``incremental`` the self-attention
        keys/values are appended to the returned state; otherwise the state is returned as is.
        ``all_attn`` adds every layer's ``self_attn.<i>`` and ``cross_attn.<i>`` weights to ``extra``.
        ``features_only`` returns the final hidden states ``(B,T,D)`` as ``features`` instead of logits."""
        cache = state.cache
        new_cache = dict(cache) if incremental else cache
        x = apply_dropout(self.positions(self.embed(tgt_in), offset=state.step), self.dropout, self.training)
        attn = None
        extra: dict[str, Tensor] = {}
        for i, layer in enumerate(self.layers):
            want = all_attn or (need_attn and i == self.alignment_layer)
            if incremental:
                h = self._norm_in(layer, x)
                k, v = layer.self_attn.memory(h, h)
                if f"l{i}.self_k" in cache:  # append the new steps to the cached prefix (B,H,t,Dh)
                    k = torch.cat([cache[f"l{i}.self_k"], k], dim=2)
                    v = torch.cat([cache[f"l{i}.self_v"], v], dim=2)
                new_cache[f"l{i}.self_k"], new_cache[f"l{i}.self_v"] = k, v
                self_mem = Memory(k, v)
            else:
                h = self._norm_in(layer, x)
                self_mem = layer.self_attn.memory(h, h)
            x, self_w, cross_w = layer(x, self_mem, Memory(cache[f"l{i}.cross_k"], cache[f"l{i}.cross_v"]),
                                       cache["src_mask"], need_weights=want)
            if i == self.alignment_layer and need_attn:
                attn = cross_w
            if all_attn:
                extra[f"self_attn.{i}"], extra[f"cross_attn.{i}"] = self_w, cross_w
        if self.final_norm is not None:
            x = self.final_norm(x)
        new_state = (DecoderState(state.step + tgt_in.size(1), new_cache, state.shared, state.beam)
                     if incremental else state)
        if features_only:
            return DecoderOutput(None, attn, extra, features=x), new_state
        weight, _ = self.output_projection()
        return DecoderOutput(F.linear(x, weight), attn, extra), new_state

    def output_projection(self) -> tuple[Tensor, Optional[Tensor]]:
        """``(weight (V, D), None)``: the tied embedding matrix or the separate projection (no bias)."""
        return (self.embed.weight if self.output_proj is None else self.output_proj.weight), None

    @staticmethod
    def _norm_in(layer: DecoderLayer, x: Tensor) -> Tensor:
        return layer.self_block.before(x)


"""Bidirectional RNN encoder and attentional RNN decoder (Bahdanau et al. 2015; Luong et al. 2015).

The decoder follows the same contract as the Transformer's: ``init_state(enc)`` projects the
encoder annotations once (the attention keys live in the state), ``forward(tgt_in, state,
incremental=...)`` consumes target tokens from position ``state.step``, and every tensor in
the state is batch-first so beam search reorders it with one ``index_select``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.models.attention import Memory
from nmt.choices import RNN_STYLES
from nmt.models.activations import tanh
from nmt.models.dropout import dropout as apply_dropout
from nmt.models.embeddings import TokenEmbedding
from nmt.models.interfaces import Decoder, DecoderOutput, DecoderState, Encoder, EncoderOutput
from nmt.models.rnn_attention import RNNAttention
from nmt.models.step_memory import StepMemory, TapedMemory

RNN_TYPES = {"gru": nn.GRU, "lstm": nn.LSTM}
STYLES = RNN_STYLES


def _rnn_class(rnn_type: str) -> type[nn.RNNBase]:
    if rnn_type not in RNN_TYPES:
        raise ValueError(f"unknown model.rnn_type {rnn_type!r}; expected one of {sorted(RNN_TYPES)}")
    return RNN_TYPES[rnn_type]


class _ReverseWithin(torch.autograd.Function):
    """Reverse each sentence's real positions, padding left in place: x ``(B*S, D)`` rows picked
    by ``index`` ``(B*S,)``. The permutation is its own inverse, so the backward pass applies it
    to the gradient (``index_select``'s own backward would zero-fill and scatter-add)."""

    @staticmethod
    def forward(ctx, x: Tensor, index: Tensor) -> Tensor:
        ctx.save_for_backward(index)
        return x.index_select(0, index)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (index,) = ctx.saved_tensors
        return grad.index_select(0, index), None


def reversal_index(lengths: Tensor, src_len: int, device: torch.device) -> Tensor:
    """lengths ``(B,)`` -> flat row index ``(B*S,)`` of :func:`reverse_within_lengths`."""
    pos = torch.arange(src_len, device=device)[None, :]
    lengths = lengths.to(device)[:, None]
    within = torch.where(pos < lengths, lengths - 1 - pos, pos)  # (B,S)
    return (within + torch.arange(lengths.size(0), device=device)[:, None] * src_len).reshape(-1)


def reverse_within_lengths(x: Tensor, lengths: Tensor, index: Optional[Tensor] = None) -> Tensor:
    """x ``(B,S,D)``, lengths ``(B,)`` -> y with y[b, s] = x[b, L_b - 1 - s] for s < L_b and
    y[b, s] = x[b, s] at padding. Applying it twice gives x back. ``index``: the
    :func:`reversal_index` of ``lengths``, when already computed."""
    bsz, src_len, dim = x.shape
    if index is None:
        index = reversal_index(lengths, src_len, x.device)
    return _ReverseWithin.apply(x.reshape(bsz * src_len, dim), index).view(bsz, src_len, dim)


class RNNEncoder(Encoder):
    """Bidirectional GRU/LSTM in which padding never enters a state.

    Annotations h_j = [h→_j; h←_j] (Bahdanau et al. 2015 §3.2): src_tokens ``(B,S)`` ->
    encoder_out ``(B,S,2h)`` (zeros at padding); ``extra['backward_first']`` ``(B,h)`` is the
    top backward RNN's state at the first source token (its final state), used to
    initialise the decoder.

    Each layer runs its two directions as two unidirectional RNNs over the padded batch: the
    forward one reads the sentences as they are (padding comes after every real token), the
    backward one reads each sentence reversed within its length (:func:`reverse_within_lengths`,
    so again the padding comes last), and its output is reversed back. Real positions get exactly
    the states of a packed bidirectional RNN; on a CPU this is faster than packing
    (docs/performance.md) because every step is one matmul over the whole batch. The parameters are those of the
    bidirectional ``nn.GRU``/``nn.LSTM`` (``self.rnn``), so checkpoints are unchanged.
    """

    def __init__(self, embed: TokenEmbedding, rnn_type: str, hidden_size: int, num_layers: int,
                 dropout: float) -> None:
        super().__init__()
        self.embed = embed
        self.dropout = dropout
        self.hidden_size = hidden_size
        self.rnn = _rnn_class(rnn_type)(embed.embedding_dim, hidden_size, num_layers, batch_first=True,
                                        bidirectional=True, dropout=dropout if num_layers > 1 else 0.0)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor,
                need_weights: bool = False) -> EncoderOutput:
        """src_tokens ``(B,S)`` -> annotations ``(B,S,2·H/2)``; ``need_weights`` is accepted for the
        encoder contract and ignored (a recurrent encoder has no self-attention)."""
        x = apply_dropout(self.embed(src_tokens), self.dropout, self.training)
        index = reversal_index(src_lengths, src_tokens.size(1), x.device)  # once for every layer, both ways
        for layer in range(self.rnn.num_layers):
            if layer > 0:
                x = apply_dropout(x, self.dropout, self.training)  # between layers, as nn.GRU applies it
            forward_out = self._direction(x, layer, "")
            backward_out = reverse_within_lengths(
                self._direction(reverse_within_lengths(x, src_lengths, index), layer, "_reverse"), src_lengths, index)
            x = torch.cat([forward_out, backward_out], dim=-1)
        out = x.masked_fill(~src_mask[:, :, None], 0.0)  # (B,S,2h); padding states are not annotations
        backward_first = out[:, 0, self.hidden_size :]
        out = apply_dropout(out, self.dropout, self.training)
        return EncoderOutput(out, src_mask, src_lengths, {"backward_first": backward_first})

    def _direction(self, x: Tensor, layer: int, suffix: str) -> Tensor:
        """One direction of one layer over ``x`` ``(B,S,D)`` from a zero state -> ``(B,S,h)``."""
        params = [getattr(self.rnn, f"{kind}_l{layer}{suffix}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
        h0 = x.new_zeros(1, x.size(0), self.hidden_size)
        if isinstance(self.rnn, nn.LSTM):
            return torch.lstm(x, (h0, h0), params, True, 1, 0.0, self.training, False, True)[0]
        return torch.gru(x, h0, params, True, 1, 0.0, self.training, False, True)[0]


@dataclass
class _Recurrence:
    """The decoder's recurrent state during one forward: per layer ``(B,H)`` hidden (and LSTM
    cell) states, and the input-feeding vector h~_{t-1} ``(B,H)`` (None without it)."""

    hidden: list[Tensor]
    cells: Optional[list[Tensor]]
    feed: Optional[Tensor]


class RNNDecoder(Decoder):
    """Attentional RNN decoder in Bahdanau or Luong style.

    * ``bahdanau`` (Bahdanau et al. 2015 §3.1, appendix A): c_t = attend(s_{t-1});
      s_t = RNN([E y_{t-1}; c_t], s_{t-1}); readout t_t = tanh(W_o [s_t; c_t; E y_{t-1}]).
    * ``luong`` (Luong et al. 2015 §3): h_t = RNN([E y_{t-1}; h̃_{t-1}] (input feeding, §3.3)
      or E y_{t-1}, h_{t-1}); c_t = attend(h_t); h̃_t = tanh(W_c [c_t; h_t]) (eq. 5).

    s_0 (every layer) = tanh(W_s h←_1) from the backward encoder's first state. Logits come from
    the readout (tied to the target embedding when ``tie_output``; a bias-free projection to the
    embedding size is added when the sizes differ). State cache: ``hidden`` (and ``cell``)
    ``(B,L,H)``, ``feed`` ``(B,H)`` (input feeding), attention ``keys``/``values``
    ``(B,1,S,·)``, ``src_mask`` ``(B,S)``.

    Raises:
        ValueError: unknown style or RNN type.
    """

    def __init__(self, embed: TokenEmbedding, rnn_type: str, hidden_size: int, num_layers: int, dropout: float,
                 style: str, input_feeding: bool, attention: RNNAttention, value_dim: int, bridge_dim: int,
                 tie_output: bool) -> None:
        super().__init__()
        if style not in STYLES:
            raise ValueError(f"unknown model.decoder.style {style!r}; expected one of {STYLES}")
        emb_dim = embed.embedding_dim
        self.embed, self.style, self.dropout = embed, style, dropout
        self.input_feeding = input_feeding and style == "luong"
        self.num_layers, self.hidden_size, self.is_lstm = num_layers, hidden_size, rnn_type == "lstm"
        rnn_in = emb_dim + (value_dim if style == "bahdanau" else hidden_size if self.input_feeding else 0)
        self.rnn = _rnn_class(rnn_type)(rnn_in, hidden_size, num_layers, batch_first=True,
                                        dropout=dropout if num_layers > 1 else 0.0)
        self.attention = attention
        self.bridge = nn.Linear(bridge_dim, num_layers * hidden_size)
        if style == "bahdanau":
            self.readout = nn.Linear(hidden_size + value_dim + emb_dim, emb_dim)
            out_dim = emb_dim
        else:
            self.readout = nn.Linear(value_dim + hidden_size, hidden_size, bias=False)  # W_c
            out_dim = hidden_size
        self.pre_output = nn.Linear(out_dim, emb_dim, bias=False) if tie_output and out_dim != emb_dim else None
        self.output_proj = None if tie_output else nn.Linear(out_dim, embed.num_embeddings)

    def init_state(self, enc: EncoderOutput) -> DecoderState:
        """s_0 = tanh(W_s h←_1) for every layer; attention keys projected once; feed = 0."""
        bsz = enc.encoder_out.size(0)
        hidden = tanh(self.bridge(enc.extra["backward_first"])).view(bsz, self.num_layers, self.hidden_size)
        keys, values = self.attention.memory(enc.encoder_out, enc.encoder_out)
        cache = {"hidden": hidden, "keys": keys, "values": values, "src_mask": enc.src_mask}
        if self.is_lstm:
            cache["cell"] = torch.zeros_like(hidden)
        if self.input_feeding:
            cache["feed"] = hidden.new_zeros(bsz, self.hidden_size)
        return DecoderState(0, cache)

    def forward(self, tgt_in: Tensor, state: DecoderState, need_attn: bool = False, incremental: bool = False,
                all_attn: bool = False, features_only: bool = False) -> tuple[DecoderOutput, DecoderState]:
        """tgt_in ``(B,T)`` -> logits ``(B,T,V)``, attention ``(B,1,T,S)`` when asked, window centres
        p_t in ``extra['positions']`` ``(B,T)`` for local attention (with the attention)."""
        cache = state.cache
        emb = apply_dropout(self.embed(tgt_in), self.dropout, self.training)  # (B,T,E)
        rec = _Recurrence(list(cache["hidden"].unbind(1)), list(cache["cell"].unbind(1)) if self.is_lstm else None,
                          cache.get("feed"))
        steps, mask = tgt_in.size(1), cache["src_mask"]
        positions = (torch.arange(state.step, state.step + steps, device=tgt_in.device)
                     if self.attention.window == "local_m" else None)
        run = self._bahdanau if self.style == "bahdanau" else self._luong
        o, queries, weights = run(emb, rec, self._step_memory(cache, steps), mask, positions)
        x = apply_dropout(o, self.dropout, self.training)
        attn = torch.cat(weights, dim=2) if (need_attn or all_attn) else None
        extra = {}
        if attn is not None and self.attention.window != "global":
            extra["positions"] = self.attention.window_centres(torch.stack(queries, 1), mask, positions)
        if all_attn:
            extra["cross_attn.0"] = attn
        new_state = state
        if incremental:
            new_cache = dict(cache, hidden=torch.stack(rec.hidden, 1))
            if self.is_lstm:
                new_cache["cell"] = torch.stack(rec.cells, 1)
            if self.input_feeding:
                new_cache["feed"] = rec.feed
            new_state = DecoderState(state.step + steps, new_cache, state.shared, state.beam)
        if self.pre_output is not None:
            x = self.pre_output(x)
        if features_only:
            return DecoderOutput(None, attn, extra, features=x), new_state
        return DecoderOutput(F.linear(x, *self.output_projection()), attn, extra), new_state

    def _step_memory(self, cache: dict, steps: int) -> Memory | TapedMemory:
        """The attention memory with its head axis removed once ``(B,S,.)``; in training over several
        steps, wrapped by a :class:`StepMemory` so its gradient is one matmul, not one per step."""
        memory = Memory(cache["keys"][:, 0], cache["values"][:, 0])
        if steps > 1 and torch.is_grad_enabled() and (memory.keys.requires_grad or memory.values.requires_grad):
            tape = StepMemory()
            return TapedMemory(*tape.wrap(*memory), tape)
        return memory

    def _input_gates(self, emb: Tensor) -> tuple[tuple[Tensor, ...], Tensor]:
        """The embedding part of the first layer's input projection, one matmul for all positions
        (split with unbind: indexing emb[:, t] would build a full-size gradient per step) -> T x
        ``(B,G)``, and the rest of W_ih ``(G, Dv)`` (Bahdanau context) or ``(G, H)`` (input feeding)."""
        emb_dim = emb.size(-1)
        gates_y = F.linear(emb, self.rnn.weight_ih_l0[:, :emb_dim], self.rnn.bias_ih_l0).unbind(1)
        return gates_y, self.rnn.weight_ih_l0[:, emb_dim:]

    def _bahdanau(self, emb: Tensor, rec: _Recurrence, memory: Memory | TapedMemory, mask: Tensor,
                  positions: Optional[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """c_t = attend(s_{t-1}); s_t = RNN([E y_{t-1}; c_t], s_{t-1}); t_t = tanh(W_o [s_t; c_t; E y_{t-1}])
        (Bahdanau et al. 2015 appendix A) -> readout ``(B,T,E)``, the queries and the weights per step."""
        gates_y, w_ctx = self._input_gates(emb)
        queries, states, contexts, weights = [], [], [], []
        for t in range(emb.size(1)):
            queries.append(rec.hidden[-1])
            ctx, w = self.attention.attend(rec.hidden[-1][:, None], memory, mask,
                                           positions=None if positions is None else positions[t:t + 1])
            ctx = ctx.squeeze(1)  # a view; indexing [:, 0] would zero-fill a full gradient per step
            self._cell(torch.addmm(gates_y[t], ctx, w_ctx.t()), rec.hidden, rec.cells)
            states.append(rec.hidden[-1])
            contexts.append(ctx)
            weights.append(w)
        o = tanh(self.readout(torch.cat([torch.stack(states, 1), torch.stack(contexts, 1), emb], -1)))
        return o, queries, weights

    def _luong(self, emb: Tensor, rec: _Recurrence, memory: Memory | TapedMemory, mask: Tensor,
               positions: Optional[Tensor]) -> tuple[Tensor, list[Tensor], list[Tensor]]:
        """h_t = RNN([E y_{t-1}; h~_{t-1}] or E y_{t-1}, h_{t-1}); c_t = attend(h_t);
        h~_t = tanh(W_c [c_t; h_t]) (Luong et al. 2015 eq. 5, input feeding §3.3) -> h~ ``(B,T,H)``,
        the queries and the weights per step."""
        gates_y, w_feed = self._input_gates(emb)
        states, contexts, feeds, weights = [], [], [], []
        for t in range(emb.size(1)):
            gates = torch.addmm(gates_y[t], rec.feed, w_feed.t()) if self.input_feeding else gates_y[t]
            self._cell(gates, rec.hidden, rec.cells)
            ctx, w = self.attention.attend(rec.hidden[-1][:, None], memory, mask,
                                           positions=None if positions is None else positions[t:t + 1])
            ctx = ctx.squeeze(1)  # a view; indexing [:, 0] would zero-fill a full gradient per step
            if self.input_feeding:  # W_c feeds back, so it runs per step
                rec.feed = tanh(self.readout(torch.cat([ctx, rec.hidden[-1]], -1)))
                feeds.append(rec.feed)
            states.append(rec.hidden[-1])
            contexts.append(ctx)
            weights.append(w)
        if self.input_feeding:
            return torch.stack(feeds, 1), states, weights
        return tanh(self.readout(torch.cat([torch.stack(contexts, 1), torch.stack(states, 1)], -1))), states, weights

    def _cell(self, gates_in: Tensor, hidden: list[Tensor], cells: Optional[list[Tensor]]) -> None:
        """One time step of the stacked decoder RNN, in place on the per-layer lists.

        gates_in ``(B, G)``: the first layer's input projection W_ih x + b_ih, already computed
        (its embedding part for all positions at once); hidden[l] (and cells[l]) ``(B, H)``.
        The first layer applies the GRU/LSTM equations to it (PyTorch's gate order, the
        ``nn.GRU``/``nn.LSTM`` parameters, so checkpoints are unchanged); higher layers call the
        fused ``gru_cell``/``lstm_cell`` with dropout between layers as the module applies it.
        """
        h = hidden[0]
        gates_h = F.linear(h, self.rnn.weight_hh_l0, self.rnn.bias_hh_l0)
        if cells is None:  # GRU: r, z = σ(.), n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = n + z ⊙ (h - n)
            # split, not slicing: the backward of a split is one cat, that of each slice a
            # zero-filled full-size gradient plus a copy
            rz_in, n_in = gates_in.split([2 * self.hidden_size, self.hidden_size], dim=1)
            rz_h, n_h = gates_h.split([2 * self.hidden_size, self.hidden_size], dim=1)
            r, z = torch.sigmoid(rz_in + rz_h).chunk(2, dim=1)
            n = tanh(torch.addcmul(n_in, r, n_h))
            hidden[0] = torch.addcmul(n, z, h - n)
        else:  # LSTM: i, f, g, o gates; c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c')
            i, f, g, o = (gates_in + gates_h).chunk(4, dim=1)
            cells[0] = torch.addcmul(torch.sigmoid(f) * cells[0], torch.sigmoid(i), tanh(g))
            hidden[0] = torch.sigmoid(o) * tanh(cells[0])
        x = hidden[0]
        for layer in range(1, self.num_layers):
            x = apply_dropout(x, self.dropout, self.training)
            params = [getattr(self.rnn, f"{kind}_l{layer}") for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
            if cells is None:
                hidden[layer] = torch.gru_cell(x, hidden[layer], *params)
            else:
                hidden[layer], cells[layer] = torch.lstm_cell(x, (hidden[layer], cells[layer]), *params)
            x = hidden[layer]

    def output_projection(self) -> tuple[Tensor, Optional[Tensor]]:
        """``(weight (V, D_out), bias)``: the separate projection with its bias, or the tied
        embedding matrix (no bias; ``pre_output`` maps the features to the embedding size first)."""
        if self.output_proj is not None:
            return self.output_proj.weight, self.output_proj.bias
        return self.embed.weight, None

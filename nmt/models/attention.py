"""Attention: one protocol for every variant, ``(query, keys, values, mask) -> (context, weights)``.

Every module projects its keys/values once per source sentence with :meth:`Attention.memory`
(the result is carried in the decoder state) and then scores queries against that memory with
:meth:`Attention.attend`. Weights are always available as ``(B, H, T, S)`` (H = 1 for the
single-head RNN attentions), so alignments are never a special case; layers that do not need
them take the fused ``scaled_dot_product_attention`` path (except short key sets in training on
a CPU, where the explicit path is faster: ``CPU_EXPLICIT_MAX_KEYS``).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.models.dropout import dropout as apply_dropout

#: In training on a CPU, attention over at most this many keys takes the explicit path even when
#: no weights are wanted: for short sentences the fused kernel's forward+backward costs more than
#: two small matmuls and a softmax; the two are level near 32 keys (docs/performance.md). Beam
#: search (forward only, one query step) stays on the fused kernel, which is faster there, and
#: GPUs always take it.
CPU_EXPLICIT_MAX_KEYS = 32


class Memory(NamedTuple):
    """Projected keys and values of one attention module.

    keys: ``(B, H, S, Dk)``; values: ``(B, H, S, Dv)``.
    """

    keys: Tensor
    values: Tensor


def expand_mask(mask: Optional[Tensor]) -> Optional[Tensor]:
    """Bring a bool mask to 4-D ``(B|1, 1, T|1, S)``; True = attend.

    Accepts ``(B, S)`` key padding, ``(B, T, S)`` or already 4-D masks.
    """
    if mask is None or mask.dim() == 4:
        return mask
    if mask.dim() == 2:
        return mask[:, None, None, :]
    if mask.dim() == 3:
        return mask[:, None, :, :]
    raise ValueError(f"attention mask must be 2-, 3- or 4-D, got shape {tuple(mask.shape)}")


def scaled_dot_product(q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], dropout: float = 0.0,
                       causal: bool = False) -> tuple[Tensor, Tensor]:
    """Explicit attention (Vaswani et al. 2017 eq. 1) that also returns the weights.

    q ``(B,H,T,D)``, k ``(B,H,S,D)``, v ``(B,H,S,Dv)``, mask broadcastable to ``(B,H,T,S)``
    (True = attend) -> context ``(B,H,T,Dv)``, weights ``(B,H,T,S)`` (before dropout).
    """
    scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(q.size(-1)))
    if causal:
        t, s = scores.shape[-2:]
        future = torch.ones(t, s, dtype=torch.bool, device=q.device).triu(s - t + 1)
        scores = scores.masked_fill(future, float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1)
    dropped = apply_dropout(weights, dropout, training=dropout > 0)
    return torch.matmul(dropped, v), weights


class Attention(nn.Module):
    """The attention protocol.

    Subclasses implement :meth:`memory` and :meth:`attend`; :meth:`forward` composes them.
    """

    def memory(self, keys: Tensor, values: Tensor) -> Memory:  # pragma: no cover
        """Project keys ``(B,S,Dk_in)`` and values ``(B,S,Dv_in)`` once per source sentence."""
        raise NotImplementedError

    def attend(self, query: Tensor, memory: Memory, mask: Optional[Tensor] = None,
               need_weights: bool = True, causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:  # pragma: no cover
        """Query ``(B,T,Dq)`` -> context ``(B,T,Dout)``, weights ``(B,H,T,S)`` or None."""
        raise NotImplementedError

    def forward(self, query: Tensor, keys: Tensor, values: Tensor, mask: Optional[Tensor] = None,
                need_weights: bool = True, causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """``(query, keys, values, mask) -> (context, weights)``."""
        return self.attend(query, self.memory(keys, values), mask, need_weights=need_weights, causal=causal)


class MultiHeadAttention(Attention):
    """Multi-head scaled dot-product attention (Vaswani et al. 2017 §3.2.2).

    MultiHead(Q, K, V) = Concat(head_1..head_h) W^O with head_i = Attention(Q W_i^Q, K W_i^K, V W_i^V).
    Keys and values are projected by one fused ``(D, 2D)`` matrix.

    Args:
        d_model: model size D (divisible by ``num_heads``).
        num_heads: H.
        dropout: dropout on the attention weights.
    Raises:
        ValueError: when ``d_model % num_heads != 0``.
    """

    def __init__(self, d_model: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if d_model % num_heads != 0:
            raise ValueError(f"d_model={d_model} is not divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = d_model // num_heads
        self.dropout = dropout
        self.q_proj = nn.Linear(d_model, d_model)
        self.kv_proj = nn.Linear(d_model, 2 * d_model)
        self.out_proj = nn.Linear(d_model, d_model)
        for lin in (self.q_proj, self.kv_proj, self.out_proj):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)

    def _split(self, x: Tensor) -> Tensor:
        b, t, _ = x.shape  # (B, T, D) -> (B, H, T, Dh)
        return x.view(b, t, self.num_heads, self.head_dim).transpose(1, 2)

    def memory(self, keys: Tensor, values: Tensor) -> Memory:
        """keys/values ``(B,S,D)`` -> Memory of ``(B,H,S,Dh)`` each (one fused matmul when keys is values)."""
        if keys is values:
            k, v = self.kv_proj(keys).chunk(2, dim=-1)
        else:
            d = keys.size(-1)
            k = F.linear(keys, self.kv_proj.weight[:d], self.kv_proj.bias[:d])
            v = F.linear(values, self.kv_proj.weight[d:], self.kv_proj.bias[d:])
        return Memory(self._split(k), self._split(v))

    def attend(self, query: Tensor, memory: Memory, mask: Optional[Tensor] = None,
               need_weights: bool = True, causal: bool = False) -> tuple[Tensor, Optional[Tensor]]:
        """query ``(B,T,D)``, memory ``(B,H,S,Dh)``, mask ``(B,S)``/``(B,T,S)`` bool
        -> context ``(B,T,D)``, weights ``(B,H,T,S)`` (None unless ``need_weights``).

        ``causal`` masks future positions (position i attends to keys <= i + S - T).
        When the query batch is G times the memory batch (beam search with the encoder side
        kept once per sentence), rows ``j*G .. j*G+G-1`` attend to memory row j.

        Raises:
            ValueError: grouped queries with a causal or per-query mask.
        """
        q = self._split(self.q_proj(query))
        rows, heads, steps, head_dim = q.shape
        group = rows // memory.keys.size(0)
        if group > 1:  # `group` hypotheses per memory row (beam search): (B*G,H,T,Dh) -> (B,H,G*T,Dh)
            if causal or (mask is not None and mask.dim() != 2):
                raise ValueError("grouped queries need a (B, S) key padding mask and no causal mask")
            q = q.view(rows // group, group, heads, steps, head_dim).transpose(1, 2).reshape(
                rows // group, heads, group * steps, head_dim)
        mask4 = expand_mask(mask)
        p = self.dropout if self.training else 0.0
        short = self.training and q.device.type == "cpu" and memory.keys.size(2) <= CPU_EXPLICIT_MAX_KEYS
        if need_weights or p > 0 or short:
            # explicit path: the weights are wanted, attention dropout is on (the fused CPU
            # kernel has no dropout and would fall back to a slower reference implementation),
            # or the keys are few enough that it is faster on a CPU (CPU_EXPLICIT_MAX_KEYS)
            ctx, weights = scaled_dot_product(q, memory.keys, memory.values, mask4, p, causal)
            weights = weights if need_weights else None
        else:
            weights = None
            use_causal = causal and q.size(2) == memory.keys.size(2) and mask4 is None
            attn_mask = mask4
            if causal and not use_causal and q.size(2) > 1:  # rare: causal with a prefix or a mask
                t, s = q.size(2), memory.keys.size(2)
                allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(s - t)
                attn_mask = allowed if attn_mask is None else attn_mask & allowed
            ctx = F.scaled_dot_product_attention(q, memory.keys, memory.values, attn_mask=attn_mask,
                                                 dropout_p=p, is_causal=use_causal)
        if group > 1:  # back to one row per hypothesis
            ctx = ctx.view(rows // group, heads, group, steps, head_dim).transpose(1, 2).reshape(
                rows, heads, steps, head_dim)
            if weights is not None:
                weights = weights.view(rows // group, heads, group, steps, -1).transpose(1, 2).reshape(
                    rows, heads, steps, -1)
        ctx = ctx.transpose(1, 2).reshape(rows, steps, heads * head_dim)
        return self.out_proj(ctx), weights

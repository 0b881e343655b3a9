"""Single-head attention for RNN decoders: every score function of Bahdanau et al. (2015) and
Luong et al. (2015), global or local (local-m, local-p), behind the one attention protocol.

Shapes: query ``(B, T, Dq)``, encoder annotations ``(B, S, Dv)``, mask ``(B, S)`` bool (True =
real token); weights come back as ``(B, 1, T, S)`` like multi-head attention with H = 1.
"""
from __future__ import annotations

import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.choices import ATTENTION_SCORES as SCORES
from nmt.choices import ATTENTION_WINDOWS as WINDOWS
from nmt.models.activations import tanh
from nmt.models.attention import Attention, Memory
from nmt.models.step_memory import StepMemory, TapedMemory


class RNNAttention(Attention):
    """Score function x window.

    Scores e(q, h̄_s):

    * ``additive``/``concat``: v_a^T tanh(W_q q + W_k h̄_s) (Bahdanau et al. 2015 eq. 6; Luong
      et al. 2015 eq. 8 "concat"); W_k h̄ is computed once per sentence by :meth:`memory`.
    * ``dot``: q^T h̄_s; ``scaled_dot``: q^T h̄_s / sqrt(d); ``general``: q^T W_a h̄_s (Luong eq. 8),
      with W_a h̄ precomputed; ``cosine``: g · cos(q, h̄_s) with a learned or fixed scale g.
    * ``location``: e_t = W_a q over ``max_src_len`` positions, cut to the source (Luong eq. 9).

    Windows (Luong et al. 2015 §3.2): ``global`` (every source position); ``local_m``: p_t = t,
    only |s - p_t| <= D; ``local_p``: p_t = S · sigmoid(v_p^T tanh(W_p q)), only |s - p_t| <= D,
    and the scores get the Gaussian log-term -(s - p_t)^2 / (2 σ^2), σ = D / 2. The weights are
    renormalised over the window, i.e. softmax(e + log Gaussian) (Luong eq. 10 multiplies the
    softmax by the Gaussian without renormalising). p_t is clipped to the last real position
    for local-m; windows are clipped at sentence edges and masked by padding.

    Raises:
        ValueError: unknown score/window, or a dot-type score with ``query_dim != value_dim``.
    """

    def __init__(self, query_dim: int, value_dim: int, score: str = "additive", window: str = "global",
                 window_size: int = 10, attention_dim: int = 0, cosine_scale: float = 10.0,
                 learn_cosine_scale: bool = True, max_src_len: int = 128) -> None:
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown attention score {score!r}; expected one of {SCORES}")
        if window not in WINDOWS:
            raise ValueError(f"unknown attention window {window!r}; expected one of {WINDOWS}")
        if score in ("dot", "scaled_dot", "cosine") and query_dim != value_dim:
            raise ValueError(f"the {score} score needs equal query and key sizes, got {query_dim} and {value_dim}; "
                             "use score=general or additive")
        if window != "global" and window_size < 1:
            raise ValueError(f"local attention needs window_size >= 1, got {window_size}")
        self.score = "additive" if score == "concat" else score
        self.window = window
        self.window_size = window_size
        self.max_src_len = max_src_len
        dim = attention_dim or query_dim
        if self.score == "additive":
            self.key_proj = nn.Linear(value_dim, dim, bias=False)
            self.query_proj = nn.Linear(query_dim, dim)
            self.v = nn.Linear(dim, 1, bias=False)
        elif self.score == "general":
            self.key_proj = nn.Linear(value_dim, query_dim, bias=False)
        elif self.score == "location":
            self.location = nn.Linear(query_dim, max_src_len)
        elif self.score == "cosine":
            scale = torch.tensor(float(cosine_scale))
            if learn_cosine_scale:
                self.cosine_scale = nn.Parameter(scale)
            else:
                self.register_buffer("cosine_scale", scale)
        if window == "local_p":
            self.pos_proj = nn.Linear(query_dim, dim)
            self.pos_v = nn.Linear(dim, 1, bias=False)

    def memory(self, keys: Tensor, values: Tensor) -> Memory:
        """Annotations ``(B,S,Dv)`` -> Memory with keys ``(B,1,S,Dk)`` (projected once) and values ``(B,1,S,Dv)``."""
        if self.score in ("additive", "general"):
            keys = self.key_proj(keys)
        elif self.score == "cosine":
            keys = F.normalize(keys, dim=-1)
        return Memory(keys[:, None], values[:, None])

    def scores(self, query: Tensor, keys: Tensor, tape: Optional[StepMemory] = None) -> Tensor:
        """query ``(B,T,Dq)``, projected keys ``(B,S,Dk)`` -> unnormalised scores ``(B,T,S)``.

        ``tape``: the decoder's :class:`~nmt.models.step_memory.StepMemory` when the keys were
        wrapped by it (training); the query-key products then defer the keys' gradient to it.
        """
        products = (lambda q, k: torch.bmm(q, k.transpose(1, 2))) if tape is None else tape.scores
        if self.score == "additive":
            hidden = tanh(self.query_proj(query)[:, :, None, :] + keys[:, None, :, :])  # (B,T,S,A)
            return self.v(hidden).squeeze(-1)
        if self.score == "location":
            e = self.location(query)  # (B,T,max_src_len)
            s = keys.size(1)
            if s <= self.max_src_len:
                return e[:, :, :s]
            return F.pad(e, (0, s - self.max_src_len), value=float("-inf"))
        if self.score == "cosine":
            return self.cosine_scale * products(F.normalize(query, dim=-1), keys)
        e = products(query, keys)  # dot, general (keys = W_a h̄), scaled_dot
        return e / math.sqrt(query.size(-1)) if self.score == "scaled_dot" else e

    def window_centres(self, query: Tensor, mask: Tensor, positions: Optional[Tensor] = None) -> Optional[Tensor]:
        """The window centres p_t ``(B,T)`` of local attention (Luong et al. 2015 eq. 9), None for global.

        Args:
            query: ``(B,T,Dq)`` decoder states.
            mask: ``(B,S)`` bool, True at real source tokens.
            positions: ``(T,)`` long, the target positions t of the queries (needed by local-m).
        Raises:
            ValueError: local-m without ``positions``.
        """
        if self.window == "global":
            return None
        lengths = mask.sum(-1).to(query.dtype)  # (B,)
        if self.window == "local_m":
            if positions is None:
                raise ValueError("local_m attention needs the target positions of the queries")
            return torch.minimum(positions.to(query.dtype)[None, :], lengths[:, None] - 1)
        gate = torch.sigmoid(self.pos_v(tanh(self.pos_proj(query)))).squeeze(-1)  # (B,T)
        return lengths[:, None] * gate

    def attend(self, query: Tensor, memory: Memory | TapedMemory, mask: Optional[Tensor] = None, need_weights: bool = True,
               causal: bool = False, positions: Optional[Tensor] = None) -> tuple[Tensor, Optional[Tensor]]:
        """The protocol: query ``(B,T,Dq)`` -> context ``(B,T,Dv)``, weights ``(B,1,T,S)``.

        Args:
            query: ``(B,T,Dq)`` decoder states.
            memory: from :meth:`memory` (keys/values ``(B,1,S,.)``), or with the head axis
                already removed (``(B,S,.)``): a decoder calling once per time step removes it
                once, so the backward pass does not build a full-size gradient per step. A
                :class:`~nmt.models.step_memory.TapedMemory` (a decoder in training) has its
                gradients summed over the steps in one matmul instead of one outer product per step.
            mask: ``(B,S)`` bool, True at real source tokens.
            need_weights: accepted for the protocol; the weights are always returned (H = 1).
            positions: ``(T,)`` long, the target positions t of the queries (needed by local-m).
        Raises:
            ValueError: ``causal`` (RNN attention reads the source), or local-m without ``positions``.
        """
        if causal:
            raise ValueError("RNN attention attends over the source; causal masking does not apply")
        keys, values = memory.keys, memory.values
        tape = memory.tape if isinstance(memory, TapedMemory) else None
        if keys.dim() == 4:
            keys, values = keys[:, 0], values[:, 0]
        bsz, src_len = keys.shape[:2]
        if mask is None:
            mask = torch.ones(bsz, src_len, dtype=torch.bool, device=keys.device)
        e = self.scores(query, keys, tape)
        allowed = mask[:, None, :].expand_as(e)
        centre = self.window_centres(query, mask, positions)
        if centre is not None:
            dist = torch.arange(src_len, device=e.device, dtype=e.dtype)[None, None, :] - centre[..., None]
            allowed = allowed & (dist.abs() <= self.window_size)
            if self.window == "local_p":
                sigma = self.window_size / 2.0
                e = e - dist.pow(2) / (2 * sigma ** 2)
        weights = torch.softmax(e.masked_fill(~allowed, float("-inf")), dim=-1)  # (B,T,S)
        context = torch.bmm(weights, values) if tape is None else tape.context(weights, values)
        return context, weights[:, None]

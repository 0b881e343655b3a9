"""Ensembles of models at decoding time: the mean of the members' next-token probabilities.

As fairseq's ``EnsembleModel``: at every step each member scores the next token with its own
state, and the ensemble's log-probability is ``log (1/N sum_i p_i) = logsumexp_i(log p_i) -
log N``; its alignment is the mean of the members' (head-averaged) attention. The members may
be of different architectures (Transformer and RNN) as long as they share one target
vocabulary. The ensemble's :class:`DecoderState` holds every member's cache under the prefix
``m<i>.`` (and the union of their ``shared`` entries), so ``expand`` and ``index_select``
reorder all members at once and the searches in :mod:`nmt.search` need no change.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from nmt.models.interfaces import DecoderOutput, DecoderState, EncoderOutput


def _prefix(i: int) -> str:
    return f"m{i}."


class Ensemble(nn.Module):
    """N encoder-decoder models that decode as one (log-probability averaging).

    Offers the decoding interface of :class:`~nmt.models.seq2seq.Seq2Seq` (``encode``,
    ``init_state``, ``step``) and a teacher-forced :meth:`forward` for scoring.

    Args:
        models: the members (at least one), each with ``encode``/``init_state``/``step``,
            all predicting the same target vocabulary of size V.
    Raises:
        ValueError: for an empty list.
    """

    def __init__(self, models: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(models) == 0:
            raise ValueError("an ensemble needs at least one model")
        self.models = nn.ModuleList(models)
        limits = [m.max_positions for m in models if getattr(m, "max_positions", None)]
        self.max_positions = min(limits) if limits else None  # what every member accepts

    def __len__(self) -> int:
        return len(self.models)

    def encode(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor) -> list[EncoderOutput]:
        """src_tokens ``(B,S)`` -> one :class:`EncoderOutput` per member (what :meth:`init_state` takes)."""
        return [m.encode(src_tokens, src_lengths, src_mask) for m in self.models]

    def init_state(self, enc: list[EncoderOutput]) -> DecoderState:
        """Every member's initial state in one :class:`DecoderState` (keys ``m<i>.<key>``, step 0)."""
        return self._merge([m.init_state(e) for m, e in zip(self.models, enc)])

    def member_states(self, state: DecoderState) -> list[DecoderState]:
        """Split an ensemble state into the members' states (inverse of :meth:`init_state`'s merge)."""
        out = []
        for i in range(len(self.models)):
            p = _prefix(i)
            cache = {k[len(p):]: v for k, v in state.cache.items() if k.startswith(p)}
            shared = frozenset(k[len(p):] for k in state.shared if k.startswith(p))
            out.append(DecoderState(state.step, cache, shared, state.beam))
        return out

    @staticmethod
    def _merge(states: Sequence[DecoderState]) -> DecoderState:
        steps = {s.step for s in states}
        beams = {s.beam for s in states}
        if len(steps) != 1 or len(beams) != 1:
            raise ValueError(f"ensemble members out of step: steps {sorted(steps)}, beams {sorted(beams)}")
        cache: dict[str, Tensor] = {}
        shared = set()
        for i, s in enumerate(states):
            p = _prefix(i)
            cache.update({p + k: v for k, v in s.cache.items()})
            shared.update(p + k for k in s.shared)
        return DecoderState(steps.pop(), cache, frozenset(shared), beams.pop())

    @torch.no_grad()
    def step(self, tokens: Tensor, state: DecoderState, need_attn: bool = True
             ) -> tuple[Tensor, Optional[Tensor], DecoderState]:
        """One incremental step of every member.

        Args:
            tokens: ``(B, 1)`` the previous output token of each hypothesis.
            state: the ensemble state after ``state.step`` tokens.
        Returns:
            ``logsumexp_i(lprobs_i) - log N`` ``(B, V)`` (log of the mean probability), the mean
            of the members' head-averaged attention ``(B, S)`` (None when not requested or no
            member gives it), and the new state.
        Raises:
            ValueError: when the members' vocabularies differ in size.
        """
        lprobs, attns, states = [], [], []
        for model, member_state in zip(self.models, self.member_states(state)):
            lp, attn, new = model.step(tokens, member_state, need_attn=need_attn)
            lprobs.append(lp.float())
            states.append(new)
            if attn is not None:
                attns.append(attn.float())
        sizes = {lp.size(-1) for lp in lprobs}
        if len(sizes) != 1:
            raise ValueError(f"ensemble members predict vocabularies of different sizes: {sorted(sizes)}")
        combined = torch.logsumexp(torch.stack(lprobs), dim=0) - math.log(len(lprobs))
        attn = torch.stack(attns).mean(dim=0) if need_attn and attns else None
        return combined, attn, self._merge(states)

    def forward(self, src_tokens: Tensor, src_lengths: Tensor, src_mask: Tensor, tgt_in: Tensor,
                need_attn: bool = False, all_attn: bool = False, features_only: bool = False) -> DecoderOutput:
        """Teacher forcing: src ``(B,S)``, tgt_in ``(B,T)`` -> ``DecoderOutput`` whose ``logits``
        ``(B,T,V)`` are the ensemble's log-probabilities (a softmax of them gives the mean of
        the members' distributions) and ``attn`` ``(B,1,T,S)`` the mean of the members'
        head-averaged alignment attention (with ``need_attn``).

        Raises:
            ValueError: ``all_attn`` or ``features_only`` (members' layers are not comparable;
                use a member for per-layer attention).
        """
        if all_attn or features_only:
            raise ValueError("an ensemble gives log-probabilities and mean attention only; "
                             "ask a member (ensemble.models[i]) for all_attn or features_only")
        outs = [m(src_tokens, src_lengths, src_mask, tgt_in, need_attn=need_attn) for m in self.models]
        lprobs = torch.stack([torch.log_softmax(o.logits.float(), dim=-1) for o in outs])
        logits = torch.logsumexp(lprobs, dim=0) - math.log(len(outs))
        attn = None
        if need_attn and all(o.attn is not None for o in outs):
            attn = torch.stack([o.attn.float().mean(dim=1, keepdim=True) for o in outs]).mean(dim=0)
        return DecoderOutput(logits, attn)

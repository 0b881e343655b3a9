"""Gradients of an attention memory read once per decoder step, summed in one matmul.

An RNN decoder attends over the same source memory at every target position t: scores
``e_t = q_t K^T`` (Luong et al. 2015 eq. 8, dot/general) and context ``c_t = a_t V``
(Bahdanau et al. 2015 eq. 5). Autograd differentiates each step on its own, so the gradients of
the memory are T outer products ``g_t^T q_t`` and ``a_t^T g_t``, each ``(B, S, D)``, added into
one buffer T times: ~4 passes over a ``(B, S, D)`` tensor per step and per memory tensor. Their
sum is a single batched matmul, ``dK = G_e^T Q`` and ``dV = A^T G_c`` with the T steps stacked:

* :class:`StepMemory` wraps the keys and values once before the decoder loop
  (:meth:`StepMemory.wrap`); the wrapped tensors equal the originals.
* :meth:`StepMemory.scores` and :meth:`StepMemory.context` replace the two ``bmm`` calls of a
  step. Their backward returns the gradients of the query and the weights at once and records
  the factors of the memory's gradient on the tape.
* After the last step's backward, the wrapper's backward sums the tape in one ``bmm`` per memory
  tensor (autograd runs it after every use of its outputs).

This halves the cost of a step's attention backward against per-step autograd (numbers in
docs/performance.md, "Why the hot path looks as it does"). The results
equal per-step autograd up to float summation order. Double backward is not supported
(``create_graph=True`` raises). Without gradients (beam search, validation) nothing is wrapped.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable


class TapedMemory(NamedTuple):
    """An attention memory wrapped by :meth:`StepMemory.wrap`: keys ``(B,S,Dk)`` and values
    ``(B,S,Dv)`` equal to the originals, and the tape that collects their gradients (its
    ``scores``/``context`` replace the two ``bmm`` calls of each step)."""

    keys: Tensor
    values: Tensor
    tape: "StepMemory"


class StepMemory:
    """The tape of one decoder forward: factors of the memory gradients, one entry per step.

    Use one instance per forward pass::

        tape = StepMemory()
        keys, values = tape.wrap(keys, values)      # (B, S, Dk), (B, S, Dv)
        for t in range(T):
            e = tape.scores(q_t, keys)              # (B, 1, S)
            ...
            c = tape.context(a_t, values)           # (B, 1, Dv)
    """

    def __init__(self) -> None:
        self.score_factors: list[tuple[Tensor, Tensor]] = []  # (grad of e_t (B,T_t,S), q_t (B,T_t,Dk))
        self.context_factors: list[tuple[Tensor, Tensor]] = []  # (a_t (B,T_t,S), grad of c_t (B,T_t,Dv))

    def wrap(self, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """keys ``(B,S,Dk)``, values ``(B,S,Dv)`` -> the same values, whose gradients come from the tape
        (carry them with the tape as a :class:`TapedMemory`)."""
        return _Memory.apply(keys, values, self)

    def scores(self, query: Tensor, keys: Tensor) -> Tensor:
        """query ``(B,T,Dk)``, wrapped keys ``(B,S,Dk)`` -> ``query @ keys^T`` ``(B,T,S)``."""
        return _StepProduct.apply(query, keys, self.score_factors, True)

    def context(self, weights: Tensor, values: Tensor) -> Tensor:
        """weights ``(B,T,S)``, wrapped values ``(B,S,Dv)`` -> ``weights @ values`` ``(B,T,Dv)``."""
        return _StepProduct.apply(weights, values, self.context_factors, False)


def _sum_outer(factors: list[tuple[Tensor, Tensor]]) -> Tensor:
    """sum_t a_t^T b_t for a_t ``(B,T_t,S)``, b_t ``(B,T_t,D)`` -> ``(B,S,D)``, as one bmm."""
    left, right = zip(*factors)
    return torch.bmm(torch.cat(left, 1).transpose(1, 2), torch.cat(right, 1))


class _Memory(torch.autograd.Function):
    @staticmethod
    def forward(ctx, keys: Tensor, values: Tensor, tape: StepMemory):
        ctx.tape = tape
        ctx.set_materialize_grads(False)
        return keys.view_as(keys), values.view_as(values)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_keys, grad_values):
        tape = ctx.tape
        if tape.score_factors:
            deferred = _sum_outer(tape.score_factors)
            grad_keys = deferred if grad_keys is None else grad_keys + deferred
        if tape.context_factors:
            deferred = _sum_outer(tape.context_factors)
            grad_values = deferred if grad_values is None else grad_values + deferred
        tape.score_factors.clear()
        tape.context_factors.clear()
        return grad_keys, grad_values, None


class _StepProduct(torch.autograd.Function):
    """One step's product with the wrapped memory: ``x @ M^T`` (scores, x = q_t, M = keys) or
    ``x @ M`` (context, x = a_t, M = values). Backward returns the gradient of x and records the
    factors of M's gradient (``g^T x`` or ``x^T g``) on the tape."""

    @staticmethod
    def forward(ctx, x: Tensor, memory: Tensor, factors: list, transpose: bool):
        ctx.save_for_backward(x, memory)
        ctx.factors, ctx.transpose = factors, transpose
        return torch.bmm(x, memory.transpose(1, 2) if transpose else memory)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, memory = ctx.saved_tensors
        if ctx.needs_input_grad[1]:
            ctx.factors.append((grad, x) if ctx.transpose else (x, grad))
        grad_x = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.bmm(grad, memory if ctx.transpose else memory.transpose(1, 2))
        return grad_x, None, None, None

"""tanh computed through the logistic sigmoid on CPUs: tanh(x) = 2 σ(2x) − 1.

On AVX-512 CPUs ``torch.tanh`` is several times slower than ``torch.sigmoid``, and the identity
above, in four elementwise passes, still costs a fraction of ``torch.tanh`` (docs/performance.md,
"Why the hot path looks as it does"). The BiRNN
decoder's additive attention (Bahdanau et al. 2015 eq. 6) applies tanh to a
``(batch, src_len, attention_dim)`` tensor at every target position, so this is on its hot path.

The result differs from ``torch.tanh`` by at most a few float32 ulps of 1 (absolute error
below 3e-7; near 0 the relative error is larger, the absolute one is not). The gradient is
``grad · (1 − y²)`` from the output, as ``torch.tanh``'s. Other devices use ``torch.tanh``.
"""
from __future__ import annotations

import torch
from torch import Tensor


def _tanh_via_sigmoid(x: Tensor) -> Tensor:
    return torch.mul(x, 2.0).sigmoid_().mul_(2.0).sub_(1.0)


class _Tanh(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        y = _tanh_via_sigmoid(x)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


def tanh(x: Tensor) -> Tensor:
    """Hyperbolic tangent of ``x`` (any shape, float), differentiable; see the module docstring.

    CPU float32/float64 tensors go through 2 σ(2x) − 1; other devices and dtypes (bf16/fp16
    autocast on a GPU) call ``torch.tanh``.
    """
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
        return torch.tanh(x)
    if not (torch.is_grad_enabled() and x.requires_grad):
        return _tanh_via_sigmoid(x)
    return _Tanh.apply(x)

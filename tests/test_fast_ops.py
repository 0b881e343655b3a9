"""The hand-written fast paths equal the reference computations they replace."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt.models.dropout import dropout
from nmt.models.loss import label_smoothed_nll, linear_label_smoothed_nll


@pytest.mark.parametrize("eps", [0.0, 0.1])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("chunk_size", [7, 64, 1000])
def test_fused_projection_and_loss_equal_the_unfused_ones(eps, with_bias, chunk_size):
    """Loss, NLL and the gradients of features, weight and bias, with padding, for chunk
    sizes that do and do not divide the number of rows."""
    torch.manual_seed(0)
    feats = torch.randn(3, 11, 16, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(50, 16, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(50, dtype=torch.float64, requires_grad=True) if with_bias else None
    target = torch.randint(1, 50, (3, 11))
    target[0, 8:] = 0
    target[2, 3:] = 0

    ref_loss, ref_nll = label_smoothed_nll(F.linear(feats, weight, bias), target, eps)
    (2.5 * ref_loss).backward()
    ref_grads = [t.grad.clone() for t in (feats, weight, bias) if t is not None]
    for t in (feats, weight, bias):
        if t is not None:
            t.grad = None

    loss, nll = linear_label_smoothed_nll(feats, weight, bias, target, eps, chunk_size=chunk_size)
    (2.5 * loss).backward()
    torch.testing.assert_close(loss, ref_loss.to(loss.dtype))
    torch.testing.assert_close(nll, ref_nll.to(nll.dtype))
    assert not nll.requires_grad
    for got, want in zip([t.grad for t in (feats, weight, bias) if t is not None], ref_grads):
        torch.testing.assert_close(got, want)


def test_fused_loss_without_gradients_and_bad_shapes():
    feats, weight = torch.randn(4, 5, 8), torch.randn(30, 8)
    target = torch.randint(1, 30, (4, 5))
    with torch.no_grad():
        loss, nll = linear_label_smoothed_nll(feats, weight, None, target, 0.1)
    want, want_nll = label_smoothed_nll(F.linear(feats, weight), target, 0.1)
    torch.testing.assert_close(loss, want, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(nll, want_nll, rtol=1e-5, atol=1e-4)
    with pytest.raises(ValueError, match="do not agree"):
        linear_label_smoothed_nll(feats, weight, None, target[:, :3], 0.1)


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.ones(1000, 1000, requires_grad=True)
    y = dropout(x, p, training=True)
    dropped = (y == 0).float().mean().item()
    assert abs(dropped - p) < 0.003  # 1e6 Bernoulli draws: std 5e-4
    assert torch.allclose(y[y != 0], torch.tensor(1.0 / (1.0 - p)), rtol=1e-4)
    assert abs(y.mean().item() - 1.0) < 0.01  # inverted dropout keeps the expectation
    y.backward(torch.full_like(y, 3.0))
    assert torch.equal(x.grad, 3.0 * y.detach())  # gradient flows exactly where the mask kept


def test_dropout_masks_are_unbiased_per_position_and_reproducible():
    """Each of the four 16-bit lanes of a random word is unbiased, and the global seed fixes the mask."""
    torch.manual_seed(1)
    y = dropout(torch.ones(200_000, 4), 0.5, training=True)
    per_lane = (y == 0).float().mean(dim=0)
    assert torch.all((per_lane - 0.5).abs() < 0.006), per_lane
    torch.manual_seed(3)
    a = dropout(torch.ones(64, 33), 0.2, training=True)
    torch.manual_seed(3)
    b = dropout(torch.ones(64, 33), 0.2, training=True)
    assert torch.equal(a, b)


def test_dropout_is_identity_outside_training_and_rejects_bad_rates():
    x = torch.randn(5, 6)
    assert dropout(x, 0.3, training=False) is x
    assert dropout(x, 0.0, training=True) is x
    for bad in (-0.1, 1.0):
        with pytest.raises(ValueError, match="dropout probability"):
            dropout(x, bad, training=True)


def test_tanh_through_sigmoid_matches_torch_tanh_in_value_and_gradient():
    """2σ(2x) − 1 stays within 3e-7 of tanh over the float32 range that matters (saturation
    included), and its gradient is tanh's, (1 − y²) · grad, with and without autograd."""
    from nmt.models.activations import tanh

    x = torch.linspace(-30, 30, 600_001)
    want = torch.tanh(x.double())
    assert (tanh(x).double() - want).abs().max() < 3e-7
    assert tanh(torch.tensor([0.0, 1e-30, -50.0, 50.0])).tolist() == [0.0, 0.0, -1.0, 1.0]
    xs = torch.randn(64, 33, dtype=torch.double, requires_grad=True)
    probe = torch.randn(64, 33, dtype=torch.double)
    got = torch.autograd.grad((tanh(xs) * probe).sum(), xs)[0]
    ref = torch.autograd.grad((torch.tanh(xs) * probe).sum(), xs)[0]
    torch.testing.assert_close(got, ref)
    assert torch.autograd.gradcheck(tanh, (torch.randn(5, 3, dtype=torch.double, requires_grad=True),))
    with torch.no_grad():
        torch.testing.assert_close(tanh(xs), torch.tanh(xs))

"""BTS's scale-invariant log loss."""
import math

import pytest
import torch

from sapa.tasks.depth.loss import silog_loss


def test_hand_worked_value_and_valid_pixels_only():
    # valid pixels: d = ln p - ln g = 0 and 1; the 0 and 0.05 ground truths (<= 0.1) are ignored
    gt = torch.tensor([1.0, 1.0, 0.0, 0.05]).view(1, 1, 2, 2)
    pred = torch.tensor([1.0, math.e, 7.0, 3.0]).view(1, 1, 2, 2)
    # mean d^2 = 0.5, mean d = 0.5: 10 * sqrt(0.5 - 0.85 * 0.25)
    assert float(silog_loss(pred, gt)) == pytest.approx(10 * math.sqrt(0.2875), rel=1e-6)


def test_pooled_over_the_batch_as_bts():
    gt = torch.tensor([[1.0, 1.0], [1.0, 1.0]]).view(2, 1, 1, 2)
    pred = torch.tensor([[1.0, 1.0], [math.e, math.e]]).view(2, 1, 1, 2)
    # d = 0, 0, 1, 1 over the batch: mean d^2 = 0.5, mean d = 0.5
    assert float(silog_loss(pred, gt)) == pytest.approx(10 * math.sqrt(0.2875), rel=1e-6)


def test_scale_invariance_with_full_variance_focus():
    gt = torch.rand(2, 1, 4, 4) * 5 + 0.5
    assert float(silog_loss(2 * gt, gt, variance_focus=1.0)) == pytest.approx(0.0, abs=1e-3)
    assert float(silog_loss(2 * gt, gt)) > 1.0


def test_gradient_flows_and_an_empty_batch_is_zero_but_differentiable():
    pred = (torch.rand(1, 1, 3, 3) + 1).requires_grad_()
    silog_loss(pred, torch.full((1, 1, 3, 3), 2.0)).backward()
    assert pred.grad.abs().sum() > 0
    pred.grad = None
    loss = silog_loss(pred, torch.zeros(1, 1, 3, 3))
    loss.backward()
    assert float(loss.detach()) == 0.0 and pred.grad is not None and pred.grad.abs().sum() == 0


def test_explicit_mask():
    gt = torch.tensor([1.0, 1.0]).view(1, 1, 1, 2)
    pred = torch.tensor([1.0, math.e]).view(1, 1, 1, 2)
    mask = torch.tensor([True, False]).view(1, 1, 1, 2)
    assert float(silog_loss(pred, gt, mask)) == 0.0


@pytest.mark.parametrize("kwargs, match", [
    ({"gt": torch.ones(1, 1, 2, 3)}, "same shape"),
    ({"mask": torch.ones(1, 1, 2, 2)}, "mask must be a bool"),
    ({"variance_focus": 1.5}, "variance_focus"),
])
def test_bad_arguments(kwargs, match):
    args = {"pred": torch.ones(1, 1, 2, 2), "gt": torch.ones(1, 1, 2, 2), **kwargs}
    with pytest.raises(ValueError, match=match):
        silog_loss(**args)

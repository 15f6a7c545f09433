"""Segmentation as a ``sapa compare`` task: loss, inference, and an evaluator whose ``sync``
sums the counts of every process."""
import pytest
import torch
import torch.nn.functional as F

from sapa.tasks.base import Meter
from sapa.tasks.segmentation import TASK, SegmentationMeter
from sapa.tasks.segmentation.task import SegmentationEvaluator


class TwoProcesses:
    """A ``Reducer`` as seen by one of two processes whose partner contributes ``other``."""

    world_size = 2

    def __init__(self, other: torch.Tensor):
        self.other = other

    def all_reduce_sum(self, t):
        return t + self.other

    def all_gather_object(self, obj):
        raise AssertionError("segmentation sums counts, it never gathers")


def test_evaluator_sync_sums_the_counts_of_every_process():
    g = torch.Generator().manual_seed(0)
    pred = torch.randint(0, 4, (6, 9, 9), generator=g)
    target = torch.randint(0, 4, (6, 9, 9), generator=g)
    target[0, :3] = 255
    whole = SegmentationMeter(4, 255)
    whole.update(pred, target)
    a, b = SegmentationEvaluator(4, 255), SegmentationEvaluator(4, 255)
    assert isinstance(a, Meter)
    a.update(pred[:4], (None, target[:4]))
    b.update(pred[4:], (None, target[4:]))
    sa, sb = a.meter.state().clone(), b.meter.state().clone()
    a.sync(TwoProcesses(sb))
    b.sync(TwoProcesses(sa))
    assert a.compute() == b.compute() == whole.compute()


def test_evaluator_refuses_an_empty_evaluation():
    e = SegmentationEvaluator(3, 255)
    e.update(torch.zeros(1, 2, 2, dtype=torch.long), (None, torch.full((1, 2, 2), 255)))
    with pytest.raises(ValueError, match="no labelled"):
        e.compute()


def test_loss_and_predict():
    torch.manual_seed(0)
    config = {"model": "segnet", "widths": [4, 8], "backbone": None, "pretrained": None,
              "channels": None, "image_size": 16}

    class Info:
        num_classes = 3

    model = TASK.build_model(config, "bilinear", Info())
    x = TASK.example_input(config, torch.device("cpu"))
    assert x.shape == (1, 3, 16, 16)
    y = torch.randint(0, 3, (1, 16, 16))
    y[0, 0] = 255
    assert torch.equal(TASK.loss(model, (x, y)), F.cross_entropy(model(x), y, ignore_index=255))
    assert torch.equal(TASK.predict(model, (x, y)), model(x).argmax(1))

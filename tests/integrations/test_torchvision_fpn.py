"""``sapa.integrations.torchvision.replace_fpn_upsampling`` on torchvision's FPN and detectors."""
from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn
from torchvision.models import detection
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from sapa.integrations.torchvision import UpsamplingFeaturePyramidNetwork, replace_fpn_upsampling


def _features(sizes, channels=(8, 16, 32), batch=2, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return OrderedDict((f"f{i}", torch.randn(batch, c, h, w, generator=g, dtype=dtype))
                       for i, (c, (h, w)) in enumerate(zip(channels, sizes)))


@pytest.mark.parametrize("sizes", [[(32, 32), (16, 16), (8, 8)],       # exact x2, as detectors pad
                                   [(25, 27), (13, 14), (7, 7)]],      # odd sizes (2H - 1, ...)
                         ids=["x2", "odd"])
@pytest.mark.parametrize("extra", [None, "pool", "p6p7"])
def test_nearest_upsampler_reproduces_torchvision_bit_for_bit(sizes, extra):
    torch.manual_seed(0)
    extra_blocks = {None: None, "pool": LastLevelMaxPool(), "p6p7": LastLevelP6P7(16, 16)}[extra]
    fpn = FeaturePyramidNetwork([8, 16, 32], 16, extra_blocks=extra_blocks).eval()
    x = _features(sizes)
    expected = fpn(x)
    new = replace_fpn_upsampling(fpn, "nearest")
    assert isinstance(new, UpsamplingFeaturePyramidNetwork)
    assert isinstance(new, FeaturePyramidNetwork)
    got = new(x)
    assert list(got) == list(expected)
    for k in expected:
        assert torch.equal(got[k], expected[k]), k


def test_fpn_shares_blocks_and_builds_one_upsampler_per_step():
    fpn = FeaturePyramidNetwork([8, 16, 32, 64], 24)
    new = replace_fpn_upsampling(fpn, "sapa-b", embed_dim=8)
    assert new.inner_blocks is fpn.inner_blocks and new.layer_blocks is fpn.layer_blocks
    assert len(new.upsamplers) == 3
    assert len({id(u) for u in new.upsamplers}) == 3
    for u in new.upsamplers:
        assert u.q.out_channels == 8  # kwargs reach the upsampler
    assert new.training == fpn.training


def test_upsampler_specs_with_options():
    new = replace_fpn_upsampling(FeaturePyramidNetwork([8, 16, 32], 16), "sapa-b:kernel_size=3")
    assert all(u.kernel_size == 3 for u in new.upsamplers)


def test_upsampler_sees_coarser_map_as_x_and_finer_lateral_as_guide():
    calls = []

    class Spy(nn.Module):
        def forward(self, x, guide):
            calls.append((tuple(x.shape), tuple(guide.shape)))
            return nn.functional.interpolate(x, size=guide.shape[-2:], mode="nearest")

    fpn = FeaturePyramidNetwork([8, 16, 32], 16)
    new = replace_fpn_upsampling(fpn, "nearest")
    new.upsamplers = nn.ModuleList([Spy(), Spy()])
    new(_features([(32, 32), (16, 16), (8, 8)]))
    # coarse to fine: the merged 8x8 map guided by the 16x16 lateral, then 16x16 by 32x32
    assert calls == [((2, 16, 8, 8), (2, 16, 16, 16)), ((2, 16, 16, 16), (2, 16, 32, 32))]


def test_upsamplers_follow_fpn_device_and_dtype():
    fpn = FeaturePyramidNetwork([8, 16, 32], 16).double()
    new = replace_fpn_upsampling(fpn, "sapa-g")
    assert all(p.dtype == torch.float64 for p in new.upsamplers.parameters())
    out = new(_features([(16, 16), (8, 8), (4, 4)], dtype=torch.float64))
    assert out["f0"].dtype == torch.float64


def _faster_rcnn():
    return detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                             min_size=64, max_size=64)


def _retinanet():
    return detection.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                            min_size=64, max_size=64)


def _fcos():
    return detection.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3,
                                       min_size=64, max_size=64)


DETECTORS = {"faster_rcnn": _faster_rcnn, "retinanet": _retinanet, "fcos": _fcos}


def _batch():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 64, generator=g), torch.rand(3, 48, 64, generator=g)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 30.0, 40.0], [30.0, 20.0, 60.0, 60.0]]),
                "labels": torch.tensor([1, 2])},
               {"boxes": torch.tensor([[10.0, 5.0, 40.0, 30.0]]), "labels": torch.tensor([2])}]
    return images, targets


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_trains_and_infers_with_sapa(name):
    torch.manual_seed(0)
    model = replace_fpn_upsampling(DETECTORS[name](), "sapa-b")
    assert isinstance(model.backbone.fpn, UpsamplingFeaturePyramidNetwork)
    images, targets = _batch()
    model.train()
    losses = model(images, targets)
    loss = sum(losses.values())
    assert torch.isfinite(loss)
    loss.backward()
    for i, up in enumerate(model.backbone.fpn.upsamplers):
        grads = [p.grad for p in up.parameters()]
        assert grads and all(g is not None and torch.isfinite(g).all() for g in grads), i
        assert any(g.abs().sum() > 0 for g in grads), i
    model.eval()
    with torch.no_grad():
        out = model(images)
    assert len(out) == 2 and set(out[0]) >= {"boxes", "scores", "labels"}


@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_with_nearest_equals_unmodified_detector(name):
    torch.manual_seed(0)
    model = DETECTORS[name]().eval()
    swapped = replace_fpn_upsampling(copy.deepcopy(model), "nearest").eval()
    images, _ = _batch()
    with torch.no_grad():
        a, b = model.backbone(torch.stack([images[0]])), swapped.backbone(torch.stack([images[0]]))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_checkpoint_of_unmodified_model_loads_reporting_only_upsampler_keys():
    torch.manual_seed(0)
    original = _faster_rcnn()
    state = original.state_dict()
    torch.manual_seed(1)  # different random weights everywhere
    model = replace_fpn_upsampling(_faster_rcnn(), "sapa-b")
    result = model.load_state_dict(state, strict=False)
    assert result.unexpected_keys == []
    assert result.missing_keys
    assert all(k.startswith("backbone.fpn.upsamplers.") for k in result.missing_keys)
    assert set(result.missing_keys) == {k for k in model.state_dict() if ".upsamplers." in k}
    loaded = model.state_dict()
    for k, v in state.items():
        assert torch.equal(loaded[k], v), k


def test_mask_and_keypoint_rcnn_are_converted():
    for build in (detection.maskrcnn_resnet50_fpn, detection.keypointrcnn_resnet50_fpn):
        model = replace_fpn_upsampling(build(weights=None, weights_backbone=None, num_classes=2),
                                       "carafe")
        assert isinstance(model.backbone.fpn, UpsamplingFeaturePyramidNetwork)
        assert len(model.backbone.fpn.upsamplers) == 3


def test_errors():
    with pytest.raises(TypeError, match="model_or_fpn must be an nn.Module"):
        replace_fpn_upsampling("resnet", "sapa-b")
    with pytest.raises(ValueError, match="contains no torchvision.ops.FeaturePyramidNetwork"):
        replace_fpn_upsampling(nn.Sequential(nn.Conv2d(3, 3, 1)), "sapa-b")
    model = nn.Sequential(FeaturePyramidNetwork([8, 16], 8))
    before = model[0]
    with pytest.raises(ValueError, match="unknown upsampler"):
        replace_fpn_upsampling(model, "sapa-x")
    assert model[0] is before  # nothing changed
    with pytest.raises(ValueError, match="4 feature maps"):
        replace_fpn_upsampling(FeaturePyramidNetwork([8, 16, 32, 64], 8), "nearest")(
            _features([(8, 8), (4, 4), (2, 2)]))

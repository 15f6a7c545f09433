"""FPN decoder: tested on a tiny stand-in backbone with timm's ``feature_info`` interface, and
on a real timm backbone (timm is in the ``dev`` extra, so it runs wherever the suite does)."""
import sys

import pytest
import torch
import torch.nn as nn

from sapa.models import FPN, build_model, timm_backbone


class _Info:
    def __init__(self, channels, reductions):
        self._c, self._r = list(channels), list(reductions)

    def channels(self):
        return self._c

    def reduction(self):
        return self._r


class TinyBackbone(nn.Module):
    """Strided convs returning features at strides 4, 8, 16 (like timm's features_only)."""

    def __init__(self, channels=(6, 10, 12)):
        super().__init__()
        self.stem = nn.Conv2d(3, channels[0], 3, stride=4, padding=1)
        self.stages = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1)
                                    for a, b in zip(channels, channels[1:]))
        self.feature_info = _Info(channels, [4 * 2 ** i for i in range(len(channels))])

    def forward(self, x):
        feats = [self.stem(x)]
        for s in self.stages:
            feats.append(s(feats[-1]))
        return feats


@pytest.mark.parametrize("upsampler", ["bilinear", "sapa-b"])
def test_fpn_shapes_and_guides(upsampler):
    torch.manual_seed(0)
    model = FPN(TinyBackbone(), num_classes=5, upsampler=upsampler, channels=8)
    seen, lat = {}, {}
    for i, up in enumerate(model.upsamplers):
        up.register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i, (a, o)))
    for i, conv in enumerate(model.lateral):
        conv.register_forward_hook(lambda m, a, o, i=i: lat.__setitem__(i, o))
    out = model(torch.randn(2, 3, 64, 32))
    assert out.shape == (2, 5, 64, 32)
    assert len(seen) == 2  # 3 levels, 2 top-down steps
    for i, ((x, guide), o) in seen.items():
        assert guide is lat[i]  # guided by the matching (projected) encoder feature
        assert o.shape == lat[i].shape
    assert model.last_upsampler() is model.upsamplers[0]
    out.sum().backward()
    assert all(p.grad is not None for p in model.upsamplers.parameters())


def test_fpn_rejects_bad_backbones_and_sizes():
    with pytest.raises(TypeError, match="feature_info"):
        FPN(nn.Conv2d(3, 3, 1), 3)
    bad = TinyBackbone()
    bad.feature_info = _Info((6, 10, 12), (4, 8, 32))
    with pytest.raises(ValueError, match="double"):
        FPN(bad, 3)
    with pytest.raises(ValueError, match="num_classes"):
        FPN(TinyBackbone(), 1)
    model = FPN(TinyBackbone(), 3, channels=4)
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 3, 40, 32))


def test_without_timm_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # `import timm` now raises ImportError
    with pytest.raises(ImportError, match=r"sapa\[timm\]"):
        timm_backbone("resnet18")
    with pytest.raises(ImportError, match=r"sapa\[timm\]"):
        build_model("fpn", 3, "bilinear")


def test_fpn_on_a_timm_backbone():
    torch.manual_seed(0)
    model = build_model("fpn", 4, "sapa-b", backbone="resnet18", channels=16)
    assert model.reductions == (4, 8, 16, 32)
    out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 4, 64, 64)

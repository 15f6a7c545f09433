"""SegNet-style model: shapes, every decoder stage is the named upsampler guided by its encoder
feature, and bad input fails early."""
import pytest
import torch

from sapa.models import SegNet, build_model


def _record_calls(model):
    """Hooks on every upsampler and encoder stage; returns the dict they fill."""
    seen = {"up": {}, "enc": {}}
    for i, up in enumerate(model.upsamplers):
        up.register_forward_hook(lambda m, a, o, i=i: seen["up"].__setitem__(i, (a, o)))
    for i, stage in enumerate(model.encoder):
        stage.register_forward_hook(lambda m, a, o, i=i: seen["enc"].__setitem__(i, o))
    return seen


@pytest.mark.parametrize("upsampler", ["bilinear", "sapa-b", "sapa-g"])
def test_every_stage_upsamples_with_its_encoder_feature_as_guide(upsampler):
    torch.manual_seed(0)
    model = SegNet(5, upsampler, widths=(4, 8, 16))
    seen = _record_calls(model)
    x = torch.randn(2, 3, 32, 24)
    out = model(x)
    assert out.shape == (2, 5, 32, 24)
    assert len(seen["up"]) == 3
    for i in range(3):
        (inp, guide), up_out = seen["up"][i]
        enc = seen["enc"][i]
        assert guide is enc  # the very tensor the encoder produced before pooling
        assert inp.shape[-2:] == (enc.shape[-2] // 2, enc.shape[-1] // 2)
        assert up_out.shape[-2:] == enc.shape[-2:]
    assert model.last_upsampler() is model.upsamplers[0]


def test_guided_upsampler_passes_gradient_to_the_encoder_through_the_guide():
    torch.manual_seed(0)
    model = SegNet(3, "sapa-b", widths=(4, 8))
    seen = _record_calls(model)
    model(torch.randn(1, 3, 16, 16))
    (inp, guide), out = seen["up"][0]
    g, = torch.autograd.grad(out.sum(), guide, retain_graph=True)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("upsampler, uses_guide", [("bilinear", False), ("sapa-b", True)])
def test_only_the_upsamplers_carry_encoder_detail(upsampler, uses_guide):
    """No skip concatenation: replacing the guides by noise changes nothing for a guide-free
    upsampler, and changes the output of a guided one."""
    torch.manual_seed(0)
    model = SegNet(3, upsampler, widths=(4, 8)).eval()
    x = torch.randn(1, 3, 16, 16)
    ref = model(x)
    for up in model.upsamplers:
        up.register_forward_pre_hook(lambda m, a: (a[0], torch.randn_like(a[1])))
    assert torch.equal(model(x), ref) != uses_guide


def test_parameters_grow_with_learned_upsamplers():
    n = {u: sum(p.numel() for p in SegNet(4, u, (8, 16)).parameters())
         for u in ("bilinear", "sapa-i", "sapa-b", "sapa-g")}
    assert n["bilinear"] < n["sapa-b"] < n["sapa-g"]
    assert n["sapa-i"] - n["bilinear"] == 2 * 2 * (8 + 16)  # only the LayerNorms (2 per stage)


@pytest.mark.parametrize("kwargs, err, match", [
    ({"num_classes": 1}, ValueError, "num_classes"),
    ({"widths": ()}, ValueError, "widths"),
    ({"widths": (8, 0)}, ValueError, "widths"),
    ({"convs_per_stage": 0}, ValueError, "convs_per_stage"),
    ({"upsampler": "nope"}, ValueError, "unknown upsampler"),
])
def test_bad_construction(kwargs, err, match):
    args = {"num_classes": 3, "upsampler": "bilinear", "widths": (4, 8), **kwargs}
    with pytest.raises(err, match=match):
        SegNet(**args)


def test_input_size_must_be_a_multiple_of_the_stride():
    model = SegNet(3, "bilinear", widths=(4, 8, 16))
    assert model.stride == 8
    with pytest.raises(ValueError, match="multiples of 8"):
        model(torch.randn(1, 3, 20, 16))
    with pytest.raises(ValueError, match="B x C x H x W"):
        model(torch.randn(3, 16, 16))


def test_build_model():
    m = build_model("segnet", 4, "sapa-b", widths=(4, 8))
    assert isinstance(m, SegNet) and m.upsampler_name == "sapa-b"
    with pytest.raises(ValueError, match="model must be one of"):
        build_model("unet", 4, "bilinear")

"""The BTS depth model: shapes, the swapped stages and their guides, Table 4's parameter
deltas, LPG, encoder weights."""
import math

import pytest
import torch

from sapa.errors import UsageError
from sapa.models.bts import BTS, Reduction, ResNetEncoder, local_planar_guidance

UPSAMPLERS = ["nearest", "bilinear", "carafe", "sapa-b", "sapa-g"]


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_forward_backward_shapes_and_range(upsampler):
    torch.manual_seed(0)
    model = BTS(upsampler, "resnet18", bts_size=32, max_depth=10.0)
    x = torch.randn(2, 3, 32, 64)
    y = model(x)
    assert y.shape == (2, 1, 32, 64)
    assert 0 < float(y.detach().min()) and float(y.detach().max()) < 10
    y.mean().backward()
    for up in model.upsamplers():
        for p in up.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0


def test_each_swapped_stage_gets_its_input_and_the_skip_at_the_target_resolution():
    model = BTS("sapa-b", "resnet18", bts_size=64)
    seen = {}
    for name in ("upconv5", "upconv4", "upconv3", "upconv2", "upconv1"):
        getattr(model, name).up.register_forward_hook(
            lambda m, args, out, name=name: seen.__setitem__(
                name, (tuple(args[0].shape), None if len(args) < 2 or args[1] is None
                       else tuple(args[1].shape), tuple(out.shape))))
    model(torch.randn(1, 3, 64, 64))
    f = 64
    # (x, guide, out): ReLU(layer4) 512@1/32 -> layer3 256@1/16; iconv5 F -> layer2 128@1/8;
    # daspp_feat F/4 -> layer1 64@1/4; iconv3 F/4 -> the stem's relu 64@1/2; last: no guide
    assert seen["upconv5"] == ((1, 512, 2, 2), (1, 256, 4, 4), (1, 512, 4, 4))
    assert seen["upconv4"] == ((1, f, 4, 4), (1, 128, 8, 8), (1, f, 8, 8))
    assert seen["upconv3"] == ((1, f // 4, 8, 8), (1, 64, 16, 16), (1, f // 4, 16, 16))
    assert seen["upconv2"] == ((1, f // 4, 16, 16), (1, 64, 32, 32), (1, f // 4, 32, 32))
    assert seen["upconv1"] == ((1, f // 8, 32, 32), None, (1, f // 8, 64, 64))
    assert type(model.upconv1.up).__name__ == "NearestUpsample"
    assert model.last_upsampler() is model.upconv2.up


def _params(m):
    return sum(p.numel() for p in m.parameters())


def _meta_bts(*args, **kwargs):
    with torch.device("meta"):  # shapes only: no memory, no initialisation cost
        return BTS(*args, **kwargs)


def test_parameter_deltas_match_table4_at_resnet50_bts512():
    """reference/paper-tasks.md §3a: SAPA-B +159,104 (+0.16M), CARAFE +411,280 (+0.41M),
    SAPA-G +252,164 (+0.25M) in the authors' form (a separate decoder-query projection);
    Table 1's SAPA-G (the default here) reuses the key projection: +161,924."""
    base = _params(_meta_bts("nearest", "resnet50", 512))
    got = {
        "bilinear": _params(_meta_bts("bilinear", "resnet50", 512)) - base,
        "sapa-b": _params(_meta_bts("sapa-b", "resnet50", 512)) - base,
        "carafe": _params(_meta_bts("carafe", "resnet50", 512)) - base,
        "sapa-g": _params(_meta_bts("sapa-g", "resnet50", 512)) - base,
        "sapa-g official": _params(_meta_bts("sapa-g", "resnet50", 512,
                                             upsampler_kwargs={"decoder_query": "official"})) - base,
    }
    assert got == {"bilinear": 0, "sapa-b": 159_104, "carafe": 411_280, "sapa-g": 161_924,
                   "sapa-g official": 252_164}
    # the same through an upsampler spec, as `--upsamplers sapa-g:decoder_query=official` gives it
    assert _params(_meta_bts("sapa-g:decoder_query=official", "resnet50", 512)) - base == 252_164


def test_a_spec_configures_the_four_guided_stages_and_not_the_last():
    model = BTS("sapa-b:kernel_size=3", "resnet18", bts_size=32)
    assert [up.kernel_size for up in model.upsamplers()] == [3, 3, 3, 3]
    assert type(model.upconv1.up).__name__ == "NearestUpsample"


def test_reduction_stacks_are_btss_at_bts512_and_shrink_to_one_conv_when_narrow():
    def convs(r):
        return [(m.in_channels, m.out_channels) for m in r.reduc if isinstance(m, torch.nn.Conv2d)]

    # BTS's reduction_1x1(F/16=32, F/32=16, is_final=True): 32->16, 16->8, final 8->1
    assert convs(Reduction(32, 16, 10.0, final=True)) == [(32, 16), (16, 8), (8, 1)]
    # reduc8x8(F/4=128, F/4=128): 128->128, ->64, ->32, ->16, ->8, plane 8->3
    assert convs(Reduction(128, 128, 10.0)) == [(128, 128), (128, 64), (64, 32), (32, 16), (16, 8), (8, 3)]
    # bts_size 32: reduc1x1(2, 1) would be empty in BTS; here the final conv alone
    assert convs(Reduction(2, 1, 10.0, final=True)) == [(2, 1)]


def test_local_planar_guidance():
    # a fronto-parallel plane (normal (0, 0, 1), distance 3) is depth 3 everywhere
    plane = torch.tensor([0.0, 0.0, 1.0, 3.0]).view(1, 4, 1, 1).repeat(1, 1, 2, 3)
    out = local_planar_guidance(plane, 4)
    assert out.shape == (1, 1, 8, 12) and torch.allclose(out, torch.full_like(out, 3.0))
    # a slanted one: n = (sin t, 0, cos t), d = 2; u (columns) = (j - 1.5) / 4 for ratio 4
    t = 0.5
    plane = torch.tensor([math.sin(t), 0.0, math.cos(t), 2.0]).view(1, 4, 1, 1)
    out = local_planar_guidance(plane, 4)[0, 0]
    for j in range(4):
        u = (j - 1.5) / 4
        assert float(out[1, j]) == pytest.approx(2 / (math.sin(t) * u + math.cos(t)))
        assert float(out[3, j]) == float(out[0, j])  # constant along rows


def test_bad_arguments():
    with pytest.raises(ValueError, match="bts_size"):
        BTS("nearest", "resnet18", bts_size=40)
    with pytest.raises(ValueError, match="encoder must be one of"):
        BTS("nearest", "vgg16", bts_size=32)
    with pytest.raises(ValueError, match="max_depth"):
        BTS("nearest", "resnet18", bts_size=32, max_depth=0)
    with pytest.raises(ValueError, match="unknown upsampler"):
        BTS("cubic", "resnet18", bts_size=32)
    model = BTS("nearest", "resnet18", bts_size=32)
    with pytest.raises(ValueError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ValueError, match="B x 3 x H x W"):
        model(torch.randn(1, 1, 64, 64))


def test_encoder_weights_from_a_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    ref = torchvision.models.resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save({"state_dict": ref.state_dict()}, path)
    enc = ResNetEncoder("resnet18", str(path))
    assert torch.equal(enc.layer3[0].conv1.weight, ref.layer3[0].conv1.weight)
    assert torch.equal(enc.bn1.running_mean, ref.bn1.running_mean)
    # another architecture's weights are refused, naming the file
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(UsageError, match="r34.pth does not fit"):
        ResNetEncoder("resnet18", str(tmp_path / "r34.pth"))
    with pytest.raises(UsageError, match="no such file"):
        ResNetEncoder("resnet18", str(tmp_path / "missing.pth"))


def test_torchvision_cache_is_never_downloaded(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="not in the cache"):
        ResNetEncoder("resnet18", "torchvision")
    # a file at torchvision's cache path is used
    import torchvision

    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    ref = torchvision.models.resnet18(weights=None)
    torch.save(ref.state_dict(), tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[1])
    enc = ResNetEncoder("resnet18", "torchvision")
    assert torch.equal(enc.conv1.weight, ref.conv1.weight)

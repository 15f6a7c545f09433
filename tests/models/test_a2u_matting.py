"""The A2U matting network: the release's topology, the paper's parameter deltas, every
upsampler of the zoo in its decoder, and its input checks."""
import pytest
import torch

from sapa.models import A2UMatting

# the matting comparison's upsamplers (Table 5) and a few more of the zoo
UPSAMPLERS = ["bilinear", "nearest", "carafe", "indexnet-hin", "indexnet-m2o", "a2u", "fade",
              "dysample", "sapa-i", "sapa-b", "sapa-g", "sapa-d"]


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_parameter_deltas_at_full_width_are_the_papers():
    """paper-tasks.md §4: the release's channels give SAPA-B +35,072 and CARAFE +263,824
    parameters over bilinear (Table 5's +0.04M and +0.26M)."""
    base = _params(A2UMatting("bilinear"))
    assert _params(A2UMatting("sapa-b")) - base == 35_072
    assert _params(A2UMatting("carafe")) - base == 263_824


@pytest.mark.parametrize("upsampler", UPSAMPLERS)
def test_every_upsampler_trains_in_the_decoder(upsampler):
    torch.manual_seed(0)
    model = A2UMatting(upsampler, width=0.125)
    x = torch.randn(2, 4, 32, 48)
    out = model(x)
    assert out.shape == (2, 1, 32, 48)
    out.square().mean().backward()
    assert all(p.grad is not None for p in model.last_upsampler().parameters())
    model.eval()
    with torch.no_grad():
        assert model(x[:1]).shape == (1, 1, 32, 48)


def test_decoder_stages_see_the_release_guides():
    """D4..D1 upsample from 1/16, 1/8, 1/4, 1/2 guided by the 256-channel pre-pool feature at
    1/8, the 128-channel one at 1/4, the pooled stem at 1/2 and the stem at full resolution."""
    model = A2UMatting("sapa-b", width=0.25).eval()  # channels 16 / 32 / 64
    seen = []
    for up in model.upsamplers():
        up.register_forward_hook(lambda m, args, out: seen.append((tuple(args[0].shape), tuple(args[1].shape))))
    model(torch.randn(1, 4, 64, 64))
    assert seen == [((1, 64, 4, 4), (1, 64, 8, 8)), ((1, 32, 8, 8), (1, 32, 16, 16)),
                    ((1, 16, 16, 16), (1, 16, 32, 32)), ((1, 16, 32, 32), (1, 16, 64, 64))]


def test_upsamplers_keep_their_own_initialisation():
    torch.manual_seed(0)
    model = A2UMatting("carafe", width=0.25)
    # CARAFE's content encoder is N(0, 0.001), not the network's Xavier init
    assert model.d1.up.content_encoder.weight.std() < 0.01


def test_the_releases_prediction_head_is_available():
    torch.manual_seed(0)
    model = A2UMatting("sapa-b", width=0.125, head="release")
    assert isinstance(model.pred, torch.nn.Sequential) and model.pred[-1].bias is None
    assert model(torch.randn(2, 4, 32, 32)).shape == (2, 1, 32, 32)
    assert isinstance(A2UMatting("sapa-b", width=0.125).pred, torch.nn.Conv2d)


def test_input_checks():
    model = A2UMatting("bilinear", width=0.125)
    with pytest.raises(ValueError, match="B x 4 x H x W"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="multiples of 16"):
        model(torch.randn(1, 4, 40, 32))
    with pytest.raises(ValueError, match="width must be a positive number"):
        A2UMatting("bilinear", width=0)
    with pytest.raises(ValueError, match="unknown upsampler"):
        A2UMatting("bicubic")
    with pytest.raises(ValueError, match="head must be one of"):
        A2UMatting("bilinear", head="sigmoid")

"""``sapa.deploy``: the ops in ONNX Runtime on every normaliser and border, the checks that run
before any export, the dynamic axes, eval mode, the parity check itself, and the other ways in
(plain ``torch.onnx.export``, a program made by ``torch.export``)."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn as nn

import sapa
import sapa.models
from sapa.modules import is_guided
from sapa.ops import local_assemble, local_similarity, sampled_attention, sapa_attention

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")
from sapa import deploy  # noqa: E402
from sapa.deploy import Axis  # noqa: E402

NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")


class EveryOp(nn.Module):
    """``sapa_attention`` with the normalisers and borders given, both primitives and the
    sampled op."""

    def __init__(self, cases, kernel_size=3, sampled=True):
        super().__init__()
        self.cases, self.kernel_size, self.sampled = cases, kernel_size, sampled

    def forward(self, q, k, v, kernels, offsets):
        k_ = self.kernel_size
        outs = [sapa_attention(q, k, v, k_, normalizer=n, border=b) for n, b in self.cases]
        # -inf outside the map with "valid"; ONNX Runtime keeps it
        outs.append(local_similarity(q, k, k_, border="valid"))
        outs.append(local_assemble(kernels, v, k_))
        if self.sampled:
            outs.append(sampled_attention(q, k, v, offsets, groups=1, num_points=2))
        return tuple(outs)


def op_inputs(b, h, w, ho, wo, kernel_size=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, 4, ho, wo, generator=g), torch.randn(b, 4, h, w, generator=g),
            torch.randn(b, 3, h, w, generator=g),
            torch.randn(b, kernel_size**2, ho, wo, generator=g),
            1.5 * torch.randn(b, 4, ho, wo, generator=g))


def op_axes():
    low = {0: Axis("batch"), 2: Axis("height"), 3: Axis("width")}
    high = {0: Axis("batch"), 2: Axis("out_height"), 3: Axis("out_width")}
    return [high, low, low, high, high]


def check_ops(cases, kernel_size=3, sampled=True):
    model = EveryOp(cases, kernel_size, sampled)
    proto = deploy.export_onnx(model, op_inputs(2, 4, 5, 8, 10, kernel_size), axes=op_axes())
    session = deploy.onnx_session(proto)
    # other batch and sizes, 2H+1 and 2W+1, a window larger than the map
    for i, case in enumerate([(2, 4, 5, 8, 10), (3, 4, 5, 9, 11), (1, 2, 1, 5, 3)]):
        parity = deploy.check_onnx(model, session, op_inputs(*case, kernel_size, seed=i))
        assert parity.ok, (case, str(parity))


def test_ops_in_onnx_runtime():
    """The normalisers softmax, relu, sigmoid and softplus are exported by the upsampler tests
    (test_export_upsamplers.py), on both borders, the sampled op by SAPA-D's; ``none`` here,
    with the primitives (``-m slow``: every normaliser on both borders)."""
    check_ops([("none", "valid")], sampled=False)


@pytest.mark.slow
@pytest.mark.parametrize("kernel_size", [3, 5])
def test_every_normalizer_and_border_in_onnx_runtime(kernel_size):
    check_ops(list(itertools.product(NORMALIZERS, BORDERS)), kernel_size)


class AttentionAndSampled(nn.Module):
    def forward(self, q, k, v, kernels, offsets):
        # kernel size 1: the decompositions' numbers are tested in tests/ops; here the path
        return (sapa_attention(q, k, v, 1, border="valid"),
                sampled_attention(q, k, v, offsets, groups=1, num_points=2))


def test_exported_program_decomposes_to_onnx():
    """A program made by ``torch.export`` (custom ops in it) exports once decomposed with
    ``sapa.ops.onnx_decompositions()``; every op's decomposition is checked eagerly in
    tests/ops/test_onnx_formulation.py."""
    model = AttentionAndSampled().eval()
    args = op_inputs(2, 4, 5, 9, 11, kernel_size=1)
    program = torch.export.export(model, args)
    assert "sapa.attention.default" in {str(n.target) for n in program.graph.nodes}
    program = program.run_decompositions(sapa.ops.onnx_decompositions())
    onnx_program = torch.onnx.export(program, dynamo=True)
    assert deploy.check_onnx(model, onnx_program.model_proto, args).ok


def test_plain_torch_onnx_export_of_a_module():
    """The recipe without sapa.deploy: gradients on, no axes (sizes fixed to the example's)."""
    up = sapa.build_upsampler("sapa-g:kernel_size=1,embed_dim=8", 8, 8).eval()
    args = (torch.randn(1, 8, 4, 5), torch.randn(1, 8, 9, 11))
    program = torch.onnx.export(up, args, dynamo=True)
    assert deploy.check_onnx(up, program.model_proto, args).ok


# ---- the upsamplers' guide sizes -------------------------------------------------------------

@pytest.mark.parametrize("name", sapa.list_upsamplers())
def test_guide_scale_says_which_guide_sizes_an_upsampler_takes(name):
    """``guide_scale`` (what the dynamic axes of ``upsampler_axes`` rely on) agrees with what
    the module accepts: ``s``: only a guide of exactly ``s`` times ``x``'s size; ``None``: any
    size (``2H + 1`` included)."""
    up = sapa.build_upsampler(name, 8, 8).eval()
    s = getattr(up, "guide_scale", None)
    x = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        up(x, torch.randn(1, 8, 6, 8))
        if s is None:
            out = up(x, torch.randn(1, 8, 7, 9))
            assert out.shape[-2:] == (7, 9)
        else:
            assert s == 2
            with pytest.raises(ValueError, match="exactly|scale_factor"):
                up(x, torch.randn(1, 8, 7, 9))


def test_upsampler_axes():
    assert deploy.upsampler_axes(sapa.build_upsampler("carafe", 8), guided=False) == [
        {0: Axis("batch"), 2: Axis("height"), 3: Axis("width")}]
    _, guide = deploy.upsampler_axes(sapa.build_upsampler("sapa-b", 8))
    assert guide == {0: Axis("batch"), 2: Axis("guide_height"), 3: Axis("guide_width")}
    _, guide = deploy.upsampler_axes(sapa.build_upsampler("sapa-d", 8, scale_factor=4))
    assert guide == {0: Axis("batch"), 2: Axis("height", 4), 3: Axis("width", 4)}
    _, guide = deploy.upsampler_axes(sapa.build_upsampler("sapa-d:high_offset=false", 8))
    assert guide[2] == Axis("guide_height")


def test_image_axes_follow_the_model_stride():
    model = sapa.models.SegNet(3, "nearest", widths=(4, 8, 8))
    assert deploy.image_axes(model) == [
        {0: Axis("batch"), 2: Axis("height_div8", 8), 3: Axis("width_div8", 8)}]


# ---- checks before any work --------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float64], ids=str)
def test_dtypes_onnx_runtime_cannot_run_are_refused(dtype):
    up = sapa.build_upsampler("bilinear", 4)
    with pytest.raises(TypeError, match="float32 and float16"):
        deploy.export_upsampler(up, torch.randn(2, 4, 3, 3, dtype=dtype))


def test_mixed_dtypes_are_refused():
    up = sapa.build_upsampler("carafe", 4).half()
    with pytest.raises(TypeError, match="share one dtype"):
        deploy.export_upsampler(up, torch.randn(2, 4, 3, 3))


@pytest.mark.parametrize("kwargs, match", [
    ({"exporter": "jit"}, "exporter must be one of"),
    ({"opset": 17}, "opset must be an int >= 18"),
    ({"opset": 15, "exporter": "torchscript"}, "opset must be an int >= 16"),
    ({"axes": [None, None]}, "one entry"),
    ({"axes": [{0: Axis("batch", 3)}]}, "not a multiple of 3"),
    ({"axes": [{5: Axis("batch")}]}, "maps axes"),
    ({"input_names": ["a", "b"]}, "must name the 1"),
])
def test_bad_arguments_are_refused_before_exporting(kwargs, match):
    with pytest.raises(ValueError, match=match):
        deploy.export_onnx(nn.Conv2d(2, 2, 1), (torch.randn(2, 2, 4, 4),), **kwargs)


def test_a_dynamic_axis_needs_an_example_size_of_two():
    up = sapa.build_upsampler("nearest", 4)
    with pytest.raises(ValueError, match="at least 2"):
        deploy.export_upsampler(up, torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="at least 2"):
        deploy.export_upsampler(up, torch.randn(2, 4, 1, 3))


def test_data_dependent_failure_says_to_use_the_torchscript_exporter():
    class Branchy(nn.Module):
        def forward(self, x):
            return x * 2 if x.sum() > 0 else x

    with pytest.raises(Exception) as info:
        deploy.export_onnx(Branchy(), (torch.randn(2, 3),))
    assert any("exporter='torchscript'" in note for note in info.value.__notes__)


# ---- eval mode, parity check -------------------------------------------------------------------

class BatchNormNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.bn = nn.BatchNorm2d(3)
        self.bn.running_mean.fill_(0.5)
        self.bn.running_var.fill_(2.0)

    def forward(self, x):
        return self.bn(x)


def test_exports_in_eval_mode_and_restores_the_mode():
    net = BatchNormNet().train()
    x = torch.randn(2, 3, 4, 4)
    proto = deploy.export_onnx(net, (x,), axes=[{0: Axis("batch")}], exporter="torchscript")
    assert net.training
    got = deploy.run_onnx(deploy.onnx_session(proto), x)[0]
    torch.testing.assert_close(torch.from_numpy(got), net.eval()(x))  # running statistics


def test_check_onnx_reports_a_disagreement():
    net = nn.Conv2d(2, 2, 1)
    x = torch.randn(2, 2, 3, 3)
    proto = deploy.export_onnx(net, (x,), exporter="torchscript")
    assert deploy.check_onnx(net, proto, (x,)).ok
    with torch.no_grad():
        net.bias.add_(1e-3)
    parity = deploy.check_onnx(net, proto, (x,), strict=False)
    assert not parity.ok and parity.max_abs == pytest.approx(1e-3, rel=1e-3)
    with pytest.raises(AssertionError, match="disagree"):
        deploy.check_onnx(net, proto, (x,))
    with torch.no_grad():
        net.bias.sub_(1e-3)
        net.weight[0, 0] = float("nan")
    assert not deploy.check_onnx(net, proto, (x,), strict=False).ok  # NaN on one side only


def test_tolerances():
    assert deploy.tolerance(torch.float32) == deploy.Tolerance(rtol=1e-4, atol=1e-5)
    assert deploy.tolerance(torch.float16) == deploy.Tolerance(rtol=1e-2, atol=1e-2)
    with pytest.raises(ValueError, match="float32 or float16"):
        deploy.tolerance(torch.bfloat16)


def test_run_onnx_counts_its_inputs():
    proto = deploy.export_onnx(nn.Conv2d(2, 2, 1), (torch.randn(2, 2, 3, 3),),
                               exporter="torchscript")
    with pytest.raises(ValueError, match="takes 1 inputs"):
        deploy.run_onnx(deploy.onnx_session(proto), torch.randn(1), torch.randn(1))
    with pytest.raises(ValueError, match="threads"):
        deploy.onnx_session(proto, threads=0)


def test_guide_free_upsampler_exports_x_only():
    up = sapa.build_upsampler("pixelshuffle", 4)
    assert not is_guided("pixelshuffle")
    proto = deploy.export_upsampler(up, torch.randn(2, 4, 3, 3), exporter="torchscript")
    assert [i.name for i in proto.graph.input] == ["x"]
    assert [o.name for o in proto.graph.output] == ["out"]

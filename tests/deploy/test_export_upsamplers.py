"""Every upsampler of ``sapa.list_upsamplers()`` exported to ONNX (``torch.onnx.export(...,
dynamo=True)`` through ``sapa.deploy``) and run in ONNX Runtime's CPU provider, against PyTorch
within the documented tolerance (``sapa.deploy.tolerance``), on inputs of other batch and
spatial sizes than the example's: the axes stay dynamic, guides of ``2H + 1`` where the
upsampler takes any size.

Default run: each upsampler once, small (``K = 3`` windows, few channels), float32, options
chosen to cover more branches (both borders; the normalisers softmax, relu, sigmoid, softplus,
``none`` being in test_deploy_api.py; the group norm; the official decoder query; SAPA-D at any
guide size; DySample's dynamic scope), SAPA-B in float16. ``-m slow``: every upsampler with its default
options, float32 and float16, with both exporters.
"""
from __future__ import annotations

import pytest
import torch

import sapa
from sapa.modules import is_guided

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")
from sapa import deploy  # noqa: E402

C = 8
# name -> the spec of the fast run (every registered upsampler must have one)
FAST = {
    "a2u": "a2u:encode_kernel_size=2",
    "bilinear": "bilinear",
    "carafe": "carafe:c_mid=8,k_up=3",
    "deconv": "deconv",
    "dysample": "dysample:dyscope=true",
    "fade": "fade:embed_dim=8,kernel_size=3",
    "indexnet-hin": "indexnet-hin",
    "indexnet-m2o": "indexnet-m2o",
    "nearest": "nearest",
    "pixelshuffle": "pixelshuffle",
    "sapa-b": "sapa-b:embed_dim=8,kernel_size=3",
    "sapa-d": "sapa-d:embed_dim=4,groups=2,high_offset=false,normalizer=softplus,num_points=4",
    "sapa-g": "sapa-g:border=valid,decoder_query=official,embed_dim=8,kernel_size=3",
    "sapa-i": "sapa-i:border=valid,kernel_size=3,norm=group,normalizer=sigmoid",
    "sapa-p": "sapa-p:embed_dim=8,kernel_size=3,normalizer=relu",
}


def test_every_upsampler_has_a_fast_export_test():
    assert sorted(FAST) == sapa.list_upsamplers()


def shapes(up, guided):
    """``(batch, H, W, guide H', guide W')`` to run: the example's first, then other batches and
    sizes; ``2H + 1`` guides where the upsampler takes any guide size."""
    s = getattr(up, "guide_scale", None) or 2
    cases = [(2, 4, 5, 2 * 4, 2 * 5), (3, 3, 6, s * 3, s * 6), (1, 1, 2, s, 2 * s)]
    if guided and getattr(up, "guide_scale", None) is None:
        cases += [(1, 5, 3, 11, 7), (2, 4, 4, 9, 13)]
    return cases


def inputs(case, guided, dtype=torch.float32, seed=0):
    b, h, w, hg, wg = case
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, C, h, w, generator=g).to(dtype)
    if not guided:
        return (x,)
    return x, torch.randn(b, C, hg, wg, generator=g).to(dtype)


def export_and_check(spec, dtype=torch.float32, exporter="dynamo"):
    torch.manual_seed(0)
    up = sapa.build_upsampler(spec, C, C).to(dtype).eval()
    guided = is_guided(spec)
    cases = shapes(up, guided)
    proto = deploy.export_upsampler(up, *inputs(cases[0], guided, dtype), exporter=exporter)
    dims = [[d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in proto.graph.input]
    want = [["batch", C, "height", "width"]]
    if guided:  # tied to x's size where the upsampler needs exactly s times it
        s = getattr(up, "guide_scale", None)
        want.append(["batch", C, "guide_height", "guide_width"] if s is None
                    else ["batch", C, f"{s}*height", f"{s}*width"])
    assert [i.name for i in proto.graph.input] == (["x", "guide"] if guided else ["x"])
    if exporter == "dynamo":  # the TorchScript exporter names the axes, not the relation
        assert dims == want
    assert all(n.domain in ("", "ai.onnx") for n in proto.graph.node), "a custom-op domain"
    session = deploy.onnx_session(proto)
    for i, case in enumerate(cases):
        args = inputs(case, guided, dtype, seed=i)
        parity = deploy.check_onnx(up, session, args)
        assert parity.ok, (case, str(parity))
    return proto


# exported in float16 in the default run (SAPA-G covers the same op in float32)
FLOAT16 = ("sapa-b",)


@pytest.mark.parametrize("name", sorted(FAST))
def test_upsampler_exports_and_matches_in_onnx_runtime(name):
    export_and_check(FAST[name], torch.float16 if name in FLOAT16 else torch.float32)


def test_torchscript_exporter():
    export_and_check(FAST["sapa-g"], exporter="torchscript")


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("name", sorted(FAST))
def test_default_upsampler_exports(name, dtype):
    export_and_check(name, dtype)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST))
def test_default_upsampler_exports_with_torchscript(name):
    export_and_check(name, exporter="torchscript")

"""The models ``sapa compare`` trains, built by their tasks, exported to ONNX and checked in ONNX
Runtime on other batch and image sizes than the example's: SegNet (with every upsampler), FPN on
a timm ResNet, SegFormer (MiT-B0), BTS (depth), A2U's matting network, and torchvision's
Faster R-CNN (detection), which exports with the TorchScript-based exporter only. All slow (tens of seconds each): the default
run exports a small SegNet through ``sapa export --checkpoint``
(tests/experiments/test_export_cli.py).
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import sapa
from sapa.experiments import compare

pytest.importorskip("onnxruntime", reason="needs onnxruntime: pip install 'sapa[export]'")
pytest.importorskip("onnxscript", reason="needs onnxscript: pip install 'sapa[export]'")
from sapa import deploy  # noqa: E402
from sapa.deploy import Axis  # noqa: E402

pytestmark = pytest.mark.slow


class _Classes:
    num_classes = 5


def build(argv, upsampler):
    settings = compare.resolve(compare.parse_args([*argv, "--quick", "--out", "unused"]))
    task, config = settings["task"], settings["config"]
    torch.manual_seed(0)
    model = task.build_model(config, upsampler, _Classes()).eval()
    return task, config, model


def calibrate_batch_norm(model, shape, steps=3):
    """Running statistics of the model's BatchNorms from a few random batches (as training sets
    them): a freshly initialised deep network in eval mode normalises with mean 0 and variance
    1 and its activations grow layer by layer (A2U's matting network: outputs near 1e3), where
    float32 rounding alone exceeds an element-wise tolerance meant for unit-scale outputs."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average
    model.train()
    with torch.no_grad():
        for i in range(steps):
            model(torch.rand(*shape, generator=torch.Generator().manual_seed(100 + i)))
    model.eval()


def assert_as_accurate_as_torch(model, session, x, factor=2.0, atol=1e-5):
    """ONNX Runtime's float32 output is as close to the float64 model's as PyTorch's float32
    output is (within ``factor``). For a deep network whose float32 rounding alone exceeds the
    element-wise tolerance: A2U's matting network (outputs up to ~25) differs from its own
    float64 copy by up to 1e-3 in PyTorch, and from ONNX Runtime by as much."""
    exact = copy.deepcopy(model).double()
    with torch.no_grad():
        want = exact(x.double()).numpy()
        torch_err = np.abs(model(x).double().numpy() - want).max()
    onnx_err = np.abs(deploy.run_onnx(session, x)[0].astype(np.float64) - want).max()
    assert onnx_err <= factor * torch_err + atol, (onnx_err, torch_err)


def export_and_check(argv, upsampler, extra_rows=1, calibrate=False):
    task, config, model = build(argv, upsampler)
    example = task.example_input(config, torch.device("cpu"))
    _, c, h, w = example.shape
    if calibrate:
        calibrate_batch_norm(model, (2, c, h, w))
    proto = deploy.export_onnx(model, (torch.rand(2, c, h, w),), axes=deploy.image_axes(model),
                               input_names=["image"])
    session = deploy.onnx_session(proto)
    stride = model.stride
    for b, hh, ww in [(2, h, w), (3, h + extra_rows * stride, w), (1, h, w + stride)]:
        x = torch.rand(b, c, hh, ww)
        parity = deploy.check_onnx(model, session, (x,), strict=False)
        if calibrate and not parity.ok:
            assert_as_accurate_as_torch(model, session, x)
        else:
            assert parity.ok, (b, hh, ww, str(parity))


@pytest.mark.parametrize("name", sapa.list_upsamplers())
def test_segnet(name):
    export_and_check(["--task", "segmentation", "--widths", "8,16", "--image-size", "32"], name)


@pytest.mark.parametrize("upsampler", ["sapa-g", "carafe"])
def test_fpn(upsampler):
    export_and_check(["--task", "segmentation", "--model", "fpn", "--channels", "32",
                      "--image-size", "64"], upsampler)


@pytest.mark.parametrize("upsampler", ["sapa-b", "bilinear"])
def test_segformer(upsampler):
    export_and_check(["--task", "segmentation", "--model", "segformer", "--image-size", "64"],
                     upsampler)


def test_bts():
    export_and_check(["--task", "depth", "--image-size", "64"], "sapa-g")


@pytest.mark.parametrize("upsampler", ["a2u", "sapa-b"])
def test_a2u_matting(upsampler):
    """A2U's matting network: a 4-channel input (image and trimap), output stride 16; its
    BatchNorm statistics set from data first (``calibrate_batch_norm``). Its float32 rounding
    exceeds the element-wise tolerance in PyTorch itself (bilinear as well): where it does,
    ONNX Runtime must be as close to the float64 model as PyTorch's float32 is."""
    export_and_check(["--task", "matting", "--image-size", "64"], upsampler, calibrate=True)


def _detector():
    return build(["--task", "detection", "--image-size", "64"], "sapa-b")


def test_faster_rcnn_with_the_torchscript_exporter():
    _, config, model = _detector()
    size = config["image_size"]
    images = [torch.rand(3, size, size)]
    proto = deploy.export_onnx(model, (images,), axes=[{1: Axis("height"), 2: Axis("width")}],
                               input_names=["image"], output_names=["boxes", "labels", "scores"],
                               exporter="torchscript")
    session = deploy.onnx_session(proto)
    for hh, ww in [(size, size), (size + 16, size - 8)]:
        args = ([torch.rand(3, hh, ww)],)
        with torch.no_grad():
            assert len(model(*args)[0]["boxes"]) > 0  # something to compare
        assert deploy.check_onnx(model, session, args).ok


def test_faster_rcnn_with_torch_export_says_what_to_do():
    _, config, model = _detector()
    size = config["image_size"]
    with pytest.raises(Exception) as info:
        deploy.export_onnx(model, ([torch.rand(3, size, size)],))
    assert any("exporter='torchscript'" in note for note in info.value.__notes__)

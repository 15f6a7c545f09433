"""What the figures of ``sapa compare`` are drawn from: the last upsampling stage's input,
output and kernels, captured with a forward hook; the segmentation figures and the harness's
curves."""
import pytest
import torch

from sapa.experiments.figures import draw_all
from sapa.models import SegNet
from sapa.tasks.segmentation import TASK, SyntheticSegmentation
from sapa.viz import capture_last_upsampling


@pytest.mark.parametrize("upsampler, has_kernels", [("bilinear", False), ("carafe", True),
                                                    ("sapa-b", True), ("sapa-g", True)])
def test_capture_last_upsampling(upsampler, has_kernels):
    torch.manual_seed(0)
    model = SegNet(3, upsampler, widths=(4, 8))
    image = torch.randn(1, 3, 16, 16)
    cap = capture_last_upsampling(model, image)
    assert cap["x"].shape == (1, 4, 8, 8) and cap["guide"].shape == (1, 4, 16, 16)
    assert cap["out"].shape == (1, 4, 16, 16)
    assert model.training  # the mode is restored
    if not has_kernels:
        assert cap["kernels"] is None
        return
    k = cap["kernels"]
    assert k.shape == (1, 25, 16, 16)  # K = 5: the p = 0 map has the upsampled feature's size
    # softmax kernels sum to 1 (SAPA's default border="zeros" spends some weight outside the
    # map near the border, so look at the interior)
    assert torch.allclose(k[..., 4:-4, 4:-4].sum(1), torch.ones(1, 8, 8), atol=1e-5)


def test_segmentation_figures_and_curves(tmp_path):
    val = SyntheticSegmentation("val", 3, 32, seed=0)
    torch.manual_seed(0)
    models = {u: SegNet(val.num_classes, u, widths=(4, 8)).eval() for u in ("bilinear", "sapa-b")}
    curve = {"iters": [1, 2, 3], "loss": [2.0, 1.5, 1.2], "val_iters": [3], "val_miou": [0.2]}
    paths = draw_all(str(tmp_path), TASK, models, {u: [curve] for u in models}, val,
                     torch.device("cpu"))
    assert [p.split("/")[-1] for p in paths] == ["predictions.png", "features.png", "curves.png"]

"""The generated matting set, batching, the network input, A2U's loss and its inference."""
import numpy as np
import pytest
import torch

from sapa.tasks.matting import collate, matting_loss, model_input, pad_to_multiple, predict_alpha
from sapa.tasks.matting.inference import reflect_indices
from sapa.tasks.matting.synthetic import SyntheticMatting, generate, trimap_from_alpha, trimap_radii


@pytest.fixture(scope="module")
def train8():
    return generate("train", 8, 48, seed=0)


def test_same_arguments_same_data_and_sample_i_independent_of_the_count(train8):
    again = generate("train", 3, 48, seed=0)
    assert all(torch.equal(again[k], train8[k][:3]) for k in train8)
    other = generate("train", 3, 48, seed=1)
    val = generate("val", 3, 48, seed=0)
    assert not torch.equal(other["alpha"], train8["alpha"][:3])
    assert not torch.equal(val["alpha"], train8["alpha"][:3])


def test_mattes_are_soft_with_thin_strands_and_trimaps_cover_them(train8):
    alpha, trimap = train8["alpha"], train8["trimap"]
    assert alpha.shape == trimap.shape == (8, 1, 48, 48) and alpha.dtype == trimap.dtype == torch.uint8
    assert set(trimap.unique().tolist()) == {0, 128, 255}
    partial = (alpha > 0) & (alpha < 255)
    assert partial.float().mean() > 0.05  # soft edges, strands, semi-transparent regions
    assert not (partial & (trimap != 128)).any()  # every partial pixel is unknown
    for a, t in zip(alpha[:, 0].numpy(), trimap[:, 0].numpy()):
        assert (t == 128).any() and (t == 255).any() and (a == 255).any()
        # strands: partial pixels whose 3x3 neighbourhood has background on two opposite sides
        thin = (a[1:-1, 1:-1] > 0) & (a[1:-1, :-2] == 0) & (a[1:-1, 2:] == 0)
        thin |= (a[1:-1, 1:-1] > 0) & (a[:-2, 1:-1] == 0) & (a[2:, 1:-1] == 0)
        assert thin.any()
    assert train8["fg"].shape == train8["bg"].shape == (8, 3, 48, 48)


def test_validation_trimaps_have_the_fixed_radius_training_ones_vary():
    val = generate("val", 4, 48, seed=0)
    r = max(1, 48 // 24)
    assert trimap_radii(np.random.default_rng(0), 48, "val") == (r, r)
    for a, t in zip(val["alpha"][:, 0].numpy(), val["trimap"][:, 0].numpy()):
        assert np.array_equal(t, trimap_from_alpha(a, r, r))
    radii = {trimap_radii(np.random.default_rng(s), 48, "train") for s in range(20)}
    assert len(radii) > 3 and all(1 <= f <= 4 and 1 <= b <= 4 for f, b in radii)


def test_trimap_from_alpha_by_hand():
    a = np.zeros((7, 7), np.uint8)
    a[1:6, 1:6] = 255
    a[3, 6] = 100  # a partial pixel on the border
    t = trimap_from_alpha(a, 1, 1)
    # foreground: the 5x5 square eroded by a radius-1 disk (a cross) -> 3x3
    fg = np.zeros((7, 7), bool)
    fg[2:5, 2:5] = True
    assert np.array_equal(t == 255, fg)
    # background: the ring alpha == 0 eroded by the cross; the image border does not erode,
    # so only the four corners (no foreground neighbour) stay background
    corners = np.zeros((7, 7), bool)
    corners[[0, 0, 6, 6], [0, 6, 0, 6]] = True
    assert np.array_equal(t == 0, corners)
    assert t[3, 6] == 128 and t[1, 1] == 128


def test_dataset_items(train8):
    tr = SyntheticMatting("train", 4, 32, seed=0)
    item = tr[2]
    assert set(item) == {"image", "fg", "bg", "alpha", "trimap", "index"} and item["index"] == 2
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    a = item["alpha"]
    assert torch.allclose(item["image"], a * item["fg"] + (1 - a) * item["bg"])
    va = SyntheticMatting("val", 3, 32, seed=0)
    item = va[1]
    assert set(item) == {"image", "alpha", "trimap", "index"}
    assert torch.equal(item["image"] * 255, (item["image"] * 255).round())  # stored as uint8


def test_collate_stacks_equal_shapes_and_lists_others():
    s = [{"image": torch.zeros(3, 4, 4), "index": 0}, {"image": torch.ones(3, 4, 4), "index": 5}]
    b = collate(s)
    assert b["image"].shape == (2, 3, 4, 4) and b["index"].tolist() == [0, 5]
    s[1]["image"] = torch.ones(3, 4, 6)
    b = collate(s)
    assert isinstance(b["image"], list) and [t.shape[-1] for t in b["image"]] == [4, 6]
    with pytest.raises(ValueError, match="same keys"):
        collate([{"image": torch.zeros(1)}, {"alpha": torch.zeros(1)}])


def test_model_input_is_normalised_rgb_and_trimap_over_255():
    image = torch.full((1, 3, 2, 2), 0.5)
    trimap = torch.tensor([[[[0, 128], [255, 128]]]], dtype=torch.uint8)
    x = model_input(image, trimap)
    assert x.shape == (1, 4, 2, 2)
    assert torch.allclose(x[0, :3, 0, 0], (0.5 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225]))
    assert torch.allclose(x[0, 3], torch.tensor([[0, 128 / 255], [1, 128 / 255]]))
    with pytest.raises(ValueError, match="trimap must be B x 1 x H x W"):
        model_input(image, trimap[:, :, :1])


def _a2u_loss(pd, gt_alpha, mask, fg, bg, image, wl=0.5, eps=1e-6):
    """A2U's ``weighted_loss`` written out with loops over images, channels and pixels."""
    total = 0.0
    b, _, h, w = pd.shape
    for n in range(b):
        m = mask[n, 0]
        norm = float(m.sum()) + 1
        la = sum(np.sqrt(((pd[n, 0, y, x] - gt_alpha[n, 0, y, x]) * m[y, x]) ** 2 + eps**2)
                 for y in range(h) for x in range(w)) / norm
        lc = 0.0
        for c in range(3):
            cp = pd[n, 0] * fg[n, c] + (1 - pd[n, 0]) * bg[n, c]
            lc += sum(np.sqrt(((cp[y, x] - image[n, c, y, x]) * m[y, x]) ** 2 + eps**2)
                      for y in range(h) for x in range(w)) / norm
        total += wl * la + (1 - wl) * lc
    return total / b


def test_loss_is_a2us_weighted_loss():
    g = torch.Generator().manual_seed(0)
    b, h, w = 2, 5, 4
    pred = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64) * 1.2 - 0.1
    alpha = torch.rand(b, 1, h, w, generator=g, dtype=torch.float64)
    fg, bg = (torch.rand(b, 3, h, w, generator=g, dtype=torch.float64) for _ in range(2))
    image = alpha * fg + (1 - alpha) * bg
    trimap = torch.randint(0, 3, (b, 1, h, w), generator=g).mul(127.5).round().to(torch.uint8)
    got = matting_loss(pred, alpha, trimap, fg, bg, image)
    mask = (trimap == 128).double().numpy()
    want = _a2u_loss(*(t.numpy() for t in (pred, alpha)), mask, fg.numpy(), bg.numpy(), image.numpy())
    assert float(got) == pytest.approx(want, rel=1e-12)
    # the perfect prediction leaves only the eps terms
    perfect = matting_loss(alpha, alpha, trimap, fg, bg, image)
    want = np.mean((0.5 * 1 + 0.5 * 3) * 1e-6 * h * w / (mask.sum((1, 2, 3)) + 1))
    assert float(perfect) == pytest.approx(want, rel=1e-9)
    with pytest.raises(ValueError, match="fg must be"):
        matting_loss(pred, alpha, trimap, fg[:, :2], bg, image)


@pytest.mark.parametrize("n,total", [(5, 16), (3, 16), (1, 4), (16, 16), (2, 7)])
def test_reflect_indices_are_numpys_reflect_padding(n, total):
    want = np.pad(np.arange(n), (0, total - n), mode="reflect") if n > 1 else np.zeros(total, int)
    assert reflect_indices(n, total).tolist() == want.tolist()


class _Stripes(torch.nn.Module):
    """Predicts 1.7 on even rows and -0.4 on odd ones; records the input size."""

    stride = 16

    def forward(self, x):
        self.size = tuple(x.shape[-2:])
        rows = torch.arange(x.shape[2]).view(1, 1, -1, 1) % 2 == 0
        return torch.where(rows, 1.7, -0.4).expand(x.shape[0], 1, *x.shape[2:])


def test_predict_pads_crops_clips_and_keeps_the_known_pixels():
    model = _Stripes()
    image = torch.rand(2, 3, 21, 35)
    trimap = torch.tensor([0, 128, 255], dtype=torch.uint8)[torch.randint(0, 3, (2, 1, 21, 35))]
    alpha = predict_alpha(model, image, trimap)
    assert model.size == (32, 48)
    assert alpha.shape == (2, 21, 35) and alpha.dtype == torch.uint8
    t = trimap[:, 0]
    assert torch.equal(alpha[t != 128], t[t != 128])
    # unknown pixels: the prediction clipped to [0, 1], rows as predicted (padding is at the bottom)
    even = (torch.arange(21) % 2 == 0).view(1, -1, 1).expand_as(t)
    assert (alpha[(t == 128) & even] == 255).all() and (alpha[(t == 128) & ~even] == 0).all()
    padded = pad_to_multiple(torch.arange(5.0).view(1, 1, 1, 5), 4)
    assert padded.shape == (1, 1, 4, 8) and padded[0, 0, 3].tolist() == [0, 1, 2, 3, 4, 3, 2, 1]

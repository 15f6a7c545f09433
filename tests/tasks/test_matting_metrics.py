"""Matting errors against hand-worked cases of the official MATLAB definitions, and the meter
under a simulated 2-process group."""
import math

import numpy as np
import pytest
import torch

from sapa.tasks.matting import metrics as M

U = M.UNKNOWN


def test_sad_and_mse_count_unknown_pixels_only():
    pred = np.array([[0, 255, 100], [50, 128, 255]], dtype=np.uint8)
    gt = np.array([[0, 200, 0], [0, 0, 0]], dtype=np.uint8)
    trimap = np.array([[U, U, 0], [U, 255, U]], dtype=np.uint8)
    # unknown pixels: |0-0|, |255-200|, |50-0|, |255-0| = 0, 55, 50, 255 (the known 100, 128 are left out)
    assert M.sad(pred, gt, trimap) == pytest.approx(360 / 255 / 1000, rel=1e-12)
    assert M.mse(pred, gt, trimap) == pytest.approx((55**2 + 50**2 + 255**2) / 255**2 / 4, rel=1e-12)


def _ramp_gradient(a: float, sigma: float = 1.4) -> float:
    """Interior value of MATLAB's gaussgradient x-component on f(i, j) = a * j, worked out by
    hand: conv(f, hx) = -a * sum_{u,v} v hx(u, v) with hx = g(u) dg(v) / N, dg(v) = -v g(v) / s^2,
    so it equals a * sum_u g(u) * sum_v v^2 g(v) / s^2 / N, N = sqrt(sum g^2 * sum dg^2)."""
    g = [math.exp(-u * u / (2 * sigma**2)) / (sigma * math.sqrt(2 * math.pi)) for u in range(-4, 5)]
    dg = [-v * g[v + 4] / sigma**2 for v in range(-4, 5)]
    norm = math.sqrt(sum(x * x for x in g) * sum(x * x for x in dg))
    return a * sum(g) * sum(v * v * g[v + 4] for v in range(-4, 5)) / sigma**2 / norm


def test_gauss_gradient_kernel_is_matlabs():
    hx = M.gauss_gradient_kernel(1.4)
    assert hx.shape == (9, 9)  # halfsize = ceil(1.4 sqrt(-2 ln(sqrt(2 pi) 1.4 0.01))) = 4
    assert np.sqrt((hx**2).sum()) == pytest.approx(1.0)
    assert np.allclose(hx, -hx[:, ::-1]) and np.allclose(hx, hx[::-1, :])  # odd in x, even in y
    assert hx[4, 3] > 0  # hx(u, v) = g(u) dg(v), dg(-1) > 0


def test_grad_on_a_ramp():
    w = 13
    pred = np.tile(10 + 20 * np.arange(w), (7, 1)).astype(np.uint8)  # 10 .. 250 along x
    gt = np.full((7, w), 77, dtype=np.uint8)  # flat: no gradient
    trimap = np.zeros((7, w), dtype=np.uint8)
    trimap[:, 4 : w - 4] = U  # interior columns, out of the kernel's reach of the borders
    # mat2gray maps the ramp to j / (w - 1); gy = 0; the flat matte contributes nothing
    gx = _ramp_gradient(1 / (w - 1))
    expected = trimap.astype(bool).sum() * gx**2 / 1000
    assert M.grad(pred, gt, trimap) == pytest.approx(expected, rel=1e-12)
    # mat2gray: any other affine ramp gives the same; the transpose gives it along y
    assert M.grad(pred.astype(float) * 0.5 + 3, gt, trimap) == pytest.approx(expected, rel=1e-12)
    assert M.grad(pred.T, gt.T, trimap.T) == pytest.approx(expected, rel=1e-12)
    # and both mattes with the same gradient have no error
    assert M.grad(pred, pred, trimap) == 0


def test_conn_with_several_components():
    # one row: 4-connected components are runs
    p = np.array([[255, 153, 0, 204, 255, 51, 102]], dtype=np.uint8)
    g = np.array([[255, 255, 0, 204, 204, 0, 102]], dtype=np.uint8)
    # min(p, g) / 255 = 1, .6, 0, .8, .8, 0, .4
    # t = .1 .. .6: components {0,1}, {3,4} (tie: the first), {6} (up to .4): omega = {0,1};
    #   pixels 2..6 get l = 0 at t = .1 (153 = .6 * 255 still passes t = .6)
    # t = .7, .8: components {0} and {3,4}: omega = {3,4}; pixels 0, 1 get l = .6
    # t = .9, 1: omega = {0}; every pixel has a level already
    assert np.allclose(M.connectivity_levels(p / 255, g / 255), [[.6, .6, 0, 0, 0, 0, 0]])
    # d_p = .4 0 0 .8 1 .2 .4   -> phi_p = .6 1 1 .2 0 .8 .6
    # d_g = .4 .4 0 .8 .8 0 .4  -> phi_g = .6 .6 1 .2 .2 1 .6
    trimap = np.full_like(p, U)
    assert M.conn(p, g, trimap) == pytest.approx((0.4 + 0.2 + 0.2) / 1000, rel=1e-12)
    # only unknown pixels count
    trimap[0, 1] = 255
    assert M.conn(p, g, trimap) == pytest.approx((0.2 + 0.2) / 1000, rel=1e-12)


def test_conn_breaks_ties_in_column_major_order_as_bwconncomp():
    # two components of 2 pixels: A = (0,2),(1,2) first in row-major order,
    # B = (2,0),(2,1) first in column-major order (MATLAB's)
    g = np.zeros((3, 3), dtype=np.uint8)
    g[0:2, 2] = 255
    g[2, 0:2] = 255
    p = g.copy()
    g[1, 2] = 230  # p = 1, g = 230/255 on one pixel of A
    # MATLAB: omega = B at every t up to .9 (tie), so A's pixels get l = 0 at t = .1:
    # phi_p(1,2) = 1 - 1 = 0, phi_g(1,2) = 1 - 230/255 -> 25/255
    # (with A taken instead, A would keep its level until t = 1, l = .9, and the error be 0)
    trimap = np.full_like(g, U)
    assert M.conn(p, g, trimap) == pytest.approx(25 / 255 / 1000, rel=1e-12)


def test_equal_mattes_have_no_error_and_known_pixels_never_count():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (16, 16)).astype(np.uint8)
    trimap = np.where(rng.random((16, 16)) < 0.5, U, 255).astype(np.uint8)
    assert M.matting_errors(a, a, trimap) == {"sad": 0, "mse": 0, "grad": 0, "conn": 0}
    b = a.copy()
    b[trimap != U] = 255 - b[trimap != U]  # differ on known pixels only
    e = M.matting_errors(b, a, trimap)
    assert e["sad"] == 0 and e["mse"] == 0 and e["conn"] == 0


@pytest.mark.parametrize("fn", [M.sad, M.mse, M.grad, M.conn])
def test_bad_inputs(fn):
    a = np.zeros((4, 4), dtype=np.uint8)
    t = np.full((4, 4), U, dtype=np.uint8)
    with pytest.raises(ValueError, match="same H x W"):
        fn(a, np.zeros((4, 5), np.uint8), t)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        fn(a.astype(float) + 300, a, t)
    with pytest.raises(ValueError, match="no unknown pixels"):
        fn(a, a, np.zeros_like(t))
    with pytest.raises(ValueError, match="H x W matte"):
        fn(a[None], a[None], t[None])
    with pytest.raises(TypeError, match="numpy array or torch tensor"):
        fn(a.tolist(), a, t)


def _batch(preds, gts, trimaps, index):
    return {"alpha": [torch.from_numpy(g[None] / 255.0).float() for g in gts],
            "trimap": [torch.from_numpy(t[None]) for t in trimaps],
            "index": torch.tensor(index)}


class TwoProcesses:
    """A fake process group of two: ``all_gather_object`` returns both processes' objects."""

    world_size = 2

    def __init__(self, objects):
        self.objects = objects

    def all_gather_object(self, obj):
        assert any(obj is o for o in self.objects)
        return list(self.objects)

    def all_reduce_sum(self, t):
        raise AssertionError("the matting meter gathers, it never sums")


class OneProcess:
    world_size = 1

    def all_gather_object(self, obj):
        return [obj]

    def all_reduce_sum(self, t):
        return t


def test_meter_synced_over_two_processes_equals_one_process_on_the_union():
    rng = np.random.default_rng(1)
    n = 7
    gts = [rng.integers(0, 256, (12, 10)).astype(np.uint8) for _ in range(n)]
    preds = [np.clip(g.astype(int) + rng.integers(-40, 40, g.shape), 0, 255).astype(np.uint8) for g in gts]
    trimaps = [np.where(rng.random(g.shape) < 0.6, U, 0).astype(np.uint8) for g in gts]

    whole = M.MattingMeter()
    whole.update(preds[:4], _batch(preds[:4], gts[:4], trimaps[:4], range(4)))
    whole.update(preds[4:], _batch(preds[4:], gts[4:], trimaps[4:], range(4, n)))
    whole.sync(OneProcess())
    expected = whole.compute()

    # rank r evaluates images r, r + 2, ... (the harness's sharding), in batches of 2
    shards = [M.MattingMeter(), M.MattingMeter()]
    for r, meter in enumerate(shards):
        idx = list(range(r, n, 2))
        for k in range(0, len(idx), 2):
            b = idx[k : k + 2]
            meter.update([preds[i] for i in b], _batch(None, [gts[i] for i in b], [trimaps[i] for i in b], b))
    group = TwoProcesses([m.records for m in shards])
    for m in shards:
        m.sync(group)
    for m in shards:
        assert m.compute() == expected  # exactly: same values, summed in index order
    assert expected["num_images"] == n
    per_image = [M.matting_errors(p, g, t) for p, g, t in zip(preds, gts, trimaps)]
    for k in M.METRICS:
        assert expected[k] == pytest.approx(np.mean([e[k] for e in per_image]), rel=1e-12)


def test_meter_refuses_an_empty_evaluation_and_repeated_images():
    with pytest.raises(ValueError, match="no images"):
        M.MattingMeter().compute()
    m = M.MattingMeter()
    a = np.zeros((4, 4), np.uint8)
    t = np.full((4, 4), U, np.uint8)
    m.update([a, a], _batch(None, [a, a], [t, t], [3, 3]))
    with pytest.raises(ValueError, match="twice"):
        m.compute()

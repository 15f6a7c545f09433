"""Plain-loop float64 ground truth of the SAPA operator, written from the paper (Eq. 2-4,
Table 6) and the definitions in docs/operator.md.

It shares no code with ``sapa``: it loops over output points ``l' = (i', j')`` and window
points ``p = (u, w)`` in numpy float64, vectorised only over channels, so that every line can
be checked against the definitions:

- projective location ``l = (floor(i' * H / H'), floor(j' * W / W'))``;
- window ``N(l) = {l + p : p in [-r, r]^2}``, ``r = K // 2``, index ``p = (u + r) * K + (w + r)``;
- score ``s_p = <q_{l'}, k_{l+p}>`` (paper Eq. 3, inner product);
- kernel ``w_p = h(s_p) / sum_p h(s_p)``: softmax for ``h = exp``; ``relu``, ``sigmoid``,
  ``softplus`` divide by ``sum_p h(s_p) + EPS``; ``none`` is ``w_p = s_p``;
- output ``out_{l'} = sum_p w_p v_{l+p}`` (paper Eq. 2);
- ``border="zeros"``: a window point outside the map has ``k = 0, v = 0`` and still takes part
  in the normalisation with score 0; ``border="valid"``: it is left out of both sums.

The gradients are the chain rule of those loops, written out by hand (``grad_out`` given).
Results are cached on the bytes of the inputs, so parametrised tests that share inputs pay
for the loops once. Returned arrays are read-only.
"""
from __future__ import annotations

import hashlib
import math

import numpy as np

EPS = 1e-6  # the epsilon of the relu / sigmoid / softplus denominators (docs/operator.md)
NORMALIZERS = ("softmax", "relu", "sigmoid", "softplus", "none")
BORDERS = ("zeros", "valid")

_CACHE: dict = {}


def random_array(seed: int, shape, scale: float = 1.0) -> np.ndarray:
    """Normal float64 values that are exactly representable in float32 (so one ground truth
    serves float64 and float32 runs of the same test)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * scale).astype(np.float32).astype(np.float64)


def assert_matches(actual, expected: np.ndarray, tol: float, what: str) -> None:
    """``max |actual - expected| <= tol * max(1, max |expected|)`` (``actual`` a tensor)."""
    shape = tuple(actual.shape)
    assert shape == expected.shape, f"{what}: shape {shape} != {expected.shape}"
    a = actual.detach().double().cpu().numpy()
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    err = float(np.abs(a - expected).max(initial=0.0))
    assert err <= tol * scale, f"{what}: max error {err:.3g} > {tol:g} x {scale:.3g}"


def _key(name, arrays, params):
    digest = hashlib.blake2b(digest_size=16)
    for a in arrays:
        a = np.ascontiguousarray(a, dtype=np.float64)
        digest.update(repr(a.shape).encode())
        digest.update(a.tobytes())
    return (name, digest.hexdigest(), params)


def _cached(name, arrays, params, compute):
    key = _key(name, arrays, params)
    if key not in _CACHE:
        result = compute()
        for r in result:
            r.setflags(write=False)
        _CACHE[key] = result
    return _CACHE[key]


def projective(i_out: int, out_size: int, in_size: int) -> int:
    return (i_out * in_size) // out_size


def window(i: int, j: int, h: int, w: int, kernel_size: int):
    """``(p, ii, jj, inside)`` for every window point of the low-resolution location ``(i, j)``."""
    r = kernel_size // 2
    p = 0
    for u in range(-r, r + 1):
        for v in range(-r, r + 1):
            ii, jj = i + u, j + v
            yield p, ii, jj, (0 <= ii < h and 0 <= jj < w)
            p += 1


def _h(s: float, normalizer: str) -> float:
    if normalizer == "relu":
        return max(s, 0.0)
    if normalizer == "sigmoid":
        return 1.0 / (1.0 + math.exp(-s))
    if normalizer == "softplus":
        return math.log1p(math.exp(-abs(s))) + max(s, 0.0)
    raise ValueError(normalizer)


def _dh(s: float, normalizer: str) -> float:
    if normalizer == "relu":
        return 1.0 if s > 0 else 0.0
    sig = 1.0 / (1.0 + math.exp(-s))
    if normalizer == "sigmoid":
        return sig * (1.0 - sig)
    return sig  # softplus' = sigmoid


def _normalize(scores: list[float], normalizer: str):
    """Kernel weights of the counted window points and ``dw/ds`` as a function of ``dL/dw``."""
    if normalizer == "softmax":
        m = max(scores)
        e = [math.exp(s - m) for s in scores]
        total = sum(e)
        weights = [x / total for x in e]

        def score_grad(gw):
            dot = sum(wi * gi for wi, gi in zip(weights, gw))
            return [wi * (gi - dot) for wi, gi in zip(weights, gw)]

        return weights, score_grad
    if normalizer == "none":
        return list(scores), lambda gw: list(gw)
    hs = [_h(s, normalizer) for s in scores]
    denom = sum(hs) + EPS
    weights = [x / denom for x in hs]

    def score_grad(gw):
        dot = sum(wi * gi for wi, gi in zip(weights, gw))
        return [_dh(s, normalizer) / denom * (gi - dot) for s, gi in zip(scores, gw)]

    return weights, score_grad


def attention(q, k, v, kernel_size: int, normalizer: str, border: str, grad_out=None):
    """SAPA forward (and backward if ``grad_out`` is given), numpy float64.

    Args:
        q: ``B x d x H' x W'``; k: ``B x d x H x W``; v: ``B x C x H x W``.
        grad_out: ``B x C x H' x W'`` or ``None``.

    Returns:
        ``(out,)`` or ``(out, grad_q, grad_k, grad_v)``.
    """
    arrays = [q, k, v] + ([] if grad_out is None else [grad_out])
    params = (kernel_size, normalizer, border)
    return _cached("attention", arrays, params,
                   lambda: _attention(q, k, v, grad_out, kernel_size, normalizer, border))


def _attention(q, k, v, grad_out, kernel_size, normalizer, border):
    b_, _, ho, wo = q.shape
    _, c, h, w = v.shape
    out = np.zeros((b_, c, ho, wo))
    gq, gk, gv = np.zeros_like(q), np.zeros_like(k), np.zeros_like(v)
    for b in range(b_):
        for io in range(ho):
            for jo in range(wo):
                i, j = projective(io, ho, h), projective(jo, wo, w)
                ql = q[b, :, io, jo]
                # the counted window points: inside ones always, outside ones only for "zeros"
                points, scores = [], []
                for _, ii, jj, inside in window(i, j, h, w, kernel_size):
                    if inside:
                        points.append((ii, jj))
                        scores.append(float(ql @ k[b, :, ii, jj]))
                    elif border == "zeros":
                        points.append(None)  # k = 0, v = 0
                        scores.append(0.0)
                weights, score_grad = _normalize(scores, normalizer)
                for wp, pt in zip(weights, points):
                    if pt is not None:
                        out[b, :, io, jo] += wp * v[b, :, pt[0], pt[1]]
                if grad_out is None:
                    continue
                g = grad_out[b, :, io, jo]
                gw = [0.0 if pt is None else float(g @ v[b, :, pt[0], pt[1]]) for pt in points]
                gs = score_grad(gw)
                for wp, gsp, pt in zip(weights, gs, points):
                    if pt is None:
                        continue  # k = v = 0 there, and they are constants
                    gq[b, :, io, jo] += gsp * k[b, :, pt[0], pt[1]]
                    gk[b, :, pt[0], pt[1]] += gsp * ql
                    gv[b, :, pt[0], pt[1]] += wp * g
    if grad_out is None:
        return (out,)
    return out, gq, gk, gv


def similarity(q, k, kernel_size: int, border: str, grad_out=None):
    """Scores ``B x K*K x H' x W'`` (``border="valid"``: ``-inf`` at outside points; ``"zeros"``:
    0 there), and ``(grad_q, grad_k)`` if ``grad_out`` is given (outside entries ignored)."""
    arrays = [q, k] + ([] if grad_out is None else [grad_out])
    return _cached("similarity", arrays, (kernel_size, border),
                   lambda: _similarity(q, k, grad_out, kernel_size, border))


def _similarity(q, k, grad_out, kernel_size, border):
    b_, _, ho, wo = q.shape
    h, w = k.shape[2:]
    scores = np.zeros((b_, kernel_size * kernel_size, ho, wo))
    gq, gk = np.zeros_like(q), np.zeros_like(k)
    for b in range(b_):
        for io in range(ho):
            for jo in range(wo):
                i, j = projective(io, ho, h), projective(jo, wo, w)
                for p, ii, jj, inside in window(i, j, h, w, kernel_size):
                    if not inside:
                        scores[b, p, io, jo] = -np.inf if border == "valid" else 0.0
                        continue
                    scores[b, p, io, jo] = q[b, :, io, jo] @ k[b, :, ii, jj]
                    if grad_out is not None:
                        g = grad_out[b, p, io, jo]
                        gq[b, :, io, jo] += g * k[b, :, ii, jj]
                        gk[b, :, ii, jj] += g * q[b, :, io, jo]
    return (scores,) if grad_out is None else (scores, gq, gk)


def assemble(kernels, v, kernel_size: int, grad_out=None):
    """``out_{l'} = sum_p kernels[p, l'] v_{l+p}`` (outside points hold ``v = 0``), and
    ``(grad_kernels, grad_v)`` if ``grad_out`` is given."""
    arrays = [kernels, v] + ([] if grad_out is None else [grad_out])
    return _cached("assemble", arrays, (kernel_size,),
                   lambda: _assemble(kernels, v, grad_out, kernel_size))


def _assemble(kernels, v, grad_out, kernel_size):
    b_, _, ho, wo = kernels.shape
    _, c, h, w = v.shape
    out = np.zeros((b_, c, ho, wo))
    gkern, gv = np.zeros_like(kernels), np.zeros_like(v)
    for b in range(b_):
        for io in range(ho):
            for jo in range(wo):
                i, j = projective(io, ho, h), projective(jo, wo, w)
                for p, ii, jj, inside in window(i, j, h, w, kernel_size):
                    if not inside:
                        continue
                    out[b, :, io, jo] += kernels[b, p, io, jo] * v[b, :, ii, jj]
                    if grad_out is not None:
                        g = grad_out[b, :, io, jo]
                        gkern[b, p, io, jo] = g @ v[b, :, ii, jj]
                        gv[b, :, ii, jj] += kernels[b, p, io, jo] * g
    return (out,) if grad_out is None else (out, gkern, gv)

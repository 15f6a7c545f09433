"""Ray casting of simple indoor scenes: planes, boxes and spheres seen by a pinhole camera.

Everything is vectorised numpy over the rays. Conventions:

- **World**: metres, ``y`` up, the floor at ``y = 0``.
- **Camera**: OpenCV's (``x`` right, ``y`` down, ``z`` forward); a pixel ``(row, col)`` looks
  along ``((col + 0.5 - cx) / f, (row + 0.5 - cy) / f, 1)`` (pixel centres at half-integers),
  so the ray parameter ``t`` of a hit **is its z-depth** (distance along the optical axis,
  what NYU's Kinect depth maps hold).
- A hit records ``t``, the surface's unit normal (world), texture coordinates ``uv`` in
  metres along the surface, and the id of the surface.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Camera:
    """A pinhole camera at ``position`` (world), ``pitch`` radians down, ``yaw`` radians to the
    left, ``focal`` pixels, image ``height x width`` with the principal point at the centre."""

    position: tuple[float, float, float]
    pitch: float
    yaw: float
    focal: float
    height: int
    width: int

    def rotation(self) -> np.ndarray:
        """``3 x 3`` world-from-camera rotation."""
        flip = np.diag([1.0, -1.0, 1.0])  # camera y points down, world y up
        cp, sp = np.cos(self.pitch), np.sin(self.pitch)
        pitch = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])  # forward tilts towards -y
        cy, sy = np.cos(self.yaw), np.sin(self.yaw)
        yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # forward turns towards -x
        return yaw @ pitch @ flip

    def rays(self, subpixel: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
        """``H x W x 3`` world directions whose camera ``z`` is 1, through the pixel centres
        shifted by ``subpixel = (drow, dcol)`` pixels."""
        rows = np.arange(self.height) + 0.5 + subpixel[0]
        cols = np.arange(self.width) + 0.5 + subpixel[1]
        x = (cols[None, :] - self.width / 2) / self.focal
        y = (rows[:, None] - self.height / 2) / self.focal
        d = np.stack(np.broadcast_arrays(x, y, np.ones_like(x * y)), axis=-1)
        return d @ self.rotation().T


@dataclass(frozen=True)
class Plane:
    """The plane ``dot(normal, p) = offset`` seen from the side ``normal`` points to;
    ``u_axis``, ``v_axis``: unit vectors in the plane for texture coordinates."""

    normal: tuple[float, float, float]
    offset: float
    u_axis: tuple[float, float, float]
    v_axis: tuple[float, float, float]


@dataclass(frozen=True)
class Box:
    """A box resting anywhere: ``center``, ``half`` extents along its own axes, turned by
    ``yaw`` radians about the vertical."""

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float

    def axes(self) -> np.ndarray:
        """``3 x 3``: rows are the box's local x, y, z axes in world coordinates."""
        c, s = np.cos(self.yaw), np.sin(self.yaw)
        return np.array([[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]])


@dataclass(frozen=True)
class Sphere:
    center: tuple[float, float, float]
    radius: float


def _t_plane(o, d, pl: Plane):
    n = np.asarray(pl.normal, dtype=np.float64)
    dn = d @ n
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (pl.offset - o @ n) / dn
    return np.where(dn < -1e-12, t, np.inf)  # only from the front


def _attrs_plane(p, d, pl: Plane):
    n = np.broadcast_to(np.asarray(pl.normal, dtype=np.float64), d.shape)
    return n, np.stack([p @ np.asarray(pl.u_axis), p @ np.asarray(pl.v_axis)], axis=-1)


def _slabs(o, d, box: Box):
    """Entry and exit parameters of the rays per box axis (box frame)."""
    axes = box.axes()
    lo = (o - np.asarray(box.center)) @ axes.T  # ray origins in the box frame
    ld = d @ axes.T
    half = np.asarray(box.half)
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = (-half - lo) / ld
        t2 = (half - lo) / ld
    tmin, tmax = np.minimum(t1, t2), np.maximum(t1, t2)
    # rays parallel to a slab: inside it -> (-inf, inf), outside -> empty
    parallel = ld == 0
    inside = np.abs(lo) <= half
    tmin = np.where(parallel, np.where(inside, -np.inf, np.inf), tmin)
    tmax = np.where(parallel, np.where(inside, np.inf, -np.inf), tmax)
    return tmin, tmax, lo, ld, axes


def _t_box(o, d, box: Box):
    tmin, tmax = _slabs(o, d, box)[:2]
    # (max/min over the last axis of length 3, written out: far faster than .max(-1))
    near = np.maximum(np.maximum(tmin[:, 0], tmin[:, 1]), tmin[:, 2])
    far = np.minimum(np.minimum(tmax[:, 0], tmax[:, 1]), tmax[:, 2])
    return np.where((near <= far) & (near > 0), near, np.inf)


def _attrs_box(p, d, box: Box):
    tmin, _, lo, ld, axes = _slabs(p - 1e-3 * d, d, box)  # from just outside the entry point
    axis = tmin.argmax(-1)
    sign = -np.sign(np.take_along_axis(ld, axis[:, None], -1))[:, 0]
    local_n = np.zeros(d.shape)
    local_n[np.arange(len(axis)), axis] = sign
    # texture coordinates: the two local coordinates across the face that was hit
    local_p = (p - np.asarray(box.center)) @ axes.T
    uv_axes = np.array([[2, 1], [0, 2], [0, 1]])[axis]
    return local_n @ axes, np.take_along_axis(local_p, uv_axes, -1)


def _t_sphere(o, d, sp: Sphere):
    oc = o - np.asarray(sp.center)
    a = np.einsum("...i,...i->...", d, d)
    b = 2 * d @ oc
    c = oc @ oc - sp.radius ** 2
    disc = b * b - 4 * a * c
    with np.errstate(invalid="ignore"):
        t = (-b - np.sqrt(disc)) / (2 * a)
    return np.where((disc >= 0) & (t > 0), t, np.inf)


def _attrs_sphere(p, d, sp: Sphere):
    normal = (p - np.asarray(sp.center)) / sp.radius
    uv = np.stack([np.arctan2(normal[:, 0], normal[:, 2]) * sp.radius,
                   np.arcsin(np.clip(normal[:, 1], -1, 1)) * sp.radius], axis=-1)
    return normal, uv


# surface type -> (ray parameters of the hits, (normals, uv) at given hit points)
_KINDS = {Plane: (_t_plane, _attrs_plane), Box: (_t_box, _attrs_box),
          Sphere: (_t_sphere, _attrs_sphere)}


def cast(origin, dirs: np.ndarray, surfaces) -> dict:
    """The nearest hit of every ray among ``surfaces`` (planes, boxes, spheres).

    Args:
        origin: ``(3,)`` ray origin (the camera position).
        dirs: ``... x 3`` directions (``Camera.rays``).
        surfaces: a sequence of ``Plane``, ``Box`` and ``Sphere``.

    Returns:
        ``{"t", "normal", "uv", "id", "point"}``: ``...`` ray parameters (``inf`` where nothing
        is hit), ``... x 3`` unit normals, ``... x 2`` texture coordinates (metres), ``...``
        int surface index (-1: no hit), ``... x 3`` hit points.
    """
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(dirs, dtype=np.float64)
    shape = d.shape[:-1]
    d = d.reshape(-1, 3)
    ts = np.stack([_KINDS[type(s)][0](o, d, s) for s in surfaces]) if surfaces else np.full((1, len(d)), np.inf)
    ids = ts.argmin(0)
    best = ts[ids, np.arange(len(d))]
    ids = np.where(np.isfinite(best), ids, -1)
    point = o + np.where(np.isfinite(best), best, 0)[:, None] * d
    normal = np.zeros(d.shape)
    uv = np.zeros((len(d), 2))
    for i, s in enumerate(surfaces):
        sel = ids == i
        if sel.any():
            normal[sel], uv[sel] = _KINDS[type(s)][1](point[sel], d[sel], s)
    return {"t": best.reshape(shape), "normal": normal.reshape(*shape, 3),
            "uv": uv.reshape(*shape, 2), "id": ids.reshape(shape), "point": point.reshape(*shape, 3)}

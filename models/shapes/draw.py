"""Upright shape masks. Every shape is defined in the box [-1, 1]^2 (half-size units) with its
bounding box centered, so that a rendered object's bbox center is the placed center."""

from __future__ import annotations

import math
from functools import cache

import numpy as np

SUPERSAMPLE = 4  # sub-pixel grid per pixel; coverage >= 1/2 decides a pixel (no anti-aliasing)
RING_INNER = 0.52  # hole radius / outer radius: leaves a >= 5 px hole at 10 px objects
STAR_INNER = 0.5  # fat points survive blur at 32 px
CROSS_HALF_ARM = 0.34  # arm width = 0.34 x object size


def _centered(verts: np.ndarray) -> np.ndarray:
    """Shift and scale a polygon so its bbox is centered and its longer side spans [-1, 1]."""
    lo, hi = verts.min(0), verts.max(0)
    return (verts - (lo + hi) / 2) * (2 / (hi - lo).max())


@cache
def _star_vertices() -> np.ndarray:
    ang = -math.pi / 2 + np.arange(10) * math.pi / 5  # first point straight up
    rad = np.where(np.arange(10) % 2 == 0, 1.0, STAR_INNER)
    return _centered(np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1))


@cache
def _regular_vertices(n: int) -> np.ndarray:
    ang = -math.pi / 2 + np.arange(n) * 2 * math.pi / n  # first vertex straight up
    return _centered(np.stack([np.cos(ang), np.sin(ang)], 1))


@cache
def _triangle_vertices() -> np.ndarray:
    return _centered(np.array([[0.0, -1.0], [1.0, 0.8], [-1.0, 0.8]]))


def _in_polygon(u: np.ndarray, v: np.ndarray, verts: np.ndarray) -> np.ndarray:
    """Even-odd ray casting, vectorised over points."""
    inside = np.zeros(u.shape, dtype=bool)
    n = len(verts)
    for k in range(n):
        (x1, y1), (x2, y2) = verts[k], verts[(k + 1) % n]
        crosses = (y1 > v) != (y2 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x1 + (v - y1) * (x2 - x1) / (y2 - y1)
        inside ^= crosses & (u < x_at)
    return inside


def unit_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Membership of points (u, v), given in half-size units around the object's center."""
    r2 = u * u + v * v
    if shape == "circle":
        return r2 <= 1.0
    if shape == "ring":
        return (r2 <= 1.0) & (r2 >= RING_INNER**2)
    if shape == "square":
        return (np.abs(u) <= 0.9) & (np.abs(v) <= 0.9)
    if shape == "cross":
        au, av = np.abs(u), np.abs(v)
        return ((au <= 1) & (av <= CROSS_HALF_ARM)) | ((av <= 1) & (au <= CROSS_HALF_ARM))
    if shape == "triangle":
        return _in_polygon(u, v, _triangle_vertices())
    if shape == "star":
        return _in_polygon(u, v, _star_vertices())
    if shape == "diamond":
        return np.abs(u) + np.abs(v) <= 1.0
    if shape == "hexagon":
        return _in_polygon(u, v, _regular_vertices(6))
    if shape == "pentagon":
        return _in_polygon(u, v, _regular_vertices(5))
    if shape == "heart":
        # two lobes over a point: the classic implicit heart (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, fit to the box
        x, y = u * 1.2, -(v * 1.15 - 0.15)
        return (x * x + y * y - 1) ** 3 - x * x * y**3 <= 0
    if shape == "crescent":
        return (r2 <= 1.0) & ((u - 0.55) ** 2 + v * v >= 0.8**2)
    raise ValueError(f"unknown shape {shape!r}")


def raster(shape: str, cx: float, cy: float, side: float, height: int, width: int) -> np.ndarray:
    """Boolean pixel mask of a shape of bbox side `side` px centered at (cx, cy) px."""
    half = side / 2
    x0, x1 = max(int(math.floor(cx - half)) - 1, 0), min(int(math.ceil(cx + half)) + 1, width)
    y0, y1 = max(int(math.floor(cy - half)) - 1, 0), min(int(math.ceil(cy + half)) + 1, height)
    out = np.zeros((height, width), dtype=bool)
    if x1 <= x0 or y1 <= y0:
        return out
    ss = SUPERSAMPLE
    xs = x0 + (np.arange((x1 - x0) * ss) + 0.5) / ss  # sub-pixel centers, pixel k spans [k, k+1)
    ys = y0 + (np.arange((y1 - y0) * ss) + 0.5) / ss
    u, v = np.meshgrid((xs - cx) / half, (ys - cy) / half)
    cover = unit_mask(shape, u, v).reshape(y1 - y0, ss, x1 - x0, ss).mean((1, 3))
    out[y0:y1, x0:x1] = cover >= 0.5
    return out


@cache
def template(shape: str, grid: int) -> np.ndarray:
    """A shape's occupancy on a `grid` x `grid` partition of its own bounding box."""
    n = 32 * grid
    c = (np.arange(n) + 0.5) / n * 2 - 1
    u, v = np.meshgrid(c, c)
    mask = unit_mask(shape, u, v)
    ys, xs = np.nonzero(mask)
    mask = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    return occupancy(mask, grid)


def occupancy(mask: np.ndarray, grid: int) -> np.ndarray:
    """Exact area-averaged occupancy of a (cropped) mask on a grid x grid partition."""
    h, w = mask.shape
    big = np.kron(mask.astype(np.float32), np.ones((grid, grid), np.float32))  # (h*g, w*g)
    return big.reshape(grid, h, grid, w).mean((1, 3))

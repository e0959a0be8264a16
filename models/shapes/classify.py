"""Shape classification of one connected component.

Features: bounding-box aspect, enclosed holes (only rings have one), and the occupancy of the
component on an 8x8 partition of its bounding box. The occupancy is compared, nearest-neighbour,
with a bank of reference masks drawn by the renderer's own rasterizer at every small size, at
sub-pixel offsets and after Gaussian blur thresholded at 1/2 (what segmentation of a blurred
image yields): at 10 px a star that lost a side point under blur has a shifted bbox, and only a
reference with the same distortion is near it.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from scipy import ndimage

from .draw import occupancy, raster, template
from .specs import SHAPES

GRID = 8
IDEAL_WEIGHT = 0.1
MAX_DIST = 0.3  # mean |occupancy - reference| above this: not a known shape
ASPECT_RANGE = (0.6, 1.65)  # every shape has a near-square bounding box
HOLE_FRACTION = 0.04  # enclosed background / bbox area that makes a ring
BANK_SIZES = (*range(9, 23), 24, 28, 32, 40)
BANK_OFFSETS = (0.0, 0.25, 0.5)
BANK_SIGMAS = (0.0, 0.5, 0.8, 1.1, 1.4)


def _crop(mask: np.ndarray) -> np.ndarray | None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return None
    return mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def _largest(mask: np.ndarray) -> np.ndarray:
    comps, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return mask
    return comps == 1 + int(np.bincount(comps.ravel())[1:].argmax())


@cache
def _bank() -> tuple[np.ndarray, np.ndarray]:
    """(N, GRID*GRID) reference occupancies and their (N,) shape indices; built once."""
    refs, owners = [], []
    for k, shape in enumerate(SHAPES):
        refs.append(template(shape, GRID).ravel())
        owners.append(k)
        for side in BANK_SIZES:
            n = side + 8
            for off in BANK_OFFSETS:
                c = 4 + side / 2 + off
                cover = raster(shape, c, c, side, n, n).astype(np.float32)
                for sigma in BANK_SIGMAS:
                    mask = ndimage.gaussian_filter(cover, sigma) >= 0.5 if sigma else cover > 0
                    crop = _crop(_largest(mask))
                    if crop is not None:
                        refs.append(occupancy(crop, GRID).ravel())
                        owners.append(k)
    return np.stack(refs), np.array(owners)


def hole_fraction(mask: np.ndarray) -> float:
    """Background enclosed by the mask, as a fraction of its bbox."""
    return float((ndimage.binary_fill_holes(mask) & ~mask).sum()) / mask.size


def classify(mask: np.ndarray) -> tuple[str | None, dict]:
    """Shape of a component mask cropped to its bbox (None: no known shape), with its features."""
    h, w = mask.shape
    aspect = w / h
    hole = hole_fraction(mask)
    refs, owners = _bank()
    dist = np.abs(refs - occupancy(mask, GRID).ravel()).mean(1)
    # The ideal template (bank row 0 of each shape) breaks near-ties of the nearest references:
    # at 10 px a blurred circle and a blurred square can have almost the same occupancy.
    per_shape = {}
    for k, shape in enumerate(SHAPES):
        mine = dist[owners == k]
        per_shape[shape] = float(mine.min() + IDEAL_WEIGHT * mine[0])
    # Rings are the only shapes with a hole, and a ring without one is no ring.
    allowed = ["ring"] if hole >= HOLE_FRACTION else [s for s in SHAPES if s != "ring"]
    best = min(allowed, key=per_shape.__getitem__)
    feats = {"aspect": aspect, "hole": hole, "fill": float(mask.mean()), "dist": per_shape[best]}
    feats["dists"] = per_shape
    if not (ASPECT_RANGE[0] <= aspect <= ASPECT_RANGE[1]) or per_shape[best] > MAX_DIST:
        return None, feats
    return best, feats

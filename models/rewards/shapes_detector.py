"""A programmatic detector-style reward, like GPO's YOLO counting reward: find objects, then score the
fraction of the prompt's requirements they meet. Registered as reward kind "shapes-detector".

It is deliberately cruder than the benchmark verifier (models.shapes.verify), so that it makes its own
errors: a fixed RGB distance from the border color decides foreground, each pixel takes its nearest
palette color (no unmixing of blurred edges), 4-connected components of one color are objects, and a
shape is the nearest of six prototypes on four mask features (fill, hole, corners, top/bottom width).
Partial credit replaces the verifier's all-or-nothing: count closeness per item, presence of each
named color, and the fraction of object pairs in the named relation.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import ndimage

from models.rewards.registry import REWARDS
from models.shapes.draw import raster
from models.shapes.specs import COLORS, PALETTE, SHAPES
from models.shapes_zoo.prompt_parser import parse_prompt
from synrank.config import RewardSpec

FG_DISTANCE = 60.0  # RGB distance from the border color that makes a pixel foreground
MIN_AREA = 0.01  # fraction of the image; smaller components are noise
MARGIN = 0.05  # relation margin, fraction of the image size
_PALETTE = np.array([PALETTE[c] for c in COLORS], np.float32)


@dataclass(frozen=True)
class Blob:
    """One detected object: its nearest-prototype shape, its palette color and its bounding box's center
    (cx, cy) in pixels."""

    shape: str
    color: str
    cx: float
    cy: float


def _features(mask: np.ndarray) -> np.ndarray:
    """fill of the bbox, enclosed hole / area, corner occupancy, top-row minus bottom-row width."""
    ys, xs = np.nonzero(mask)
    m = mask[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = m.shape
    hole = (ndimage.binary_fill_holes(m) & ~m).sum() / m.sum()
    ch, cw = max(1, h // 4), max(1, w // 4)
    corners = np.mean([m[:ch, :cw].mean(), m[:ch, -cw:].mean(), m[-ch:, :cw].mean(), m[-ch:, -cw:].mean()])
    rows = max(1, h // 5)
    taper = m[:rows].mean() - m[-rows:].mean()  # triangles point up: narrow top, wide bottom
    return np.array([m.mean(), 2.0 * hole, corners, taper], np.float32)


@lru_cache(maxsize=1)
def _prototypes() -> np.ndarray:
    """Mean features of each shape drawn by the renderer's rasterizer at the sizes it uses."""
    protos = []
    for shape in SHAPES:
        feats = [_features(raster(shape, 10 + s / 2, 10 + s / 2, s, 20 + s, 20 + s)) for s in range(10, 15)]
        protos.append(np.mean(feats, 0))
    return np.stack(protos)


def detect_blobs(image: np.ndarray) -> list[Blob]:
    """The objects of an (H, W, 3+) RGB image, 0..255 (module docstring): foreground is farther than
    FG_DISTANCE from the border's median color, each 4-connected component of one palette color of at least
    MIN_AREA of the image is a Blob, its shape the nearest prototype (L1 over the four mask features)."""
    img = np.asarray(image, np.float32)[..., :3]
    frame = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    bg = np.median(frame, 0)
    fg = np.linalg.norm(img - bg, axis=-1) > FG_DISTANCE
    nearest = np.linalg.norm(img[:, :, None, :] - _PALETTE, axis=-1).argmin(-1)
    min_area = MIN_AREA * img.shape[0] * img.shape[1]
    protos = _prototypes()
    blobs = []
    for k, color in enumerate(COLORS):
        comps, n = ndimage.label(fg & (nearest == k))
        for idx, sl in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[sl] == idx
            if mask.sum() < min_area:
                continue
            shape = SHAPES[int(np.abs(protos - _features(mask)).sum(1).argmin())]
            ys, xs = sl
            blobs.append(Blob(shape, color, (xs.start + xs.stop) / 2, (ys.start + ys.stop) / 2))
    return blobs


def _related(a: Blob, b: Blob, relation: str, margin: float) -> bool:
    dx, dy = a.cx - b.cx, a.cy - b.cy
    return {"left of": -dx, "right of": dx, "above": -dy, "below": dy}[relation] > margin


def requirement_scores(blobs: list[Blob], spec: dict, size: int) -> list[float]:
    """One value in [0, 1] per requirement: each item's count, each named color, each relation."""
    include = spec["include"]
    found = [[b for b in blobs if b.shape == it["class"] and b.color == it.get("color", b.color)] for it in include]
    out = []
    for k, it in enumerate(include):
        want = int(it["count"])
        out.append(1.0 - min(1.0, abs(len(found[k]) - want) / want))
        if "color" in it:
            out.append(float(any(b.color == it["color"] for b in blobs)))
        if "position" in it:
            rel, ref = it["position"]
            pairs = [(a, b) for a in found[k] for b in found[ref]]
            out.append(float(np.mean([_related(a, b, rel, MARGIN * size) for a, b in pairs])) if pairs else 0.0)
    return out


def detector_score(image: np.ndarray, prompt: str) -> float:
    """Mean requirement score in [0, 1]; 0 for a prompt outside the grammar."""
    spec = parse_prompt(prompt)
    if spec is None:
        return 0.0
    img = np.asarray(image)
    return float(np.mean(requirement_scores(detect_blobs(img), spec, max(img.shape[:2]))))


@REWARDS.register("shapes-detector")
class ShapesDetectorReward:
    """Reward kind "shapes-detector"; `arch` and `pretrained` of the RewardSpec are not used."""

    def __init__(self, spec: RewardSpec, device: str = "cpu") -> None:
        self.spec, self.device = spec, device

    def score(self, images: list[Image.Image], prompts: list[str]) -> np.ndarray:
        """detector_score of each (image, prompt): (N,) float64 in [0, 1]; ValueError if the lengths differ."""
        return per_image(detector_score, images, prompts)


def per_image(score, images: list, prompts: list[str]) -> np.ndarray:
    """score(RGB array, prompt) of each (image, prompt), images as PIL images or arrays: (N,) float64;
    ValueError if the lengths differ. The programmatic rewards' (detector, verifier) score method."""
    arrays = [np.asarray(im.convert("RGB")) if isinstance(im, Image.Image) else np.asarray(im) for im in images]
    return np.array([score(a, p) for a, p in zip(arrays, prompts, strict=True)], np.float64)

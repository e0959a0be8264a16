"""Exact verifier for shapes-world images: segmentation, shape classification, GenEval's rules.

Segmentation unmixes every pixel as background + alpha x (palette color - background): a blurred
edge pixel lies on the segment between the background and its own color, so it is labelled with
the right color (nearest-color would call yellow fringes orange), and alpha >= 1/2 keeps masks at
their true outline under blur. Components are found per color and classified by classify.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import ndimage

from .classify import classify
from .geometry import relation_holds
from .specs import COLORS, PALETTE

PRESMOOTH = 0.5  # light Gaussian denoising; the classifier bank includes blurred references
MIN_AREA = 0.012  # components smaller than this fraction of the image are specks
_EIGHT = np.ones((3, 3), dtype=bool)


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels


@dataclass(frozen=True)
class Detection:
    """One detected object, from any detector: the shapes world's exact segmenter (`detect`) or a real
    image detector behind GenEval and T2I-CompBench (OWLv2, models/benchmarks/vision.py).

    cls: class name (a shape, or a GenEval/COCO class); None for a shapes-world blob of no known shape,
    which counts as no class. box: x0, y0, x1, y1 in pixels (the segmenter's are its bounding slices,
    x1 and y1 exclusive). score: detector confidence in [0, 1], 1.0 from the exact segmenter. color: the
    segmenter's palette color, or one known in advance (synthetic tests); None sends a GenEval color
    check to the color classifier. area: object pixels (segmenter only). mask: HxW bool, for GenEval's
    color crop, left out of comparisons."""

    cls: str | None
    box: Box
    score: float = 1.0
    color: str | None = None
    area: int | None = None
    mask: np.ndarray | None = field(default=None, compare=False)

    @property
    def cx(self) -> float:
        """Box center x, pixels."""
        return (self.box[0] + self.box[2]) / 2

    @property
    def cy(self) -> float:
        """Box center y, pixels (grows downwards)."""
        return (self.box[1] + self.box[3]) / 2


def _background(img: np.ndarray) -> np.ndarray:
    frame = np.concatenate([img[0], img[-1], img[1:-1, 0], img[1:-1, -1]])
    return np.median(frame, axis=0)


def segment(img: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel color label (index into COLORS, -1 = background) and alpha.

    The background is the median of the 1-px image frame; a light Gaussian pre-smoothing
    halves pixel noise before unmixing."""
    x = img.astype(np.float32)
    if PRESMOOTH:
        x = ndimage.gaussian_filter(x, (PRESMOOTH, PRESMOOTH, 0))
    bg = _background(x)
    d = x - bg  # (H, W, 3)
    v = np.array([PALETTE[c] for c in COLORS], np.float32) - bg  # (K, 3)
    alpha = np.einsum("hwc,kc->hwk", d, v) / (v * v).sum(1)
    alpha = np.clip(alpha, 0.0, None)
    resid = np.linalg.norm(d[:, :, None, :] - alpha[..., None] * v, axis=-1)  # (H, W, K)
    label = resid.argmin(-1)
    a = np.take_along_axis(alpha, label[..., None], -1)[..., 0]
    r = np.take_along_axis(resid, label[..., None], -1)[..., 0]
    # Far-off colors (residual large against the explained part) are not palette objects.
    fg = (a >= 0.5) & (r <= 30 + 0.5 * a * np.linalg.norm(v, axis=1)[label])
    label = np.where(fg, label, -1)
    return _smooth(label), a


def _smooth(label: np.ndarray) -> np.ndarray:
    """Relabel foreground pixels to the majority color of their 3x3 foreground neighbourhood;
    removes isolated mislabelled edge pixels without moving the foreground boundary."""
    fg = label >= 0
    if not fg.any():
        return label
    kernel = _EIGHT.astype(np.int16)
    votes = np.stack(
        [ndimage.correlate((label == k).astype(np.int16), kernel, mode="constant") for k in range(len(COLORS))]
    )
    return np.where(fg, votes.argmax(0), -1)


def detect(image: np.ndarray, keep_unknown: bool = False) -> list[Detection]:
    """Objects in an HxWx3 uint8 image; blobs of unknown shape only with `keep_unknown`."""
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 image, got shape {img.shape}")
    label, _ = segment(img)
    min_area = MIN_AREA * img.shape[0] * img.shape[1]
    out = []
    for k, color in enumerate(COLORS):
        comps, n = ndimage.label(label == k, structure=_EIGHT)
        for idx, sl in enumerate(ndimage.find_objects(comps), start=1):
            mask = comps[sl] == idx
            area = int(mask.sum())
            if area < min_area:
                continue
            cls, _ = classify(mask)
            if cls is None and not keep_unknown:
                continue
            ys, xs = sl
            box = (float(xs.start), float(ys.start), float(xs.stop), float(ys.stop))
            out.append(Detection(cls, box, color=color, area=area))
    return out


def _matches(det: Detection, item: dict) -> bool:
    return det.cls == item["class"] and ("color" not in item or det.color == item["color"])


def _report_row(det: Detection) -> dict[str, Any]:
    """A segmenter detection as verify_report lists it: class, color, box center (pixels), area."""
    return {"cls": det.cls, "color": det.color, "cx": det.cx, "cy": det.cy, "area": det.area}


def verify_report(image: np.ndarray, spec: dict) -> dict:
    """GenEval's rules with exact counts: {"ok", "failures": [...], "detections": [...]}.

    Every include item needs exactly `count` detections of its class (and color, if given);
    every exclude item fewer than `count` of its class; a `position` item must stand in the
    relation to every detection of the referenced item (geometry.relation_holds: centers, margin
    0.1 x image size, direction mostly along the relation's axis, as GenEval's check does).

    A failure names the include/exclude item and a reason: "count" (wrong number of the class),
    "color" (right number of the class but not of that color), "position", "exclude"."""
    img = np.asarray(image)
    size = max(img.shape[:2])
    dets = detect(img)
    failures: list[dict] = []
    found = [[d for d in dets if _matches(d, it)] for it in spec["include"]]
    for k, it in enumerate(spec["include"]):
        n_cls = sum(d.cls == it["class"] for d in dets)
        if len(found[k]) != int(it["count"]):
            reason = "color" if "color" in it and n_cls == int(it["count"]) else "count"
            got = {"found": len(found[k]), "found_class": n_cls}
            failures.append({"item": k, "reason": reason, "expected": int(it["count"]), **got})
    for k, it in enumerate(spec.get("exclude", [])):
        n_cls = sum(d.cls == it["class"] for d in dets)
        if n_cls >= int(it["count"]):
            failures.append({"exclude": k, "reason": "exclude", "expected": f"< {it['count']}", "found": n_cls})
    for k, it in enumerate(spec["include"]):
        if "position" not in it:
            continue
        rel, ref = it["position"]
        bad = [
            (a.cx, a.cy, b.cx, b.cy)
            for a in found[k]
            for b in found[ref]
            if not relation_holds((a.cx, a.cy), (b.cx, b.cy), rel, size)
        ]
        if bad:
            failures.append({"item": k, "reason": "position", "relation": rel, "pairs": bad})
    return {"ok": not failures, "failures": failures, "detections": [_report_row(d) for d in dets]}


def verify(image: np.ndarray, spec: dict) -> bool:
    """Whether the image satisfies the spec exactly."""
    return bool(verify_report(image, spec)["ok"])

"""Scene rendering: a spec becomes a small RGB image that satisfies it, or (render_wrong) a hard
negative that breaks exactly one property and the modified spec it satisfies instead."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from .draw import raster
from .geometry import RENDER_MARGIN, RENDER_MIN_COS, relation_holds
from .specs import COLORS, MAX_COUNT, OPPOSITE, PALETTE, SHAPES, heldout_prompts, is_reserved, make_spec

BACKGROUND = 60  # dark gray: every palette color, white included, stands far from it
BG_JITTER = 10  # per-image gray level jitter
BG_TINT = 4  # per-channel tint jitter
COLOR_JITTER = 12  # per-object, per-channel jitter
SIZE_RANGE = (0.30, 0.44)  # object bbox side / image size: 10-14 px at 32, 19-28 px at 64
WRONG_KINDS = ("count", "color", "relation", "shape")
Constraint = tuple[int, int, str]  # (i, j, relation): object i must be `relation` object j


@dataclass
class _Obj:
    shape: str
    color: str
    item: int  # index into spec["include"]
    side: float = 0.0
    cx: float = 0.0
    cy: float = 0.0


def _gap(size: int) -> float:
    return max(2.0, 0.06 * size)  # boxes at least this far apart, so components never touch


def _border(size: int) -> float:
    return max(1.0, size / 32)  # keeps the 1-px frame clean for the verifier's background estimate


def _apart(a: _Obj, b: _Obj, gap: float) -> bool:
    dx = abs(a.cx - b.cx) - (a.side + b.side) / 2
    dy = abs(a.cy - b.cy) - (a.side + b.side) / 2
    return max(dx, dy) >= gap


def _objects(spec: dict, rng: np.random.Generator, avoid_reserved: bool) -> list[_Obj]:
    objs = []
    for k, item in enumerate(spec["include"]):
        for _ in range(int(item["count"])):
            color = item.get("color")
            if color is None:  # unspecified colors are random, never a held-out combination
                pool = [c for c in COLORS if not (avoid_reserved and is_reserved(c, item["class"]))]
                color = pool[int(rng.integers(len(pool)))]
            objs.append(_Obj(item["class"], color, k))
    return objs


def _constraints(spec: dict, objs: list[_Obj]) -> list[Constraint]:
    """Every copy of a positioned item against every copy of its reference."""
    out = []
    for k, item in enumerate(spec["include"]):
        if "position" in item:
            rel, ref = item["position"]
            movers = [i for i, o in enumerate(objs) if o.item == k]
            refs = [j for j, o in enumerate(objs) if o.item == ref]
            out += [(i, j, rel) for i in movers for j in refs]
    return out


def _fits(i: int, objs: list[_Obj], placed: list[int], cons: list[Constraint], size: int, gap: float) -> bool:
    """Whether object i, at its current spot, keeps its distance and relations to placed ones."""
    if not all(_apart(objs[i], objs[j], gap) for j in placed):
        return False
    for a, b, rel in cons:
        if (a == i and b in placed) or (b == i and a in placed):
            centers = (objs[a].cx, objs[a].cy), (objs[b].cx, objs[b].cy)
            if not relation_holds(*centers, rel, size, RENDER_MARGIN, RENDER_MIN_COS):
                return False
    return True


def _place(objs: list[_Obj], cons: list[Constraint], size: int, rng: np.random.Generator) -> None:
    # Integer sides on integer box corners: symmetric shapes rasterize symmetrically.
    lo, hi = round(SIZE_RANGE[0] * size), round(SIZE_RANGE[1] * size)
    gap, border = _gap(size), int(_border(size))
    for attempt in range(400):
        top = max(lo, hi - attempt // 25)  # crowded scenes may not fit: shrink the largest size
        placed: list[int] = []
        for i, o in enumerate(objs):
            o.side = float(rng.integers(lo, top + 1))
            room = size - 2 * border - int(o.side)
            for _ in range(60):
                x0, y0 = border + rng.integers(0, room + 1, size=2)
                o.cx, o.cy = x0 + o.side / 2, y0 + o.side / 2
                if _fits(i, objs, placed, cons, size, gap):
                    placed.append(i)
                    break
            else:
                break
        if len(placed) == len(objs):
            return
    raise RuntimeError(f"could not place {len(objs)} objects at size {size}")


def _background(size: int, rng: np.random.Generator) -> np.ndarray:
    gray = BACKGROUND + rng.integers(-BG_JITTER, BG_JITTER + 1)
    rgb = gray + rng.integers(-BG_TINT, BG_TINT + 1, size=3)
    return np.broadcast_to(rgb.astype(np.uint8), (size, size, 3)).copy()


def render(
    spec: dict, size: int = 32, rng: np.random.Generator | None = None, *, avoid_reserved: bool = True
) -> np.ndarray:
    """An HxWx3 uint8 image of `spec`: exact counts, colors and relations, no extra objects.

    With `avoid_reserved`, objects whose color the spec leaves open never get a held-out
    (color, shape) combination, so training images cannot leak the evaluation combinations."""
    rng = np.random.default_rng() if rng is None else rng
    objs = _objects(spec, rng, avoid_reserved)
    _place(objs, _constraints(spec, objs), size, rng)
    img = _background(size, rng)
    for o in objs:
        rgb = np.array(PALETTE[o.color]) + rng.integers(-COLOR_JITTER, COLOR_JITTER + 1, size=3)
        img[raster(o.shape, o.cx, o.cy, o.side, size, size)] = np.clip(rgb, 0, 255).astype(np.uint8)
    return img


def _rebuild(spec: dict) -> dict:
    """Keep exclude items consistent with a changed include and regenerate the prompt."""
    exclude = None
    if "exclude" in spec:
        # GenEval's counting form: exactly the included class, at most `count` of it.
        first = spec["include"][0]
        exclude = [{"class": first["class"], "count": int(first["count"]) + 1}]
    return make_spec(spec["tag"], spec["include"], exclude)


def wrong_spec(spec: dict, kind: str, rng: np.random.Generator, avoid_reserved: bool = True) -> dict:
    """The spec with one property broken (its prompt regenerated to describe the change)."""
    new = copy.deepcopy(spec)
    inc = new["include"]
    if kind == "count":
        k = int(rng.integers(len(inc)))
        c = int(inc[k]["count"])
        options = [n for n in (c - 1, c + 1) if 1 <= n <= MAX_COUNT]
        inc[k]["count"] = options[int(rng.integers(len(options)))]
    elif kind == "color":
        colored = [k for k, it in enumerate(inc) if "color" in it]
        if not colored:
            raise ValueError("a color error needs a spec with a colored object")
        if len(colored) == 2 and rng.random() < 0.5:  # attribute-binding error: swap the colors
            a, b = inc[colored[0]], inc[colored[1]]
            leaks = is_reserved(b["color"], a["class"]) or is_reserved(a["color"], b["class"])
            if not (avoid_reserved and leaks):
                a["color"], b["color"] = b["color"], a["color"]
                return _rebuild(new)
        it = inc[colored[int(rng.integers(len(colored)))]]
        taken = {x["color"] for x in inc if "color" in x}
        pool = [c for c in COLORS if c not in taken and not (avoid_reserved and is_reserved(c, it["class"]))]
        it["color"] = pool[int(rng.integers(len(pool)))]
    elif kind == "relation":
        moved = [it for it in inc if "position" in it]
        if not moved:
            raise ValueError("a relation error needs a spec with a position")
        for it in moved:
            it["position"] = [OPPOSITE[it["position"][0]], it["position"][1]]
    elif kind == "shape":
        it = inc[int(rng.integers(len(inc)))]
        taken = {x["class"] for x in inc}
        color = it.get("color")
        pool = [s for s in SHAPES if s not in taken and not (color and avoid_reserved and is_reserved(color, s))]
        it["class"] = pool[int(rng.integers(len(pool)))]
    else:
        raise ValueError(f"kind must be one of {WRONG_KINDS}, not {kind!r}")
    return _rebuild(new)


def render_wrong(
    spec: dict,
    kind: str,
    size: int = 32,
    rng: np.random.Generator | None = None,
    *,
    avoid_reserved: bool = True,
) -> tuple[np.ndarray, dict]:
    """A hard negative for `spec`: (image, modified spec that the image satisfies).

    kind: "count" (one object more or fewer, within 1..4), "color" (another color on a colored
    object, or swapped colors in color_attr), "relation" (reversed), "shape" (another class).
    With `avoid_reserved` (training data) the modified spec is neither a held-out benchmark prompt
    nor a reserved pairing: the negative's caption is training text too. Raises ValueError when no
    such modification exists (a reversed relation whose result is held out)."""
    rng = np.random.default_rng() if rng is None else rng
    for _ in range(32):
        new = wrong_spec(spec, kind, rng, avoid_reserved)
        if not (avoid_reserved and new["prompt"] in heldout_prompts()):
            return render(new, size, rng, avoid_reserved=avoid_reserved), new
    raise ValueError(f"every {kind!r} negative of {spec['prompt']!r} is a held-out prompt")

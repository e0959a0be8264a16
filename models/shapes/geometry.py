"""Spatial relations between object centers, shared by the renderer and the verifier."""

from __future__ import annotations

import math

# GenEval shrinks the center offset by a margin and asks the remaining direction to point mostly
# along the relation's axis; the verifier uses a margin of 0.1 x image size, the renderer a
# stricter one so that clean renders pass with room to spare.
VERIFY_MARGIN = 0.10
VERIFY_MIN_COS = 0.5
RENDER_MARGIN = 0.15
RENDER_MIN_COS = 0.6

_AXIS = {"left of": (0, -1.0), "right of": (0, 1.0), "above": (1, -1.0), "below": (1, 1.0)}


def relation_holds(
    obj: tuple[float, float],
    ref: tuple[float, float],
    relation: str,
    size: int,
    margin: float = VERIFY_MARGIN,
    min_cos: float = VERIFY_MIN_COS,
) -> bool:
    """Whether the center `obj` = (x, y) is `relation` the center `ref` in image coordinates
    (y grows downwards, so 'above' means a smaller y)."""
    axis, sign = _AXIS[relation]
    offset = (obj[0] - ref[0], obj[1] - ref[1])
    norm = math.hypot(*offset)
    along = sign * offset[axis]
    revised = along - margin * size  # only the part beyond the margin counts
    if norm < 1e-9 or revised <= 0:
        return False
    return revised / norm > min_cos

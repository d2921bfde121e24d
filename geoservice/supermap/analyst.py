"""iServer's spatial analyst parameters: buffer settings (``BufferAnalystParameter``) and overlay rules.

Pure parsing and checks; the analyses themselves are the native operations (``supermap.inline`` translates).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from geoservice.errors import BadRequest

#: Metres per iServer ``radiusUnit``.
RADIUS_UNITS = {"METER": 1.0, "KILOMETER": 1000.0, "MILE": 1609.344, "YARD": 0.9144, "FOOT": 0.3048,
                "INCH": 0.0254, "CENTIMETER": 0.01, "DECIMETER": 0.1, "MILLIMETER": 0.001}
MAX_SEMICIRCLE_SEGMENTS = 128  # quad_segs <= 64, the analysis core's limit
OPERATIONS = ("CLIP", "ERASE", "IDENTITY", "INTERSECT", "UNION", "UPDATE", "XOR")
REGION_SOURCE_ONLY = {"UNION", "UPDATE", "XOR"}


@dataclass(frozen=True)
class BufferSpec:
    """A parsed ``BufferAnalystParameter``: distances as given (in ``radius_unit`` or CRS units)."""

    end_type: str  # ROUND | FLAT
    left: float
    right: float
    semicircle_segments: int
    radius_unit: str

    @property
    def quad_segs(self) -> int:
        """Segments per quarter circle: half of the segments per half circle, rounded up."""
        return max(1, math.ceil(self.semicircle_segments / 2))

    def metres(self, value: float) -> float:
        return value * RADIUS_UNITS[self.radius_unit]


def _distance(obj: Any, where: str) -> float | None:
    if obj is None:
        return None
    if isinstance(obj, dict):
        if obj.get("exp") not in (None, ""):
            raise BadRequest(f"{where}.exp (a field expression) is not supported; give a numeric 'value'")
        obj = obj.get("value")
    if obj is None:
        return None
    if isinstance(obj, bool) or not isinstance(obj, int | float) or not math.isfinite(obj):
        raise BadRequest(f"{where}.value must be a number, got {obj!r}")
    return float(obj)


def parse_buffer_setting(obj: Any, where: str) -> BufferSpec:
    """Parse and check a ``BufferAnalystParameter`` (``analystParameter`` / ``bufferAnalystParameter``).

    Raises:
        BadRequest: missing or non-positive left distance (iServer: "左缓冲距离不能小于等于0"), a
            negative right distance, an unknown end type or radius unit, a bad segment count.
    """
    if not isinstance(obj, dict):
        raise BadRequest(f"{where} is required: an object with leftDistance, endType, radiusUnit ...")
    end_type = str(obj.get("endType") or "ROUND").upper()
    if end_type not in ("ROUND", "FLAT"):
        raise BadRequest(f"{where}.endType must be ROUND or FLAT, got {obj.get('endType')!r}")
    left = _distance(obj.get("leftDistance"), f"{where}.leftDistance")
    right = _distance(obj.get("rightDistance"), f"{where}.rightDistance")
    if left is None:
        left = right  # iserver-cli may send only one side
    if left is None:
        raise BadRequest(f"{where}.leftDistance is required (the buffer distance)")
    if left <= 0:
        raise BadRequest(f"{where}.leftDistance must be greater than 0 (got {left:g}); iServer does not erode")
    if right is None:
        right = left
    if right < 0:
        raise BadRequest(f"{where}.rightDistance must not be negative (got {right:g})")
    segments = obj.get("semicircleLineSegment", 4)
    segments = 4 if segments is None else segments
    if isinstance(segments, bool) or not isinstance(segments, int | float) or segments != int(segments) \
            or not 1 <= segments <= MAX_SEMICIRCLE_SEGMENTS:
        raise BadRequest(f"{where}.semicircleLineSegment must be an integer from 1 to {MAX_SEMICIRCLE_SEGMENTS}, "
                         f"got {segments!r}")
    unit = str(obj.get("radiusUnit") or "METER").upper()
    if unit not in RADIUS_UNITS:
        raise BadRequest(f"{where}.radiusUnit must be one of {', '.join(RADIUS_UNITS)}, got {obj.get('radiusUnit')!r}")
    return BufferSpec(end_type, left, right, int(segments), unit)


def check_operation(value: Any, where: str = "operation") -> str:
    """Return the overlay operation in upper case, or raise."""
    op = str(value).upper() if isinstance(value, str) else None
    if op not in OPERATIONS:
        raise BadRequest(f"{where} must be one of {', '.join(OPERATIONS)}, got {value!r}")
    return op


def check_overlay_types(op: str, source_kind: str, operate_kind: str, where: str) -> None:
    """iServer's rules: the operate geometry is a region (a line too for INTERSECT); UNION, UPDATE and
    XOR need a region source."""
    if op in REGION_SOURCE_ONLY and source_kind != "REGION":
        raise BadRequest(f"{where}: {op} needs a REGION source geometry, got {source_kind}")
    allowed = ("REGION", "LINE") if op == "INTERSECT" else ("REGION",)
    if operate_kind not in allowed:
        raise BadRequest(f"{where}: the operate geometry of {op} must be a {' or '.join(allowed)}, got {operate_kind}")

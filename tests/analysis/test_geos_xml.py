"""GEOS XML test cases (``shared/peer-tests/geos``, from GEOS 3.14.1) through the CRS-less entry points.

Buffer ops go through ``buffer_planar``, overlay ops through ``overlay_planar``; everything else (e.g. the
``isvalid`` predicate) is skipped with a reason. Matchers follow GEOS's own XMLTester:

* buffer / bufferMitredJoin: same geometry type, then GEOS's BufferResultMatcher: area of the symmetric
  difference < 1e-3 of the expected area, and the (here symmetric, so stricter) discrete Hausdorff
  distance between the boundaries, densified at 0.25, <= |distance| / 100.
* intersection / difference / symdifference (and the ...NG names): exact equality after ``normalize``.
* union (two-argument and unary): topological equality (``equals``), else ``equals_exact`` after
  ``normalize`` with GEOS's size-based tolerance (1e-9 of the expected envelope's smaller side).
* overlayAreaTest: the area identities over union/intersection/differences/symdifference hold within
  1e-6 of the total area (GEOS ``areaDelta``).

Runs whose ``precisionModel`` has a ``scale`` use a fixed grid of 1/scale: inputs and expected results are
rounded to it on reading (as GEOS's WKT reader does) and overlays run with ``grid_size=1/scale``.

``geos_report()`` returns the counts (ran, passed, failed, skipped by reason); run this file as a script
to print it, or see the ``geos_report`` property of ``test_geos_report`` in the JUnit XML.
"""

from __future__ import annotations

import functools
import json
import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import shapely

from geoservice.analysis.buffer import buffer_planar
from geoservice.analysis.overlay import overlay_planar

GEOS_DIR = Path(__file__).resolve().parents[3] / "shared" / "peer-tests" / "geos"
OVERLAY_OPS = {"intersection", "union", "difference", "symdifference"}
BUFFER_OPS = {"buffer": "round", "buffermitredjoin": "mitre"}


@dataclass(frozen=True)
class GeosTest:
    """One ``<test>`` of a GEOS XML file."""

    file: str
    case: int
    test: int
    op: str
    args: tuple[str, ...]
    a: str
    b: str | None
    expected: str
    grid: float | None

    @property
    def id(self) -> str:
        """Return a readable pytest id."""
        return f"{self.file}:c{self.case}t{self.test}:{self.op}"


def load_tests(root: Path = GEOS_DIR) -> list[GeosTest]:
    """Return every test in the XML files under ``root``."""
    out = []
    for path in sorted(root.rglob("*.xml")):
        run = ET.parse(path).getroot()
        pm = run.find("precisionModel")
        scale = pm.get("scale") if pm is not None else None
        grid = 1.0 / float(scale) if scale else None
        for c, case in enumerate(run.iter("case"), 1):
            a, b = case.findtext("a"), case.findtext("b")
            for t, test in enumerate(case.iter("test"), 1):
                op = test.find("op")
                args = tuple(op.get(k, "") for k in ("arg1", "arg2", "arg3"))
                out.append(
                    GeosTest(
                        file=str(path.relative_to(root)),
                        case=c,
                        test=t,
                        op=op.get("name", "").strip().lower(),
                        args=args,
                        a=(a or "").strip(),
                        b=b.strip() if b else None,
                        expected=(op.text or "").strip(),
                        grid=grid,
                    )
                )
    return out


def _read(text: str, grid: float | None) -> shapely.Geometry:
    geom = shapely.from_wkb(text) if text[:1] == "0" else shapely.from_wkt(text)
    return shapely.set_precision(geom, grid, mode="pointwise") if grid else geom


def _buffer_match(actual: shapely.Geometry, expected: shapely.Geometry, dist: float) -> str | None:
    """Return None if ``actual`` matches (GEOS BufferResultMatcher), else why not."""
    if actual.geom_type != expected.geom_type:
        return f"type {actual.geom_type} != expected {expected.geom_type}"
    if actual.is_empty and expected.is_empty:
        return None
    diff = shapely.symmetric_difference(actual, expected).area
    if diff > 0 and (expected.area <= 0 or diff / expected.area >= 1e-3):
        return f"symmetric difference area {diff} vs expected area {expected.area}"
    haus = shapely.hausdorff_distance(
        shapely.boundary(actual), shapely.boundary(expected), densify=0.25 if dist else None
    )
    if haus > abs(dist) / 100:
        return f"boundary Hausdorff distance {haus} > {abs(dist) / 100}"
    return None


def _overlay_match(actual: shapely.Geometry, expected: shapely.Geometry, union: bool) -> str | None:
    a, e = shapely.normalize(actual), shapely.normalize(expected)
    if shapely.equals_exact(a, e, tolerance=0):
        return None
    if union:
        x0, y0, x1, y1 = shapely.bounds(e)
        tol = 1e-9 * min(x1 - x0, y1 - y0) if not e.is_empty else 0.0
        if shapely.equals(e, a) or shapely.equals_exact(a, e, tolerance=tol):
            return None
    return f"got {shapely.to_wkt(a, rounding_precision=17)[:400]}"


def _area_delta(a: shapely.Geometry, b: shapely.Geometry) -> float:
    """GEOS XMLTester ``areaDelta``: largest violation of the overlay area identities, normalised."""
    area_a, area_b = a.area, b.area
    if area_a == 0 or area_b == 0:
        return 0.0
    u, i, dab, sd = (
        overlay_planar([a], [b], op)[0].area for op in ("union", "intersection", "difference", "symdifference")
    )
    dba = overlay_planar([b], [a], "difference")[0].area
    deltas = [area_a - i - dab, area_b - i - dba, dab + dba - sd, i + sd - u, u - i - dab - dba]
    return max(abs(d) for d in deltas) / (area_a + area_b)


@functools.cache
def run_test(t: GeosTest) -> tuple[str, str]:
    """Return ("passed" | "failed" | "skipped", detail or skip reason)."""
    base = t.op.removesuffix("ng") if t.op.endswith("ng") else t.op
    if base not in OVERLAY_OPS | set(BUFFER_OPS) | {"overlayareatest"}:
        return "skipped", f"{t.op}: not a buffer or overlay operation (predicate/other op)"
    a, b = _read(t.a, t.grid), (_read(t.b, t.grid) if t.b else None)
    if t.args[0].upper() == "B":
        a, b = b, a
    if base in BUFFER_OPS:
        dist = float(t.args[1])
        quad = int(t.args[2]) if t.args[2] else 8
        got = buffer_planar(np.array([a]), dist, quad_segs=quad, join_style=BUFFER_OPS[base])[0]
        why = _buffer_match(got, _read(t.expected, t.grid), dist)
    elif base == "overlayareatest":
        delta = _area_delta(a, b)
        why = None if (delta < 1e-6) == (t.expected == "true") else f"area delta {delta}"
    else:
        got = overlay_planar(np.array([a]), None if b is None else np.array([b]), base, grid_size=t.grid)[0]
        why = _overlay_match(got, _read(t.expected, t.grid), union=base == "union")
    return ("passed", "") if why is None else ("failed", why)


def geos_report(root: Path = GEOS_DIR) -> dict:
    """Return {"files", "total", "ran", "passed", "failed", "skipped": {reason: n}, "ran_by_op": {...}}."""
    tests = load_tests(root)
    results = [(t, run_test(t)) for t in tests]
    ran = [(t, r) for t, r in results if r[0] != "skipped"]
    return {
        "files": len({t.file for t in tests}),
        "total": len(tests),
        "ran": len(ran),
        "passed": sum(r[0] == "passed" for _, r in ran),
        "failed": sum(r[0] == "failed" for _, r in ran),
        "failures": [t.id for t, r in ran if r[0] == "failed"],
        "skipped": dict(Counter(r[1] for _, r in results if r[0] == "skipped")),
        "ran_by_op": dict(Counter(t.op for t, _ in ran)),
    }


TESTS = load_tests() if GEOS_DIR.is_dir() else []
pytestmark = pytest.mark.skipif(not TESTS, reason=f"GEOS XML cases not found at {GEOS_DIR}")


@pytest.mark.parametrize("t", TESTS, ids=[t.id for t in TESTS])
def test_geos_case(t: GeosTest) -> None:
    status, detail = run_test(t)
    if status == "skipped":
        pytest.skip(detail)
    assert status == "passed", f"{t.id}: {detail}"


def test_geos_report(record_property: pytest.RecordProperty) -> None:
    report = geos_report()
    record_property("geos_report", json.dumps(report))
    print("\nGEOS XML report:", json.dumps(report, indent=2))
    assert report["ran"] > 0
    assert report["failed"] == 0, report["failures"]


if __name__ == "__main__":
    print(json.dumps(geos_report(), indent=2))

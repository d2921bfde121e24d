"""The real @supermap/iclient-common (npm, under Node) against a real server, checked against PostGIS.

Every call goes through the client's own classes and transport: its JSON-like form-encoded bodies, its
escaping of ``<``, ``>``, ``%`` and ``&``, ``?returnContent=true`` and ``.json`` suffixes, the token in
the URL. Results come back in the raw ISERVER format (and once in the client's GeoJSON conversion).
"""

from __future__ import annotations

import math

import pytest
import shapely
from fastapi.testclient import TestClient
from shapely.geometry import box

from tests.helpers import fc, feature, unique
from tests.supermap.geoms import HOLED, LINE, OPERATE, POINT, assert_same, from_geojson, from_result, gj, postgis

pytestmark = pytest.mark.e2e


def _ok(answer: dict) -> dict:
    assert answer.get("ok"), answer
    return answer["result"]


def test_geometry_buffers_match_st_buffer(iclient, pg):
    calls = [
        {"service": "buffer", "kind": "geometry", "geometry": gj(POINT), "srid": 4326,
         "setting": {"endType": "ROUND", "left": 0.01, "semicircleLineSegment": 10}},
        {"service": "buffer", "kind": "geometry", "geometry": gj(LINE), "srid": 4326,
         "setting": {"endType": "FLAT", "left": 0.01, "right": 0.02, "semicircleLineSegment": 10}},
        {"service": "buffer", "kind": "geometry", "geometry": gj(HOLED), "srid": 4326,
         "setting": {"endType": "ROUND", "left": 0.01, "semicircleLineSegment": 10}},
        {"service": "buffer", "kind": "geometry", "geometry": gj(HOLED), "srid": 4326, "format": "GEOJSON",
         "setting": {"endType": "ROUND", "left": 0.01, "semicircleLineSegment": 10}},
    ]
    point, line, holed, holed_geojson = (_ok(a) for a in iclient(calls))
    assert_same(from_result(point["resultGeometry"]), postgis(pg, "ST_Buffer(g1, 0.01, 'quad_segs=5')", POINT))
    ref_line = postgis(pg, "ST_Union(ST_Buffer(g1, 0.01, 'side=left quad_segs=5'), "
                           "ST_Buffer(g1, 0.02, 'side=right quad_segs=5'))", LINE)
    assert_same(from_result(line["resultGeometry"]), ref_line)
    # Flat ends: nothing before the first vertex or past the last one, along the line's direction.
    coords = shapely.get_coordinates(from_result(line["resultGeometry"]))
    (x0, y0), (x1, y1), (x2, y2) = LINE.coords
    assert ((coords[:, 0] - x0) * (x1 - x0) + (coords[:, 1] - y0) * (y1 - y0)).min() > -1e-12
    assert ((coords[:, 0] - x2) * (x2 - x1) + (coords[:, 1] - y2) * (y2 - y1)).max() < 1e-12
    ref_holed = postgis(pg, "ST_Buffer(g1, 0.01, 'quad_segs=5')", HOLED)
    assert holed["resultGeometry"]["partTopo"] == [1, -1]
    assert_same(from_result(holed["resultGeometry"]), ref_holed)
    # The client's own GeoJSON conversion (driven by partTopo) sees the hole too.
    converted = from_geojson(holed_geojson["resultGeometry"]["geometry"]
                             if holed_geojson["resultGeometry"].get("type") == "Feature"
                             else holed_geojson["resultGeometry"])
    assert_same(converted, ref_holed)


OVERLAY_SQL = {
    "CLIP": "ST_Intersection(g1, g2)",
    "INTERSECT": "ST_Intersection(g1, g2)",
    "ERASE": "ST_Difference(g1, g2)",
    "UNION": "ST_Union(g1, g2)",
    "XOR": "ST_SymDifference(g1, g2)",
    "IDENTITY": "ST_Union(ST_Intersection(g1, g2), ST_Difference(g1, g2))",
    "UPDATE": "ST_Union(ST_Difference(g1, g2), g2)",
}


def test_every_overlay_operation_matches_postgis(iclient, pg):
    ops = list(OVERLAY_SQL)
    calls = [{"service": "overlay", "kind": "geometry", "source": gj(HOLED), "operate": gj(OPERATE), "operation": op,
              "srid": 4326} for op in ops]
    calls.append({"service": "overlay", "kind": "geometry", "source": gj(LINE), "operate": gj(OPERATE),
                  "operation": "CLIP", "srid": 4326})
    answers = [_ok(a) for a in iclient(calls)]
    for op, result in zip(ops, answers, strict=False):
        ours = from_result(result["resultGeometry"])
        if op in ("IDENTITY", "UPDATE"):  # pieces kept apart: the split is the point of these operations
            assert len(result["resultGeometry"]["parts"]) >= 2, op
            ours = shapely.union_all(list(getattr(ours, "geoms", [ours])))
        assert_same(ours, postgis(pg, OVERLAY_SQL[op], HOLED, OPERATE))
    line_clip = from_result(answers[-1]["resultGeometry"])
    assert answers[-1]["resultGeometry"]["type"] == "LINE"
    assert_same(line_clip, postgis(pg, "ST_Intersection(g1, g2)", LINE, OPERATE))


def test_batch_overlay_pairs_match_st_intersection(iclient, pg):
    sources = [box(116.0 + i, 39.0, 116.5 + i, 39.5) for i in range(3)]
    operates = [box(116.2 + i, 39.2, 116.9 + i, 39.9) for i in range(3)]
    answer = iclient([{"service": "overlay", "kind": "geometry", "sources": [gj(g) for g in sources],
                       "operates": [gj(g) for g in operates], "operation": "INTERSECT", "srid": 4326}])
    results = _ok(answer[0])
    assert isinstance(results, list) and len(results) == 3
    for result, a, b in zip(results, sources, operates, strict=True):
        assert result["succeed"] is True and "sourceGeometry" not in result  # ignoreAnalystParam=true
        assert_same(from_result(result["resultGeometry"]), postgis(pg, "ST_Intersection(g1, g2)", a, b))


GRID = fc([feature(gj(box(116.0 + 0.1 * i, 39.5 + 0.1 * j, 116.1 + 0.1 * i, 39.6 + 0.1 * j)),
                   pop=10 * i + j, name=f"cell {i} {j}", kind="a&b" if i % 2 else "50%")
           for i in range(5) for j in range(4)])
AREAS = fc([feature(gj(box(116.05, 39.55, 116.25, 39.75)), zone="north"),
            feature(gj(box(116.3, 39.7, 116.55, 39.95)), zone="south")])


@pytest.fixture(scope="module")
def grid(client: TestClient) -> dict:
    r = client.post("/api/v1/datasets", json={"name": unique("smgrid"), **GRID})
    assert r.status_code == 201, r.text
    return r.json()


@pytest.fixture(scope="module")
def areas(client: TestClient) -> dict:
    r = client.post("/api/v1/datasets", json={"name": unique("smareas"), **AREAS})
    assert r.status_code == 201, r.text
    return r.json()


def _selected(pg, dataset_id: str, where: str) -> list[int]:
    rows = pg.execute(f"SELECT fid FROM spatial_data WHERE dataset_id = %s AND {where} ORDER BY fid",
                      (dataset_id,)).fetchall()
    return [r[0] for r in rows]


def test_dataset_buffer_with_attribute_filter_matches_postgis(iclient, worker, grid, pg):
    # '<', '%' and '&' all go through the client's escaping (&lt; %25 %26) and must come back intact.
    flt = "pop < 30 AND name LIKE 'cell%' AND kind IN ('a&b', '50%') AND SmID <> 2"
    out = unique("smbuf")
    answer = iclient([{"service": "buffer", "kind": "dataset", "dataset": f"{grid['name']}@Jingjin",
                       "setting": {"endType": "ROUND", "left": 5, "radiusUnit": "KILOMETER",
                                   "semicircleLineSegment": 16},
                       "filter": {"attributeFilter": flt},
                       "returnOption": {"dataset": out, "dataReturnMode": "DATASET_AND_RECORDSET",
                                        "expectCount": 1000},
                       "isAttributeRetained": True, "isUnion": False}])
    result = _ok(answer[0])
    selected = _selected(pg, grid["id"], "(attributes->>'pop')::int < 30 AND fid <> 2")
    assert 0 < len(selected) < 20
    assert result["dataset"] == f"{out}@Jingjin"
    records = result["recordset"]["features"]
    assert len(records) == len(selected) and result["recordset"]["fields"][:2] == ["SmID", "pop"]
    assert sorted(int(f["fieldValues"][1]) for f in records) == sorted(
        r[0] for r in pg.execute("SELECT (attributes->>'pop')::int FROM spatial_data WHERE dataset_id = %s "
                                 "AND fid = ANY(%s)", (grid["id"], selected)).fetchall())
    # Each buffer against ST_Buffer in UTM 50N (metres), compared by geodesic area.
    ours = pg.execute(
        "SELECT sum(ST_Area(r.geometry::geography)) FROM spatial_data r JOIN datasets d ON d.id = r.dataset_id "
        "WHERE d.name = %s", (out,)).fetchone()[0]
    ref = pg.execute(
        "SELECT sum(ST_Area(ST_Transform(ST_Buffer(ST_Transform(geometry, 32650), 5000, 'quad_segs=8'), 4326)"
        "::geography)) FROM spatial_data WHERE dataset_id = %s AND fid = ANY(%s)", (grid["id"], selected)).fetchone()[0]
    assert ours == pytest.approx(ref, rel=3e-3)
    recordset_area = sum(shapely.area(from_result(f["geometry"])) for f in records)
    assert recordset_area > 0


def test_dataset_overlay_with_attribute_filter_matches_postgis(iclient, worker, grid, areas, pg):
    out = unique("smovl")
    answer = iclient([{"service": "overlay", "kind": "dataset", "dataset": f"{grid['name']}@Jingjin",
                       "operateDataset": f"{areas['name']}@Jingjin", "operation": "INTERSECT",
                       "sourceFilter": {"attributeFilter": "pop >= 10 AND pop <= 25"},
                       "sourceFields": ["SmID", "pop"], "operateFields": ["zone"],
                       "returnOption": {"dataset": out, "dataReturnMode": "DATASET_ONLY"}}])
    result = _ok(answer[0])
    assert result == {"succeed": True, "message": None, "dataset": f"{out}@Jingjin", "recordset": None}
    ours = pg.execute("SELECT count(*), sum(ST_Area(r.geometry)), min(r.attributes::text) FROM spatial_data r "
                      "JOIN datasets d ON d.id = r.dataset_id WHERE d.name = %s", (out,)).fetchone()
    ref = pg.execute(
        "SELECT count(*), sum(ST_Area(ST_Intersection(a.geometry, b.geometry))) FROM spatial_data a "
        "JOIN spatial_data b ON ST_Intersects(a.geometry, b.geometry) AND ST_Area(ST_Intersection(a.geometry, "
        "b.geometry)) > 0 WHERE a.dataset_id = %s AND b.dataset_id = %s "
        "AND (a.attributes->>'pop')::int BETWEEN 10 AND 25", (grid["id"], areas["id"])).fetchone()
    assert ours[0] == ref[0] and ours[1] == pytest.approx(ref[1], rel=1e-9)
    assert '"pop"' in ours[2] and '"zone"' in ours[2] and '"name"' not in ours[2]


def test_region_with_hole_and_multipart_round_trip_exactly(iclient):
    """CLIP by a region covering everything returns the source itself: same parts, holes and vertices."""
    from tests.supermap.geoms import TWO_PARTS

    cover = box(100, 30, 130, 50)
    answers = iclient([{"service": "overlay", "kind": "geometry", "source": gj(g), "operate": gj(cover),
                        "operation": "CLIP", "srid": 4326} for g in (HOLED, TWO_PARTS)])
    for answer, geom, topo in zip(answers, (HOLED, TWO_PARTS), ([1, -1], [1, -1, 1]), strict=True):
        g = _ok(answer)["resultGeometry"]
        assert g["partTopo"] == topo and g["parts"] == [5] * len(topo)
        assert shapely.equals_exact(shapely.normalize(from_result(g)), shapely.normalize(geom), tolerance=0)
        assert math.isclose(from_result(g).area, geom.area, rel_tol=1e-12)

"""The pure pieces of the SuperMap surface: body parsing, geometry decoding, filters, buffer settings."""

from __future__ import annotations

import pytest
import shapely
from shapely.geometry import MultiPolygon, Polygon, box

from geoservice.db.models import Dataset
from geoservice.errors import BadRequest
from geoservice.iserver.decode import from_supermap
from geoservice.iserver.geometry import to_supermap
from geoservice.services.selection import compile_where
from geoservice.supermap.analyst import parse_buffer_setting
from geoservice.supermap.filters import parse_filter
from geoservice.supermap.inline import answer, geometry_buffer
from geoservice.supermap.parse import parse_body, unescape
from tests.supermap.geoms import HOLED, TWO_PARTS, sm_points

FORM = "application/x-www-form-urlencoded;charset=UTF-8"

# shared/reference/supermap-rest.md section 2.3: what the iClient sent, byte for byte.
CAPTURED = (
    "{'analystParameter':{'endType':\"ROUND\",'leftDistance':{'exp':null,'value':100},'rightDistance':{'exp':null,"
    "'value':100},'semicircleLineSegment':10,'radiusUnit':\"METER\"},'sourceGeometry':{'id':0,'style':null,'parts':"
    "[1],'points':[{'id':\"SuperMap.Geometry_3\",'bounds':null,'SRID':null,'x':116.39,'y':39.9,'tag':null,'type':"
    "\"Point\",'geometryType':\"Point\"}],'type':\"POINT\",'prjCoordSys':{'epsgCode':4326}},'sourceGeometrySRID':null}"
)


def test_captured_iclient_body_parses():
    body = parse_body(CAPTURED.encode(), FORM)
    assert body["analystParameter"] == {"endType": "ROUND", "leftDistance": {"exp": None, "value": 100},
                                        "rightDistance": {"exp": None, "value": 100}, "semicircleLineSegment": 10,
                                        "radiusUnit": "METER"}
    assert body["sourceGeometry"]["points"][0]["x"] == 116.39 and body["sourceGeometrySRID"] is None
    assert body["sourceGeometry"]["prjCoordSys"] == {"epsgCode": 4326}


def test_iclient_escaping_is_undone_per_string_value():
    sent = "a%26lt;1 AND b<2 AND c%26gt;3 AND pct = '50%25' AND x %26 1"
    raw = ("{'filterQueryParameter':{'attributeFilter':\"" + sent + "\"}}").encode()
    assert parse_body(raw, FORM)["filterQueryParameter"]["attributeFilter"] == \
        "a<1 AND b<2 AND c>3 AND pct = '50%' AND x & 1"
    assert unescape("100%25 %26 &lt;b&gt;") == "100% & <b>"
    # Strict JSON from a JSON client is taken as it is; keys are never unescaped.
    assert parse_body(b'{"a%25": "%26"}', "application/json") == {"a%25": "%26"}
    assert parse_body(b'{"a": "%26"}', FORM) == {"a": "&"}


def test_lenient_json_forms():
    assert parse_body(b"{'tolerance':1e-10,'x':1.2688789880426234E7,'y':-3.5,'z':[1,-2e+3],k2: 'a1b'}", FORM) == \
        {"tolerance": 1e-10, "x": 1.2688789880426234e7, "y": -3.5, "z": [1, -2000.0], "k2": "a1b"}
    assert parse_body(b"{key: 'v', 'list': [1, 2,], 'n': NaN,}", FORM) == {"key": "v", "list": [1, 2], "n": None}
    assert parse_body(b"{'q':\"it\\'s \\\"x\\\" \\u4eac \\ud83d\\ude00\ttab\"}", FORM) == \
        {"q": "it's \"x\" \u4eac \U0001f600\ttab"}
    assert parse_body("\ufeff {'a': true, 'b': false, 'c': null} ".encode(), FORM) == {"a": True, "b": False,
                                                                                        "c": None}


@pytest.mark.parametrize("raw,message", [
    (b"", "empty"), (b"   ", "empty"), (b"x=1", "not JSON"), (b"{'a': ", "not valid JSON"),
    (b"{'a': undefinedx}", "unexpected word"), (b"{'a': 'b}", "unterminated"), (b"\xc3\x28", "not UTF-8"),
])
def test_unparseable_bodies(raw, message):
    with pytest.raises(BadRequest, match=message):
        parse_body(raw, FORM)


def region(*rings) -> dict:
    return {"type": "REGION", "parts": [len(r) for r in rings], "points": [p for r in rings for p in sm_points(r)]}


def ring(geom) -> list:
    return list(geom.exterior.coords)


def test_holes_by_true_containment_not_bounding_boxes():
    shell = box(0, 0, 10, 10)
    c_hole = Polygon([(2, 2), (8, 2), (8, 4), (4, 4), (4, 6), (8, 6), (8, 8), (2, 8), (2, 2)])  # a "C"
    in_notch = box(5, 4.5, 7, 5.5)  # inside the C's bounding box, outside the C: in the shell's solid part
    in_hole = box(2.5, 2.5, 3.5, 3.5)  # inside the C: an island in the hole
    geom = from_supermap(region(ring(shell), ring(c_hole), ring(in_notch), ring(in_hole))).geom
    assert isinstance(geom, MultiPolygon) and len(geom.geoms) == 2
    main, island = geom.geoms
    assert len(main.interiors) == 2 and main.area == pytest.approx(100 - c_hole.area - in_notch.area)
    assert island.equals(in_hole)
    # The order of the rings does not matter.
    again = from_supermap(region(ring(in_hole), ring(in_notch), ring(c_hole), ring(shell))).geom
    assert shapely.equals(shapely.normalize(again), shapely.normalize(geom))


def test_regions_round_trip_exactly():
    for geom, topo in ((HOLED, [1, -1]), (TWO_PARTS, [1, -1, 1])):
        rings = [r for p in getattr(geom, "geoms", [geom]) for r in (p.exterior, *p.interiors)]
        sent = region(*[list(r.coords) for r in rings])
        out = to_supermap(from_supermap(sent).geom)
        assert out["parts"] == sent["parts"] and out["partTopo"] == topo and out["points"] == sent["points"]


def test_unclosed_rings_and_missing_parts_are_accepted():
    geom = from_supermap({"type": "REGION", "points": sm_points([(0, 0), (1, 0), (1, 1)])}).geom
    assert geom.equals(Polygon([(0, 0), (1, 0), (1, 1)]))
    points = from_supermap({"type": "POINT", "points": sm_points([(0, 0), (1, 1)])}).geom
    assert points.geom_type == "MultiPoint"


def test_self_intersecting_region_is_repaired_and_reported():
    bowtie = from_supermap(region([(0, 0), (2, 2), (2, 0), (0, 2), (0, 0)]))
    assert bowtie.geom.is_valid and bowtie.geom.area == pytest.approx(2.0) and "repaired" in bowtie.notes[0]


def test_filter_trees():
    assert parse_filter("SmID < 100") == {"op": "cmp", "field": "SmID", "cmp": "<", "value": 100}
    assert parse_filter("NAME = \"Beijing\"")["value"] == "Beijing"
    assert parse_filter("'x' = name") == {"op": "cmp", "field": "name", "cmp": "=", "value": "x"}
    assert parse_filter("a >= -1.5e2 and not (b like 'x%' or c is not null)") == {"op": "and", "args": [
        {"op": "cmp", "field": "a", "cmp": ">=", "value": -150.0},
        {"op": "not", "arg": {"op": "or", "args": [{"op": "like", "field": "b", "pattern": "x%"},
                                                   {"op": "not", "arg": {"op": "null", "field": "c"}}]}}]}
    assert parse_filter("k NOT IN ('it''s', 2)") == {"op": "not", "arg": {"op": "in", "field": "k",
                                                                          "values": ["it's", 2]}}
    assert parse_filter("[my field] BETWEEN 1 AND 2")["args"][0]["field"] == "my field"
    assert parse_filter("  ") is None and parse_filter(None) is None


def test_compiled_filters_bind_every_value():
    dataset = Dataset(name="d", fields=[{"name": "name", "type": "str"}, {"name": "Pop", "type": "int"},
                                        {"name": "ok", "type": "bool"}])
    tree = parse_filter("NAME = 'x''; DROP TABLE t; --' OR pop > 3 OR ok = TRUE OR SmID IN (1, 2)")
    compiled = compile_where(tree, dataset)
    text = compiled.where.as_string()
    assert "DROP" not in text and "'x" not in text and "Pop" not in text  # names and values are parameters
    assert "x'; DROP TABLE t; --" in compiled.params.values() and "Pop" in compiled.params.values()
    with pytest.raises(BadRequest, match="field pop is numeric|field Pop is numeric"):
        compile_where(parse_filter("pop = '3'"), dataset)
    with pytest.raises(BadRequest, match="has no field 'nope'"):
        compile_where(parse_filter("nope = 1"), dataset)


def test_buffer_settings():
    spec = parse_buffer_setting({"leftDistance": {"value": 2}, "semicircleLineSegment": 7}, "p")
    assert (spec.left, spec.right, spec.quad_segs, spec.end_type, spec.radius_unit) == (2, 2, 4, "ROUND", "METER")
    assert parse_buffer_setting({"rightDistance": {"value": 3}}, "p").left == 3  # only one side given
    assert parse_buffer_setting({"leftDistance": 5, "radiusUnit": "mile"}, "p").metres(5) == pytest.approx(8046.72)
    for bad in ({"leftDistance": {"value": 0}}, {}, {"leftDistance": {"value": 1}, "semicircleLineSegment": 0},
                {"leftDistance": {"value": 1}, "endType": "SQUARE"}, {"leftDistance": {"value": True}}):
        with pytest.raises(BadRequest):
            parse_buffer_setting(bad, "p")


def test_point_buffer_vertex_count_follows_semicircle_segments():
    body = {"sourceGeometry": {"type": "POINT", "points": [{"x": 0, "y": 0}]},
            "analystParameter": {"leftDistance": {"value": 1}, "semicircleLineSegment": 7}}
    result = answer(geometry_buffer(body, honour_radius_unit=False))
    assert result["resultGeometry"]["parts"] == [4 * 4 + 1]  # ceil(7 / 2) = 4 segments per quarter circle
    assert result["resultGeometry"]["prjCoordSys"] is None


def test_task_states_as_iserver_answers():
    from geoservice.db.models import AnalysisTask
    from geoservice.supermap.service import view

    running = view(AnalysisTask(status="running", progress=40, phase="computing"))
    assert running.status == 202 and running.body["state"] == {"runState": "RUNNING", "progress": 40.0,
                                                                "phase": "computing"}
    user_error = AnalysisTask(status="failed", error_code="EmptyInput", error_message="the input has no features")
    answer = view(user_error)
    assert (answer.status, answer.body) == (400, {"succeed": False, "error": {"code": 400,
                                                                         "errorMsg": "the input has no features"}})
    assert user_error.supermap_result is None  # reading never writes: the failure recorded it (state owner)
    crashed = view(AnalysisTask(status="failed", error_code="InternalError", error_message="boom"))
    assert crashed.status == 500 and crashed.body["error"]["code"] == 500
    assert view(AnalysisTask(status="dismissed")).status == 410

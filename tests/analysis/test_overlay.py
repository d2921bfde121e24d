"""Overlay: hand-checked squares for every operation, attributes per the table, types, fields, errors."""

from __future__ import annotations

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import shapely
from pydantic import ValidationError

from geoservice.analysis.errors import EmptyInput, MissingCRS, UnsupportedGeometryType
from geoservice.analysis.overlay import OverlayParams, keep_dimension, overlay, overlay_planar
from geoservice.errors import InvalidInput


def params(operation: str, **kw: object) -> OverlayParams:
    return OverlayParams.model_validate({"operation": operation, **kw})


def run(operation: str, a: gpd.GeoDataFrame | None = None, b: gpd.GeoDataFrame | None = None, **kw: object):
    return overlay(A if a is None else a, B if b is None else b, params(operation, **kw))


# A1 = [0,2]x[0,2] (area 4), A2 = [3,4]x[0,1] (area 1, away from B)
A = gpd.GeoDataFrame(
    {"name": ["A1", "A2"], "a_val": [1, 2]}, geometry=[shapely.box(0, 0, 2, 2), shapely.box(3, 0, 4, 1)], crs=3857
)
# B1 = [1,3]x[1,3] (area 4, overlaps A1 by 1), B2 = [1,2]x[-1,0.5] (area 1.5, overlaps A1 by 0.5)
B = gpd.GeoDataFrame(
    {"name": ["B1", "B2"], "b_val": [10, 20]},
    geometry=[shapely.box(1, 1, 3, 3), shapely.box(1, -1, 2, 0.5)],
    crs=3857,
)


def areas(out) -> list[float]:
    return [round(a, 9) for a in out.gdf.area]


def test_intersect_pieces_per_pair_with_prefixed_attributes() -> None:
    out = run("intersect")
    assert areas(out) == [1.0, 0.5]
    assert list(out.gdf.columns) == ["input_name", "a_val", "overlay_name", "b_val", "geometry"]
    assert list(out.gdf["input_name"]) == ["A1", "A1"] and list(out.gdf["overlay_name"]) == ["B1", "B2"]
    assert out.metadata["renamed_fields"] == {"input_name": "name", "overlay_name": "name"}
    assert out.metadata["piece_counts"] == {"both": 2, "input_only": 0, "overlay_only": 0}


def test_clip_and_erase_keep_input_attributes_only() -> None:
    clip = run("clip")
    assert areas(clip) == [1.5] and list(clip.gdf.columns) == ["name", "a_val", "geometry"]
    erase = run("erase")
    assert areas(erase) == [2.5, 1.0] and list(erase.gdf["name"]) == ["A1", "A2"]
    assert list(erase.gdf.columns) == ["name", "a_val", "geometry"]


def test_identity_pieces_add_up_exactly_to_the_input() -> None:
    out = run("identity")
    g = out.gdf
    assert areas(out) == [1.0, 0.5, 2.5, 1.0]
    for name, geom in zip(A["name"], A.geometry, strict=True):
        assert g.loc[g["input_name"] == name].area.sum() == pytest.approx(geom.area, rel=1e-12)
        assert shapely.union_all(g.loc[g["input_name"] == name].geometry).equals(geom)
    inside = g["overlay_name"].notna()
    assert list(g.loc[inside, "b_val"]) == [10, 20]
    assert g.loc[~inside, "b_val"].isna().all() and g["a_val"].notna().all()


def test_union_covers_both_layers_with_nulls_for_absent_side() -> None:
    out = run("union")
    g = out.gdf
    assert sorted(areas(out)) == sorted([1.0, 0.5, 2.5, 1.0, 3.0, 1.0])
    assert shapely.union_all(g.geometry).area == pytest.approx(shapely.union_all([*A.geometry, *B.geometry]).area)
    assert g.area.sum() == pytest.approx(shapely.union_all([*A.geometry, *B.geometry]).area)
    overlay_only = g["input_name"].isna()
    assert list(g.loc[overlay_only, "overlay_name"]) == ["B1", "B2"]
    assert g.loc[overlay_only, "a_val"].isna().all()
    assert g["a_val"].dtype == "Int64"  # integers stay integers, with <NA> for the absent side
    assert out.metadata["piece_counts"] == {"both": 2, "input_only": 2, "overlay_only": 2}


def test_update_and_xor_each_piece_its_own_side() -> None:
    up = run("update")
    assert areas(up) == [2.5, 1.0, 4.0, 1.5]
    assert list(up.gdf["name"]) == ["A1", "A2", "B1", "B2"]
    assert list(up.gdf.columns) == ["name", "a_val", "b_val", "geometry"]
    assert up.gdf["a_val"].isna().tolist() == [False, False, True, True]
    xor = run("xor")
    assert areas(xor) == [2.5, 1.0, 3.0, 1.0]
    assert list(xor.gdf["name"]) == ["A1", "A2", "B1", "B2"]
    assert xor.gdf["b_val"].isna().tolist() == [True, True, False, False]


def test_field_selection() -> None:
    out = run("intersect", input_fields=["a_val"], overlay_fields=["name"])
    assert list(out.gdf.columns) == ["a_val", "name", "geometry"]
    out = run("union", input_fields=[], overlay_fields=[])
    assert list(out.gdf.columns) == ["geometry"]
    with pytest.raises(InvalidInput) as exc:
        run("intersect", overlay_fields=["nope"])
    assert exc.value.field == "overlay_fields"


def test_polygon_results_have_no_stray_lines_or_points() -> None:
    touching = gpd.GeoDataFrame({"k": [1, 2]}, geometry=[shapely.box(2, 0, 3, 2), shapely.box(0, 0, 1, 1)], crs=3857)
    out = run("intersect", b=touching)
    assert set(out.gdf.geom_type) == {"Polygon"}  # the edge shared with [2,3]x[0,2] is dropped
    assert areas(out) == [1.0]
    raw = run("intersect", b=touching, keep_geom_type=False)
    assert "LineString" in set(raw.gdf.geom_type)


def test_lines_keep_their_dimension() -> None:
    lines = gpd.GeoDataFrame(
        {"id": [1, 2]},
        geometry=[shapely.LineString([(-1, 0.5), (5, 0.5)]), shapely.LineString([(0, 3), (3, 0)])],
        crs=3857,
    )
    out = run("clip", a=lines)
    assert set(out.gdf.geom_type) <= {"LineString", "MultiLineString"}
    ident = run("identity", a=lines)
    for i, geom in zip(lines["id"], lines.geometry, strict=True):
        assert ident.gdf.loc[ident.gdf["id"] == i].length.sum() == pytest.approx(geom.length)


def test_points_intersect() -> None:
    pts = gpd.GeoDataFrame({"id": [1, 2]}, geometry=[shapely.Point(1.5, 1.5), shapely.Point(10, 10)], crs=3857)
    out = run("intersect", a=pts)
    assert list(out.gdf["id"]) == [1] and list(out.gdf["name"]) == ["B1"]


def test_type_errors() -> None:
    lines = gpd.GeoDataFrame(geometry=[shapely.LineString([(0, 0), (1, 1)])], crs=3857)
    with pytest.raises(UnsupportedGeometryType, match="'union' needs polygons in the input layer") as exc:
        run("union", a=lines)
    assert exc.value.field == "input"
    with pytest.raises(UnsupportedGeometryType, match="overlay layer; it has LineString"):
        run("clip", b=lines)


def test_crs_errors_and_reprojection() -> None:
    with pytest.raises(MissingCRS):
        run("clip", b=B.set_crs(None, allow_override=True))
    with pytest.raises(EmptyInput):
        run("clip", a=A.iloc[:0])
    out = run("intersect", b=B.to_crs(4326))
    assert out.gdf.crs == A.crs and sum(areas(out)) == pytest.approx(1.5, rel=1e-6)


def test_grid_size_snaps_results() -> None:
    b = gpd.GeoDataFrame(geometry=[shapely.box(1.04, 1.04, 3, 3)], crs=3857)
    out = run("intersect", b=b, grid_size=0.1)
    coords = shapely.get_coordinates(out.gdf.geometry.values)
    assert np.allclose(coords * 10, np.round(coords * 10))
    assert areas(out) == [1.0]
    with pytest.raises(ValidationError, match="grid_size"):
        params("clip", grid_size=0)


def test_invalid_polygons_are_repaired_and_counted() -> None:
    bowtie = gpd.GeoDataFrame(geometry=[shapely.Polygon([(0, 0), (2, 2), (2, 0), (0, 2)])], crs=3857)
    out = run("clip", b=bowtie)
    assert out.metadata["repaired_invalid"] == {"input": 0, "overlay": 1}
    assert sum(areas(out)) == pytest.approx(2.0)


def test_chunked_progress_gives_the_same_result(monkeypatch: pytest.MonkeyPatch) -> None:
    import geoservice.analysis.overlay as mod

    grid_a = gpd.GeoDataFrame(
        {"i": range(25)}, geometry=[shapely.box(x, y, x + 1, y + 1) for x in range(5) for y in range(5)], crs=3857
    )
    grid_b = gpd.GeoDataFrame(
        {"j": range(16)},
        geometry=[shapely.box(x + 0.5, y + 0.5, x + 1.5, y + 1.5) for x in range(4) for y in range(4)],
        crs=3857,
    )
    whole = run("union", a=grid_a, b=grid_b).gdf
    monkeypatch.setattr(mod, "CHUNK_SIZE", 7)
    calls: list[tuple[float, str]] = []
    chunked = overlay(grid_a, grid_b, params("union"), lambda f, p: calls.append((f, p)))
    pd.testing.assert_frame_equal(
        pd.DataFrame(whole.drop(columns="geometry")), pd.DataFrame(chunked.gdf.drop(columns="geometry"))
    )
    assert whole.geometry.geom_equals(chunked.gdf.geometry).all()
    assert len(calls) == 4 + 3 and calls[-1] == (1.0, "computing")
    assert whole.area.sum() == pytest.approx(shapely.union_all([*grid_a.geometry, *grid_b.geometry]).area)


def test_overlay_planar_and_keep_dimension() -> None:
    a = np.array([shapely.box(0, 0, 2, 2), shapely.box(0, 0, 1, 1)])
    b = np.array([shapely.box(1, 1, 3, 3), shapely.box(1, 0, 2, 1)])
    assert [g.area for g in overlay_planar(a, b, "intersection")] == [1.0, 0.0]
    assert [g.area for g in overlay_planar(a, b, "union")] == [7.0, 2.0]
    assert [g.area for g in overlay_planar(a, b, "difference")] == [3.0, 1.0]
    assert [g.area for g in overlay_planar(a, b, "symdifference")] == [6.0, 2.0]
    assert overlay_planar(np.array([shapely.GeometryCollection([*a])]), None, "union")[0].area == 4.0
    mixed = np.array([shapely.GeometryCollection([shapely.box(0, 0, 1, 1), shapely.LineString([(5, 5), (6, 6)])])])
    assert keep_dimension(mixed, np.array([2]))[0].geom_type == "Polygon"
    assert keep_dimension(mixed, np.array([0]))[0] is None

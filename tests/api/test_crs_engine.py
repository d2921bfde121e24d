"""One CRS engine: reads, exports, previews and overlay alignment transform as a ``reproject`` task does.

The same stored data is exported (GeoJSON, GeoPackage), read through ``/features?crs=`` and reprojected by
a ``reproject`` task run by a real worker, to several target CRSs: the coordinates must be identical (bit
for bit) and the read must name the operation the task recorded. Sources: NAD27 (EPSG:4267), California
state plane in US survey feet (EPSG:2227), ETRS89 / UTM 33N (EPSG:25833) and NAD83 / UTM 15N (EPSG:26915).
Here no NOAA grid is installed, so the best NAD27 -> WGS 84 (and NAD83 -> WGS 84, HPGN) operations are
unavailable: reads use the best available one and name it (``allow_ballpark`` defaults to true for reads), and
with ``allow_ballpark=false`` they refuse like a task does by default.

Independent references (not our output): PROJ's gie vector for NAD27 -> SPCS27 South Carolina North
(``gie/more_builtins.gie``, "+init=nad27:3901", tolerance 1 mm) and PROJ's cs2cs expectation for
EPSG:26915 -> EPSG:26715 through a WGS 84 intermediate (``cli/test_cs2cs_various.yaml``, GH-3613),
both from PROJ 9.5.1 (``/work/shared/peer-tests/proj``).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import geopandas as gpd
import numpy as np
import pyogrio
import pytest
import shapely
from fastapi.testclient import TestClient
from pyproj import CRS, Transformer
from shapely.geometry import Point

from geoservice.agents.shaping import layer_payload
from geoservice.analysis.crs import area_of_interest, get_transformer
from geoservice.analysis.errors import TransformationUnavailable
from geoservice.analysis.overlay import OverlayParams, overlay
from geoservice.analysis.reproject import reproject_layer
from tests.conftest import authed_client
from tests.helpers import fc, feature, square, unique

pytestmark = pytest.mark.e2e

SC_NORTH = [(-(80 + 32.5 / 60), 34 + 32.5 / 60), (-81.0, 34 + 32.5 / 60)]  # gie: 80d32'30"W 34d32'30"N, 81d00'W
SC_NORTH_FT = [(2_138_028.224, 561_330.721), (2_000_000.000, 561_019.077)]  # gie expect, US survey feet
GH3613_NAD83 = (569704.5660295591, 4269024.671083651)  # cs2cs EPSG:26915 EPSG:26715 input
GH3613_NAD27 = (569720.46, 4268813.88)  # cs2cs output, printed to 0.01 m


def _lonlat_to(crs: str, points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Build input coordinates (not a reference: only where the test data lies)."""
    t = Transformer.from_crs("OGC:CRS84", crs, always_xy=True)
    return [tuple(t.transform(x, y)) for x, y in points]


def _squares(corners: list[tuple[float, float]], size: float) -> list[dict[str, Any]]:
    """A square per corner (its first vertex), ``size`` in CRS units, with 8 vertices per side."""
    return [feature(shapely.segmentize(shapely.geometry.shape(square(x, y, size)), size / 8).__geo_interface__, k=i)
            for i, (x, y) in enumerate(corners)]


SOURCES: dict[str, tuple[str, list[dict[str, Any]]]] = {
    # NAD27 lon/lat around Columbia, SC (first vertices of the first two: the gie points).
    "nad27": ("EPSG:4267", _squares([*SC_NORTH, (-81.03, 34.0), (-80.9, 34.1), (-81.2, 33.95)], 0.01)),
    # California state plane zone 3, US survey feet, around San Francisco.
    "ca_ftus": ("EPSG:2227", _squares(_lonlat_to("EPSG:2227", [(-122.42, 37.77), (-122.27, 37.8), (-122.05, 37.6),
                                                               (-122.3, 37.9), (-122.5, 37.7)]), 500.0)),
    # ETRS89 / UTM 33N around Berlin (no grid involved anywhere).
    "etrs89": ("EPSG:25833", _squares(_lonlat_to("EPSG:25833", [(13.4, 52.52), (13.29, 52.45), (13.65, 52.6),
                                                                (13.1, 52.4), (13.5, 52.35)]), 250.0)),
    # NAD83 / UTM 15N: the cs2cs GH-3613 point.
    "nad83_utm15": ("EPSG:26915", _squares([GH3613_NAD83], 100.0)),
}


@dataclass(frozen=True)
class Case:
    source: str
    target: str
    ballpark: bool  # the best operation needs a grid that is not installed here

    @property
    def id(self) -> str:
        return f"{self.source}->{self.target}"


WGS84_FAMILY = ("EPSG:3857", "EPSG:8857", "EPSG:4326")
CASES = [
    *(Case("nad27", t, True) for t in (*WGS84_FAMILY, "EPSG:32617")),
    Case("nad27", "EPSG:32031", False),  # NAD27 / South Carolina North (US ft): a conversion, no datum shift
    *(Case("ca_ftus", t, True) for t in (*WGS84_FAMILY, "EPSG:32610")),
    *(Case("etrs89", t, False) for t in (*WGS84_FAMILY, "EPSG:32633")),
    Case("nad83_utm15", "EPSG:26715", True),
]
REFUSED = [c for c in CASES if c.ballpark]


# ------------------------------------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def small_batches(settings) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    """An API whose exports stream 3 features per batch, so one export spans several batches."""
    from geoservice.api.app import create_app

    c = authed_client(create_app(settings.model_copy(update={"export_batch_size": 3})), settings)
    yield c
    c.__exit__(None, None, None)


@pytest.fixture(scope="module")
def datasets(small_batches: TestClient) -> dict[str, dict]:
    out = {}
    for key, (crs, features) in SOURCES.items():
        r = small_batches.post("/api/v1/datasets", json={**fc(features), "name": unique(key)}, params={"crs": crs})
        assert r.status_code == 201, r.text
        assert r.json()["crs"] == crs
        out[key] = r.json()
    return out


def _submit(client: TestClient, dataset_id: str, target: str, allow_ballpark: bool) -> str:
    r = client.post("/api/v1/tasks", json={"name": "crs engine", "analysis_type": "reproject", "parameters": {
        "input": {"dataset_id": dataset_id}, "target_crs": target, "allow_ballpark": allow_ballpark}})
    assert r.status_code == 202, r.text
    return r.json()["id"]


def _wait(client: TestClient, task_id: str, timeout: float = 120) -> dict:
    """Follow the task's event stream to its final event; return the task."""
    with client.stream("GET", f"/api/v1/tasks/{task_id}/events", params={"interval": 0.2}, timeout=timeout) as r:
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "final":
                break
    return client.get(f"/api/v1/tasks/{task_id}").json()


@pytest.fixture(scope="module")
def tasks(small_batches: TestClient, worker, datasets: dict[str, dict]) -> dict[str, dict]:  # noqa: ARG001
    """Every case as a task (allow_ballpark where needed), plus the refused ones without it; all submitted first."""
    ids = {c.id: _submit(small_batches, datasets[c.source]["id"], c.target, c.ballpark) for c in CASES}
    ids |= {f"{c.id} strict": _submit(small_batches, datasets[c.source]["id"], c.target, False) for c in REFUSED}
    return {key: _wait(small_batches, task_id) for key, task_id in ids.items()}


# ------------------------------------------------------------------------------------------- helpers

def _task_result(client: TestClient, task: dict, pg) -> tuple[np.ndarray, dict[str, Any]]:
    """The task's output geometries (stored doubles, fid order) and its recorded transformation."""
    assert task["status"] == "successful", (task["error_code"], task["error_message"])
    row = client.get(f"/api/v1/tasks/{task['id']}/results").json()["results"][0]
    wkb = pg.execute("SELECT ST_AsBinary(geometry) FROM spatial_data WHERE dataset_id = %s ORDER BY fid",
                     (row["dataset_id"],)).fetchall()
    return shapely.from_wkb([w[0] for w in wkb]), row["result_metadata"]["transformation"]


def _geojson_coords(body: bytes) -> tuple[np.ndarray, dict[str, Any]]:
    doc = json.loads(body)  # Python parses the shortest round-trip repr back to the same double
    features = sorted(doc["features"], key=lambda f: f["id"])
    return shapely.get_coordinates([shapely.geometry.shape(f["geometry"]) for f in features]), doc


def _gpkg_coords(content: bytes, tmp_path) -> np.ndarray:
    path = tmp_path / "export.gpkg"
    path.write_bytes(content)
    gdf = pyogrio.read_dataframe(path, fid_as_index=True).sort_index()
    return shapely.get_coordinates(gdf.geometry.values)


def _read_params(case: Case, **extra: Any) -> dict[str, Any]:
    return {"crs": case.target, **({"allow_ballpark": "true"} if case.ballpark else {}), **extra}


def _assert_names(headers: Any, transformation: dict[str, Any]) -> None:
    assert headers["geoservice-transformation"] == transformation["description"]
    assert headers["geoservice-transformation-pipeline"] == transformation["pipeline"]
    accuracy = transformation["accuracy_m"]
    assert headers["geoservice-transformation-accuracy"] == ("unknown" if accuracy is None else format(accuracy, "g"))
    assert ("geoservice-transformation-grids-missing" in headers) == bool(transformation["grids_missing"])


# ------------------------------------------------------------------------------------------- tests

@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_reads_exports_and_task_give_identical_coordinates(small_batches: TestClient, datasets, tasks, pg,
                                                           tmp_path, case: Case) -> None:
    client, dataset = small_batches, datasets[case.source]
    geoms, transformation = _task_result(client, tasks[case.id], pg)
    expected = shapely.get_coordinates(geoms)
    assert transformation["best_available"] is not case.ballpark

    r = client.get(f"/api/v1/datasets/{dataset['id']}/export", params=_read_params(case, format="geojson"))
    assert r.status_code == 200, r.text
    coords, doc = _geojson_coords(r.content)
    assert np.array_equal(coords, expected), np.abs(coords - expected).max()
    assert doc["transformation"] == transformation
    _assert_names(r.headers, transformation)

    r = client.get(f"/api/v1/datasets/{dataset['id']}/export", params=_read_params(case, format="gpkg"))
    assert r.status_code == 200, r.text
    assert np.array_equal(_gpkg_coords(r.content, tmp_path), expected)
    _assert_names(r.headers, transformation)

    r = client.get(f"/api/v1/datasets/{dataset['id']}/features", params=_read_params(case, limit=1000))
    assert r.status_code == 200, r.text
    coords, doc = _geojson_coords(r.content)
    assert np.array_equal(coords, expected)
    assert doc["transformation"] == transformation
    _assert_names(r.headers, transformation)


@pytest.mark.parametrize("case", REFUSED, ids=lambda c: c.id)
def test_reads_refuse_like_the_task_without_allow_ballpark(small_batches: TestClient, datasets, tasks,
                                                           case: Case) -> None:
    client, dataset = small_batches, datasets[case.source]
    task = tasks[f"{case.id} strict"]
    assert task["status"] == "failed" and task["error_code"] == "TransformationUnavailable"
    base = f"/api/v1/datasets/{dataset['id']}"
    for path, params in ((f"{base}/features", {"crs": case.target, "allow_ballpark": "false"}),
                         (f"{base}/export", {"crs": case.target, "format": "geojson", "allow_ballpark": "false"}),
                         (f"{base}/export", {"crs": case.target, "format": "gpkg", "allow_ballpark": "false"})):
        r = client.get(path, params=params)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "TransformationUnavailable" and body["field"] == "allow_ballpark"
        assert body["grids"] and all(g in body["detail"] and g in task["error_message"] for g in body["grids"])
        assert "allow_ballpark=false" in body["detail"] and "crs=native" in body["detail"]
        assert not any(h.startswith("geoservice-transformation") for h in r.headers)


def test_default_crs84_read_of_nad27_names_its_fallback_and_strict_refuses(small_batches: TestClient,
                                                                           datasets) -> None:
    client = small_batches
    base = f"/api/v1/datasets/{datasets['nad27']['id']}"
    r = client.get(f"{base}/features", params={"allow_ballpark": "false"})
    assert r.status_code == 422 and "us_noaa_conus.tif" in r.json()["detail"]
    assert client.get(f"{base}/export", params={"format": "geojson", "allow_ballpark": "false"}).status_code == 422
    r = client.get(f"{base}/features", params={"crs": "native"})
    assert r.status_code == 200 and "transformation" not in r.json()
    assert "geoservice-transformation" not in r.headers
    r = client.get(f"{base}/features")  # the default: the best available operation, named
    assert r.status_code == 200 and "NAD27 to WGS 84" in r.headers["geoservice-transformation"]
    assert r.json()["transformation"]["best_available"] is False
    assert r.json()["transformation"]["grids_missing"] == r.headers["geoservice-transformation-grids-missing"].split(
        ", ")


def test_nad27_state_plane_matches_proj_gie_vector(small_batches: TestClient, datasets, tasks, pg) -> None:
    """PROJ more_builtins.gie: NAD27 -> +init=nad27:3901 (US ft), tolerance 1 mm; EPSG:32031 is that zone."""
    r = small_batches.get(f"/api/v1/datasets/{datasets['nad27']['id']}/features",
                          params={"crs": "EPSG:32031", "limit": 2})
    ours = np.array([f["geometry"]["coordinates"][0][0] for f in r.json()["features"]])
    assert np.abs(ours - np.array(SC_NORTH_FT)).max() <= 0.001 / 0.3048006096012192  # 1 mm in US survey feet
    geoms, _ = _task_result(small_batches, tasks["nad27->EPSG:32031"], pg)
    assert np.array_equal(np.array([g.exterior.coords[0] for g in geoms[:2]]), ours)


def test_nad83_to_nad27_matches_proj_cs2cs(small_batches: TestClient, datasets) -> None:
    """PROJ cs2cs (GH-3613): EPSG:26915 -> EPSG:26715 without grids, via WGS 84; printed to 0.01 m."""
    r = small_batches.get(f"/api/v1/datasets/{datasets['nad83_utm15']['id']}/features",
                          params={"crs": "EPSG:26715", "allow_ballpark": "true"})
    ours, doc = _geojson_coords(r.content)
    assert np.abs(ours[0] - np.array(GH3613_NAD27)).max() <= 0.005
    assert doc["transformation"]["best_available"] is False


def test_bbox_crs_follows_allow_ballpark(small_batches: TestClient, datasets) -> None:
    client = small_batches
    base = f"/api/v1/datasets/{datasets['nad27']['id']}/features"
    x, y = Transformer.from_crs("EPSG:4267", "EPSG:3857", always_xy=True).transform(*SC_NORTH[0])
    params = {"bbox": f"{x - 50},{y - 50},{x + 50},{y + 50}", "bbox-crs": "EPSG:3857", "crs": "native"}
    r = client.get(base, params={**params, "allow_ballpark": "false"})
    assert r.status_code == 422 and r.json()["error"] == "TransformationUnavailable"
    r = client.get(base, params=params)
    assert r.status_code == 200, r.text
    assert [f["properties"]["k"] for f in r.json()["features"]] == [0]  # its neighbour starts 0.46 degree west


def test_same_crs_is_an_exact_no_op(client: TestClient) -> None:
    body = fc([feature(Point(10.123456789012345, 50.98765432109876).__geo_interface__)])
    ds = client.post("/api/v1/datasets", json={**body, "name": unique("wgs84")}).json()
    for crs in ("EPSG:4326", "OGC:CRS84", "native", None):
        r = client.get(f"/api/v1/datasets/{ds['id']}/features", params={} if crs is None else {"crs": crs})
        assert r.status_code == 200 and "geoservice-transformation" not in r.headers
        assert r.json()["features"][0]["geometry"]["coordinates"] == [10.123456789012345, 50.98765432109876]


# ------------------------------------------------------------------------------------------- pure paths

def _nad27_layer() -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame({"k": [1, 2]}, geometry=[Point(SC_NORTH[0]), shapely.box(-81.1, 34.0, -81.0, 34.1)],
                            crs="EPSG:4267")  # an in-memory layer may mix families


def test_agent_preview_uses_the_engine_and_names_the_transformation() -> None:
    layer = _nad27_layer()
    payload = layer_payload(layer, max_bytes=100_000, preview_features=5)
    lonlat, used = reproject_layer(layer, CRS("OGC:CRS84"), allow_ballpark=True)
    assert payload["transformation"] == {"description": used["description"], "accuracy_m": used["accuracy_m"],
                                         "best_available": False, "grids_missing": used["grids_missing"]}
    point = payload["features"]["features"][0]["geometry"]["coordinates"]
    assert point == pytest.approx(list(lonlat.geometry.iloc[0].coords[0]), abs=1e-12)
    aoi = area_of_interest(shapely.get_coordinates(layer.geometry.values, include_z=True), layer.crs)
    _, expected = get_transformer(layer.crs, CRS("OGC:CRS84"), always_xy=True, allow_ballpark=True,
                                  area_of_interest=aoi)  # what a reproject task picks for this layer
    assert used["pipeline"] == expected["pipeline"]
    wgs84 = layer_payload(layer.set_crs("OGC:CRS84", allow_override=True), max_bytes=100_000, preview_features=5)
    assert "transformation" not in wgs84


def _overlay_params() -> OverlayParams:
    # The layers travel in the params only in older versions of the model.
    refs = {"input": {"dataset_id": str(uuid.uuid4())}, "overlay": {"dataset_id": str(uuid.uuid4())}}
    return OverlayParams.model_validate({"operation": "intersect",
                                         **{k: v for k, v in refs.items() if k in OverlayParams.model_fields}})


def test_overlay_alignment_uses_the_engine() -> None:
    utm = gpd.GeoDataFrame({"a": [1]}, geometry=[shapely.box(390_000, 5_810_000, 400_000, 5_830_000)],
                           crs="EPSG:25833")
    wgs84_overlay = gpd.GeoDataFrame({"b": [1]}, geometry=[shapely.box(13.3, 52.45, 13.4, 52.55)], crs="EPSG:4326")
    out = overlay(utm, wgs84_overlay, _overlay_params())
    aligned, _ = reproject_layer(wgs84_overlay, CRS("EPSG:25833"), allow_ballpark=False)
    expected = shapely.intersection(utm.geometry.iloc[0], aligned.geometry.iloc[0])
    assert shapely.equals_exact(shapely.normalize(out.gdf.geometry.iloc[0]), shapely.normalize(expected), 1e-9)
    nad27_overlay = _nad27_layer().iloc[1:]
    with pytest.raises(TransformationUnavailable, match="us_noaa_conus.tif"):
        overlay(gpd.GeoDataFrame(geometry=[shapely.box(-82, 33, -80, 35)], crs="EPSG:4326"), nad27_overlay,
                _overlay_params())


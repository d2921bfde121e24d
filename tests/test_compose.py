"""Static checks of the deployment files (docker-compose.yml) and the shipped sample data.

No Docker engine or database is needed: the compose file is only parsed, the GeoJSON only read.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyogrio
import pytest
import shapely
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SAMPLE_DIR = ROOT / "sample_data"

APP_SERVICES = ("migrate", "api", "worker")


@pytest.fixture(scope="module")
def compose() -> dict:
    with COMPOSE_FILE.open(encoding="utf-8") as f:
        data = yaml.safe_load(f)
    assert isinstance(data, dict)
    return data


def _depends_on(service: dict) -> dict[str, str]:
    """Return {dependency: condition}, accepting both the list and the mapping form."""
    deps = service.get("depends_on", {})
    if isinstance(deps, list):
        return dict.fromkeys(deps, "service_started")
    return {name: (spec or {}).get("condition", "service_started") for name, spec in deps.items()}


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def test_compose_has_all_services(compose: dict) -> None:
    services = compose["services"]
    for name in ("db", "redis", "migrate", "api", "worker"):
        assert name in services, f"service {name!r} missing from docker-compose.yml"


def test_db_is_postgis_with_healthcheck(compose: dict) -> None:
    db = compose["services"]["db"]
    assert db["image"].startswith("postgis/postgis:")
    assert "pg_isready" in json.dumps(db["healthcheck"]["test"])
    assert db.get("volumes"), "db data must live on a volume"


def test_redis_has_healthcheck(compose: dict) -> None:
    redis = compose["services"]["redis"]
    assert redis["image"].startswith("redis:")
    assert "redis-cli" in json.dumps(redis["healthcheck"]["test"])


def test_migrate_is_one_shot_after_healthy_db(compose: dict) -> None:
    migrate = compose["services"]["migrate"]
    assert _command(migrate) == ["geoservice", "migrate"]
    assert _depends_on(migrate).get("db") == "service_healthy"
    assert migrate.get("restart", "no") == "no"


@pytest.mark.parametrize("name", ["api", "worker"])
def test_api_and_worker_wait_for_migrations_and_redis(compose: dict, name: str) -> None:
    deps = _depends_on(compose["services"][name])
    assert deps.get("migrate") == "service_completed_successfully"
    assert deps.get("redis") == "service_healthy"


def test_commands(compose: dict) -> None:
    services = compose["services"]
    assert _command(services["api"]) == ["geoservice", "api", "--host", "0.0.0.0", "--port", "8000"]
    assert _command(services["worker"]) == ["geoservice", "worker", "--concurrency", "2"]
    assert any(str(p).split(":")[-1] == "8000" for p in services["api"]["ports"])


@pytest.mark.parametrize("name", APP_SERVICES)
def test_app_services_environment(compose: dict, name: str) -> None:
    service = compose["services"][name]
    assert "build" in service
    env = service["environment"]
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    assert env["GEOSERVICE_DATABASE_URL"] == "postgresql+psycopg://postgres:postgres@db:5432/geoservice"
    assert env["GEOSERVICE_REDIS_URL"] == "redis://redis:6379/0"
    assert env["GEOSERVICE_ENV"] == "production"
    # Required from the caller's environment, never a literal secret in the file.
    assert env["GEOSERVICE_SECRET_KEY"].startswith("${GEOSERVICE_SECRET_KEY:?")


# --- sample data ------------------------------------------------------------------------------

SAMPLES = {
    # file: (feature count, attribute columns, geometry types)
    "countries.geojson": (
        177,
        ["pop_est", "continent", "name", "iso_a3", "gdp_md_est"],
        {"Polygon", "MultiPolygon"},
    ),
    "populated_places.geojson": (243, ["name"], {"Point"}),
}


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_sample_data_loads(filename: str) -> None:
    count, columns, geom_types = SAMPLES[filename]
    path = SAMPLE_DIR / filename
    df = pyogrio.read_dataframe(path)

    assert df.crs is not None
    assert df.crs.to_epsg() == 4326 or df.crs.to_string() == "OGC:CRS84"
    assert len(df) == count
    assert list(df.columns.drop(df.geometry.name)) == columns
    assert df[columns].notna().all().all()
    assert set(df.geom_type) == geom_types

    geoms = df.geometry.values
    assert not shapely.is_empty(geoms).any()
    invalid = ~shapely.is_valid(geoms)
    assert not invalid.any(), dict(
        zip(df.loc[invalid, "name"], shapely.is_valid_reason(geoms[invalid]), strict=True)
    )
    minx, miny, maxx, maxy = df.total_bounds
    assert -180 <= minx <= maxx <= 180.0000001 and -90 <= miny <= maxy <= 90


@pytest.mark.parametrize("filename", sorted(SAMPLES))
def test_sample_data_is_rfc7946(filename: str) -> None:
    doc = json.loads((SAMPLE_DIR / filename).read_text(encoding="utf-8"))
    assert doc["type"] == "FeatureCollection"
    assert "crs" not in doc  # RFC 7946 dropped the crs member
    assert len(doc["features"]) == SAMPLES[filename][0]


def test_countries_full_precision_and_ring_orientation() -> None:
    df = pyogrio.read_dataframe(SAMPLE_DIR / "countries.geojson")
    fiji = df.loc[df["name"] == "Fiji"].geometry.iloc[0]
    # Not rounded to GDAL's 7-decimal RFC 7946 default.
    assert -16.067132663642447 in shapely.get_coordinates(fiji)[:, 1]
    # RFC 7946 3.1.6: exterior rings counterclockwise, holes clockwise.
    polygons = shapely.get_parts(df.geometry.values)
    assert shapely.is_ccw(shapely.get_exterior_ring(polygons)).all()
    holes = [ring for poly in polygons for ring in poly.interiors]
    assert not any(shapely.is_ccw(ring) for ring in holes)

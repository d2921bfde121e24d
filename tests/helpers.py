"""Small helpers shared by the tests (not fixtures)."""

from __future__ import annotations

import io
import secrets
from typing import Any

import psycopg
from fastapi.testclient import TestClient


def unique(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(3)}"


def counts(pg: psycopg.Connection) -> tuple[int, int]:
    """(datasets, spatial_data) row counts, to prove a failed request wrote nothing."""
    row = pg.execute("SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM spatial_data)").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def upload(client: TestClient, filename: str, content: bytes, **fields: Any) -> Any:
    data = {k: str(v) for k, v in fields.items()}
    return client.post("/api/v1/datasets", files={"file": (filename, io.BytesIO(content))}, data=data)


def fc(features: list[dict[str, Any]], **members: Any) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": features, **members}


def feature(geometry: dict[str, Any] | None, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "geometry": geometry, "properties": props}


def square(x: float, y: float, size: float = 1.0) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [[[x, y], [x + size, y], [x + size, y + size], [x, y + size], [x, y]]]}

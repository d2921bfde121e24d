"""Follow-up experiments behind the speed-up suggestions of bench/run.py (single runs; see bench/README.md).

    .venv/bin/python bench/experiments.py copy --n 1000000   # where the COPY into spatial_data goes
    .venv/bin/python bench/experiments.py area --n 100000    # geodesic_summary vs a vectorised equal-area sum

``copy``: in a throwaway database, store N points (the e2e input), then COPY the same N points reprojected
(the e2e output) with ``gis_io.copy_features`` into ``spatial_data`` as migrated and, for the single-table
schema (before migration 0006), also without its foreign key(s), without the GiST index and without both;
finally into a plain unindexed table (the floor). Each after VACUUM + CHECKPOINT; dropped constraints are
restored (timed separately).
``area``: the total geodesic area of N buffered polygons with ``geodesic_summary`` (one pyproj Geod call
per ring) and with one vectorised transform to a Lambert azimuthal equal-area CRS centred on the layer.
"""

from __future__ import annotations

import argparse
import secrets
import subprocess
import sys
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT)]

import numpy as np  # noqa: E402
import psycopg  # noqa: E402
import shapely  # noqa: E402
import synth  # noqa: E402
from geopandas import GeoDataFrame, GeoSeries  # noqa: E402
from pyproj import Transformer  # noqa: E402
from stack import PG_ADMIN  # noqa: E402

GIST = "CREATE INDEX ix_spatial_data_geometry ON spatial_data USING gist (geometry)"


def copy_experiment(n: int) -> None:
    from geoservice.config import Settings
    from geoservice.db import gis_io
    from geoservice.db.engine import make_engine, make_sessionmaker, transaction
    from geoservice.db.repositories import datasets as repo
    from geoservice.services.auth import create_user
    from geoservice.services.datasets import store_layer

    name = f"geoservice_bench_exp_{secrets.token_hex(4)}"
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    dsn = url.replace("+psycopg", "")
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        subprocess.run([sys.executable, "-m", "alembic", "-x", f"url={url}", "upgrade", "head"], cwd=ROOT,
                       check=True, capture_output=True)
        engine = make_engine(Settings(database_url=url), "cli")
        factory = make_sessionmaker(engine)
        pts = synth.points("points", n)
        with transaction(factory) as session:
            owner = create_user(session, username="bench_exp", password=secrets.token_urlsafe(18)).id
            store_layer(session, owner, "input", pts, source={"format": "bench"})
        out = GeoDataFrame(pts.drop(columns="geometry"), geometry=pts.geometry.to_crs(synth.UTM).values,
                           crs=synth.UTM)

        def sql(*statements: str) -> float:
            t0 = time.perf_counter()
            with psycopg.connect(dsn, autocommit=True) as conn:
                for statement in statements:
                    conn.execute(statement)
            return time.perf_counter() - t0

        def run(label: str, before: tuple[str, ...] = (), after: tuple[str, ...] = ()) -> None:
            sql(*before)
            sql("VACUUM (ANALYZE) spatial_data", "CHECKPOINT")
            with factory() as session:
                ds = repo.add(session, name=f"x{uuid.uuid4().hex[:8]}", owner_id=owner, srid=synth.UTM,
                              crs=f"EPSG:{synth.UTM}", geometry_type="Point", feature_count=n,
                              fields=[{"name": "id", "type": "int"}], source={})
                t0 = time.perf_counter()
                gis_io.copy_features(session, ds.id, out, srid=synth.UTM, crs_label=f"EPSG:{synth.UTM}")
                session.commit()
                dt = time.perf_counter() - t0
                restore = sql(*after)
                print(f"{label:48s} COPY + commit {dt:7.2f} s   restoring constraints/index {restore:6.2f} s",
                      flush=True)
                repo.delete(session, ds)
                session.commit()

        with psycopg.connect(dsn, autocommit=True) as conn:
            partitioned = conn.execute("SELECT relkind = 'p' FROM pg_class WHERE relname = 'spatial_data'").fetchone()
            fks = conn.execute("SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
                               "WHERE conrelid = 'spatial_data'::regclass AND contype = 'f'").fetchall()
        if partitioned and partitioned[0]:
            run("copy_features as implemented (partition per dataset)")
        else:
            drop_fk = tuple(f"ALTER TABLE spatial_data DROP CONSTRAINT {name}" for name, _ in fks)
            add_fk = tuple(f"ALTER TABLE spatial_data ADD CONSTRAINT {name} {ddl}" for name, ddl in fks)
            drop_gist = ("DROP INDEX ix_spatial_data_geometry",)
            run("spatial_data as migrated")
            run("without the foreign key(s)", drop_fk, add_fk)
            run("without the GiST index", drop_gist, (GIST,))
            run("without foreign key(s) and GiST", drop_fk + drop_gist, add_fk + (GIST,))
        sql("CREATE TABLE plain (dataset_id uuid, fid int4, name text, data_type text, geometry geometry, "
            "attributes jsonb, crs text)", "CHECKPOINT")
        geoms = shapely.set_srid(np.asarray(out.geometry.array, dtype=object), synth.UTM)
        with psycopg.connect(dsn) as conn:
            t0 = time.perf_counter()
            wkb, attrs = shapely.to_wkb(geoms, include_srid=True), gis_io.attribute_records(out)
            ds_id, crs = uuid.uuid4(), f"EPSG:{synth.UTM}"
            with conn.cursor().copy("COPY plain FROM STDIN (FORMAT BINARY)") as copy:
                copy.set_types(["uuid", "int4", "text", "text", "bytea", "bytea", "text"])
                for i in range(len(wkb)):
                    copy.write_row((ds_id, i + 1, None, "Point", wkb[i], attrs[i], crs))
            conn.commit()
            dt = time.perf_counter() - t0
        index = sql("CREATE INDEX ON plain USING gist (geometry)")
        print(f"{'plain unindexed table (the floor)':48s} COPY + commit {dt:7.2f} s   then CREATE INDEX gist "
              f"{index:6.2f} s")
        engine.dispose()
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def area_experiment(n: int) -> None:
    from geoservice.analysis.summary import geodesic_summary

    polys = GeoSeries(synth.polygons("buffer", n, synth.BUFFER_MEAN_RADIUS_M).geometry.values, crs=4326)
    utm = polys.to_crs(synth.UTM)
    buffered = GeoSeries(shapely.buffer(utm.values, 100, quad_segs=8), crs=synth.UTM).to_crs(4326)
    gdf = GeoDataFrame(geometry=buffered, crs=4326)
    t0 = time.perf_counter()
    geodesic = geodesic_summary(gdf)["geodesic_area_m2"]
    t_geod = time.perf_counter() - t0
    t0 = time.perf_counter()
    geoms = np.asarray(gdf.geometry.values)
    minx, miny, maxx, maxy = shapely.total_bounds(geoms)
    laea = Transformer.from_crs(4326, f"+proj=laea +lat_0={(miny + maxy) / 2} +lon_0={(minx + maxx) / 2} "
                                "+ellps=WGS84 +units=m", always_xy=True)
    projected = shapely.transform(geoms, lambda xy: np.column_stack(laea.transform(xy[:, 0], xy[:, 1])))
    equal_area = float(shapely.area(projected).sum())
    t_laea = time.perf_counter() - t0
    print(f"{n:,} buffered polygons: geodesic_summary {t_geod:.2f} s ({geodesic:,.1f} m2); "
          f"vectorised LAEA {t_laea:.2f} s ({equal_area:,.1f} m2); relative difference "
          f"{abs(equal_area - geodesic) / geodesic:.1e}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=["copy", "area"])
    p.add_argument("--n", type=int, default=None, help="features (default: 1,000,000 for copy, 100,000 for area)")
    args = p.parse_args()
    if args.experiment == "copy":
        copy_experiment(args.n or 1_000_000)
    else:
        area_experiment(args.n or 100_000)


if __name__ == "__main__":
    main()

"""The ``geoservice`` command line: migrate, api, worker, mcp, import, demo."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from geoservice.config import get_settings

app = typer.Typer(help="geoservice: geospatial analysis service on PostGIS, Redis and Celery.",
                  no_args_is_help=True, add_completion=False)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def _alembic_config():  # type: ignore[no-untyped-def]
    from alembic.config import Config

    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", get_settings().database_url.replace("%", "%%"))
    return config


def ensure_database(url: str) -> bool:
    """Create the database named in ``url`` if it does not exist; return True if it was created."""
    import psycopg
    from psycopg import sql
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    admin = parsed.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (parsed.database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(parsed.database or "geoservice")))
        return True


@app.command()
def migrate(revision: str = "head") -> None:
    """Create the database if needed and run the Alembic migrations (``alembic upgrade head``)."""
    from alembic import command

    settings = get_settings()
    if ensure_database(settings.database_url):
        typer.echo("created database")
    command.upgrade(_alembic_config(), revision)
    typer.echo(f"database migrated to {revision}")


@app.command()
def api(host: str = "127.0.0.1", port: int = 8000, workers: int = 1, reload: bool = False) -> None:
    """Serve the HTTP API with uvicorn."""
    import uvicorn

    uvicorn.run("geoservice.api.app:create_app", factory=True, host=host, port=port, workers=workers,
                reload=reload, log_config=None)


@app.command()
def worker(
    concurrency: Annotated[int, typer.Option("--concurrency", "-c", help="pool processes")] = 2,
    loglevel: str = "INFO",
    name: Annotated[str | None, typer.Option(help="worker node name")] = None,
) -> None:
    """Start a Celery worker (prefork pool) on the configured queue."""
    from geoservice.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)
    from tasks.app import celery_app

    node = name or f"geoservice-{os.getpid()}@{socket.gethostname()}"
    celery_app.worker_main([
        "worker", f"--concurrency={concurrency}", f"--queues={settings.task_queue}", f"--hostname={node}",
        f"--loglevel={loglevel}", "--pool=prefork", "--without-gossip", "--without-mingle",
    ])


@app.command()
def mcp() -> None:
    """Serve the agent tools over MCP on stdin/stdout, as the user of GEOSERVICE_MCP_API_KEY."""
    import anyio

    from geoservice.agents.mcp_stdio import serve_stdio
    from geoservice.errors import GeoserviceError
    from geoservice.logging import configure_logging

    settings = get_settings()
    configure_logging(settings.log_level, json=settings.log_json)  # stderr: stdout carries the protocol
    try:
        anyio.run(serve_stdio, settings)
    except GeoserviceError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc


@app.command("create-user")
def create_user(
    username: str,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          envvar="GEOSERVICE_NEW_USER_PASSWORD")],
    role: Annotated[list[str], typer.Option(help="admin, analyst, viewer, agent (repeatable)")] = ["analyst"],  # noqa: B006
    email: str | None = None,
) -> None:
    """Create a user (``--role admin`` for the first administrator)."""
    from geoservice.db.engine import make_engine, make_sessionmaker, transaction
    from geoservice.errors import GeoserviceError
    from geoservice.services.auth import create_user as create

    engine = make_engine(get_settings(), "cli")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            user = create(session, username=username, password=password, email=email, roles=role,
                          is_superuser="admin" in role)
            typer.echo(f"created user {user.username!r} ({user.id}) with roles {', '.join(role)}")
    except GeoserviceError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()


@app.command("import")
def import_(
    path: Path,
    name: Annotated[str | None, typer.Option(help="dataset name (default: file name)")] = None,
    owner: Annotated[str | None, typer.Option(help="owner's user name (default: GEOSERVICE_DEFAULT_USERNAME)")] = None,
    crs: Annotated[str | None, typer.Option(help="CRS when the file has none")] = None,
    layer: Annotated[str | None, typer.Option(help="layer of a GeoPackage")] = None,
    make_valid: bool = False,
) -> None:
    """Import a file (GeoJSON, GeoPackage, zipped Shapefile, CSV, FlatGeobuf) as a dataset."""
    from geoservice.db.engine import make_engine, make_sessionmaker, transaction
    from geoservice.db.repositories import users
    from geoservice.errors import GeoserviceError
    from geoservice.fileio.readers import read_upload
    from geoservice.services.datasets import store_layer

    settings = get_settings()
    engine = make_engine(settings, "cli")
    try:
        with transaction(make_sessionmaker(engine)) as session:
            owner_id = users.get_or_create(session, owner or settings.default_username).id
            result = read_upload(path, path.name, layer=layer, crs=crs, max_unpacked_bytes=settings.max_unpacked_bytes)
            stored = store_layer(session, owner_id, name or path.stem, result.gdf, make_valid=make_valid,
                                 source={"format": result.source_format, "filename": path.name, "layer": result.layer})
    except GeoserviceError as exc:
        typer.echo(f"error: {exc.detail}", err=True)
        raise typer.Exit(2) from exc
    finally:
        engine.dispose()
    ds = stored.dataset
    typer.echo(f"imported {ds.feature_count} features as dataset {ds.name!r} ({ds.id}), {ds.crs}, {ds.geometry_type}")


@app.command()
def demo(
    host: str = "127.0.0.1",
    port: int = 8000,
    keep_serving: Annotated[bool, typer.Option(help="keep API and worker running afterwards")] = False,
) -> None:
    """Run the main job end to end: API + worker on the sample data, with progress bars."""
    from geoservice.demo import run_demo

    raise typer.Exit(run_demo(host=host, port=port, keep_serving=keep_serving))


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""Dataset routes: import (JSON or multipart upload), list, read, delete, features, export."""

from __future__ import annotations

import shutil
import tempfile
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import FileResponse, StreamingResponse
from psycopg import sql
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from geoservice.analysis.reproject import Reprojection
from geoservice.api.deps import CurrentUser, RequestInfoDep, SessionDep, SessionmakerDep, SettingsDep
from geoservice.api.schemas.common import MAX_OFFSET, Page
from geoservice.api.schemas.datasets import DatasetCreated, DatasetRead, DatasetUpdate, ShareCreate, ShareRead
from geoservice.db import gis_io
from geoservice.db.engine import transaction
from geoservice.db.models import Dataset
from geoservice.db.repositories import datasets as repo
from geoservice.errors import BadRequest, InvalidInput, UnsupportedMediaType
from geoservice.fileio import readers, writers
from geoservice.fileio.reading import safe_upload_name
from geoservice.services import auth as auth_service
from geoservice.services import datasets as service
from geoservice.services import features as fq
from geoservice.services.access import dataset_visible
from geoservice.text import find_bad_text

router = APIRouter(prefix="/datasets", tags=["datasets"])

AllowBallpark = Annotated[bool, Query(description=(
    "When the most accurate transformation to 'crs' (or from 'bbox-crs') needs a grid file that is not "
    "installed: true (the default for reads) uses the best available one, and the Geoservice-Transformation* "
    "headers and the GeoJSON 'transformation' member name it, with its accuracy and the missing grids; false "
    "refuses with 422 naming the grid, as a reproject task does by default."))]


def _read(request: Request, dataset: Dataset) -> DatasetRead:
    out = DatasetRead.model_validate(dataset)
    base = str(request.url_for("get_dataset", dataset_id=str(dataset.id)))
    out.links = {"self": base, "features": f"{base}/features", "export": f"{base}/export?format=geojson"}
    return out


def _bool(value: Any, name: str) -> bool:
    if isinstance(value, bool) or value is None:
        return bool(value)
    if str(value).lower() in {"1", "true", "yes", "on"}:
        return True
    if str(value).lower() in {"0", "false", "no", "off", ""}:
        return False
    raise InvalidInput(f"{name}: expected true or false, got {value!r}", field=name)


@router.post("", status_code=201, response_model=DatasetCreated)
async def create_dataset(
    request: Request, response: Response, session: SessionDep, principal: CurrentUser, settings: SettingsDep,
    info: RequestInfoDep,
) -> DatasetCreated:
    """Import a dataset from a GeoJSON FeatureCollection body or a multipart file upload.

    JSON body: ``{"name": ..., "type": "FeatureCollection", "features": [...], "crs"?: ..., "make_valid"?: bool}``.
    Multipart: ``file`` (GeoJSON, GeoPackage, zipped Shapefile, CSV, FlatGeobuf) plus optional form fields
    ``name``, ``crs``, ``layer``, ``make_valid``, ``x_field``, ``y_field``, ``wkt_field``.
    """
    principal.require_write("create datasets")
    owner = principal.user_id
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type in {"application/json", "application/geo+json"}:
        stored = await _from_json(request, session, owner)
    elif content_type == "multipart/form-data":
        stored = await _from_upload(request, session, owner, settings.max_unpacked_bytes)
    else:
        raise UnsupportedMediaType(
            f"Content-Type {content_type or '(none)'} is not supported; send application/json "
            "(a GeoJSON FeatureCollection) or multipart/form-data with a 'file'",
            field="content-type",
        )
    auth_service.log_activity(session, "dataset_created", info, owner, dataset_id=str(stored.dataset.id))
    out = DatasetCreated(**_read(request, stored.dataset).model_dump(), repaired=stored.repaired,
                         warnings=stored.warnings)
    response.headers["Location"] = out.links["self"]
    return out


async def _from_json(request: Request, session: Any, owner: uuid.UUID) -> service.StoredLayer:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"body: not valid JSON ({exc})", field="body") from exc
    if not isinstance(body, dict):
        raise InvalidInput("body: expected a GeoJSON FeatureCollection object", field="body")
    name = body.get("name") or request.query_params.get("name")
    crs = request.query_params.get("crs")
    if isinstance(body.get("crs"), str):
        crs = body["crs"]
    make_valid = _bool(body.get("make_valid", request.query_params.get("make_valid")), "make_valid")

    def work() -> service.StoredLayer:
        service.check_name(session, owner, name)
        result = readers.read_feature_collection(body, crs=crs)
        stored = service.store_layer(session, owner, name, result.gdf, make_valid=make_valid,
                                     source={"format": "geojson", "via": "body"})
        stored.warnings.extend(result.warnings)
        return stored

    return await run_in_threadpool(work)


async def _from_upload(request: Request, session: Any, owner: uuid.UUID, max_unpacked: int) -> service.StoredLayer:
    form = await request.form(max_files=1, max_fields=20)
    upload = form.get("file")
    if not isinstance(upload, UploadFile) or not upload.filename:
        raise InvalidInput("file: a multipart field 'file' with a filename is required", field="file")
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    found = find_bad_text(fields)
    if found:
        raise InvalidInput(f"{found[0]}: {found[1]}", field=found[0])
    filename = safe_upload_name(upload.filename)
    name = fields.get("name") or Path(filename).stem
    make_valid = _bool(fields.get("make_valid", request.query_params.get("make_valid")), "make_valid")

    def work() -> service.StoredLayer:
        service.check_name(session, owner, name)
        workdir = Path(tempfile.mkdtemp(prefix="geoservice-upload-"))
        try:
            path = workdir / filename
            with path.open("wb") as out:
                shutil.copyfileobj(upload.file, out, length=1 << 20)
            result = readers.read_upload(
                path, filename, layer=fields.get("layer"), crs=fields.get("crs") or request.query_params.get("crs"),
                x_field=fields.get("x_field"), y_field=fields.get("y_field"), wkt_field=fields.get("wkt_field"),
                max_unpacked_bytes=max_unpacked,
            )
            stored = service.store_layer(
                session, owner, name, result.gdf, make_valid=make_valid,
                source={"format": result.source_format, "filename": filename, "layer": result.layer},
            )
            stored.warnings.extend(result.warnings)
            return stored
        finally:
            shutil.rmtree(workdir, ignore_errors=True)

    try:
        return await run_in_threadpool(work)
    finally:
        await form.close()


@router.get("", response_model=Page[DatasetRead])
def list_datasets(
    request: Request,
    session: SessionDep,
    principal: CurrentUser,
    settings: SettingsDep,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET)] = 0,
) -> Page[DatasetRead]:
    """List the datasets you can read (yours, shared with you, public), newest first."""
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    rows, total = repo.list_page(session, dataset_visible(principal), limit=limit, offset=offset)
    links = {}
    if offset + limit < total:
        links["next"] = str(request.url.include_query_params(limit=limit, offset=offset + limit))
    return Page[DatasetRead](data=[_read(request, d) for d in rows], count=total, limit=limit, offset=offset,
                             links=links)


@router.get("/{dataset_id}", response_model=DatasetRead, name="get_dataset")
def get_dataset(request: Request, dataset_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> DatasetRead:
    """Describe one dataset."""
    return _read(request, service.get_dataset(session, dataset_id, principal))


@router.patch("/{dataset_id}", response_model=DatasetRead)
def update_dataset(request: Request, dataset_id: uuid.UUID, body: DatasetUpdate, session: SessionDep,
                   principal: CurrentUser) -> DatasetRead:
    """Rename, describe, or make public (read-only for everyone) or private again."""
    dataset = service.get_dataset(session, dataset_id, principal, write=True)
    if body.name is not None and body.name != dataset.name:
        dataset.name = service.check_name(session, dataset.owner_id, body.name)
    if body.description is not None:
        dataset.description = body.description
    if body.is_public is not None:
        dataset.is_public = body.is_public
    session.flush()
    return _read(request, dataset)


@router.delete("/{dataset_id}", status_code=204)
def delete_dataset(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentUser,
                   info: RequestInfoDep) -> Response:
    """Delete a dataset and all its features."""
    repo.delete(session, service.get_dataset(session, dataset_id, principal, write=True))
    auth_service.log_activity(session, "dataset_deleted", info, principal.user_id, dataset_id=str(dataset_id))
    return Response(status_code=204)


@router.get("/{dataset_id}/shares", response_model=list[ShareRead])
def list_shares(dataset_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> list[ShareRead]:
    """The users this dataset is shared with (read-only access)."""
    dataset = service.get_dataset(session, dataset_id, principal, write=True)
    return [ShareRead(user_id=u.id, username=u.username) for u in service.shared_with(session, dataset)]


@router.post("/{dataset_id}/shares", status_code=201, response_model=ShareRead)
def add_share(dataset_id: uuid.UUID, body: ShareCreate, session: SessionDep, principal: CurrentUser) -> ShareRead:
    """Share the dataset read-only with a named user."""
    dataset = service.get_dataset(session, dataset_id, principal, write=True)
    user = service.share(session, dataset, body.username)
    return ShareRead(user_id=user.id, username=user.username)


@router.delete("/{dataset_id}/shares/{user_id}", status_code=204)
def remove_share(dataset_id: uuid.UUID, user_id: uuid.UUID, session: SessionDep, principal: CurrentUser) -> Response:
    """Stop sharing the dataset with a user."""
    service.unshare(session, service.get_dataset(session, dataset_id, principal, write=True), user_id)
    return Response(status_code=204)


@router.get("/{dataset_id}/features")
def get_features(
    request: Request,
    dataset_id: uuid.UUID,
    session: SessionDep,
    principal: CurrentUser,
    settings: SettingsDep,
    bbox: str | None = None,
    bbox_crs: Annotated[str | None, Query(alias="bbox-crs")] = None,
    limit: Annotated[int | None, Query(ge=1)] = None,
    offset: Annotated[int | None, Query(ge=0, le=MAX_OFFSET)] = None,
    cursor: Annotated[int | None, Query(description="return features with fid greater than this")] = None,
    properties: Annotated[str | None, Query(description="comma-separated property names to return")] = None,
    filter: Annotated[list[str] | None, Query(description="field=value, field>value, field~text (AND)")] = None,
    crs: Annotated[str | None, Query(description="output CRS: EPSG code, 'native', WKT; default CRS84")] = None,
    allow_ballpark: AllowBallpark = True,
) -> Response:
    """Return features as a GeoJSON FeatureCollection (CRS84 unless ``crs`` says otherwise).

    Coordinates are transformed as a ``reproject`` task would (one operation for the dataset's stored
    extent); the operation is named in the ``Geoservice-Transformation*`` headers and the
    ``transformation`` member.
    """
    dataset = service.get_dataset(session, dataset_id, principal)
    if offset is not None and cursor is not None:
        raise InvalidInput("cursor: use either offset or cursor, not both", field="cursor")
    limit = min(limit or settings.page_size_default, settings.page_size_max)
    native = service.dataset_crs(dataset)
    plan = service.read_reprojection(dataset, service.output_crs(dataset, crs), allow_ballpark=allow_ballpark)
    query = fq.FeatureQuery()
    if bbox is not None:
        box = fq.parse_bbox(bbox)
        box_crs = service.CRS84 if bbox_crs is None else service.output_crs(dataset, bbox_crs)
        fq.add_bbox(query, dataset, fq.bbox_to_native(box, box_crs, native, allow_ballpark=allow_ballpark,
                                                      area_of_interest=service.extent_area_of_interest(dataset)))
    fq.add_filters(query, dataset, filter or [])
    if cursor is not None:
        query.where.append(sql.SQL("fid > %(cursor)s"))
        query.params["cursor"] = cursor
    selected = _select_properties(dataset, properties)
    order = sql.SQL("ORDER BY fid LIMIT %(limit)s OFFSET %(offset)s")
    gdf, fids = gis_io.read_features(session, dataset.id, native, dataset.fields, where=query.clause(),
                                     params={**query.params, "limit": limit + 1, "offset": offset or 0},
                                     order_limit=order)
    more = len(fids) > limit
    gdf, fids = gdf.iloc[:limit], fids[:limit]
    gdf = service.to_crs(gdf[[*selected, gdf.geometry.name]], plan.target, plan=plan)
    links = _feature_links(request, more, fids, limit, offset, cursor)
    members = {"numberReturned": len(fids), "links": links, **_transformation_member(plan)}
    body = b"".join(writers.stream_geojson([(gdf, fids)], crs_member=_crs_member(plan.target),
                                           extra_members=members))
    return Response(body, media_type="application/geo+json", headers=_transformation_headers(plan))


def _select_properties(dataset: Dataset, properties: str | None) -> list[str]:
    names = [f["name"] for f in dataset.fields]
    if properties is None:
        return names
    wanted = [p.strip() for p in properties.split(",") if p.strip()]
    unknown = [p for p in wanted if p not in names]
    if unknown:
        raise InvalidInput(f"properties: unknown field(s) {unknown}; fields are {names}", field="properties")
    return wanted


def _feature_links(request: Request, more: bool, fids: list[int], limit: int, offset: int | None,
                   cursor: int | None) -> list[dict[str, str]]:
    links = [{"rel": "self", "href": str(request.url), "type": "application/geo+json"}]
    if more and fids:
        if offset is not None:
            nxt = request.url.include_query_params(offset=offset + limit)
        else:
            nxt = request.url.include_query_params(cursor=fids[-1])
        links.append({"rel": "next", "href": str(nxt), "type": "application/geo+json"})
    del cursor
    return links


def _transformation_member(plan: Reprojection) -> dict[str, Any]:
    """The ``transformation`` foreign member (as a task's result metadata records it), if one was applied."""
    return {} if plan.transformation is None else {"transformation": plan.transformation}


def _transformation_headers(plan: Reprojection) -> dict[str, str]:
    """Name the transformation applied: PROJ's description, accuracy in metres (or unknown), pipeline."""
    info = plan.transformation
    if info is None:
        return {}
    accuracy = info["accuracy_m"]
    headers = {
        "Geoservice-Transformation": _header_text(info["description"]),
        "Geoservice-Transformation-Accuracy": "unknown" if accuracy is None else format(accuracy, "g"),
        "Geoservice-Transformation-Pipeline": _header_text(info["pipeline"]),
    }
    if info["grids_missing"]:  # allow_ballpark was used: the best operation needs these grids
        headers["Geoservice-Transformation-Grids-Missing"] = _header_text(", ".join(info["grids_missing"]))
    return headers


def _header_text(text: str) -> str:
    # Header values are ASCII here: PROJ names may carry accents; control characters would split headers.
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return " ".join(ascii_text.split())


def _crs_member(target: Any) -> dict[str, Any] | None:
    """RFC 7946 has no crs member; for a non-CRS84 answer we name the CRS the old (2008) way."""
    if service.same_crs(target, service.CRS84):
        return None
    return writers.geojson_crs_member(target)


@router.get("/{dataset_id}/export")
def export_dataset(
    dataset_id: uuid.UUID,
    session: SessionDep,
    factory: SessionmakerDep,
    principal: CurrentUser,
    settings: SettingsDep,
    format: Annotated[str, Query(description="geojson, geojsonseq, gpkg, shp (zipped), fgb")] = "geojson",
    crs: Annotated[str | None, Query(description="default: CRS84 for GeoJSON, native for files")] = None,
    allow_ballpark: AllowBallpark = True,
) -> Response:
    """Export a whole dataset, streamed in batches so memory stays bounded.

    The transformation to ``crs`` is chosen once, from the dataset's stored extent, and every batch uses
    it; it is named in the ``Geoservice-Transformation*`` headers.
    """
    dataset = service.get_dataset(session, dataset_id, principal)
    if format not in writers.EXPORT_FORMATS:
        raise InvalidInput(f"format: unknown export format {format!r}; use one of {sorted(writers.EXPORT_FORMATS)}",
                           field="format")
    media_type, ext = writers.EXPORT_FORMATS[format]
    geojson = format in {"geojson", "geojsonseq"}
    target = service.output_crs(dataset, crs if crs is not None or geojson else "native")
    plan = service.read_reprojection(dataset, target, allow_ballpark=allow_ballpark)
    filename = f"{dataset.name}{ext}"
    headers = {"Content-Disposition": f'attachment; filename="{_safe_filename(filename)}"',
               **_transformation_headers(plan)}
    batches = _batches(factory, dataset, plan, settings.export_batch_size)
    if format == "geojson":
        members = {"name": dataset.name, **_transformation_member(plan)}
        return StreamingResponse(writers.stream_geojson(batches, crs_member=_crs_member(target),
                                                        extra_members=members),
                                 media_type=media_type, headers=headers)
    if format == "geojsonseq":
        return StreamingResponse(writers.stream_geojsonseq(batches), media_type=media_type, headers=headers)
    workdir = Path(tempfile.mkdtemp(prefix="geoservice-export-"))
    try:
        path = writers.write_file(batches, format, directory=workdir, layer_name=dataset.name, crs=target)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    return FileResponse(path, media_type=media_type, headers=headers,
                        background=BackgroundTask(shutil.rmtree, workdir, ignore_errors=True))


def _batches(factory: Any, dataset: Dataset, plan: Reprojection, batch_size: int
             ) -> Iterator[tuple[Any, list[int]]]:
    with transaction(factory) as session:
        for gdf, fids in gis_io.iter_feature_batches(session, dataset.id, plan.source, dataset.fields,
                                                     batch_size=batch_size):
            yield service.to_crs(gdf, plan.target, plan=plan), fids


def _safe_filename(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:200] or "dataset"

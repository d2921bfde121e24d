"""SuperMap dataset analyses (``datasets/{name@source}/buffer`` and ``.../overlay``) as native tasks.

``name@source`` is the caller's dataset ``name`` (the datasource part is accepted and ignored). Filters
(``attributeFilter``, ``ids``) become ``InputRef.where`` trees, checked against the dataset's fields and
run once (a count) before the task is submitted, so a bad filter fails the request, not the task.
Distances of dataset buffers honour ``radiusUnit`` (metres on the ground, as iServer); dataset buffers are
always round-ended (iServer documents FLAT as unsupported there) and use ``leftDistance``.
"""

from __future__ import annotations

from typing import Any

from shapely.geometry import mapping
from sqlalchemy.orm import Session

from geoservice.config import Settings
from geoservice.db.models import AnalysisTask, Dataset
from geoservice.db.repositories import datasets as dataset_repo
from geoservice.errors import BadRequest
from geoservice.iserver import payloads
from geoservice.iserver.decode import from_supermap
from geoservice.services import selection
from geoservice.services.access import Principal
from geoservice.supermap.analyst import check_operation, parse_buffer_setting
from geoservice.supermap.filters import combine, ids_filter, parse_filter
from geoservice.supermap.service import return_option, submit

POLYGONAL = {"Polygon", "MultiPolygon"}
REGION_SOURCE_ONLY = {"union", "update", "xor"}


def find_dataset(session: Session, principal: Principal, ref: Any, where: str) -> Dataset:
    """The caller's dataset named by ``name@datasource`` (iServer's error when missing: code 400)."""
    if not isinstance(ref, str) or not ref.split("@", 1)[0].strip():
        raise BadRequest(f"{where}: a dataset name (name@datasource) is required")
    dataset = dataset_repo.get_by_name(session, principal.user_id, ref.split("@", 1)[0].strip())
    if dataset is None:
        raise BadRequest(f"dataset {ref} does not exist ({where})")
    return dataset


def selection_tree(session: Session, dataset: Dataset, filt: Any, where: str, *,
                   required: bool) -> dict[str, Any] | None:
    """Turn a ``FilterParameter`` into a checked filter tree (None: every feature)."""
    if filt is None:
        return None
    if not isinstance(filt, dict):
        raise BadRequest(f"{where} must be a FilterParameter object")
    for key in ("joinItems", "linkItems"):
        if filt.get(key):
            raise BadRequest(f"{where}.{key} is not supported")
    text = filt.get("attributeFilter")
    if text is not None and not isinstance(text, str):
        raise BadRequest(f"{where}.attributeFilter must be a string")
    tree = combine(parse_filter(text), ids_filter(filt.get("ids"), where))
    if tree is None:
        return None
    selection.compile_where(tree, dataset)  # unknown fields and type mismatches fail here
    if required and selection.count_selected(session, dataset, tree) == 0:
        raise BadRequest(f"{where} selects no features of dataset {dataset.name}")
    return tree


def _fields(dataset: Dataset, names: Any, where: str) -> list[str] | None:
    """Attribute names to keep; None or [] keep every field; ``Sm*`` system fields are skipped."""
    if names is None or names == []:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BadRequest(f"{where} must be an array of field names")
    known = {f["name"].lower() for f in dataset.fields or []}
    wanted = [n for n in names if n.lower() in known or not n.lower().startswith("sm")]
    return [selection.resolve_field(dataset, n, where)["name"] for n in wanted]


def _output_name(session: Session, principal: Principal, option: dict[str, Any], inputs: list[Dataset]) -> str | None:
    """The result dataset name of ``dataReturnOption`` (None: generated); replaces an existing one of the
    caller's when ``deleteExistResultDataset`` (the default), as iServer does."""
    name = option["dataset"]
    if option["dataReturnMode"] == "RECORDSET_ONLY" or not name:
        return None
    existing = dataset_repo.get_by_name(session, principal.user_id, name)
    if existing is None:
        return name
    if existing.id in {d.id for d in inputs}:
        raise BadRequest(f"dataReturnOption.dataset {name!r} is an input of this analysis; choose another name")
    if not option["deleteExistResultDataset"]:
        raise BadRequest(f"dataReturnOption.dataset {name!r} already exists; set deleteExistResultDataset to "
                         "replace it")
    dataset_repo.delete(session, existing)
    return name


def _flag(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise BadRequest(f"{key} must be true or false, got {value!r}")
    return value


def dataset_buffer(session: Session, settings: Settings, principal: Principal, dataset_ref: str, body: Any,
                   record: dict[str, Any]) -> AnalysisTask:
    """Submit ``POST datasets/{dataset}/buffer`` as a buffer task."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    source = find_dataset(session, principal, dataset_ref, "dataset")
    spec = parse_buffer_setting(body.get("bufferAnalystParameter"), "bufferAnalystParameter")
    tree = selection_tree(session, source, body.get("filterQueryParameter"), "filterQueryParameter", required=True)
    option = return_option(body.get("dataReturnOption"))
    union = _flag(body, "isUnion", False)
    retained = _flag(body, "isAttributeRetained", True)
    ref: dict[str, Any] = {"dataset_id": str(source.id)}
    if tree is not None:
        ref["where"] = tree
    if not retained:
        ref["fields"] = []
    params = {"input": ref, "distance": {"value": spec.metres(spec.left), "unit": "m"}, "quad_segs": spec.quad_segs,
              "dissolve": union, "output_name": _output_name(session, principal, option, [source])}
    return submit(session, settings, principal, "buffer", params, record)


def _operate(session: Session, principal: Principal, body: dict[str, Any],
             source: Dataset) -> tuple[dict[str, Any], Dataset | None]:
    name, regions = body.get("operateDataset"), body.get("operateRegions") or []
    if bool(name) == bool(regions):
        raise BadRequest("give exactly one of operateDataset or operateRegions")
    if name:
        operate = find_dataset(session, principal, name, "operateDataset")
        if operate.geometry_type not in POLYGONAL:
            raise BadRequest(f"operateDataset {name} must hold regions (polygons), it holds {operate.geometry_type}")
        ref: dict[str, Any] = {"dataset_id": str(operate.id)}
        tree = selection_tree(session, operate, body.get("operateDatasetFilter"), "operateDatasetFilter",
                              required=False)
        if tree is not None:
            ref["where"] = tree
        return ref, operate
    if not isinstance(regions, list):
        raise BadRequest("operateRegions must be an array of REGION geometries")
    default_epsg = payloads.epsg_of(source.crs)
    decoded = [from_supermap(g, f"operateRegions[{i}]", epsg=default_epsg) for i, g in enumerate(regions)]
    if any(d.kind != "REGION" for d in decoded) or len({d.epsg for d in decoded}) > 1:
        raise BadRequest("operateRegions must be REGION geometries in one coordinate system")
    features = [{"type": "Feature", "properties": {}, "geometry": mapping(d.geom)} for d in decoded]
    epsg = decoded[0].epsg
    crs = f"EPSG:{epsg}" if epsg else source.crs
    return {"geojson": {"type": "FeatureCollection", "features": features}, "crs": crs}, None


def dataset_overlay(session: Session, settings: Settings, principal: Principal, dataset_ref: str, body: Any,
                    record: dict[str, Any]) -> AnalysisTask:
    """Submit ``POST datasets/{dataset}/overlay`` as an overlay task."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    source = find_dataset(session, principal, dataset_ref, "dataset")
    op = check_operation(body.get("operation")).lower()
    if op in REGION_SOURCE_ONLY and source.geometry_type not in POLYGONAL:
        raise BadRequest(f"{op.upper()} needs a region (polygon) source dataset; {source.name} holds "
                         f"{source.geometry_type}")
    tree = selection_tree(session, source, body.get("sourceDatasetFilter"), "sourceDatasetFilter", required=True)
    overlay_ref, operate = _operate(session, principal, body, source)
    option = return_option(body.get("dataReturnOption"))
    tolerance = body.get("tolerance")
    if tolerance is not None and (isinstance(tolerance, bool) or not isinstance(tolerance, int | float)
                                  or tolerance < 0):
        raise BadRequest(f"tolerance must be a number >= 0, got {tolerance!r}")
    ref: dict[str, Any] = {"dataset_id": str(source.id)}
    if tree is not None:
        ref["where"] = tree
    params: dict[str, Any] = {
        "input": ref, "overlay": overlay_ref, "operation": op,
        "input_fields": _fields(source, body.get("sourceDatasetFields"), "sourceDatasetFields"),
        "overlay_fields": _fields(operate, body.get("operateDatasetFields"), "operateDatasetFields")
        if operate is not None else None,
        "grid_size": float(tolerance) if tolerance else None,
        "output_name": _output_name(session, principal, option, [source, *([operate] if operate else [])]),
    }
    return submit(session, settings, principal, "overlay", {k: v for k, v in params.items() if v is not None},
                  record)

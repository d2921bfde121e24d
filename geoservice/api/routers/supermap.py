"""The SuperMap iServer-compatible REST surface (issue #5), mounted at the app root under ``/iserver``.

``/iserver/services/{service}/restjsr/spatialanalyst/...``: ``geometry/buffer``, ``geometry/overlay``,
``geometry/overlay/batch``, ``datasets/{name@source}/buffer``, ``datasets/{name@source}/overlay`` (POST),
and their result children ``.../{id}`` (GET); ``/iserver/services/{service}/rest/data/coordtransfer``
(POST, child GET) and ``/iserver/services/{service}/restjsr/v1/geometry/coordtransfer`` (POST);
``/iserver/services.json``. Every path works with and without ``.json`` / ``.rjson``; any service name
works. Geometry analyses run in the API process; dataset analyses run as tasks on the workers. See
shared/reference/supermap-rest.md for the shapes and geoservice/supermap/ for the translation.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from geoservice.api.deps import CurrentUser, SessionDep, SessionmakerDep, SettingsDep
from geoservice.api.supermap_http import METHODS, OrjsonResponse, SupermapRoute, catch_all, error_response
from geoservice.config import Settings
from geoservice.db.models import AnalysisTask
from geoservice.errors import NotFound
from geoservice.iserver.results import create_child, error_body
from geoservice.services import analyses
from geoservice.services.access import Principal
from geoservice.supermap import datasets as supermap_datasets
from geoservice.supermap import inline
from geoservice.supermap import service as service
from geoservice.supermap.parse import parse_body

router = APIRouter(route_class=SupermapRoute, tags=["supermap"])
SERVICE = "/iserver/services/{service}"
ANALYST = SERVICE + "/restjsr/spatialanalyst"
SUFFIXES = ("", ".json", ".rjson")
#: How long a POST on a dataset analysis waits for its task by default (``Settings.supermap_wait_s``).

ReturnContent = Annotated[bool, Query(alias="returnContent", description="return the result itself")]
AsyncReturn = Annotated[bool, Query(alias="asynchronousReturn", description="return the child at once")]


def get_wait_s(settings: SettingsDep) -> float:
    """Seconds a ``returnContent`` POST on a dataset analysis waits for its task (then 504)."""
    return settings.supermap_wait_s


WaitDep = Annotated[float, Depends(get_wait_s)]


def _add(path: str, endpoint: Callable[..., Any], methods: list[str], name: str) -> None:
    for suffix in SUFFIXES:
        router.add_api_route(path + suffix, endpoint, methods=methods, name=name + suffix,
                             include_in_schema=suffix == ".json", response_class=OrjsonResponse)


def _location(request: Request, service_name: str, root: str, resource: str, child: str) -> str:
    base = str(request.base_url).rstrip("/")
    return f"{base}/iserver/services/{service_name}/{root}/{resource}/{child}.json"


def _strip_suffix(value: str) -> str:
    for suffix in (".rjson", ".json"):
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


async def _body(request: Request) -> Any:
    return parse_body(await request.body(), request.headers.get("content-type"))


# --- inline analyses (computed here, recorded as successful tasks) -------------------------------------

async def _inline(request: Request, service_name: str, root: str, resource: str, principal: Principal,
                  session: Session, settings: Settings, translate: Callable[[Any], inline.GeometryRun], *,
                  content: bool, asynchronous: bool) -> Response:
    body = await _body(request)
    record = service.request_record(service_name, resource, dict(request.query_params), body)

    def work() -> tuple[Any, uuid.UUID]:
        # The session dependency commits before the response is sent (nothing is written on an error).
        done = service.run_geometry(session, settings, principal, translate(body), record)
        return done.supermap_result, done.task_id

    result, task_id = await run_in_threadpool(work)
    if content and not asynchronous:
        return OrjsonResponse(result)
    location = _location(request, service_name, root, resource, str(task_id))
    return OrjsonResponse(create_child(str(task_id), location), status_code=201, headers={"Location": location})


async def geometry_buffer(request: Request, service: str, principal: CurrentUser, session: SessionDep,
                          settings: SettingsDep, return_content: ReturnContent = False,
                          asynchronous_return: AsyncReturn = False,
                          honour: Annotated[bool | None, Query(
                              alias="honourRadiusUnit",
                              description="distances in radiusUnit on the ground instead of CRS units")] = None,
                          ) -> Response:
    """Buffer a geometry. The distance is in the geometry's CRS units (degrees for EPSG:4326), as in iServer,
    unless ``honourRadiusUnit=true`` (or the ``supermap_honour_radius_unit`` setting)."""
    honour_unit = settings.supermap_honour_radius_unit if honour is None else honour
    return await _inline(request, service, "restjsr/spatialanalyst", "geometry/buffer", principal, session, settings,
                         lambda body: inline.geometry_buffer(body, honour_radius_unit=honour_unit),
                         content=return_content, asynchronous=asynchronous_return)


async def geometry_overlay(request: Request, service: str, principal: CurrentUser, session: SessionDep,
                           settings: SettingsDep, return_content: ReturnContent = False,
                           asynchronous_return: AsyncReturn = False) -> Response:
    """Overlay two geometries: CLIP, ERASE, IDENTITY, INTERSECT, UNION, UPDATE or XOR."""
    return await _inline(request, service, "restjsr/spatialanalyst", "geometry/overlay", principal, session, settings,
                         inline.geometry_overlay, content=return_content, asynchronous=asynchronous_return)


async def geometry_overlay_batch(request: Request, service: str, principal: CurrentUser, session: SessionDep,
                                 settings: SettingsDep, return_content: ReturnContent = False,
                                 asynchronous_return: AsyncReturn = False,
                                 ignore: Annotated[bool, Query(alias="ignoreAnalystParam")] = False) -> Response:
    """Overlay pairs of geometries; the result is an array."""
    return await _inline(request, service, "restjsr/spatialanalyst", "geometry/overlay/batch", principal, session,
                         settings,
                         lambda body: inline.geometry_overlay_batch(body, ignore_analyst_param=ignore),
                         content=return_content, asynchronous=asynchronous_return)


async def data_coordtransfer(request: Request, service: str, principal: CurrentUser, session: SessionDep,
                             settings: SettingsDep, return_content: ReturnContent = False,
                             asynchronous_return: AsyncReturn = False) -> Response:
    """Data service coordinate transfer: creates a ``coordtransferResult`` child (or returns it)."""
    return await _inline(request, service, "rest", "data/coordtransfer", principal, session, settings,
                         inline.coordtransfer, content=return_content, asynchronous=asynchronous_return)


async def geometry_coordtransfer(request: Request, service: str, principal: CurrentUser,
                                 session: SessionDep, settings: SettingsDep) -> Response:
    """Geometry service coordinate transfer: returns the transformed geometries."""
    return await _inline(request, service, "restjsr/v1", "geometry/coordtransfer", principal, session, settings,
                         inline.coordtransfer, content=True, asynchronous=False)


# --- dataset analyses (tasks on the workers) -----------------------------------------------------------

Submitter = Callable[..., AnalysisTask]


async def _dataset(request: Request, service_name: str, dataset: str, kind: str, submitter: Submitter,
                   principal: Principal, session: Session, factory: sessionmaker[Session], settings: Settings,
                   wait_s: float, *, content: bool, asynchronous: bool) -> Response:
    body = await _body(request)
    resource = f"datasets/{dataset}/{kind}"
    record = service.request_record(service_name, resource, dict(request.query_params), body)
    task = await run_in_threadpool(submitter, session, settings, principal, dataset, body, record)
    location = _location(request, service_name, "restjsr/spatialanalyst", resource, str(task.id))
    child = create_child(str(task.id), location)
    if asynchronous:
        return OrjsonResponse(child, status_code=201, headers={"Location": location})
    # The session dependency commits (and enqueues) when this returns; the answer waits after that, so
    # no database connection is held while the task runs.
    return TaskAnswer(factory, principal, task.id, wait_s, content=content, child=child, location=location)


class TaskAnswer(Response):
    """The answer to a dataset analysis POST, decided once its task is final or ``wait_s`` has passed.

    Sent after the request's own session was committed and closed: the result (``returnContent``), the
    CreateChild (201), the task's error, or, past the wait with ``returnContent``, iServer's error 504 (a
    CreateChild would be taken for the result by the iClient).
    """

    def __init__(self, factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID, wait_s: float, *,
                 content: bool, child: dict[str, Any], location: str) -> None:
        super().__init__(status_code=201, headers={"Location": location})
        self.factory, self.principal, self.task_id, self.wait_s = factory, principal, task_id, wait_s
        self.content, self.child, self.location = content, child, location

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            response = await self._decide()
        except Exception as exc:  # sent outside the route's handler: convert here too
            response = error_response(Request(scope), exc)
        for key, value in self.headers.items():
            if key.startswith("access-control-"):
                response.headers[key] = value
        await response(scope, receive, send)

    async def _decide(self) -> Response:
        answer = await _wait(self.factory, self.principal, self.task_id, self.wait_s)
        if answer is None and self.content:
            message = (f"the analysis did not finish within {self.wait_s:g} s; it goes on as task {self.task_id}: "
                       f"GET {self.location}")
            return OrjsonResponse(error_body(504, message), status_code=504, headers={"Location": self.location})
        if answer is not None and (self.content or answer.status >= 300):
            return OrjsonResponse(answer.body, status_code=answer.status)
        return OrjsonResponse(self.child, status_code=201, headers={"Location": self.location})


async def _wait(factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID,
                wait_s: float) -> service.View | None:
    """The task's answer once it is final, or None when ``wait_s`` passes first."""
    if await analyses.wait_final(factory, principal, task_id, timeout=wait_s) is None:
        return None
    return await run_in_threadpool(_final_view, factory, principal, task_id)


def _final_view(factory: sessionmaker[Session], principal: Principal, task_id: uuid.UUID) -> service.View:
    with factory() as session:
        return service.view(analyses.get_task(session, task_id, principal))


async def dataset_buffer(request: Request, service: str, dataset: str, principal: CurrentUser, session: SessionDep,
                         factory: SessionmakerDep, settings: SettingsDep, wait_s: WaitDep,
                         return_content: ReturnContent = False, asynchronous_return: AsyncReturn = False
                         ) -> Response:
    """Buffer a stored dataset (``name@source``: your dataset ``name``); runs as a task on the workers."""
    return await _dataset(request, service, dataset, "buffer", supermap_datasets.dataset_buffer, principal,
                          session, factory, settings, wait_s, content=return_content,
                          asynchronous=asynchronous_return)


async def dataset_overlay(request: Request, service: str, dataset: str, principal: CurrentUser, session: SessionDep,
                          factory: SessionmakerDep, settings: SettingsDep, wait_s: WaitDep,
                          return_content: ReturnContent = False, asynchronous_return: AsyncReturn = False
                          ) -> Response:
    """Overlay a stored dataset with another (``operateDataset``) or with regions (``operateRegions``)."""
    return await _dataset(request, service, dataset, "overlay", supermap_datasets.dataset_overlay, principal,
                          session, factory, settings, wait_s, content=return_content,
                          asynchronous=asynchronous_return)


# --- result children -----------------------------------------------------------------------------------

def _child(resource: Callable[[dict[str, str]], str]) -> Callable[..., Any]:
    async def get_child(request: Request, principal: CurrentUser, session: SessionDep) -> Response:
        params = dict(request.path_params)
        result_id = _strip_suffix(params.pop("result_id"))
        wanted = resource(params)

        def work() -> service.View:
            task = service.find_task(session, principal, result_id, wanted)
            if task is None:
                raise NotFound(f"the result {result_id} of {wanted} does not exist")
            return service.view(task)

        answer = await run_in_threadpool(work)
        return OrjsonResponse(answer.body, status_code=answer.status)

    get_child.__doc__ = "A result: the analysis result when finished, its state while it runs, or its error."
    return get_child


# --- the service directory -----------------------------------------------------------------------------

def services_list(request: Request, _principal: CurrentUser) -> Response:
    """``/iserver/services.json``: the spatial analysis, data and geometry services (iserver-cli looks here).
    It needs a login like every other route (a token as ``?token=`` or a ``token`` header)."""
    base = str(request.base_url).rstrip("/") + "/iserver/services"
    impl = "com.supermap.services.components.impl."
    entries = [("spatialanalyst-geoservice", "restjsr", impl + "SpatialAnalystImpl"),
               ("data-geoservice", "rest", impl + "DataImpl"),
               ("geometry", "restjsr", impl + "GeometryImpl")]
    body = [{"name": f"{name}/{interface}", "componentName": name, "componentSetName": None,
             "componentType": kind, "interfaceName": interface,
             "interfaceType": "com.supermap.services.rest.JaxrsServletForJersey", "isClusterService": False,
             "isDataflowService": False, "isSet": False, "isStreamingService": False, "status": "OK",
             "url": f"{base}/{name}/{interface}"} for name, interface, kind in entries]
    return OrjsonResponse(body)


_add("/iserver/services", services_list, ["GET"], "supermap_services")
_add(ANALYST + "/geometry/buffer", geometry_buffer, ["POST"], "supermap_geometry_buffer")
_add(ANALYST + "/geometry/overlay/batch", geometry_overlay_batch, ["POST"], "supermap_geometry_overlay_batch")
_add(ANALYST + "/geometry/overlay", geometry_overlay, ["POST"], "supermap_geometry_overlay")
_add(ANALYST + "/datasets/{dataset}/buffer", dataset_buffer, ["POST"], "supermap_dataset_buffer")
_add(ANALYST + "/datasets/{dataset}/overlay", dataset_overlay, ["POST"], "supermap_dataset_overlay")
_add(SERVICE + "/rest/data/coordtransfer", data_coordtransfer, ["POST"], "supermap_data_coordtransfer")
_add(SERVICE + "/restjsr/v1/geometry/coordtransfer", geometry_coordtransfer, ["POST"],
     "supermap_geometry_coordtransfer")
for _path, _resource in (
    ("/geometry/buffer", lambda p: "geometry/buffer"),
    ("/geometry/overlay/batch", lambda p: "geometry/overlay/batch"),
    ("/geometry/overlay", lambda p: "geometry/overlay"),
    ("/datasets/{dataset}/buffer", lambda p: f"datasets/{p['dataset']}/buffer"),
    ("/datasets/{dataset}/overlay", lambda p: f"datasets/{p['dataset']}/overlay"),
):
    router.add_api_route(ANALYST + _path + "/{result_id}", _child(_resource), methods=["GET"],
                         name="supermap_result" + _path.replace("/", "_"), response_class=OrjsonResponse)
router.add_api_route(SERVICE + "/rest/data/coordtransfer/{result_id}", _child(lambda p: "data/coordtransfer"),
                     methods=["GET"], name="supermap_result_coordtransfer", response_class=OrjsonResponse)
# Last: everything else under /iserver is iServer's 404 (or 405, or a CORS preflight).
router.add_api_route("/iserver/{path:path}", catch_all, methods=METHODS, include_in_schema=False)

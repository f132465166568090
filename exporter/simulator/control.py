"""What every simulated provider shares: request counting, auth, faults and ``/simulator/*``.

``install`` puts a provider's ``/v1`` routes behind one middleware (count the request, check the
bearer key, inject a fault, render errors in the provider's shape) and adds the control routes,
which are not part of any provider's API and need no key: they expose request counts (the
exporter's cost) and the ground truth that ``/metrics`` is compared against, move simulated time,
add runs and switch fault injection on and off. The routes are the same for every provider.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from aiohttp import web

from exporter.simulator.clock import SimClock
from exporter.simulator.faults import Fault, FaultInjector
from exporter.simulator.responses import Dialect, json_response, respond

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class World(Protocol):
    """What the control routes need from a simulated account, whatever the provider."""

    clock: SimClock
    api_key: str | None
    #: Requests served, by request kind (the route name of the operation).
    request_counts: collections.Counter[str]
    #: Metrics requests served, by run id.
    steps_by_run: collections.Counter[str]

    def truth(self) -> list[dict[str, Any]]:
        """Every run present now: ``id``, ``name``, ``status``, ``newest_step``, ``step_count``."""
        ...

    def add_run(self) -> str:
        """Start a new run now and return its id."""
        ...


class ApiError(Exception):
    """An error answer with an HTTP status; the provider's dialect gives it its shape."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Recorder:
    """Headers of the last API request: lets tests check what the exporter identifies itself as."""

    client_name: str | None = None
    user_agent: str | None = None


WORLD_KEY: Final = web.AppKey("world", World)
FAULTS_KEY: Final = web.AppKey("faults", FaultInjector)
DIALECT_KEY: Final = web.AppKey("dialect", Dialect)
_RECORDER_KEY: Final = web.AppKey("recorder", _Recorder)


def _error(dialect: Dialect, status: int, message: str) -> web.Response:
    return json_response(dialect.error_body(status, message), status=status)


async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The real answer, with errors in the provider's shape."""
    dialect = request.app[DIALECT_KEY]
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(dialect, exc.status, exc.message)
    except web.HTTPNotFound:
        return _error(dialect, 404, f"no route for {request.method} {request.path}")
    except web.HTTPMethodNotAllowed:
        return _error(dialect, 405, f"method {request.method} not allowed")


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, authenticate, inject faults and shape errors of ``/v1`` requests.

    An injected fault comes after counting (it is a request served) and after authentication
    (a bad key still gets its 401).
    """
    if not (request.path == "/v1" or request.path.startswith("/v1/")):
        return await handler(request)
    world = request.app[WORLD_KEY]
    dialect = request.app[DIALECT_KEY]
    recorder = request.app[_RECORDER_KEY]
    recorder.client_name = request.headers.get("X-Client-Name")
    recorder.user_agent = request.headers.get("User-Agent")
    kind = request.match_info.route.name
    if kind in dialect.request_kinds:
        world.request_counts[kind] += 1
        if kind == dialect.metrics_kind:
            world.steps_by_run[request.match_info["id"]] += 1
    expected = None if world.api_key is None else f"Bearer {world.api_key}"
    if expected is not None and request.headers.get("Authorization", "") != expected:
        return _error(dialect, 401, dialect.auth_message)
    fault = None
    if kind is not None:
        fault = request.app[FAULTS_KEY].pick(kind, request.match_info.get("id"))
    if fault is None:
        return await _serve(request, handler)
    return await respond(fault, request, lambda: _serve(request, handler), dialect)


# --------------------------------------------------------------------------- control routes


async def requests_report(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    recorder = request.app[_RECORDER_KEY]
    kinds = request.app[DIALECT_KEY].request_kinds
    counts: dict[str, Any] = {kind: world.request_counts.get(kind, 0) for kind in kinds}
    total = sum(counts.values())
    counts["steps_by_run"] = dict(world.steps_by_run)
    counts["total"] = total
    counts["last_client_name"] = recorder.client_name
    counts["last_user_agent"] = recorder.user_agent
    return json_response(counts)


async def reset_requests(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    for kind in request.app[DIALECT_KEY].request_kinds:
        world.request_counts[kind] = 0
    world.steps_by_run.clear()
    return json_response({})


async def truth(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    return json_response({"now": world.clock.now(), "runs": world.truth()})


async def advance(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    try:
        world.clock.advance(float(request.query.get("seconds", "")))
    except ValueError:
        return json_response({"message": "seconds must be a non-negative number"}, status=400)
    return json_response({"now": world.clock.now()})


async def add_run(request: web.Request) -> web.Response:
    return json_response({"id": request.app[WORLD_KEY].add_run()})


def _faults_report(injector: FaultInjector) -> web.Response:
    return json_response(
        {
            "faults": [fault.to_json() for fault in injector.active],
            "injected": dict(injector.injected),
        }
    )


async def list_faults(request: web.Request) -> web.Response:
    return _faults_report(request.app[FAULTS_KEY])


async def set_faults(request: web.Request) -> web.Response:
    """Replace the active faults with ``{"faults": [...]}`` (each as ``Fault.to_json`` gives)."""
    injector = request.app[FAULTS_KEY]
    try:
        data = json.loads(await request.read())
    except ValueError:
        return json_response({"message": 'body must be JSON: {"faults": [...]}'}, status=400)
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        return json_response({"message": 'body must be an object with a "faults" list'}, status=400)
    try:
        faults = [Fault.from_json(item) for item in data["faults"]]
        injector.set(faults)
    except ValueError as exc:
        return json_response({"message": str(exc)}, status=400)
    return _faults_report(injector)


async def clear_faults(request: web.Request) -> web.Response:
    injector = request.app[FAULTS_KEY]
    injector.clear()
    return _faults_report(injector)


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


def install(
    app: web.Application, world: World, faults: FaultInjector | None, dialect: Dialect
) -> None:
    """Wire ``world`` into ``app``: the shared middleware, the fault injector and the control
    routes; ``faults`` (bound to the dialect's provider here) may be changed while it runs."""
    injector = FaultInjector() if faults is None else faults
    injector.bind(dialect.provider)
    app.middlewares.append(api_middleware)
    app[WORLD_KEY] = world
    app[FAULTS_KEY] = injector
    app[DIALECT_KEY] = dialect
    app[_RECORDER_KEY] = _Recorder()
    app.router.add_get("/simulator/requests", requests_report)
    app.router.add_post("/simulator/reset-requests", reset_requests)
    app.router.add_get("/simulator/truth", truth)
    app.router.add_post("/simulator/advance", advance)
    app.router.add_post("/simulator/models", add_run)
    app.router.add_get("/simulator/faults", list_faults)
    app.router.add_post("/simulator/faults", set_faults)
    app.router.add_delete("/simulator/faults", clear_faults)
    app.router.add_get("/healthz", healthz)

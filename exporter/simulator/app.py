"""The simulated Cohere fine-tuning API over HTTP, plus control routes for tests and benchmarks.

The API routes copy the real paths, paging and proto3 JSON bodies (including the quirks clients
trip over); the ``/simulator/*`` routes are not part of Cohere's API and need no key: they expose
request counts (the exporter's cost) and the ground truth that ``/metrics`` is compared against,
and let a test switch fault injection (``exporter.simulator.faults``) on and off.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from aiohttp import web

from exporter.simulator import encoding
from exporter.simulator.faults import FIRST_PAGE_TOKEN_KEY, Fault, FaultInjector, respond
from exporter.simulator.world import REQUEST_KINDS, SimStep, SimWorld

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_PREFIX: Final = "/v1/finetuning/finetuned-models"
_DEFAULT_PAGE_SIZE: Final = 50
_MAX_PAGE_SIZE: Final = 1000
# Custom pattern so that an empty ID still reaches the handler and gets Cohere's 400, not a 404.
_ID: Final = "{id:[^/]*}"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class _Recorder:
    """Headers of the last API request: lets tests check what the exporter identifies itself as."""

    client_name: str | None = None
    user_agent: str | None = None


WORLD_KEY: Final = web.AppKey("world", SimWorld)
FAULTS_KEY: Final = web.AppKey("faults", FaultInjector)
_RECORDER_KEY: Final = web.AppKey("recorder", _Recorder)


class ApiError(Exception):
    """An error answer in Cohere's shape: ``{"message": ...}`` with an HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _json(body: Any, status: int = 200) -> web.Response:
    return web.Response(text=encoding.dumps(body), status=status, content_type="application/json")


# --------------------------------------------------------------------------- paging


def _page_size(request: web.Request) -> int:
    raw = request.query.get("page_size", "")
    if raw == "":
        return _DEFAULT_PAGE_SIZE
    try:
        size = int(raw)
    except ValueError:
        raise ApiError(400, f"invalid page_size {raw!r}: not an integer") from None
    if size < 0:
        raise ApiError(400, f"invalid page_size {size}: must not be negative")
    if size == 0:
        return _DEFAULT_PAGE_SIZE
    return min(size, _MAX_PAGE_SIZE)


def _descending(request: web.Request) -> bool:
    raw = " ".join(request.query.get("order_by", "").lower().split())
    if raw in ("", "created_at", "created_at asc"):
        return False
    if raw == "created_at desc":
        return True
    raise ApiError(400, f"invalid order_by {request.query['order_by']!r}: supported is created_at")


def _encode_token(collection: str, offset: int) -> str:
    raw = json.dumps({"c": collection, "o": offset}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_token(token: str, collection: str) -> int:
    """Offset encoded in ``token``; a token minted for another list (or garbage) is a 400."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ApiError(400, "invalid page token") from None
    if not isinstance(data, dict) or data.get("c") != collection:
        raise ApiError(400, "invalid page token")
    offset = data.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise ApiError(400, "invalid page token")
    return offset


def _page(request: web.Request, items: Sequence[_T], collection: str) -> tuple[list[_T], str]:
    """One page of ``items`` and the token for the next one ("" on the last page)."""
    size = _page_size(request)
    token = request.query.get("page_token", "")
    offset = _decode_token(token, collection) if token else 0
    end = offset + size
    next_token = _encode_token(collection, end) if end < len(items) else ""
    request[FIRST_PAGE_TOKEN_KEY] = _encode_token(collection, 0)
    return list(items[offset:end]), next_token


# --------------------------------------------------------------------------- API handlers


def _model_id(request: web.Request) -> str:
    model_id = request.match_info["id"]
    if not model_id:
        raise ApiError(400, f"finetuneID is not a valid UUID: {model_id!r}")
    return model_id


def _not_found(model_id: str) -> ApiError:
    return ApiError(404, f"finetuned model {model_id} not found")


async def list_models(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    descending = _descending(request)
    ids = world.model_ids()
    if descending:
        ids.reverse()
    collection = "finetuned_models:desc" if descending else "finetuned_models:asc"
    page, next_token = _page(request, ids, collection)
    body = {
        "finetuned_models": [world.model(model_id) for model_id in page],
        "next_page_token": next_token,
        "total_size": len(ids),
    }
    return _json(encoding.message(body))


async def get_model(request: web.Request) -> web.Response:
    model_id = _model_id(request)
    try:
        model = request.app[WORLD_KEY].model(model_id)
    except KeyError:
        raise _not_found(model_id) from None
    return _json(encoding.message({"finetuned_model": model}))


async def delete_model(request: web.Request) -> web.Response:
    model_id = _model_id(request)
    try:
        request.app[WORLD_KEY].delete(model_id)
    except KeyError:
        raise _not_found(model_id) from None
    return _json({})


async def list_events(request: web.Request) -> web.Response:
    model_id = _model_id(request)
    descending = _descending(request)
    try:
        events = request.app[WORLD_KEY].events(model_id)
    except KeyError:
        raise _not_found(model_id) from None
    if descending:
        events.reverse()
    collection = f"events:{model_id}:{'desc' if descending else 'asc'}"
    page, next_token = _page(request, events, collection)
    body = {"events": page, "next_page_token": next_token, "total_size": len(events)}
    return _json(encoding.message(body))


def _step_message(step: SimStep) -> dict[str, Any]:
    return {
        "created_at": step.created_at,
        "step_number": step.step_number,
        "metrics": dict(step.metrics),
    }


async def list_step_metrics(request: web.Request) -> web.Response:
    model_id = _model_id(request)
    world = request.app[WORLD_KEY]
    try:
        steps = world.steps(model_id)
    except KeyError:
        raise _not_found(model_id) from None
    if world.step_order == "newest-first":
        steps.reverse()
    page, next_token = _page(request, steps, f"step_metrics:{model_id}:{world.step_order}")
    body = {"step_metrics": [_step_message(s) for s in page], "next_page_token": next_token}
    return _json(encoding.message(body))


# --------------------------------------------------------------------------- middleware


async def _serve(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The real answer, with errors in Cohere's shape."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _json({"message": exc.message}, status=exc.status)
    except web.HTTPNotFound:
        return _json({"message": f"no route for {request.method} {request.path}"}, status=404)
    except web.HTTPMethodNotAllowed:
        return _json({"message": f"method {request.method} not allowed"}, status=405)


@web.middleware
async def api_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count, authenticate, inject faults and shape errors of ``/v1`` requests like Cohere.

    An injected fault comes after counting (it is a request served) and after authentication
    (a bad key still gets its 401).
    """
    if not (request.path == "/v1" or request.path.startswith("/v1/")):
        return await handler(request)
    world = request.app[WORLD_KEY]
    recorder = request.app[_RECORDER_KEY]
    recorder.client_name = request.headers.get("X-Client-Name")
    recorder.user_agent = request.headers.get("User-Agent")
    kind = request.match_info.route.name
    if kind in REQUEST_KINDS:
        world.request_counts[kind] += 1
        if kind == "list_step_metrics":
            world.step_requests_by_model[request.match_info["id"]] += 1
    expected = None if world.api_key is None else f"Bearer {world.api_key}"
    if expected is not None and request.headers.get("Authorization", "") != expected:
        return _json({"message": "invalid api token"}, status=401)
    fault = None
    if kind is not None:
        fault = request.app[FAULTS_KEY].pick(kind, request.match_info.get("id"))
    if fault is None:
        return await _serve(request, handler)
    return await respond(fault, request, lambda: _serve(request, handler))


# --------------------------------------------------------------------------- control routes


async def requests_report(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    recorder = request.app[_RECORDER_KEY]
    counts: dict[str, Any] = {kind: world.request_counts.get(kind, 0) for kind in REQUEST_KINDS}
    total = sum(counts.values())
    counts["step_metrics_by_model"] = dict(world.step_requests_by_model)
    counts["total"] = total
    counts["last_client_name"] = recorder.client_name
    counts["last_user_agent"] = recorder.user_agent
    return _json(counts)


async def reset_requests(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    for kind in REQUEST_KINDS:
        world.request_counts[kind] = 0
    world.step_requests_by_model.clear()
    return _json({})


async def truth(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    models = []
    for model_id in world.model_ids():
        model = world.model(model_id)
        steps = world.steps(model_id)
        newest = steps[-1] if steps else None
        models.append(
            {
                "id": model_id,
                "name": model["name"],
                "status": model["status"],
                "newest_step": None
                if newest is None
                else {
                    "step_number": newest.step_number,
                    "created_at": newest.created_at,
                    "metrics": {k: encoding.double(v) for k, v in newest.metrics.items()},
                },
                "step_count": len(steps),
            }
        )
    return _json({"now": world.clock.now(), "models": models})


async def advance(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    try:
        world.clock.advance(float(request.query.get("seconds", "")))
    except ValueError:
        return _json({"message": "seconds must be a non-negative number"}, status=400)
    return _json({"now": world.clock.now()})


async def add_model(request: web.Request) -> web.Response:
    return _json({"id": request.app[WORLD_KEY].add_model()})


def _faults_report(injector: FaultInjector) -> web.Response:
    return _json(
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
        return _json({"message": 'body must be JSON: {"faults": [...]}'}, status=400)
    if not isinstance(data, dict) or not isinstance(data.get("faults"), list):
        return _json({"message": 'body must be an object with a "faults" list'}, status=400)
    try:
        faults = [Fault.from_json(item) for item in data["faults"]]
    except ValueError as exc:
        return _json({"message": str(exc)}, status=400)
    injector.set(faults)
    return _faults_report(injector)


async def clear_faults(request: web.Request) -> web.Response:
    injector = request.app[FAULTS_KEY]
    injector.clear()
    return _faults_report(injector)


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="ok")


# --------------------------------------------------------------------------- assembly


def build_app(world: SimWorld, faults: FaultInjector | None = None) -> web.Application:
    """The aiohttp application serving ``world``: Cohere's API routes plus ``/simulator/*``.

    ``faults`` injects failures into API answers (none by default); ``/simulator/faults``
    changes its faults while the app runs.
    """
    app = web.Application(middlewares=[api_middleware])
    app[WORLD_KEY] = world
    app[FAULTS_KEY] = FaultInjector() if faults is None else faults
    app[_RECORDER_KEY] = _Recorder()
    app.router.add_get(_PREFIX, list_models, name="list_models")
    app.router.add_get(f"{_PREFIX}/{_ID}", get_model, name="get_model")
    app.router.add_delete(f"{_PREFIX}/{_ID}", delete_model, name="delete_model")
    app.router.add_get(f"{_PREFIX}/{_ID}/events", list_events, name="list_events")
    app.router.add_get(
        f"{_PREFIX}/{_ID}/training-step-metrics", list_step_metrics, name="list_step_metrics"
    )
    app.router.add_get("/simulator/requests", requests_report)
    app.router.add_post("/simulator/reset-requests", reset_requests)
    app.router.add_get("/simulator/truth", truth)
    app.router.add_post("/simulator/advance", advance)
    app.router.add_post("/simulator/models", add_model)
    app.router.add_get("/simulator/faults", list_faults)
    app.router.add_post("/simulator/faults", set_faults)
    app.router.add_delete("/simulator/faults", clear_faults)
    app.router.add_get("/healthz", healthz)
    return app


async def run_simulator(
    host: str, port: int, world: SimWorld, faults: FaultInjector | None = None
) -> None:
    """Serve ``world`` (with ``faults``, if given) on ``host:port`` until cancelled."""
    runner = web.AppRunner(build_app(world, faults), access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        log.info("simulated Cohere API listening on http://%s:%d", host, port)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()

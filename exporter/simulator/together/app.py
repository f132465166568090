"""The simulated Together AI fine-tuning API over HTTP.

Paths are those of the official SDK (``/v1/fine-tunes...`` under a base URL that is the server
root). Errors take the shape of the ``ErrorData`` schema of Together's OpenAPI document
(togethercomputer/openapi, ``components.schemas.ErrorData``):
``{"error": {"message", "type", "param", "code"}}``; the ``type`` values below are the
simulator's choice, since no source lists the ones the fine-tuning endpoints use.
``exporter.simulator.control`` adds request counting, auth, faults and ``/simulator/*``.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Final

from aiohttp import web

from exporter.simulator import control
from exporter.simulator.control import ApiError
from exporter.simulator.faults import FaultInjector
from exporter.simulator.responses import Body, Dialect, json_response
from exporter.simulator.together.metrics import MetricsQuery
from exporter.simulator.together.plan import NANOS
from exporter.simulator.together.world import REQUEST_KINDS, TogetherWorld

_PREFIX: Final = "/v1/fine-tunes"
_ID: Final = "{id}"

#: The status an "unknown-status" fault puts where a job's status goes.
UNKNOWN_STATUS: Final = "status_from_the_future"
#: What an "invalid-json" fault sends: a metrics answer cut off after its first bracket.
INVALID_JSON_BODY: Final = b'{"metrics": ['

WORLD_KEY: Final = web.AppKey("together_world", TogetherWorld)

_ISO: Final = re.compile(
    r"^(?P<base>\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d)?)(\.(?P<fraction>\d{1,9}))?"
    r"(?P<zone>Z|z|[+-]\d\d:?\d\d)?$"
)


def _bad(param: str, message: str) -> ApiError:
    return ApiError(400, f"invalid {param}: {message}")


def _job_id(request: web.Request) -> str:
    return request.match_info["id"]


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, f"fine-tune job {job_id} not found")


async def list_jobs(request: web.Request) -> web.Response:
    world = request.app[WORLD_KEY]
    return json_response({"data": [world.job(i, full=False) for i in world.job_ids()]})


async def get_job(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    try:
        return json_response(request.app[WORLD_KEY].job(job_id))
    except KeyError:
        raise _not_found(job_id) from None


async def list_events(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    try:
        return json_response({"data": request.app[WORLD_KEY].events(job_id)})
    except KeyError:
        raise _not_found(job_id) from None


async def list_checkpoints(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    try:
        return json_response({"data": request.app[WORLD_KEY].checkpoints(job_id)})
    except KeyError:
        raise _not_found(job_id) from None


async def list_metrics(request: web.Request) -> web.Response:
    job_id = _job_id(request)
    query = MetricsQuery(
        step_from=_count(request, "global_step_from", 0),
        step_to=_count(request, "global_step_to", 0),
        logged_from_ns=_instant(request, "logged_at_from"),
        logged_to_ns=_instant(request, "logged_at_to"),
        resolution=_count(request, "resolution", 1),
    )
    try:
        body = request.app[WORLD_KEY].metrics_body(job_id, query)
    except KeyError:
        raise _not_found(job_id) from None
    return web.Response(body=body, content_type="application/json")


def _count(request: web.Request, name: str, minimum: int) -> int | None:
    raw = request.query.get(name)
    if raw is None:
        return None
    if not re.fullmatch(r"[+-]?\d+", raw.strip()):
        raise _bad(name, f"{raw[:60]!r} is not an integer")
    value = int(raw)
    if value < minimum:
        raise _bad(name, f"must be at least {minimum}, got {value}")
    return value


def _instant(request: web.Request, name: str) -> int | None:
    """An ISO-8601 query parameter as integer Unix nanoseconds (no zone: UTC), exactly."""
    raw = request.query.get(name)
    if raw is None:
        return None
    match = _ISO.match(raw.strip())
    try:
        if match is None:
            raise ValueError(raw)
        zone = match["zone"] or "+00:00"
        zone = "+00:00" if zone in ("Z", "z") else zone
        moment = dt.datetime.fromisoformat(match["base"].replace(" ", "T") + zone)
    except ValueError:
        raise _bad(name, f"{raw[:60]!r} is not an ISO-8601 date and time") from None
    fraction = int((match["fraction"] or "").ljust(9, "0"))
    return int(moment.timestamp()) * NANOS + fraction


# --------------------------------------------------------------------------- fault dialect


def _error_type(status: int) -> str:
    known = {400: "invalid_request_error", 401: "authentication_error", 404: "not_found_error"}
    known |= {403: "permission_error", 429: "rate_limit_error"}
    return known.get(status, "server_error" if status >= 500 else "invalid_request_error")


def _error_body(status: int, message: str) -> Body:
    return {"error": {"message": message, "type": _error_type(status), "param": None, "code": None}}


def _unknown_status(body: Body) -> None:
    if "status" in body:
        body["status"] = UNKNOWN_STATUS
    for job in body.get("data", []):
        if isinstance(job, dict) and "status" in job:
            job["status"] = UNKNOWN_STATUS


def _string_step(body: Body) -> None:
    entries = body.setdefault("metrics", [])
    if entries:
        entries[0]["train/global_step"] = "seven"
    else:
        entries.append({"train/global_step": "seven"})


DIALECT: Final = Dialect(
    provider="together",
    request_kinds=REQUEST_KINDS,
    metrics_kind="list_metrics",
    auth_message="invalid api key",
    error_body=_error_body,
    invalid_json=INVALID_JSON_BODY,
    unknown_status=_unknown_status,
    string_step=_string_step,
)


# --------------------------------------------------------------------------- assembly


def build_together_app(
    world: TogetherWorld, faults: FaultInjector | None = None
) -> web.Application:
    """The aiohttp application serving ``world``: Together's API routes plus ``/simulator/*``.

    ``faults`` injects failures into API answers (none by default); ``/simulator/faults``
    changes its faults while the app runs.
    """
    app = web.Application()
    app[WORLD_KEY] = world
    control.install(app, world, faults, DIALECT)
    app.router.add_get(_PREFIX, list_jobs, name="list_jobs")
    app.router.add_get(f"{_PREFIX}/{_ID}", get_job, name="get_job")
    app.router.add_get(f"{_PREFIX}/{_ID}/metrics", list_metrics, name="list_metrics")
    app.router.add_get(f"{_PREFIX}/{_ID}/events", list_events, name="list_events")
    app.router.add_get(f"{_PREFIX}/{_ID}/checkpoints", list_checkpoints, name="list_checkpoints")
    return app

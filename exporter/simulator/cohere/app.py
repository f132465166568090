"""The simulated Cohere fine-tuning API over HTTP.

The API routes copy the real paths, paging and proto3 JSON bodies (including the quirks clients
trip over); ``exporter.simulator.control`` adds the request counting, auth, fault injection and
the ``/simulator/*`` routes that every provider shares.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any, Final, TypeVar

from aiohttp import web

from exporter.simulator import control
from exporter.simulator.cohere import encoding
from exporter.simulator.cohere.plan import SimStep
from exporter.simulator.cohere.world import REQUEST_KINDS, CohereWorld
from exporter.simulator.control import ApiError
from exporter.simulator.faults import FaultInjector
from exporter.simulator.responses import FIRST_PAGE_TOKEN_KEY, Body, Dialect

_T = TypeVar("_T")
_PREFIX: Final = "/v1/finetuning/finetuned-models"
_DEFAULT_PAGE_SIZE: Final = 50
_MAX_PAGE_SIZE: Final = 1000
# Custom pattern so that an empty ID still reaches the handler and gets Cohere's 400, not a 404.
_ID: Final = "{id:[^/]*}"

#: The status an "unknown-status" fault puts where Cohere's status enum goes.
UNKNOWN_STATUS: Final = "STATUS_FROM_THE_FUTURE"
#: What an "invalid-json" fault sends: a step-metrics answer cut off after its first bracket.
INVALID_JSON_BODY: Final = b'{"step_metrics": ['

WORLD_KEY: Final = web.AppKey("cohere_world", CohereWorld)


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


# --------------------------------------------------------------------------- fault dialect


def _error_body(_status: int, message: str) -> Body:
    """Cohere's error shape: ``{"message": ...}`` whatever the status."""
    return {"message": message}


def _unknown_status(body: Body) -> None:
    model = body.get("finetuned_model")
    if isinstance(model, dict):
        model["status"] = UNKNOWN_STATUS
    for item in body.get("finetuned_models", []):
        item["status"] = UNKNOWN_STATUS


def _string_step(body: Body) -> None:
    steps = body.setdefault("step_metrics", [])
    if steps:
        steps[0]["step_number"] = "seven"
    else:
        steps.append({"step_number": "seven"})


DIALECT: Final = Dialect(
    provider="cohere",
    request_kinds=REQUEST_KINDS,
    metrics_kind="list_step_metrics",
    auth_message="invalid api token",
    error_body=_error_body,
    invalid_json=INVALID_JSON_BODY,
    unknown_status=_unknown_status,
    string_step=_string_step,
)


# --------------------------------------------------------------------------- assembly


def build_cohere_app(world: CohereWorld, faults: FaultInjector | None = None) -> web.Application:
    """The aiohttp application serving ``world``: Cohere's API routes plus ``/simulator/*``.

    ``faults`` injects failures into API answers (none by default); ``/simulator/faults``
    changes its faults while the app runs.
    """
    app = web.Application()
    app[WORLD_KEY] = world
    control.install(app, world, faults, DIALECT)
    app.router.add_get(_PREFIX, list_models, name="list_models")
    app.router.add_get(f"{_PREFIX}/{_ID}", get_model, name="get_model")
    app.router.add_delete(f"{_PREFIX}/{_ID}", delete_model, name="delete_model")
    app.router.add_get(f"{_PREFIX}/{_ID}/events", list_events, name="list_events")
    app.router.add_get(
        f"{_PREFIX}/{_ID}/training-step-metrics", list_step_metrics, name="list_step_metrics"
    )
    return app

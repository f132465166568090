"""The API client against single mocked responses: the official examples, each quirk, each error."""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from exporter.providers.cohere.client import CohereClient, model_path
from exporter.providers.cohere.provider import page_order
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import USER_AGENT, ClientObserver, JsonClient, RetryPolicy, proxy_for
from exporter.upstream.errors import ApiResponseError, ApiStatusError, ApiTransportError
from exporter.upstream.values import parse_timestamp
from tests.openapi_examples import example

BASE = "http://api.test"
KEY = "sk-test-0123456789abcdef"
LIST_URL = re.compile(r"^http://api\.test/v1/finetuning/finetuned-models(\?.*)?$")
STEPS_URL = re.compile(
    r"^http://api\.test/v1/finetuning/finetuned-models/[^/]+/training-step-metrics"
)
GET_URL = re.compile(r"^http://api\.test/v1/finetuning/finetuned-models/[^/?]+$")
MODEL = "fee37446-7fc7-42f9-a026-c6ba2fcc422d"


@pytest.fixture
async def observed() -> list[tuple[str, str]]:
    return []


class Recorder(ClientObserver):
    def __init__(self, requests: list[tuple[str, str]]) -> None:
        self.requests = requests
        self.retries: list[tuple[str, str, float]] = []

    def request_done(self, endpoint: str, code: str) -> None:
        self.requests.append((endpoint, code))

    def retrying(self, endpoint: str, reason: str, delay: float) -> None:
        self.retries.append((endpoint, reason, delay))


@pytest.fixture
async def client(observed: list[tuple[str, str]]) -> AsyncIterator[CohereClient]:
    """A client that does not retry: each test here looks at one response."""
    async with aiohttp.ClientSession() as session:
        http = JsonClient(
            session,
            base_url=BASE,
            api_key=SecretStr(KEY),
            headers={"X-Client-Name": "unit-tests"},
            timeout=2.0,
            budget=RequestBudget(400),
            observer=Recorder(observed),
            max_body_bytes=64 * 1024,
            max_body_objects=1000,
            retry=RetryPolicy(max_retries=0),
        )
        yield CohereClient(http)


def seconds(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def test_official_list_example(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(LIST_URL, payload=example("/v1/finetuning/finetuned-models"))
    page = await client.list_models()
    assert [m.name for m in page.finetuned_models] == ["chat-ft", "rerank-ft"]
    chat = page.finetuned_models[0]
    assert chat.id == MODEL
    assert chat.status == "STATUS_READY"
    assert chat.settings.base_model.base_type == "BASE_TYPE_CHAT"
    assert chat.settings.base_model.version == "14.2.0"
    assert chat.created_at == pytest.approx(seconds("2024-01-17T20:11:42.907112"), abs=1e-6)
    assert page.next_page_token == ""  # absent means last page
    assert page.total_size == 0


async def test_official_get_example(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(GET_URL, payload=example("/v1/finetuning/finetuned-models/{id}"))
    model = await client.get_model(MODEL)
    assert (model.name, model.settings.base_model.name) == ("chat-ft", "medium")
    assert model.completed_at == pytest.approx(seconds("2024-01-17T20:31:05.047066"), abs=1e-6)


async def test_official_step_example(client: CohereClient, mock_api: aioresponses) -> None:
    path = "/v1/finetuning/finetuned-models/{finetuned_model_id}/training-step-metrics"
    mock_api.get(STEPS_URL, payload=example(path))
    page = await client.list_step_metrics(MODEL)
    first, second = page.step_metrics
    assert first.step_number == 0  # omitted by proto3: zero
    assert second.step_number == 9
    assert first.metrics["cross_entropy"] == pytest.approx(4.264331340789795)
    assert page_order(page.step_metrics) == "oldest-first"  # despite what the docs say
    assert second.created_at == pytest.approx(seconds("2024-01-17T20:25:19") + 0.331940174)


def test_nine_fractional_digits_are_kept() -> None:
    nine = parse_timestamp("2024-01-17T20:25:19.331940174Z")
    six = parse_timestamp("2024-01-17T20:25:19.331940Z")
    assert nine is not None
    assert six is not None
    assert nine - six == pytest.approx(174e-9, abs=2e-7)
    assert parse_timestamp("2024-01-17T21:25:19+01:00") == parse_timestamp("2024-01-17T20:25:19Z")
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_timestamp("yesterday")


async def test_proto3_quirks(client: CohereClient, mock_api: aioresponses) -> None:
    body = {
        "step_metrics": [
            {
                "created_at": "2024-01-17T20:25:19.331940174Z",
                "step_number": "16",
                "metrics": {
                    "cross_entropy": "NaN",
                    "loss": "Infinity",
                    "delta": "-Infinity",
                    "accuracy": "0.5",
                    "f1": 1,
                },
                "future_field": {"nested": True},
            },
            {"metrics": {}},
            {"created_at": None, "step_number": None, "metrics": None},
        ],
        "next_page_token": None,
    }
    mock_api.get(STEPS_URL, payload=body)
    page = await client.list_step_metrics(MODEL)
    step = page.step_metrics[0]
    assert step.step_number == 16
    assert math.isnan(step.metrics["cross_entropy"])
    assert step.metrics["loss"] == math.inf
    assert step.metrics["delta"] == -math.inf
    assert step.metrics["accuracy"] == 0.5
    assert step.metrics["f1"] == 1.0
    assert page.step_metrics[1].step_number == 0
    assert page.step_metrics[2].created_at is None
    assert page.next_page_token == ""


async def test_unknown_status_passes_through(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(GET_URL, payload={"finetuned_model": {"id": MODEL, "status": "STATUS_NEW_THING"}})
    model = await client.get_model(MODEL)
    assert model.status == "STATUS_NEW_THING"
    assert model.settings.base_model.base_type == "BASE_TYPE_UNSPECIFIED"


@pytest.mark.parametrize(
    ("status", "body", "content_type", "message"),
    [
        (
            400,
            {"message": "finetuneID is not a valid UUID: ''"},
            None,
            "finetuneID is not a valid UUID: ''",
        ),
        (401, {"message": "invalid api token"}, None, "invalid api token"),
        (403, {"message": "forbidden", "id": "abc"}, None, "forbidden"),
        (404, {"message": "finetuned model xyz not found"}, None, "finetuned model xyz not found"),
        (500, {"message": "internal error"}, None, "internal error"),
        (
            503,
            "<html><body>Service Unavailable</body></html>",
            "text/html",
            "non-JSON text/html body",
        ),
        (502, "bad gateway\n", "text/plain", "bad gateway"),
        (429, "", "text/plain", "(empty body)"),
    ],
)
async def test_error_statuses(
    client: CohereClient,
    mock_api: aioresponses,
    observed: list[tuple[str, str]],
    status: int,
    body: Any,
    content_type: str | None,
    message: str,
) -> None:
    if isinstance(body, dict):
        mock_api.get(STEPS_URL, status=status, payload=body)
    else:
        mock_api.get(STEPS_URL, status=status, body=body, content_type=content_type or "")
    with pytest.raises(ApiStatusError) as caught:
        await client.list_step_metrics(MODEL)
    assert caught.value.status == status
    assert caught.value.message == message
    assert caught.value.is_auth_failure is (status in (401, 403))
    assert observed == [("list_step_metrics", str(status))]


async def test_retry_after_is_carried(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(
        STEPS_URL, status=429, payload={"message": "slow down"}, headers={"Retry-After": "7"}
    )
    with pytest.raises(ApiStatusError) as caught:
        await client.list_step_metrics(MODEL)
    assert caught.value.retry_after == "7"


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "expected a JSON object, got list"),
        ('{"step_metrics": [{"step_number": "abc"}]}', "step_metrics.0.step_number"),
        ('{"step_metrics": {"a": 1}}', "step_metrics"),
        ('{"step_metrics": [{"metrics": {"loss": "high"}}]}', "metrics.loss"),
        ("<html>ok</html>", "not JSON"),
        ("[" * 20_000 + "]" * 20_000, "nested too deeply"),
        ('{"step_metrics": ' + "[" * 20_000 + "]" * 20_000 + "}", "nested too deeply"),
        ('{"step_metrics": [' + ",".join(["{}"] * 1001) + "]}", "more than 1000 JSON objects"),
    ],
)
async def test_bad_bodies(
    client: CohereClient,
    mock_api: aioresponses,
    observed: list[tuple[str, str]],
    body: str,
    detail: str,
) -> None:
    mock_api.get(STEPS_URL, status=200, body=body)
    with pytest.raises(ApiResponseError, match=re.escape(detail)):
        await client.list_step_metrics(MODEL)
    assert observed == [("list_step_metrics", "invalid_body")]  # not "200": alerts see it


async def test_bodies_the_fast_decoder_refuses_are_read_by_the_standard_one(
    client: CohereClient, mock_api: aioresponses
) -> None:
    bare_nan = '{"step_metrics": [{"step_number": 3, "metrics": {"loss": NaN, "acc": Infinity}}]}'
    mock_api.get(STEPS_URL, status=200, body=bare_nan)  # what Python's json.dumps sends
    (only,) = (await client.list_step_metrics(MODEL)).step_metrics
    assert math.isnan(only.metrics["loss"])
    assert only.metrics["acc"] == math.inf
    # more braces than the object limit (1000), all inside one string: one object, accepted
    braces = json.dumps({"step_metrics": [{"step_number": 4, "note": "{" * 1500}]})
    mock_api.get(STEPS_URL, status=200, body=braces)
    assert [s.step_number for s in (await client.list_step_metrics(MODEL)).step_metrics] == [4]


async def test_steps_already_processed_keep_only_their_number(
    client: CohereClient, mock_api: aioresponses
) -> None:
    body = {
        "step_metrics": [
            {"step_number": 12, "created_at": "2024-01-01T00:00:12Z", "metrics": {"loss": 0.2}},
            {"step_number": "11", "created_at": "not a time", "metrics": {"loss": "junk"}},
        ]
    }
    mock_api.get(STEPS_URL, status=200, payload=body)
    page = await client.list_step_metrics(MODEL, from_step=12)
    fresh, old = page.step_metrics
    assert (fresh.step_number, fresh.metrics) == (12, {"loss": 0.2})
    assert fresh.created_at is not None
    # below the start only the number is read, so what it carries besides cannot fail the page
    assert (old.step_number, old.created_at, old.metrics) == (11, None, {})


async def test_of_the_steps_already_processed_only_the_first_last_and_lowest_stay(
    client: CohereClient, mock_api: aioresponses
) -> None:
    # newest first, with an out-of-order entry: what paging reads (order, lowest) survives
    numbers = [14, 12, 11, 9, 5, 8, 7]
    body = {"step_metrics": [{"step_number": n, "metrics": {"loss": 0.1}} for n in numbers]}
    mock_api.get(STEPS_URL, status=200, payload=body)
    page = await client.list_step_metrics(MODEL, from_step=12)
    assert [s.step_number for s in page.step_metrics] == [14, 12, 11, 5, 7]
    assert [s.metrics for s in page.step_metrics] == [{"loss": 0.1}] * 2 + [{}] * 3


async def test_a_processed_step_with_a_bad_number_still_fails_the_page(
    client: CohereClient, mock_api: aioresponses
) -> None:
    body = {"step_metrics": [{"step_number": "eleven", "metrics": {"loss": 0.1}}]}
    mock_api.get(STEPS_URL, status=200, payload=body)
    with pytest.raises(ApiResponseError, match="step_metrics"):
        await client.list_step_metrics(MODEL, from_step=12)


async def test_oversized_body(client: CohereClient, mock_api: aioresponses) -> None:
    huge = json.dumps({"step_metrics": [], "padding": "x" * 40_000}) * 2
    mock_api.get(STEPS_URL, status=200, body=huge)
    with pytest.raises(ApiResponseError, match="exceeds"):
        await client.list_step_metrics(MODEL)


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        (TimeoutError(), "timeout"),
        (aiohttp.ClientConnectionError("Connection reset by peer"), "connection_error"),
        (aiohttp.ServerDisconnectedError(), "connection_error"),
    ],
)
async def test_transport_errors(
    client: CohereClient,
    mock_api: aioresponses,
    observed: list[tuple[str, str]],
    exception: Exception,
    code: str,
) -> None:
    mock_api.get(STEPS_URL, exception=exception)
    with pytest.raises(ApiTransportError) as caught:
        await client.list_step_metrics(MODEL)
    assert caught.value.code == code
    assert observed == [("list_step_metrics", code)]


async def test_headers_and_query(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(STEPS_URL, payload={"step_metrics": []})
    await client.list_step_metrics(MODEL, page_size=7, page_token="tok/en+=")
    (((method, url), calls),) = mock_api.requests.items()
    assert method == "GET"
    assert url.path == f"/v1/finetuning/finetuned-models/{MODEL}/training-step-metrics"
    assert url.query["page_size"] == "7"
    assert url.query["page_token"] == "tok/en+="
    headers = calls[0].kwargs["headers"]
    assert headers["Authorization"] == f"Bearer {KEY}"
    assert headers["X-Client-Name"] == "unit-tests"
    assert headers["User-Agent"] == USER_AGENT
    assert "order_by" not in url.query  # the step endpoint takes no order_by


@pytest.mark.parametrize(
    ("model_id", "encoded"),
    [("a/b", "a%2Fb"), ("../x", "..%2Fx"), ("x?y#z", "x%3Fy%23z"), ("ok-1", "ok-1")],
)
def test_model_ids_stay_one_segment(model_id: str, encoded: str) -> None:
    assert model_path(model_id) == encoded


@pytest.mark.parametrize("model_id", ["", ".", ".."])
def test_dot_segments_refused(model_id: str) -> None:
    with pytest.raises(ValueError, match="dot segment"):
        model_path(model_id)


async def test_encoded_id_reaches_one_path(client: CohereClient, mock_api: aioresponses) -> None:
    mock_api.get(re.compile(r".*"), payload={"finetuned_model": {"id": "x"}})
    await client.get_model("../../v1/other?x=1")
    (((_, url), _calls),) = mock_api.requests.items()
    assert url.raw_path == "/v1/finetuning/finetuned-models/..%2F..%2Fv1%2Fother%3Fx%3D1"
    assert url.query_string == ""


def test_repr_hides_key(client: CohereClient) -> None:
    assert KEY not in repr(client)
    assert KEY not in repr(client.http)
    assert KEY not in str(vars(client.http))


@pytest.mark.parametrize(
    ("environment", "url", "proxy"),
    [
        ({}, "https://api.cohere.com", None),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "https://api.cohere.com", "http://proxy:3128"),
        ({"HTTPS_PROXY": "http://proxy:3128"}, "http://sim:10043", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "sim"}, "http://sim:10043", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "other"}, "http://sim:10043", "http://p:1"),
    ],
)
def test_proxy_follows_the_environment(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, proxy: str | None
) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == proxy

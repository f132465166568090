"""Retries, backoff, Retry-After and the per-minute budget, on a clock the tests move."""

from __future__ import annotations

import random
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aioresponses import aioresponses
from pydantic import SecretStr

from exporter.providers.cohere.client import CohereClient
from exporter.upstream.budget import RequestBudget
from exporter.upstream.client import ClientObserver, JsonClient, RetryPolicy, parse_retry_after
from exporter.upstream.errors import ApiStatusError, ApiTransportError

STEPS = re.compile(r"^http://api\.test/v1/finetuning/finetuned-models/m/training-step-metrics")
PAGE = {"step_metrics": [{"step_number": 3, "metrics": {"loss": 1.0}}]}
WALL_START = 1_800_000_000.0


@dataclass
class FakeTime:
    """Monotonic time that only sleeping moves; every sleep is recorded."""

    now: float = 0.0
    sleeps: list[float] = field(default_factory=list)

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return WALL_START + self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


class Recorder(ClientObserver):
    def __init__(self, fake: FakeTime) -> None:
        self.fake = fake
        self.requests: list[tuple[float, str]] = []
        self.retries: list[tuple[str, float]] = []

    def request_done(self, endpoint: str, code: str) -> None:
        self.requests.append((self.fake.now, code))

    def retrying(self, endpoint: str, reason: str, delay: float) -> None:
        self.retries.append((reason, delay))


@dataclass
class Harness:
    client: CohereClient
    time: FakeTime
    budget: RequestBudget
    seen: Recorder


@asynccontextmanager
async def built(per_minute: int, retry: RetryPolicy) -> AsyncIterator[Harness]:
    """A client whose sleeps, budget and clocks all run on one FakeTime."""
    fake = FakeTime()
    budget = RequestBudget(per_minute, clock=fake.monotonic, sleep=fake.sleep)
    seen = Recorder(fake)
    async with aiohttp.ClientSession() as session:
        http = JsonClient(
            session,
            base_url="http://api.test",
            api_key=SecretStr("k"),
            timeout=10.0,
            observer=seen,
            budget=budget,
            retry=retry,
            sleep=fake.sleep,
            wall_clock=fake.wall,
            rng=random.Random(4),
        )
        client = CohereClient(http)
        yield Harness(client, fake, budget, seen)


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    async with built(100, RetryPolicy(max_retries=2, base_delay=1.0, max_delay=20.0)) as made:
        yield made


async def test_5xx_is_retried_then_succeeds(harness: Harness, mock_api: aioresponses) -> None:
    mock_api.get(STEPS, status=503, payload={"message": "busy"})
    mock_api.get(STEPS, status=502, body="bad gateway")
    mock_api.get(STEPS, payload=PAGE)
    page = await harness.client.list_step_metrics("m")
    assert page.step_metrics[0].step_number == 3
    assert [code for _, code in harness.seen.requests] == ["503", "502", "200"]
    (first, d1), (second, d2) = harness.seen.retries
    assert (first, second) == ("503", "502")
    assert 0 <= d1 <= 1.0  # full jitter below base * 2**0
    assert 0 <= d2 <= 2.0  # and below base * 2**1
    assert harness.time.sleeps == [d1, d2]


async def test_retries_are_bounded(harness: Harness, mock_api: aioresponses) -> None:
    for _ in range(5):
        mock_api.get(STEPS, status=500, payload={"message": "oops"})
    with pytest.raises(ApiStatusError) as caught:
        await harness.client.list_step_metrics("m")
    assert caught.value.status == 500
    assert len(harness.seen.requests) == 3


async def test_timeouts_and_resets_are_retried(harness: Harness, mock_api: aioresponses) -> None:
    mock_api.get(STEPS, exception=TimeoutError())
    mock_api.get(STEPS, exception=aiohttp.ServerDisconnectedError())
    mock_api.get(STEPS, payload=PAGE)
    await harness.client.list_step_metrics("m")
    assert [code for _, code in harness.seen.requests] == ["timeout", "connection_error", "200"]


async def test_transport_errors_give_up_after_the_retries(
    harness: Harness, mock_api: aioresponses
) -> None:
    for _ in range(3):
        mock_api.get(STEPS, exception=aiohttp.ClientConnectionError("refused"))
    with pytest.raises(ApiTransportError):
        await harness.client.list_step_metrics("m")
    assert len(harness.seen.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
async def test_client_errors_are_not_retried(
    harness: Harness, mock_api: aioresponses, status: int
) -> None:
    mock_api.get(STEPS, status=status, payload={"message": "no"})
    with pytest.raises(ApiStatusError):
        await harness.client.list_step_metrics("m")
    assert len(harness.seen.requests) == 1
    assert harness.time.sleeps == []


async def test_429_waits_what_retry_after_says(harness: Harness, mock_api: aioresponses) -> None:
    mock_api.get(STEPS, status=429, payload={"message": "slow"}, headers={"Retry-After": "7"})
    mock_api.get(STEPS, payload=PAGE)
    await harness.client.list_step_metrics("m")
    (t_first, _), (t_second, _) = harness.seen.requests
    assert t_second - t_first == pytest.approx(7.0)


async def test_429_with_an_http_date(harness: Harness, mock_api: aioresponses) -> None:
    when = datetime.fromtimestamp(WALL_START, UTC) + timedelta(seconds=12)
    mock_api.get(
        STEPS, status=429, body="", headers={"Retry-After": format_datetime(when, usegmt=True)}
    )
    mock_api.get(STEPS, payload=PAGE)
    await harness.client.list_step_metrics("m")
    (t_first, _), (t_second, _) = harness.seen.requests
    assert t_second - t_first == pytest.approx(12.0)


async def test_429_without_header_backs_off_on_its_own(
    harness: Harness, mock_api: aioresponses
) -> None:
    mock_api.get(STEPS, status=429, body="")
    mock_api.get(STEPS, status=429, body="")
    mock_api.get(STEPS, payload=PAGE)
    await harness.client.list_step_metrics("m")
    times = [t for t, _ in harness.seen.requests]
    assert times[1] - times[0] == pytest.approx(10.0)
    assert times[2] - times[1] == pytest.approx(20.0)  # doubled on a second 429 in a row


async def test_429_pauses_every_request(harness: Harness, mock_api: aioresponses) -> None:
    mock_api.get(STEPS, status=429, body="", headers={"Retry-After": "120"})
    with pytest.raises(ApiStatusError):  # too long to wait inside one request
        await harness.client.list_step_metrics("m")
    assert harness.budget.hold_remaining == pytest.approx(120.0)
    assert harness.budget.remaining == 0
    mock_api.get(STEPS, payload=PAGE)
    await harness.client.list_step_metrics("m")  # any later request waits out the pause
    assert harness.seen.requests[-1][0] == pytest.approx(120.0)


async def test_absurd_retry_after_is_capped(harness: Harness, mock_api: aioresponses) -> None:
    mock_api.get(STEPS, status=429, body="", headers={"Retry-After": "86400"})
    with pytest.raises(ApiStatusError):
        await harness.client.list_step_metrics("m")
    assert harness.budget.hold_remaining == pytest.approx(900.0)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("Wed, 21 Oct 2026 07:28:00 GMT", None),  # parsed below against its own clock
        ("soon", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_retry_after(header: str | None, seconds: float | None) -> None:
    if header and "GMT" in header:
        now = datetime(2026, 10, 21, 7, 27, 30, tzinfo=UTC).timestamp()
        assert parse_retry_after(header, now) == pytest.approx(30.0)
    else:
        assert parse_retry_after(header, 0.0) == seconds


async def test_budget_spaces_requests_within_a_minute() -> None:
    fake = FakeTime()
    budget = RequestBudget(3, clock=fake.monotonic, sleep=fake.sleep)
    starts = []
    for _ in range(7):
        await budget.acquire()
        starts.append(fake.now)
    assert starts == [0.0, 0.0, 0.0, 60.0, 60.0, 60.0, 120.0]


async def test_no_retry_storm_exceeds_the_budget(mock_api: aioresponses) -> None:
    for _ in range(40):
        mock_api.get(STEPS, status=503, body="")
    storm = RetryPolicy(max_retries=9, base_delay=0.001, max_delay=0.001)
    async with built(5, storm) as made:
        for _ in range(4):
            with pytest.raises(ApiStatusError):
                await made.client.list_step_metrics("m")
    seen = made.seen
    times = [t for t, _ in seen.requests]
    assert len(times) == 40
    for start in times:
        in_window = [t for t in times if start <= t < start + 60]
        assert len(in_window) <= 5, (start, in_window)

"""Basic auth: which headers pass, what is remembered, and what every wrong guess costs.

Everything goes through ``Authenticator.verify``, the one path the middleware takes too.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import bcrypt
import pytest

from exporter.webconfig import Authenticator, Verdict, WebConfig, load_web_config
from exporter.webconfig.auth import MAX_WAITING_CHECKS
from exporter.webconfig.loader import stand_in_hash
from tests.webconfig_support import (
    ALICE_HASH,
    ALICE_PASSWORD,
    BOB_HASH,
    BOB_PASSWORD,
    allowed,
    basic,
    promtool_check_web_config,
    write,
)


@pytest.fixture
def users_config(tmp_path: Path) -> WebConfig:
    path = write(
        tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: {BOB_HASH}\n"
    )
    promtool_check_web_config(path)
    return load_web_config(path)


@pytest.mark.parametrize(
    ("header", "accepted"),
    [
        (basic("alice", ALICE_PASSWORD), True),
        (basic("bob", BOB_PASSWORD), True),
        ("basic " + basic("alice", ALICE_PASSWORD).split()[1], True),  # scheme is case-insensitive
        (basic("alice", BOB_PASSWORD), False),
        (basic("alice", ALICE_PASSWORD + "x"), False),
        (basic("alice", ""), False),
        (basic("mallory", ALICE_PASSWORD), False),
        (basic("Alice", ALICE_PASSWORD), False),
        (None, False),
        ("", False),
        ("Basic", False),
        ("Bearer " + base64.b64encode(f"alice:{ALICE_PASSWORD}".encode()).decode(), False),
        ("Basic !!!not-base64!!!", False),
        ("Basic " + base64.b64encode(b"alice").decode(), False),  # no colon
        ("Basic " + base64.b64encode(b"\xff\xfe:" + ALICE_PASSWORD.encode()).decode(), False),
        ("Basic ünïcode", False),
        (basic("alice", b"\xff" * 100), False),  # longer than bcrypt's 72 bytes
    ],
)
async def test_verify(users_config: WebConfig, header: str | None, accepted: bool) -> None:
    assert await allowed(users_config, header) is accepted


async def test_no_users_accepts_anything(tmp_path: Path) -> None:
    config = load_web_config(write(tmp_path / "web.yml", "basic_auth_users: {}\n"))
    assert await allowed(config, None)
    assert await allowed(config, "Basic garbage")


@pytest.fixture
def count_bcrypt(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Record the hash each bcrypt.checkpw call was made against."""
    calls: list[bytes] = []
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def counting(password: bytes, hashed: bytes) -> bool:
        calls.append(hashed)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", counting)
    return calls


async def test_successful_verification_is_cached(
    users_config: WebConfig, count_bcrypt: list[bytes]
) -> None:
    verify = Authenticator(lambda: users_config).verify
    header = basic("alice", ALICE_PASSWORD)
    assert await verify(header) is Verdict.ALLOWED
    assert len(count_bcrypt) == 1
    assert await verify(header) is Verdict.ALLOWED
    assert await verify(header) is Verdict.ALLOWED
    assert len(count_bcrypt) == 1
    # A cached success says nothing about another password for the same user.
    assert await verify(basic("alice", BOB_PASSWORD)) is Verdict.DENIED
    assert len(count_bcrypt) == 2
    assert await verify(header) is Verdict.ALLOWED
    assert len(count_bcrypt) == 2


async def test_failures_are_not_cached(users_config: WebConfig, count_bcrypt: list[bytes]) -> None:
    """Every wrong guess pays bcrypt's cost: that is what slows down guessing."""
    verify = Authenticator(lambda: users_config).verify
    for _ in range(3):
        assert await verify(basic("alice", "wrong")) is Verdict.DENIED
    assert len(count_bcrypt) == 3


async def test_unknown_user_costs_a_bcrypt_too(
    users_config: WebConfig, count_bcrypt: list[bytes]
) -> None:
    """Otherwise response times would tell which user names exist."""
    assert not await allowed(users_config, basic("mallory", ALICE_PASSWORD))
    assert len(count_bcrypt) == 1
    assert count_bcrypt[0] not in (ALICE_HASH.encode(), BOB_HASH.encode())


async def test_unknown_user_never_matches_the_stand_in_hash(users_config: WebConfig) -> None:
    """Even a password that matches the timing stand-in does not log in a user that is absent."""
    stand_in = bcrypt.hashpw(b"guess", bcrypt.gensalt(4))
    config = dataclasses.replace(users_config, stand_in=stand_in)
    assert not await allowed(config, basic("mallory", "guess"))


async def test_cache_is_per_hash(tmp_path: Path, count_bcrypt: list[bytes]) -> None:
    """A new hash for the same user (password changed) must be verified again."""
    header = basic("alice", ALICE_PASSWORD)
    current = load_web_config(
        write(tmp_path / "a.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    )
    verify = Authenticator(lambda: current).verify
    assert await verify(header) is Verdict.ALLOWED
    new_hash = bcrypt.hashpw(b"changed", bcrypt.gensalt(4)).decode()
    current = load_web_config(
        write(tmp_path / "b.yml", f"basic_auth_users:\n  alice: {new_hash}\n")
    )
    assert await verify(header) is Verdict.DENIED
    assert len(count_bcrypt) == 2


async def test_verified_password_survives_a_reload_that_keeps_the_hash(
    tmp_path: Path, count_bcrypt: list[bytes]
) -> None:
    """A reload (here: bob added) must not send Prometheus's next scrape through bcrypt."""
    header = basic("alice", ALICE_PASSWORD)
    current = load_web_config(
        write(tmp_path / "a.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    )
    verify = Authenticator(lambda: current).verify
    assert await verify(header) is Verdict.ALLOWED
    current = load_web_config(
        write(tmp_path / "b.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: {BOB_HASH}\n")
    )
    assert await verify(header) is Verdict.ALLOWED
    assert len(count_bcrypt) == 1


@pytest.mark.parametrize(
    ("costs", "expected"),
    [((4,), 4), ((4, 4, 5), 4), ((4, 5), 5), ((6, 5, 6, 5, 4), 6)],
)
def test_stand_in_has_the_most_common_cost(costs: tuple[int, ...], expected: int) -> None:
    users = {f"u{i}": bcrypt.hashpw(b"x", bcrypt.gensalt(cost)) for i, cost in enumerate(costs)}
    stand_in = stand_in_hash(users)
    assert stand_in is not None
    assert stand_in.startswith(f"$2b${expected:02d}$".encode())


async def fastest_denial(verify: Callable[[str], Awaitable[Verdict]], header: str) -> float:
    """The quickest of a few denials: the least disturbed by whatever else the machine does."""
    timings = []
    for _ in range(3):
        start = time.perf_counter()
        assert await verify(header) is Verdict.DENIED
        timings.append(time.perf_counter() - start)
    return min(timings)


@pytest.mark.parametrize("cost", [4, 12])
async def test_unknown_users_take_as_long_as_known_ones(tmp_path: Path, cost: int) -> None:
    """A wrong user name and a wrong password cost the same, whatever cost the hashes have.

    A property, not a speed target: the band is wide, but a stand-in of another cost is off
    by a factor of 4 or more (cost 10 against 12) and of 60 (10 against 4).
    """
    hashed = bcrypt.hashpw(b"right", bcrypt.gensalt(cost)).decode()
    config = load_web_config(write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {hashed}\n"))
    verify = Authenticator(lambda: config).verify
    known = await fastest_denial(verify, basic("alice", "wrong"))
    unknown = await fastest_denial(verify, basic("mallory", "wrong"))
    assert 0.5 < unknown / known < 2, (known, unknown)


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_only_a_few_checks_may_wait_the_rest_are_busy_at_once(
    users_config: WebConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    gate = threading.Event()
    real: Callable[[bytes, bytes], bool] = bcrypt.checkpw

    def held(password: bytes, hashed: bytes) -> bool:
        gate.wait(10)
        return real(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", held)
    authenticator = Authenticator(lambda: users_config)
    flood = [
        asyncio.create_task(authenticator.verify(basic("alice", f"wrong-{i}"))) for i in range(50)
    ]
    try:
        # While bcrypt is held, everything beyond the limit is answered without waiting for it.
        await wait_until(lambda: sum(task.done() for task in flood) == 50 - MAX_WAITING_CHECKS)
        answered = [task.result() for task in flood if task.done()]
        assert set(answered) == {Verdict.BUSY}
        assert authenticator.waiting == MAX_WAITING_CHECKS
    finally:
        gate.set()
    verdicts = await asyncio.gather(*flood)
    assert verdicts.count(Verdict.DENIED) == MAX_WAITING_CHECKS
    assert authenticator.waiting == 0
    # With the queue drained, checks are accepted again.
    assert await authenticator.verify(basic("alice", ALICE_PASSWORD)) is Verdict.ALLOWED

"""Reloading the web config while serving: what is picked up, what is kept, what is logged."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from exporter.webconfig import WebConfigError, WebConfigWatcher, loader, schema
from exporter.webconfig import watcher as watcher_module
from tests.webconfig_support import (
    ALICE_HASH,
    ALICE_PASSWORD,
    BOB_HASH,
    BOB_PASSWORD,
    TLS_BASE,
    allowed,
    basic,
    copy_pki,
    make_pki,
    promtool_check_web_config,
    write,
)


@pytest.fixture(scope="module")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    copy_pki(pki_source, tmp_path)
    return tmp_path


async def test_watcher_without_a_file_never_reloads() -> None:
    watcher = WebConfigWatcher(None)
    assert watcher.current.ssl_context is None
    assert not await watcher.reload_if_changed()


def test_watcher_refuses_a_bad_initial_file(tmp_path: Path) -> None:
    with pytest.raises(WebConfigError, match=r"basic_auth_users\.alice"):
        WebConfigWatcher(write(tmp_path / "web.yml", "basic_auth_users:\n  alice: nope\n"))


async def test_reload_picks_up_a_new_user(tmp_path: Path) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    assert not await watcher.reload_if_changed()
    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    promtool_check_web_config(path)
    assert await watcher.reload_if_changed()
    assert await allowed(watcher.current, basic("bob", BOB_PASSWORD))
    assert not await allowed(watcher.current, basic("alice", ALICE_PASSWORD))
    assert not await watcher.reload_if_changed()


async def test_same_size_rewrite_is_noticed(tmp_path: Path) -> None:
    """Content hashing catches a rewrite that keeps size and (coarse) mtime."""
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    stat = path.stat()
    write(path, f"basic_auth_users:\n  bobby: {ALICE_HASH}\n")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    assert await watcher.reload_if_changed()
    assert list(watcher.current.users) == ["bobby"]


async def test_broken_file_keeps_the_last_good_config_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    good = watcher.current
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")

    write(path, f"basic_auth_users:\n  alice: {ALICE_HASH}\n  bob: [\n")
    assert not await watcher.reload_if_changed()
    assert not await watcher.reload_if_changed()
    assert watcher.current is good
    assert await allowed(watcher.current, basic("alice", ALICE_PASSWORD))
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "invalid YAML" in errors[0].__dict__["err"]
    assert ALICE_HASH not in errors[0].__dict__["err"]

    path.unlink()  # a different broken state is reported again, once
    assert not await watcher.reload_if_changed()
    assert not await watcher.reload_if_changed()
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 2

    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    assert await watcher.reload_if_changed()
    assert await allowed(watcher.current, basic("bob", BOB_PASSWORD))


async def test_reload_notices_a_renewed_certificate_file(tls_dir: Path) -> None:
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    assert not await watcher.reload_if_changed()
    shutil.copyfile(tls_dir / "server2.crt", tls_dir / "server.crt")
    shutil.copyfile(tls_dir / "server2.key", tls_dir / "server.key")
    assert await watcher.reload_if_changed()
    assert watcher.current.ssl_context is context


async def test_half_written_certificate_keeps_the_old_one(
    tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A new cert whose new key is not there yet is refused; the live context is untouched."""
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    good = watcher.current
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    shutil.copyfile(tls_dir / "server2.crt", tls_dir / "server.crt")
    assert not await watcher.reload_if_changed()
    assert watcher.current is good
    assert "does not belong" in caplog.records[-1].__dict__["err"]
    shutil.copyfile(tls_dir / "server2.key", tls_dir / "server.key")
    assert await watcher.reload_if_changed()


@pytest.mark.parametrize("direction", ["off", "on"])
async def test_turning_tls_on_or_off_needs_a_restart(
    tls_dir: Path, caplog: pytest.LogCaptureFixture, direction: str
) -> None:
    users = f"basic_auth_users:\n  alice: {ALICE_HASH}\n"
    before, after = (TLS_BASE, users) if direction == "off" else (users, TLS_BASE + users)
    path = write(tls_dir / "web.yml", before)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    write(path, after)
    assert await watcher.reload_if_changed()
    assert watcher.current.ssl_context is context
    assert any("needs a restart" in r.getMessage() for r in caplog.records)
    # Auth still reloaded.
    assert not await allowed(watcher.current, None)
    assert await allowed(watcher.current, basic("alice", ALICE_PASSWORD))


async def test_client_auth_change_needs_a_restart(
    tls_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tls_dir / "web.yml", TLS_BASE)
    watcher = WebConfigWatcher(path)
    context = watcher.current.ssl_context
    assert context is not None
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    write(
        path,
        TLS_BASE + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n",
    )
    assert await watcher.reload_if_changed()
    assert watcher.current.ssl_context is context
    assert context.verify_mode == ssl.CERT_NONE
    assert any("need a restart" in r.getMessage() for r in caplog.records)


async def test_reload_work_runs_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Parsing blocks here until the loop itself releases it: only possible off the loop."""
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    config_watcher = WebConfigWatcher(path)
    entered, release = threading.Event(), threading.Event()

    def blocking_parse(file: Path, text: bytes) -> schema.WebConfigFile:
        entered.set()
        if not release.wait(timeout=10):
            raise AssertionError("the event loop never ran while the file was parsed")
        return schema.parse(file, text)

    monkeypatch.setattr(loader, "parse", blocking_parse)
    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    reload = asyncio.create_task(config_watcher.reload_if_changed())
    assert await asyncio.to_thread(entered.wait, 10)
    assert not reload.done()
    release.set()
    assert await reload
    assert list(config_watcher.current.users) == ["bob"]


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_run_survives_any_error_and_logs_each_problem_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    config_watcher = WebConfigWatcher(path)
    failures: list[BaseException] = [MemoryError(), MemoryError(), RuntimeError("boom")]
    real_attempt = watcher_module._attempt

    def failing(*args: Any) -> Any:
        if failures:
            raise failures.pop(0)
        return real_attempt(*args)

    monkeypatch.setattr(watcher_module, "_attempt", failing)
    caplog.set_level(logging.ERROR, logger="exporter.webconfig")
    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    task = asyncio.create_task(config_watcher.run(0.01))
    try:
        await wait_until(lambda: "bob" in config_watcher.current.users)
    finally:
        task.cancel()
    errors = [r.__dict__["err"] for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == ["MemoryError", "RuntimeError"]
    assert not failures


@pytest.mark.parametrize(
    "emptied",
    [
        "",
        "basic_auth_users: {}\n",
        "http_server_config:\n  headers:\n    X-Frame-Options: deny\n",
    ],
    ids=["empty-file", "no-users", "users-section-deleted"],
)
async def test_a_reload_that_would_remove_every_user_is_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, emptied: str
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    config_watcher = WebConfigWatcher(path)
    good = config_watcher.current
    caplog.set_level(logging.WARNING, logger="exporter.webconfig")
    write(path, emptied)
    assert not await config_watcher.reload_if_changed()
    assert not await config_watcher.reload_if_changed()  # unchanged: not reported again
    assert config_watcher.current is good
    assert not await allowed(config_watcher.current, None)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "restart with a config file without users" in warnings[0].getMessage()

    write(path, f"basic_auth_users:\n  bob: {BOB_HASH}\n")
    assert await config_watcher.reload_if_changed()
    assert await allowed(config_watcher.current, basic("bob", BOB_PASSWORD))


async def test_without_users_at_start_a_file_without_users_still_reloads(tmp_path: Path) -> None:
    path = write(
        tmp_path / "web.yml", "http_server_config:\n  headers:\n    X-Frame-Options: deny\n"
    )
    config_watcher = WebConfigWatcher(path)
    write(path, "http_server_config:\n  headers:\n    X-Frame-Options: sameorigin\n")
    assert await config_watcher.reload_if_changed()
    assert dict(config_watcher.current.headers) == {"X-Frame-Options": "sameorigin"}

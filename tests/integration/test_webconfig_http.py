"""TLS, client certificates, basic auth and reloads over real loopback sockets.

A small aiohttp app (``/metrics`` and ``/healthz``) is served the way the exporter serves its
own: ``exporter.web.listener.listening`` with the watcher's SSLContext and ``auth_middleware``.
Reloads are driven by awaiting ``reload_if_changed()`` directly, never by waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import bcrypt
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from exporter.web.listener import listening
from exporter.webconfig import WWW_AUTHENTICATE, WebConfigWatcher, auth_middleware
from tests.listener_support import wait_until
from tests.webconfig_support import (
    ALICE_HASH,
    ALICE_PASSWORD,
    BOB_HASH,
    BOB_PASSWORD,
    basic,
    copy_pki,
    make_pki,
    promtool_check_web_config,
)

pytestmark = pytest.mark.integration

MTLS = """\
tls_server_config:
  cert_file: server.crt
  key_file: server.key
  client_auth_type: RequireAndVerifyClientCert
  client_ca_file: ca.crt
"""
SECURITY_HEADERS = """\
http_server_config:
  headers:
    X-Content-Type-Options: nosniff
    X-Frame-Options: deny
"""
TLS = "tls_server_config:\n  cert_file: server.crt\n  key_file: server.key\n"
ALICE = basic("alice", ALICE_PASSWORD)
BOB = basic("bob", BOB_PASSWORD)

Serve = Callable[[str], Awaitable[tuple[str, WebConfigWatcher]]]


@pytest.fixture(scope="module")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    copy_pki(pki_source, tmp_path)
    return tmp_path


async def _ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def _missing(request: web.Request) -> web.Response:
    raise web.HTTPNotFound(text="nope")


@pytest.fixture
async def serve(tls_dir: Path) -> AsyncIterator[Serve]:
    """Write the web config, check it with promtool, and serve the app with it on 127.0.0.1."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(config_text: str) -> tuple[str, WebConfigWatcher]:
            path = tls_dir / "web.yml"
            path.write_text(config_text)
            promtool_check_web_config(path)
            watcher = WebConfigWatcher(path)
            app = web.Application(middlewares=[auth_middleware(lambda: watcher.current)])
            app.router.add_get("/metrics", _ok)
            app.router.add_get("/healthz", _ok)
            app.router.add_get("/missing", _missing)
            server = listening(app, "127.0.0.1", 0, ssl_context=watcher.current.ssl_context)
            listener = await stack.enter_async_context(server)
            return listener.url, watcher

        yield start


def client_context(tls_dir: Path, cert: str | None = None) -> ssl.SSLContext:
    """Trusts the test CA; presents ``cert`` (client or stranger) when given."""
    context = ssl.create_default_context(cafile=tls_dir / "ca.crt")
    if cert is not None:
        context.load_cert_chain(tls_dir / f"{cert}.crt", tls_dir / f"{cert}.key")
    return context


async def fetch(
    url: str,
    *,
    auth: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> tuple[int, str, dict[str, str]]:
    """(status, body, headers); ``auth`` is a whole Authorization header value."""
    headers = {"Authorization": auth} if auth is not None else {}
    # A fresh session per request: no pooled connection hides a handshake failure.
    async with (
        aiohttp.ClientSession() as session,
        session.get(url, headers=headers, ssl=ssl_context or True) as resp,
    ):
        return resp.status, await resp.text(), dict(resp.headers)


async def test_basic_auth_over_tls(serve: Serve, tls_dir: Path) -> None:
    base, _ = await serve(f"{TLS}{SECURITY_HEADERS}basic_auth_users:\n  alice: {ALICE_HASH}\n")
    assert base.startswith("https://")
    tls = client_context(tls_dir)

    status, _, headers = await fetch(f"{base}/metrics", ssl_context=tls)
    assert status == 401
    assert headers["WWW-Authenticate"] == WWW_AUTHENTICATE
    assert headers["X-Frame-Options"] == "deny"

    status, _, headers = await fetch(
        f"{base}/metrics", auth=basic("alice", "wrong"), ssl_context=tls
    )
    assert status == 401
    assert headers["WWW-Authenticate"] == 'Basic realm="cohere-finetune-exporter"'

    status, _, _ = await fetch(f"{base}/metrics", auth=BOB, ssl_context=tls)
    assert status == 401

    for _ in range(2):  # the second request is answered from the cache
        status, body, headers = await fetch(f"{base}/metrics", auth=ALICE, ssl_context=tls)
        assert (status, body) == (200, "ok")
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert "WWW-Authenticate" not in headers

    status, body, headers = await fetch(f"{base}/healthz", ssl_context=tls)
    assert (status, body) == (200, "ok")
    assert headers["X-Frame-Options"] == "deny"

    # Errors raised by handlers carry the headers too, and need credentials first.
    assert (await fetch(f"{base}/missing", ssl_context=tls))[0] == 401
    status, _, headers = await fetch(f"{base}/missing", auth=ALICE, ssl_context=tls)
    assert status == 404
    assert headers["X-Frame-Options"] == "deny"


async def test_basic_auth_over_plain_http(serve: Serve) -> None:
    base, _ = await serve(f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    assert base.startswith("http://")
    assert (await fetch(f"{base}/metrics"))[0] == 401
    assert (await fetch(f"{base}/metrics", auth=ALICE))[:2] == (200, "ok")
    assert (await fetch(f"{base}/healthz"))[:2] == (200, "ok")


async def test_no_users_means_no_auth(serve: Serve) -> None:
    base, _ = await serve("{}\n")
    assert (await fetch(f"{base}/metrics"))[:2] == (200, "ok")


async def test_client_certificate_required(serve: Serve, tls_dir: Path) -> None:
    base, _ = await serve(MTLS)
    with pytest.raises(aiohttp.ClientError):
        await fetch(f"{base}/metrics", ssl_context=client_context(tls_dir))
    with pytest.raises(aiohttp.ClientError):  # a certificate from another CA
        await fetch(f"{base}/metrics", ssl_context=client_context(tls_dir, "stranger"))
    status, body, _ = await fetch(f"{base}/metrics", ssl_context=client_context(tls_dir, "client"))
    assert (status, body) == (200, "ok")


async def test_client_certificate_and_basic_auth_together(serve: Serve, tls_dir: Path) -> None:
    base, _ = await serve(f"{MTLS}basic_auth_users:\n  alice: {ALICE_HASH}\n")
    tls = client_context(tls_dir, "client")
    assert (await fetch(f"{base}/metrics", ssl_context=tls))[0] == 401
    assert (await fetch(f"{base}/metrics", auth=ALICE, ssl_context=tls))[:2] == (200, "ok")


async def test_reload_swaps_users(serve: Serve, tls_dir: Path) -> None:
    base, watcher = await serve(f"{TLS}basic_auth_users:\n  alice: {ALICE_HASH}\n")
    tls = client_context(tls_dir)
    assert (await fetch(f"{base}/metrics", auth=ALICE, ssl_context=tls))[0] == 200
    assert (await fetch(f"{base}/metrics", auth=BOB, ssl_context=tls))[0] == 401

    path = tls_dir / "web.yml"
    path.write_text(f"{TLS}basic_auth_users:\n  bob: {BOB_HASH}\n")
    promtool_check_web_config(path)
    assert await watcher.reload_if_changed()

    assert (await fetch(f"{base}/metrics", auth=BOB, ssl_context=tls))[:2] == (200, "ok")
    assert (await fetch(f"{base}/metrics", auth=ALICE, ssl_context=tls))[0] == 401

    # A broken rewrite leaves bob in place.
    path.write_text(f"{TLS}basic_auth_users:\n  bob: not-a-hash\n")
    assert not await watcher.reload_if_changed()
    assert (await fetch(f"{base}/metrics", auth=BOB, ssl_context=tls))[0] == 200


async def _server_common_name(base: str, tls: ssl.SSLContext) -> str:
    host, port = base.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port), ssl=tls)
    try:
        cert = writer.get_extra_info("peercert")
        subject = dict(item for rdn in cert["subject"] for item in rdn)
        return str(subject["commonName"])
    finally:
        writer.close()
        await writer.wait_closed()


async def test_renewed_certificate_is_served_without_restart(serve: Serve, tls_dir: Path) -> None:
    base, watcher = await serve(TLS)
    tls = client_context(tls_dir)
    context = watcher.current.ssl_context
    assert await _server_common_name(base, tls) == "server"

    shutil.copyfile(tls_dir / "server2.crt", tls_dir / "server.crt")
    shutil.copyfile(tls_dir / "server2.key", tls_dir / "server.key")
    assert await watcher.reload_if_changed()
    assert watcher.current.ssl_context is context
    assert await _server_common_name(base, tls) == "server-2"
    assert (await fetch(f"{base}/metrics", ssl_context=tls))[:2] == (200, "ok")


async def test_under_mtls_every_connection_needs_a_certificate_probes_included(
    serve: Serve, tls_dir: Path
) -> None:
    """RequireAndVerifyClientCert means every connection: /healthz is no exception.

    The certificate is checked in the handshake, before any path is known. Letting connections
    without one through for /healthz would open the HTTP parser to every client the operator
    meant to keep out. Probes present the certificate, or check the TCP port instead.
    """
    base, _ = await serve(f"{MTLS}basic_auth_users:\n  alice: {ALICE_HASH}\n")
    with pytest.raises(aiohttp.ClientError):
        await fetch(f"{base}/healthz", ssl_context=client_context(tls_dir))
    # With the certificate, /healthz still needs no password.
    status, body, _ = await fetch(f"{base}/healthz", ssl_context=client_context(tls_dir, "client"))
    assert (status, body) == (200, "ok")
    # A TCP probe (Kubernetes' tcpSocket) connects without a handshake.
    host, port = base.removeprefix("https://").rsplit(":", 1)
    _, writer = await asyncio.open_connection(host, int(port))
    writer.close()
    await writer.wait_closed()


async def test_a_wrong_password_flood_after_a_reload_does_not_hold_up_a_known_login(
    tmp_path: Path,
) -> None:
    """200 wrong passwords at once, after a reload: the scraper's next login is not behind them.

    Its password was verified before the reload and its hash did not change, so it is answered
    from memory; the flood gets 401 (the few checks allowed to wait) or 429 at once.
    """
    hashed = bcrypt.hashpw(ALICE_PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    path = tmp_path / "web.yml"
    path.write_text(f"basic_auth_users:\n  alice: {hashed}\n")
    watcher = WebConfigWatcher(path)
    received = 0

    @web.middleware
    async def count(request: web.Request, handler: Handler) -> web.StreamResponse:
        nonlocal received
        received += 1
        return await handler(request)

    app = web.Application(middlewares=[count, auth_middleware(lambda: watcher.current)])
    app.router.add_get("/metrics", _ok)
    connector = aiohttp.TCPConnector(limit=0)
    async with (
        listening(app, "127.0.0.1", 0) as listener,
        aiohttp.ClientSession(connector=connector) as session,
    ):

        async def get(password: str) -> tuple[int, str | None]:
            headers = {"Authorization": basic("alice", password)}
            async with session.get(f"{listener.url}/metrics", headers=headers) as answer:
                return answer.status, answer.headers.get("Retry-After")

        assert (await get(ALICE_PASSWORD))[0] == 200
        path.write_text(f"basic_auth_users:\n  alice: {hashed}\n  bob: {BOB_HASH}\n")
        assert await watcher.reload_if_changed()
        flood = [asyncio.create_task(get(f"wrong-{i}")) for i in range(200)]
        await wait_until(lambda: received >= 201)
        start = time.monotonic()
        assert (await get(ALICE_PASSWORD))[0] == 200
        took = time.monotonic() - start
        answers = await asyncio.gather(*flood)
    assert took < 2.0, f"the known login waited {took:.2f} s"
    assert set(answers) <= {(401, None), (429, "1")}
    assert answers.count((429, "1")) >= 150

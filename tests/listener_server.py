"""A listener in a process of its own, under a low descriptor limit, for the flood tests.

Usage: ``python -m tests.listener_server NOFILE MAX_CONNECTIONS HEADER_TIMEOUT``
(MAX_CONNECTIONS 0: the listener's default). Prints the port, then serves ``/healthz`` and logs
(logfmt, info) to stderr until it is killed.
"""

from __future__ import annotations

import asyncio
import resource
import sys

from aiohttp import web

from exporter.logs import setup_logging
from exporter.web.listener import listening


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")


async def serve(max_connections: int, header_timeout: float) -> None:
    app = web.Application()
    app.router.add_get("/healthz", _healthz)
    async with listening(
        app,
        "127.0.0.1",
        0,
        max_connections=max_connections or None,
        header_timeout=header_timeout,
        idle_timeout=header_timeout,
    ) as listener:
        print(listener.addresses[0][1], flush=True)
        await asyncio.Event().wait()


def main(argv: list[str]) -> None:
    nofile, max_connections, header_timeout = int(argv[0]), int(argv[1]), float(argv[2])
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))
    setup_logging("info")
    asyncio.run(serve(max_connections, header_timeout))


if __name__ == "__main__":
    main(sys.argv[1:])

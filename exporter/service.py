"""Wiring of one exporter instance: settings → provider clients → pollers → hub → web app.

``Exporter`` owns no event loop and binds no socket, so tests can build one against a
simulator and drive ``run_cycle`` directly; ``serve`` adds the socket, the poll tasks and the
signal handling for the real process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import aiohttp
from aiohttp import web

from exporter import providers
from exporter.core.hub import SnapshotHub
from exporter.core.poller import Poller
from exporter.core.problems import ProblemLog
from exporter.core.runbook import RunBook
from exporter.core.snapshot import Snapshot
from exporter.core.spikes import SpikeRule
from exporter.core.state import StateStore
from exporter.exposition import ExpositionCache
from exporter.settings import ConfigError, Settings
from exporter.telemetry import live_registry
from exporter.upstream.client import RetryPolicy
from exporter.web.app import STATUS_PAGES, build_web_app
from exporter.web.listener import Listener
from exporter.web.listener import listening as serve_app
from exporter.web.status import StatusPages
from exporter.webconfig import WebConfigWatcher, auth_middleware

log = logging.getLogger(__name__)
WEB_CONFIG_RELOAD_SECONDS = 5.0


class Exporter:
    """Everything one exporter needs except the socket and the poll tasks."""

    def __init__(
        self,
        settings: Settings,
        session: aiohttp.ClientSession,
        *,
        web_config: WebConfigWatcher | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.settings = settings
        names = settings.polled_providers()
        self.budgets = {name: providers.budget_for(settings, name) for name in names}
        self.live_registry, telemetry = live_registry(self.budgets)
        self.exposition = ExpositionCache(self.live_registry)
        self._pages: StatusPages | None = None  # the app's, once it is built
        self.hub = SnapshotHub(names, self._prepare)
        problems = ProblemLog(logging.getLogger("exporter.core"))
        state = StateStore(settings.state_file, problems) if settings.state_file else None
        self.pollers: dict[str, Poller] = {}
        for name in names:
            http = providers.json_client(
                settings,
                name,
                session,
                budget=self.budgets[name],
                observer=telemetry.observer(name),
                retry=retry,
            )
            provider = providers.provider_for(settings, name, http)
            self.pollers[name] = Poller(
                provider,
                providers.discovery_for(settings, name, provider),
                RunBook(
                    name,
                    rule=SpikeRule.from_settings(settings),
                    max_metrics=settings.limits_max_metrics_per_model,
                    problems=problems,
                    history=settings.ui_history,
                    saved=state.loaded.get(name) if state is not None else None,
                ),
                settings=settings,
                requests_per_minute=self.budgets[name].per_minute,
                problems=problems,
                publish=self.hub.publish,
                prepare_seconds=lambda: self.hub.prepare_seconds,
                state=state,
                monotonic=monotonic,
            )
        self.web_config = web_config or WebConfigWatcher(settings.web_config_file)
        self.app = build_web_app(
            self.exposition,
            lambda: self.hub.snapshot,
            telemetry_path=settings.web_telemetry_path,
            middlewares=(auth_middleware(lambda: self.web_config.current),),
            budgets=self.budgets,
            finished_runs=settings.ui_finished_runs,
            refresh_seconds=settings.poll_interval,
        )
        self._pages = self.app[STATUS_PAGES]

    def _prepare(self, snapshot: Snapshot) -> None:
        """Before each publication, in a worker thread: the ``/metrics`` bodies, and the status
        pages someone is watching."""
        self.exposition.prepare(snapshot)
        if self._pages is not None:
            self._pages.prepare(snapshot)

    @property
    def snapshot(self) -> Snapshot:
        return self.hub.snapshot

    async def run_cycle(self) -> Snapshot:
        """One cycle of every provider at once (tests drive the schedule themselves)."""
        await asyncio.gather(*(poller.run_cycle() for poller in self.pollers.values()))
        return self.hub.snapshot


def new_session(settings: Settings) -> aiohttp.ClientSession:
    """One pooled session: keep-alive connections, bounded to what the pollers can use."""
    connector = aiohttp.TCPConnector(
        limit=settings.poll_concurrency * 2 * len(providers.NAMES), keepalive_timeout=75
    )  # a pool per process; each provider's poller uses at most --poll.concurrency of it
    return aiohttp.ClientSession(connector=connector, raise_for_status=False)


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, settings: Settings, exporter: Exporter
) -> AsyncIterator[Listener]:
    """Bind the listen address; a bind failure is a configuration error naming the flag."""
    host, port = settings.listen
    server = serve_app(
        app,
        host,
        port,
        ssl_context=exporter.web_config.current.ssl_context,
        max_connections=settings.web_max_connections,
        access_log=logging.getLogger("aiohttp.access"),
    )
    async with contextlib.AsyncExitStack() as stack:
        try:
            listener = await stack.enter_async_context(server)
        except OSError as exc:
            raise ConfigError(
                [
                    f"--web.listen-address: cannot listen on {settings.web_listen_address}: "
                    f"{exc.strerror}"
                ]
            ) from None
        yield listener


def format_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def watch_web_config(watcher: WebConfigWatcher) -> None:
    """Re-read the web config file now and then, so credentials rotate without a restart."""
    await watcher.run(WEB_CONFIG_RELOAD_SECONDS)


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop`` so that shutdown runs every ``finally`` and exits 0."""
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)


async def serve_until_stopped(server: Coroutine[Any, Any, None]) -> None:
    """Run ``server`` until a signal arrives; its own failure (a bind error) propagates."""
    stop = asyncio.Event()
    stop_on_signals(stop)
    task = asyncio.ensure_future(server)
    waiter = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    await asyncio.gather(waiter, return_exceptions=True)
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def serve(settings: Settings, stop: asyncio.Event | None = None) -> None:
    """Run the exporter until SIGTERM/SIGINT (or ``stop``) and shut down cleanly."""
    stop = stop or asyncio.Event()
    stop_on_signals(stop)
    web_config = WebConfigWatcher(settings.web_config_file)
    async with new_session(settings) as session:
        exporter = Exporter(settings, session, web_config=web_config)
        async with listening(exporter.app, settings, exporter) as listener:
            log.info(
                "listening",
                extra={"addresses": " ".join(map(format_address, listener.addresses))},
            )
            tasks = [
                asyncio.create_task(poller.run(), name=f"poller-{name}")
                for name, poller in exporter.pollers.items()
            ]
            tasks.append(asyncio.create_task(watch_web_config(web_config), name="web-config"))
            try:
                await stop.wait()
            finally:
                log.info("shutting down")
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

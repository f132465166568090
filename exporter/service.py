"""Wiring of one exporter instance: settings → client → poller → registry → web app.

``Exporter`` owns no event loop and binds no socket, so tests can build one against a
simulator and drive ``run_cycle`` directly; ``serve`` adds the socket, the poll task and the
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
from prometheus_client import (
    Counter,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.registry import CollectorRegistry

from exporter.api.budget import RequestBudget
from exporter.api.client import ClientObserver, CohereClient, RetryPolicy, proxy_for
from exporter.collector import PREFIX, BudgetCollector, RuntimeCollector, snapshot_collectors
from exporter.config import ConfigError, Settings
from exporter.exposition import ExpositionCache
from exporter.poller import Poller, PollSettings
from exporter.sharding import Shard
from exporter.snapshot import Snapshot
from exporter.spikes import SpikeRule
from exporter.web import build_web_app
from exporter.webconfig import WebConfigWatcher, auth_middleware

log = logging.getLogger(__name__)
WEB_CONFIG_RELOAD_SECONDS = 5.0
# ``*_created`` series double the counter lines and no dashboard or rule here reads them.
disable_created_metrics()  # type: ignore[no-untyped-call]


def poll_settings(settings: Settings) -> PollSettings:
    return PollSettings(
        interval=settings.poll_interval,
        concurrency=settings.poll_concurrency,
        discovery_interval=settings.poll_discovery_interval,
        final_refresh_interval=settings.poll_final_refresh_interval,
        page_size=settings.poll_page_size,
        model_ids=settings.cohere_models,
        max_models=settings.limits_max_models,
        max_metrics_per_model=settings.limits_max_metrics_per_model,
        shard=Shard(settings.shard_index, settings.shard_count),
        spike_rule=SpikeRule(settings.spike_metrics, settings.spike_factor, settings.spike_window),
        state_file=settings.state_file,
    )


class ApiTelemetry(ClientObserver):
    """Counts every HTTP attempt and every retry of the API client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            f"{PREFIX}_api_requests",
            "Requests sent to the Cohere API, by endpoint and HTTP status (or transport error).",
            ["endpoint", "code"],
            registry=registry,
        )
        self.retries = Counter(
            f"{PREFIX}_api_retries",
            "Retries of API requests, by endpoint and reason (status or transport error).",
            ["endpoint", "reason"],
            registry=registry,
        )

    def request_done(self, endpoint: str, code: str) -> None:
        self.requests.labels(endpoint, code).inc()

    def retrying(self, endpoint: str, reason: str, delay: float) -> None:
        self.retries.labels(endpoint, reason).inc()


class Exporter:
    """Everything one exporter needs except the socket and the poll task."""

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
        # Model data lives in its own registry so that its encoding can be cached per
        # snapshot; the live registry holds what changes between cycles.
        self.registry = CollectorRegistry(auto_describe=False)
        self.live_registry = CollectorRegistry(auto_describe=False)
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.live_registry)
        self.telemetry = ApiTelemetry(self.live_registry)
        self.budget = RequestBudget(settings.cohere_max_requests_per_minute)
        self.client = CohereClient(
            session,
            base_url=settings.cohere_api_url,
            api_key=settings.cohere_api_key,
            client_name=settings.cohere_client_name,
            timeout=settings.cohere_timeout,
            observer=self.telemetry,
            budget=self.budget,
            retry=retry or RetryPolicy(max_retries=settings.cohere_max_retries),
            proxy=proxy_for(settings.cohere_api_url),
        )
        self.poller = Poller(
            self.client,
            poll_settings(settings),
            monotonic=monotonic,
            before_publish=self._prepare_exposition,
        )
        for collector in snapshot_collectors(self.current_snapshot):
            self.registry.register(collector)
        self.live_registry.register(BudgetCollector(self.budget))
        self.live_registry.register(RuntimeCollector())
        self.exposition = ExpositionCache(
            self.registry, self.live_registry, lambda: self.poller.snapshot.version
        )
        self.web_config = web_config or WebConfigWatcher(settings.web_config_file)
        middlewares = (auth_middleware(lambda: self.web_config.current),)
        self.app = build_web_app(
            self.exposition,
            self.current_snapshot,
            telemetry_path=settings.web_telemetry_path,
            middlewares=middlewares,
        )

    def current_snapshot(self) -> Snapshot:
        return self.poller.snapshot

    async def _prepare_exposition(self, snapshot: Snapshot) -> None:
        """Encode the next snapshot off the event loop, before it becomes the current one."""
        registry = CollectorRegistry(auto_describe=False)
        for collector in snapshot_collectors(lambda: snapshot):
            registry.register(collector)
        await asyncio.to_thread(self.exposition.prepare, registry, snapshot.version)


def new_session(settings: Settings) -> aiohttp.ClientSession:
    """One pooled session: keep-alive connections, bounded to what the poller can use."""
    connector = aiohttp.TCPConnector(limit=settings.poll_concurrency * 2, keepalive_timeout=75)
    return aiohttp.ClientSession(connector=connector, raise_for_status=False)


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, settings: Settings, exporter: Exporter
) -> AsyncIterator[web.AppRunner]:
    """Bind the listen address; a bind failure is a configuration error naming the flag."""
    runner = web.AppRunner(
        app, handle_signals=False, access_log=logging.getLogger("aiohttp.access")
    )
    await runner.setup()
    host, port = settings.listen
    site = web.TCPSite(
        runner, host=host, port=port, ssl_context=exporter.web_config.current.ssl_context
    )
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ConfigError(
            [
                f"--web.listen-address: cannot listen on {settings.web_listen_address}: "
                f"{exc.strerror}"
            ]
        ) from None
    try:
        yield runner
    finally:
        await runner.cleanup()


def format_address(address: Any) -> str:
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def watch_web_config(watcher: WebConfigWatcher) -> None:
    """Re-read the web config file now and then, so credentials rotate without a restart."""
    while True:
        await asyncio.sleep(WEB_CONFIG_RELOAD_SECONDS)
        watcher.reload_if_changed()


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
        async with listening(exporter.app, settings, exporter) as runner:
            log.info(
                "listening", extra={"addresses": " ".join(map(format_address, runner.addresses))}
            )
            tasks = [
                asyncio.create_task(exporter.poller.run(), name="poller"),
                asyncio.create_task(watch_web_config(web_config), name="web-config"),
            ]
            try:
                await stop.wait()
            finally:
                log.info("shutting down")
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

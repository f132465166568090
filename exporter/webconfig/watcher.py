"""Reloading the web config while the server runs, without ever blocking the event loop.

Every poll runs in a worker thread: comparing the files with what the last load saw, and when
something changed, reading, parsing and building TLS. Only the result comes back to the loop,
where the new config is put in place. A bad new file keeps the last good config and is logged
once; the watcher itself never stops.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path

from exporter.webconfig.errors import WebConfigError
from exporter.webconfig.files import FileReader, Seen, unchanged
from exporter.webconfig.loader import NO_WEB_CONFIG, Loaded, WebConfig, load
from exporter.webconfig.tls import EncryptedKeyError, TLSFiles, load_chain

log = logging.getLogger("exporter.webconfig")


@dataclass(frozen=True)
class _Attempt:
    """What one poll found: the stamps it saw and either a loaded config or the error."""

    seen: dict[Path, Seen]
    loaded: Loaded | None = None
    error: WebConfigError | None = None


def _attempt(path: Path, seen: dict[Path, Seen]) -> _Attempt | None:
    """None when nothing changed since ``seen``; blocking, run in a worker thread."""
    if unchanged(seen):
        return None
    reader = FileReader()
    try:
        return _Attempt(reader.seen, loaded=load(path, reader))
    except WebConfigError as exc:
        return _Attempt(reader.seen, error=exc)


class WebConfigWatcher:
    """Re-reads the file when its mtime/size/content hash changes; on a bad new file keeps the
    last good config and logs an error once. A new file without users while users are
    configured is refused too (logged once as a warning): authentication is only turned off by
    a restart, never by a file that was emptied or is half written.

    The referenced certificate, key and CA files are watched too, so a renewed certificate is
    picked up without touching the config file. The SSLContext handed to the listening socket
    cannot be swapped, so a new certificate is loaded into that same context (new handshakes use
    it). Turning TLS on or off, or changing who may connect (client_auth_type, client_ca_file,
    TLS versions), needs a restart: OpenSSL cannot drop a trusted CA from a live context, and
    applying only part of such a change would be misleading. Those changes are logged as errors
    and the old TLS state is kept, while users and headers from the same file still reload.
    """

    def __init__(self, path: Path | None) -> None:
        """Load the file now (start-up may block); a bad file raises WebConfigError."""
        self._path = path
        reader = FileReader()
        loaded = load(path, reader) if path is not None else Loaded(NO_WEB_CONFIG, None)
        self._current = loaded.config
        # Digests only: the watcher needs to notice changes, not to keep key material around.
        self._identity = loaded.tls.identity if loaded.tls is not None else None
        self._policy = loaded.tls.policy if loaded.tls is not None else None
        # Stamps of the last attempt, good or bad: an unchanged broken file is not re-reported.
        self._seen = reader.seen
        # One poll at a time: two overlapping polls could put an older file in place last.
        self._lock = asyncio.Lock()

    @property
    def current(self) -> WebConfig:
        return self._current

    async def reload_if_changed(self) -> bool:
        """Load the file again if it or a file it names changed; True if a new config is in use."""
        if self._path is None:
            return False
        async with self._lock:
            attempt = await asyncio.to_thread(_attempt, self._path, self._seen)
            if attempt is None:
                return False
            self._seen = attempt.seen
            if attempt.loaded is None:
                log.error(
                    "web config not reloaded; keeping the previous configuration",
                    extra={"err": str(attempt.error)},
                )
                return False
            loaded = attempt.loaded
            if self._current.users and not loaded.config.users:
                # Fail closed: an emptied or half-written file must not open the endpoints.
                log.warning(
                    "web config not reloaded: the new file has no basic_auth_users, which would "
                    "turn authentication off; keeping the previous configuration. To run "
                    "without authentication, restart with a config file without users",
                    extra={"file": str(self._path), "users": len(self._current.users)},
                )
                return False
            context = self._apply_tls(loaded.tls)
            self._current = dataclasses.replace(loaded.config, ssl_context=context)
            log.info(
                "web config reloaded",
                extra={"file": str(self._path), "users": len(self._current.users)},
            )
            return True

    async def run(self, interval: float) -> None:
        """Poll every ``interval`` seconds until cancelled; no error ends the loop.

        An unexpected failure is logged once per distinct problem (its type and where it was
        raised, never its text, which could quote a file) until a poll succeeds again.
        """
        reported: tuple[str, str] | None = None
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reload_if_changed()
            except Exception as exc:
                frame = exc.__traceback__
                while frame is not None and frame.tb_next is not None:
                    frame = frame.tb_next
                where = (
                    f"{Path(frame.tb_frame.f_code.co_filename).name}:{frame.tb_lineno}"
                    if frame is not None
                    else "?"
                )
                problem = (type(exc).__name__, where)
                if problem != reported:
                    log.error(
                        "web config check failed; keeping the previous configuration and "
                        "checking again",
                        extra={"err": problem[0], "where": where},
                    )
                    reported = problem
            else:
                reported = None

    def _apply_tls(self, new: TLSFiles | None) -> ssl.SSLContext | None:
        """The context to keep serving with, after moving in whatever can change live.

        Runs on the event loop: the live context is in use by handshakes there, and OpenSSL
        contexts must not be changed from another thread while in use. The PEM bytes are
        already in memory and checked, so this is quick.
        """
        context = self._current.ssl_context
        if context is None or new is None:
            if (context is None) != (new is None):
                log.error(
                    "web config: turning TLS on or off needs a restart; keeping TLS %s",
                    "off" if context is None else "on",
                    extra={"file": str(self._path)},
                )
            return context
        if new.policy != self._policy:
            log.error(
                "web config: changes to client_auth_type, client_ca_file, min_version or "
                "max_version need a restart; keeping the previous ones",
                extra={"file": str(self._path)},
            )
        if new.identity != self._identity:
            try:
                load_chain(context, new)
            except (ssl.SSLError, OSError, EncryptedKeyError) as exc:
                log.error(
                    "web config: cannot load the new certificate into the running server",
                    extra={"file": str(self._path), "err": type(exc).__name__},
                )
            else:
                self._identity = new.identity
        return context

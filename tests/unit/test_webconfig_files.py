"""Hostile files: only regular files are read, only up to a size cap, and never on the loop.

The config file and every PEM file it names may turn out to be a FIFO, a directory, a socket,
``/dev/zero`` (or a symlink to it) or simply far too large. At start-up that is a one-line error
with exit code 2; while running it keeps the last good config, is logged once, and the watcher
goes on to apply the next good edit. Start-up goes through the real command line in a child
process with a memory limit, so a regression shows as a failed test, not as a test run that
eats the machine's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import resource
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from exporter.webconfig import WebConfigError, WebConfigWatcher, load_web_config
from exporter.webconfig.files import CONFIG_LIMIT, PEM_LIMIT
from tests.webconfig_support import ALICE_HASH, BOB_HASH, TLS_BASE, copy_pki, make_pki, write

ROOT = Path(__file__).resolve().parents[2]
_MEMORY_LIMIT = 2 * 1024**3


@pytest.fixture(scope="module")
def pki_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory)
    return directory


@pytest.fixture
def tls_dir(tmp_path: Path, pki_source: Path) -> Path:
    copy_pki(pki_source, tmp_path)
    return tmp_path


def let_go(fifo: Path) -> None:
    """Free a reader stuck opening ``fifo`` (the bug these tests catch) and remove it."""
    with contextlib.suppress(OSError):
        if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
            return
        writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # fails when nobody reads
        fifo.unlink()  # so that the next attempt fails instead of blocking again
        os.close(writer)


@pytest.fixture
def hostile(tmp_path: Path) -> Iterator[Callable[[Path, str], None]]:
    """Replace a file with something that is not a readable regular file of sane size."""
    fifos: list[Path] = []
    sockets: list[socket.socket] = []

    def make(path: Path, kind: str) -> None:
        """Built aside and renamed over ``path``, so no poll sees the file missing in between."""
        aside = path.with_name(f"{path.name}.{kind}")
        if kind == "dev-zero-symlink":
            aside.symlink_to("/dev/zero")
        elif kind == "fifo":
            os.mkfifo(aside)
            fifos.append(path)
        elif kind == "directory":
            aside.mkdir()
            path.unlink()  # a directory cannot be renamed over a file
        elif kind == "socket":
            server = socket.socket(socket.AF_UNIX)
            server.bind(str(aside))
            sockets.append(server)
        elif kind == "oversize":
            line = f"  user{{}}: {ALICE_HASH}\n"
            count = 5 * 1024 * 1024 // len(line)
            aside.write_text("basic_auth_users:\n" + "".join(line.format(i) for i in range(count)))
        else:
            raise AssertionError(kind)
        os.replace(aside, path)

    yield make
    for fifo in fifos:
        let_go(fifo)
    for server in sockets:
        server.close()


def check_config(config: Path | str) -> subprocess.CompletedProcess[str]:
    """``check-config`` in a child process that may use 2 GiB at most and 30 s."""

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (_MEMORY_LIMIT, _MEMORY_LIMIT))

    return subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--web.config.file", str(config)],
        cwd=ROOT,
        env={**os.environ, "CO_API_KEY": "test-key"},
        capture_output=True,
        text=True,
        timeout=30,
        preexec_fn=limit_memory,
        check=False,
    )


@pytest.mark.parametrize(
    ("kind", "problem"),
    [
        ("fifo", "not a regular file (a FIFO)"),
        ("dev-zero-symlink", "not a regular file (a character device)"),
        ("oversize", f"larger than the {CONFIG_LIMIT // 1024} KiB limit"),
    ],
)
def test_start_up_stops_with_one_line_for_a_hostile_config_file(
    tmp_path: Path, hostile: Callable[[Path, str], None], kind: str, problem: str
) -> None:
    path = tmp_path / "web.yml"
    hostile(path, kind)
    done = check_config(path)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"error: --web.config.file: {path}: cannot read the file: {problem}\n"


def test_start_up_refuses_dev_zero_itself() -> None:
    done = check_config("/dev/zero")
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        "error: --web.config.file: /dev/zero: cannot read the file: "
        "not a regular file (a character device)"
    ]


def test_start_up_refuses_a_key_that_is_a_symlink_to_dev_zero(
    tls_dir: Path, hostile: Callable[[Path, str], None]
) -> None:
    hostile(tls_dir / "server.key", "dev-zero-symlink")
    path = write(tls_dir / "web.yml", TLS_BASE)
    done = check_config(path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"error: --web.config.file: {path}: tls_server_config.key_file: cannot read "
        f"{tls_dir / 'server.key'}: not a regular file (a character device)"
    ]


def load_within(path: Path, seconds: float = 10.0) -> str:
    """The WebConfigError message of loading ``path``, failing if the load does not end."""
    outcome: list[str] = []

    def target() -> None:
        try:
            load_web_config(path)
        except WebConfigError as exc:
            outcome.append(str(exc))
        else:
            outcome.append("")

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert outcome, f"loading {path} did not end within {seconds} s"
    return outcome[0]


@pytest.mark.parametrize(
    ("setting", "kind", "problem"),
    [
        ("cert_file", "directory", "not a regular file (a directory)"),
        ("cert_file", "socket", "No such device or address"),
        ("key_file", "fifo", "not a regular file (a FIFO)"),
        ("client_ca_file", "fifo", "not a regular file (a FIFO)"),
    ],
)
def test_pem_files_must_be_regular_files(
    tls_dir: Path, hostile: Callable[[Path, str], None], setting: str, kind: str, problem: str
) -> None:
    names = {"cert_file": "server.crt", "key_file": "server.key", "client_ca_file": "ca.crt"}
    hostile(tls_dir / names[setting], kind)
    text = TLS_BASE + "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: ca.crt\n"
    message = load_within(write(tls_dir / "web.yml", text))
    assert f": tls_server_config.{setting}: cannot read " in message
    assert message.endswith(problem), message


def test_pem_files_are_capped_at_one_mib(tls_dir: Path) -> None:
    pem = (tls_dir / "server.crt").read_bytes()
    (tls_dir / "server.crt").write_bytes(pem * (PEM_LIMIT // len(pem) + 1))
    message = load_within(write(tls_dir / "web.yml", TLS_BASE))
    assert message.endswith(
        "tls_server_config.cert_file: cannot read "
        f"{tls_dir / 'server.crt'}: larger than the 1 MiB limit"
    ), message


def test_a_file_of_exactly_the_limit_is_read(tmp_path: Path) -> None:
    text = f"basic_auth_users:\n  alice: {ALICE_HASH}\n"
    path = write(tmp_path / "web.yml", text + "#" * (CONFIG_LIMIT - len(text) - 1) + "\n")
    assert path.stat().st_size == CONFIG_LIMIT
    assert list(load_web_config(path).users) == ["alice"]


async def wait_until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


PROBLEMS = {
    "dev-zero-symlink": "not a regular file (a character device)",
    "fifo": "not a regular file (a FIFO)",
    "directory": "not a regular file (a directory)",
    "oversize": "larger than the 64 KiB limit",
}


@pytest.mark.parametrize("kind", list(PROBLEMS))
async def test_while_running_a_hostile_file_is_logged_once_and_watching_goes_on(
    tmp_path: Path,
    hostile: Callable[[Path, str], None],
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    path = write(tmp_path / "web.yml", f"basic_auth_users:\n  alice: {ALICE_HASH}\n")
    watcher = WebConfigWatcher(path)
    good = watcher.current
    caplog.set_level(logging.INFO, logger="exporter.webconfig")
    stalls: list[float] = []

    async def heartbeat() -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(0.01)
            stalls.append(time.monotonic() - before)

    beating = asyncio.create_task(heartbeat())
    polling = asyncio.create_task(watcher.run(0.02))
    try:
        hostile(path, kind)
        await wait_until(lambda: any(r.levelno == logging.ERROR for r in caplog.records))
        await wait_until(lambda: len(stalls) > 20)  # several more polls of the hostile file
        assert watcher.current is good
        if path.is_dir():
            path.rmdir()
        # Written aside and renamed over, as deployment tools do (and a FIFO is never opened).
        os.replace(write(tmp_path / "new.yml", f"basic_auth_users:\n  bob: {BOB_HASH}\n"), path)
        await wait_until(lambda: "bob" in watcher.current.users)
    finally:
        polling.cancel()
        beating.cancel()
        if kind == "fifo":  # before the event loop closes, which waits for its threads
            let_go(path)
    errors = [str(r.__dict__["err"]) for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == len(set(errors)), errors  # each state once, however many polls
    assert sum(PROBLEMS[kind] in error for error in errors) == 1, errors
    if kind != "directory":  # only a directory cannot replace the file in one step
        assert len(errors) == 1, errors
    assert max(stalls) < 0.5, f"the event loop stalled for {max(stalls):.2f} s"

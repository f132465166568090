"""The real command line, as separate processes on loopback: demo, simulate + serve, shutdown."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.services import wait_for

pytestmark = pytest.mark.integration
KEY = "sk-process-test-31415926535"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def models_with_steps(text: str) -> set[str]:
    return {
        sample.labels["finetune_id"]
        for family in text_string_to_metric_families(text)
        if family.name == "finetune_step_cross_entropy"
        for sample in family.samples
    }


@contextlib.contextmanager
def process(
    args: list[str], tmp_path: Path, name: str, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    log = (tmp_path / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "exporter", *args],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=tmp_path,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        log.close()


def stop(proc: subprocess.Popen[bytes]) -> int:
    proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=5)


def test_demo_shows_several_models_within_seconds(tmp_path: Path) -> None:
    port = free_port()
    with process(["demo", "--web.listen-address", f"127.0.0.1:{port}"], tmp_path, "demo") as demo:
        url = f"http://127.0.0.1:{port}"

        def several() -> set[str] | None:
            status, text = fetch(url + "/metrics")
            found = models_with_steps(text) if status == 200 else set()
            return found if len(found) >= 3 else None

        wait_for(several, 10, "step metrics of three models on /metrics")
        status, page = fetch(url + "/")
        assert status == 200
        assert "<title>Fine-tuning runs</title>" in page
        assert stop(demo) == 0


def test_serve_against_simulate(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim_args = [
        "simulate",
        "--web.listen-address",
        f"127.0.0.1:{sim_port}",
        "--api-key",
        KEY,
        "--models",
        "5",
    ]
    with process(sim_args, tmp_path, "simulate") as simulator:
        wait_for(lambda: fetch(f"http://127.0.0.1:{sim_port}/healthz")[0] == 200, 10, "simulator")
        key_file = tmp_path / "key"
        key_file.write_text(KEY + "\n")
        serve_args = [
            "--web.listen-address",
            f"127.0.0.1:{port}",
            "--cohere.api-url",
            f"http://127.0.0.1:{sim_port}",
            "--cohere.api-key-file",
            str(key_file),
            "--poll.interval",
            "1",
            "--log.level",
            "debug",
        ]
        with process(serve_args, tmp_path, "serve") as exporter:
            url = f"http://127.0.0.1:{port}"
            wait_for(lambda: fetch(url + "/readyz")[0] == 200, 10, "readiness")
            status, text = fetch(url + "/metrics")
            assert status == 200
            assert 'finetune_up{provider="cohere"} 1.0' in text
            assert models_with_steps(text)
            assert stop(exporter) == 0
        assert stop(simulator) == 0
    for log in tmp_path.glob("*.log"):
        assert KEY not in log.read_text(), log.name


def test_listen_address_in_use_exits_2(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "exporter",
                "--web.listen-address",
                f"127.0.0.1:{port}",
                "--cohere.api-url",
                "http://127.0.0.1:9",
            ],
            env={**os.environ, "CO_API_KEY": KEY},
            capture_output=True,
            timeout=30,
            cwd=tmp_path,
            check=False,
        )
    assert done.returncode == 2
    assert b"--web.listen-address" in done.stderr

"""The API key never leaves the process: not in logs (debug level, every fault), /metrics, the
landing page, check-config, error messages, exception text or repr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from functools import partial
from pathlib import Path

import aiohttp
import pytest

from exporter import providers
from exporter.settings import load_settings
from exporter.simulator.faults import KINDS
from exporter.upstream.errors import ApiStatusError
from tests.e2e.services import free_port, http_get, running, wait_for

pytestmark = pytest.mark.integration
KEY = "sk-CANARY-7f3e9a1b2c4d5e6f"
FAULTS: list[dict[str, object]] = [
    {"kind": "status", "status": 401},
    {"kind": "status", "status": 403},
    {"kind": "status", "status": 500},
    {"kind": "status", "status": 503},
    {"kind": "status", "status": 404, "endpoint": "list_models"},
    {"kind": "reset"},
    {"kind": "hang", "hang_seconds": 5},
    {"kind": "trickle", "trickle_interval": 0.3},
    {"kind": "invalid-json"},
    {"kind": "list-body"},
    {"kind": "string-step", "endpoint": "list_step_metrics"},
    {"kind": "unknown-status", "endpoint": "list_models"},
    {"kind": "html-200"},
    {"kind": "huge-body", "huge_bytes": 10 * 1024 * 1024},
    {"kind": "repeat-token", "endpoint": "list_models"},
    {"kind": "deep-nesting", "endpoint": "list_step_metrics"},
    {"kind": "entry-flood", "endpoint": "list_step_metrics"},
    # Last: a 429 pauses every request for a while, by design.
    {"kind": "rate-limit", "retry_after": "seconds", "retry_after_seconds": 1},
    {"kind": "rate-limit", "retry_after": "http-date", "retry_after_seconds": 1},
    {"kind": "rate-limit"},
]


def post_faults(sim: str, faults: list[dict[str, object]]) -> None:
    request = urllib.request.Request(
        f"{sim}/simulator/faults",
        data=json.dumps({"faults": faults}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as answer:
        assert answer.status == 200


def injected(sim: str, kind: str) -> int:
    status, body = http_get(f"{sim}/simulator/faults")
    assert status == 200
    count: int = json.loads(body)["injected"].get(kind, 0)
    return count


def met(sim: str, kind: str, before: int) -> bool:
    return injected(sim, kind) > before


def test_every_fault_kind_is_exercised() -> None:
    assert {str(f["kind"]) for f in FAULTS} == set(KINDS)


def test_key_never_leaves_the_process(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    sim_port, port = free_port(), free_port()
    sim = f"http://127.0.0.1:{sim_port}"
    exporter = f"http://127.0.0.1:{port}"
    simulate = [
        sys.executable, "-m", "exporter", "simulate", "--web.listen-address",
        f"127.0.0.1:{sim_port}", "--api-key-file", str(key_file), "--models", "4",
        "--log.level", "debug",
    ]  # fmt: skip
    serve = [
        sys.executable, "-m", "exporter", "--web.listen-address", f"127.0.0.1:{port}",
        "--cohere.api-url", sim, "--cohere.api-key-file", str(key_file),
        "--poll.interval", "0.3", "--poll.discovery-interval", "0.3", "--cohere.timeout", "1",
        "--cohere.max-retries", "1", "--log.level", "debug",
    ]  # fmt: skip
    seen: list[str] = []
    with (
        running("simulator", simulate, tmp_path, f"{sim}/healthz"),
        running("exporter", serve, tmp_path, f"{exporter}/readyz") as process,
    ):
        for fault in FAULTS:
            kind = str(fault["kind"])
            before = injected(sim, kind)
            post_faults(sim, [fault])
            wait_for(partial(met, sim, kind, before), 30, f"the exporter to meet {fault}")
            for path in ("/metrics", "/", "/readyz"):
                seen.append(http_get(exporter + path)[1].decode(errors="replace"))
        post_faults(sim, [])
        process.terminate()
        assert process.wait(10) == 0
    logs = {p.name: p.read_text(errors="replace") for p in tmp_path.glob("*.log")}
    assert "level=debug" in logs["exporter.log"], "the exporter really logged at debug level"
    assert "run polling failed" in logs["exporter.log"]
    check = subprocess.run(
        [sys.executable, "-m", "exporter", "check-config", "--cohere.api-key-file", str(key_file)],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
    )  # fmt: skip
    refused = subprocess.run(
        [sys.executable, "-m", "exporter", "--poll.interval", "0", "--cohere.api-url", "x"],
        capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        env={**os.environ, "CO_API_KEY": KEY},
    )  # fmt: skip
    assert check.returncode == 0
    assert refused.returncode == 2
    emitted = {
        **logs,
        "scrapes": "\n".join(seen),
        "check-config": check.stdout + check.stderr,
        "refused start-up": refused.stdout + refused.stderr,
    }
    for where, text in emitted.items():
        assert text, f"{where} is empty"
        assert KEY not in text, f"the key leaked into {where}"


async def test_key_is_absent_from_repr_and_exception_text(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY)
    settings = load_settings(cohere_api_key_file=str(key_file))
    assert KEY not in repr(settings)
    assert KEY not in str(settings.model_dump())
    error = ApiStatusError("list_models", 401, "invalid api token")
    assert KEY not in repr(error) + str(error)
    async with aiohttp.ClientSession() as session:
        budget = providers.budget_for(settings, "cohere")
        http = providers.json_client(settings, "cohere", session, budget=budget)
        provider = providers.provider_for(settings, "cohere", http)
        for shown in (provider, http, vars(http), vars(provider)):
            assert KEY not in repr(shown)

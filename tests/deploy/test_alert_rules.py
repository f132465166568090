"""deploy/prometheus/alerts.yml: valid, unit-tested by promtool, documented in the README."""

from __future__ import annotations

import re
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
README = ROOT / "README.md"
RUNBOOK_BASE = (
    "https://github.com/cohere-finetune-exporter/cohere-finetune-exporter/blob/main/README.md"
)
RUNBOOKS_START = "<!-- runbooks:start -->"
RUNBOOKS_END = "<!-- runbooks:end -->"
REQUIRED_ALERTS = {
    "CohereFinetuneLossSpike",
    "CohereFinetuneLossNotFinite",
    "CohereFinetuneLossOutlierStep",
    "CohereFinetuneLossNonFiniteStep",
    "CohereFinetuneRunStalled",
    "CohereFinetuneExporterDown",
    "CohereFinetuneDataStale",
    "CohereFinetuneApiAuthFailing",
    "CohereFinetuneApiErrors",
    "CohereFinetuneApiRateLimited",
}


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for group in load_yaml(ALERTS)["groups"]:
        rules.extend(rule for rule in group["rules"] if "alert" in rule)
    return rules


ALERT_RULES = alert_rules()
ALERT_NAMES = [rule["alert"] for rule in ALERT_RULES]
# Alerts about one fine-tuning run: their expression works on per-model series.
MODEL_RULES = [rule for rule in ALERT_RULES if "finetuned_model_id" in rule["expr"]]
# Alerts on the counters of every evaluated step: the counter is the evidence, so they fire on
# the first increment, and they keep the loss-like metric's label.
STEP_COUNTER_RULES = {
    "CohereFinetuneLossOutlierStep": ("cohere_finetune_step_outliers_total", "warning"),
    "CohereFinetuneLossNonFiniteStep": ("cohere_finetune_step_nonfinite_total", "critical"),
}


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
    assert [group["name"] for group in groups] == ["cohere-finetune"]
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


def test_the_model_alerts_are_recognised() -> None:
    assert {rule["alert"] for rule in MODEL_RULES} >= {
        "CohereFinetuneLossSpike",
        "CohereFinetuneLossNotFinite",
        "CohereFinetuneLossOutlierStep",
        "CohereFinetuneLossNonFiniteStep",
        "CohereFinetuneRunStalled",
        "CohereFinetuneDataStale",
    }


@pytest.mark.parametrize("alert", sorted(STEP_COUNTER_RULES))
def test_step_counter_alert_fires_on_the_first_increment(alert: str) -> None:
    (rule,) = [rule for rule in ALERT_RULES if rule["alert"] == alert]
    counter, severity = STEP_COUNTER_RULES[alert]
    expr = " ".join(rule["expr"].split())
    assert f"increase({counter}[15m]) > 0" in expr
    assert "sum" not in expr, "the `metric` label must survive"
    assert "without" not in expr, "the `metric` label must survive"
    assert str(rule["for"]) == "0m"
    assert rule["labels"]["severity"] == severity
    assert "$labels.metric" in rule["annotations"]["description"]


@pytest.mark.parametrize("rule", MODEL_RULES, ids=[rule["alert"] for rule in MODEL_RULES])
def test_model_alert_names_the_model(rule: dict[str, Any]) -> None:
    expr: str = rule["expr"]
    assert re.search(r"group_left\s*\(\s*name\s*\)\s*cohere_finetune_model_info\b", expr)
    assert "$labels.name" in rule["annotations"]["summary"]
    assert "$labels.name" in rule["annotations"]["description"]


def test_every_alert_is_tested_firing_and_silent() -> None:
    firing: dict[str, int] = defaultdict(int)
    silent: dict[str, int] = defaultdict(int)
    spec = load_yaml(ALERTS_TEST)
    assert spec["rule_files"] == ["alerts.yml"]
    assert spec["evaluation_interval"] == "1m"
    for case in spec["tests"]:
        for check in case.get("alert_rule_test", []):
            name = check["alertname"]
            assert name in ALERT_NAMES, f"test of an alert that does not exist: {name}"
            if check.get("exp_alerts"):
                firing[name] += 1
            else:
                silent[name] += 1
    assert sorted(set(ALERT_NAMES) - set(firing)) == [], "alerts never seen firing"
    assert sorted(set(ALERT_NAMES) - set(silent)) == [], "alerts never seen silent"


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
    assert github_anchor("CohereFinetuneLossSpike") == "coherefinetunelossspike"
    assert github_anchor("What it does, `really`?") == "what-it-does-really"

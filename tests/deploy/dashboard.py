"""Shared by the dashboard tests: the generator loaded by path, panel walks, promtool runs."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from exporter import contract
from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
GENERATOR = GRAFANA / "generate_dashboard.py"
COMMITTED = GRAFANA / "dashboards" / "finetune.json"
PROVIDER_MATCHER = 'provider=~"$provider"'
RUN_MATCHER = 'name=~"$run"'
# The info family restricted by both variables: what every run query joins.
RUN_FILTER = f"{contract.RUN_INFO.sample}{{{PROVIDER_MATCHER}, {RUN_MATCHER}}}"
RUN_JOIN = f"on (job, instance, {', '.join(contract.RUN_LABELS)}) group_left (name)"

Json = dict[str, Any]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_dashboard", GENERATOR)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


gen = load_generator()


def all_panels(panels: list[Json]) -> Iterator[Json]:
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def data_panels(board: Json) -> list[Json]:
    return [p for p in all_panels(board["panels"]) if p["type"] != "row"]


def row_members(board: Json, title: str) -> list[Json]:
    """Panels under the row `title`: nested ones if it is collapsed, else those that follow it."""
    members: list[Json] = []
    inside = False
    for p in board["panels"]:
        if p["type"] == "row":
            inside = p["title"] == title
            if inside:
                members.extend(p.get("panels", []))
            continue
        if inside:
            members.append(p)
    return members


def panel(board: Json, title: str) -> Json:
    (found,) = [p for p in data_panels(board) if p["title"] == title]
    return found


def substitute(expr: str) -> str:
    """`expr` as Grafana sends it for "All" runs and providers, a 4m rate interval and a 1h
    time range."""
    for placeholder, value in (
        ("$provider", ".*"),
        ("$run", ".*"),
        ("$__rate_interval", "4m"),
        ("$__range", "1h"),
    ):
        expr = expr.replace(placeholder, value)
    return expr


def selector(labels: dict[str, str]) -> str:
    """`labels` written as promtool expects a sample's labels: `{a="1", b="2"}`."""
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def promtool_test(tmp_path: Path, series: list[Json], tests: list[Json]) -> str:
    """Run `tests` (promql_expr_test entries) on `series` with promtool; its complaints, if any."""
    spec = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [{"interval": "1m", "input_series": series, "promql_expr_test": tests}],
    }
    path = tmp_path / "queries_test.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        [promtool_path(), "test", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return "" if done.returncode == 0 else done.stdout + done.stderr

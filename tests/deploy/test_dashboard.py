"""The Grafana dashboard: generated file up to date, valid shape, queries filtered and balanced."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.promtool import promtool_path

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "deploy" / "grafana"
GENERATOR = GRAFANA / "generate_dashboard.py"
COMMITTED = GRAFANA / "dashboards" / "cohere-finetune.json"

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


@pytest.fixture(scope="module")
def board() -> Json:
    result: Json = gen.dashboard()
    return result


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


def balance_error(expr: str) -> str | None:
    """Why `expr` is unbalanced in (), [], {} or quotes; None when it is balanced."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    quote: str | None = None
    escaped = False
    for index, char in enumerate(expr):
        if quote is not None:
            if escaped:
                escaped = False
            elif char == "\\" and quote != "`":
                escaped = True
            elif char == quote:
                quote = None
            continue
        if char in "\"'`":
            quote = char
        elif char in "([{":
            stack.append(char)
        elif char in closing:
            if not stack or stack[-1] != closing[char]:
                return f"unexpected {char!r} at {index}"
            stack.pop()
    if quote is not None:
        return f"unterminated {quote} string"
    if stack:
        return f"unclosed {stack[-1]!r}"
    return None


# --- the generated file -------------------------------------------------------------------


def test_committed_json_equals_generated() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == gen.render(), (
        "deploy/grafana/dashboards/cohere-finetune.json is stale: "
        "run python deploy/grafana/generate_dashboard.py"
    )


def test_check_flag_passes_on_committed_file() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_check_flag_fails_on_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "cohere-finetune.json"
    stale.write_text(gen.render().replace("Cohere fine-tuning", "Stale"), encoding="utf-8")
    assert gen.main(["--check", "--output", str(stale)]) == 1
    assert gen.main(["--check", "--output", str(tmp_path / "missing.json")]) == 1


def test_generation_is_stable(tmp_path: Path) -> None:
    out = tmp_path / "board.json"
    assert gen.main(["--output", str(out)]) == 0
    first = out.read_text(encoding="utf-8")
    assert gen.main(["--output", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == first
    assert first.endswith("}\n")
    assert json.loads(first) == json.loads(COMMITTED.read_text(encoding="utf-8"))


# --- dashboard shape ----------------------------------------------------------------------


def test_dashboard_identity(board: Json) -> None:
    assert board["uid"] == "cohere-finetune"
    assert board["title"] == "Cohere fine-tuning"
    assert board["schemaVersion"] >= 39
    assert board["tags"]
    assert board["refresh"] == "30s"
    assert board["time"] == {"from": "now-6h", "to": "now"}
    assert board["graphTooltip"] == 1
    assert isinstance(board["templating"]["list"], list)


def test_variables(board: Json) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert set(variables) == {"datasource", "model"}
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    model = variables["model"]
    assert model["type"] == "query"
    assert model["datasource"]["uid"] == "${datasource}"
    assert model["query"]["query"] == "label_values(cohere_finetune_model_info, name)"
    assert model["multi"] is True
    assert model["includeAll"] is True
    assert model["allValue"] == ".*"


def test_panel_ids_are_unique(board: Json) -> None:
    ids = [p["id"] for p in all_panels(board["panels"])]
    assert len(ids) == len(set(ids))
    assert all(isinstance(i, int) and i > 0 for i in ids)


def test_every_panel_has_a_grid_position_inside_the_grid(board: Json) -> None:
    for p in all_panels(board["panels"]):
        pos = p["gridPos"]
        assert set(pos) == {"h", "w", "x", "y"}, p["title"]
        assert pos["h"] > 0, p["title"]
        assert pos["w"] > 0, p["title"]
        assert pos["x"] >= 0, p["title"]
        assert pos["y"] >= 0, p["title"]
        assert pos["x"] + pos["w"] <= 24, p["title"]


def overlaps(a: Json, b: Json) -> bool:
    pa, pb = a["gridPos"], b["gridPos"]
    return bool(
        pa["x"] < pb["x"] + pb["w"]
        and pb["x"] < pa["x"] + pa["w"]
        and pa["y"] < pb["y"] + pb["h"]
        and pb["y"] < pa["y"] + pa["h"]
    )


def test_overlap_check_detects_overlap() -> None:
    a = {"gridPos": {"h": 8, "w": 12, "x": 0, "y": 0}}
    assert overlaps(a, {"gridPos": {"h": 8, "w": 12, "x": 6, "y": 4}})
    assert not overlaps(a, {"gridPos": {"h": 8, "w": 12, "x": 12, "y": 0}})
    assert not overlaps(a, {"gridPos": {"h": 8, "w": 12, "x": 0, "y": 8}})


def test_no_panels_overlap(board: Json) -> None:
    # Expanded: every top-level panel shares the grid. Collapsed rows hold their own panels.
    layers = [board["panels"]] + [p["panels"] for p in board["panels"] if p.get("panels")]
    for layer in layers:
        for i, a in enumerate(layer):
            for b in layer[i + 1 :]:
                assert not overlaps(a, b), f"{a['title']!r} overlaps {b['title']!r}"


def test_rows(board: Json) -> None:
    rows = [p["title"] for p in board["panels"] if p["type"] == "row"]
    assert rows == ["Training", "Exporter health"]
    assert row_members(board, "Training")
    assert row_members(board, "Exporter health")


def test_panel_types_are_modern(board: Json) -> None:
    kinds = {p["type"] for p in data_panels(board)}
    assert kinds <= {"timeseries", "stat", "table", "bargauge"}
    assert {"timeseries", "stat", "table"} <= kinds


def test_every_data_panel_sets_a_unit(board: Json) -> None:
    for p in data_panels(board):
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]


# --- queries ------------------------------------------------------------------------------


def test_every_target_uses_the_datasource_variable(board: Json) -> None:
    for p in data_panels(board):
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            assert t["expr"].strip(), p["title"]
            assert "datasource" not in t["expr"], p["title"]


def test_ref_ids_are_unique_per_panel(board: Json) -> None:
    for p in data_panels(board):
        ref_ids = [t["refId"] for t in p["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), p["title"]


MODEL_FILTER = 'cohere_finetune_model_info{name=~"$model"}'
PER_MODEL_METRIC = re.compile(
    r"cohere_finetune_(step_\w+|model_info|model_status|last_poll_success_timestamp_seconds)"
)


def test_model_panels_are_filtered_by_the_model_variable(board: Json) -> None:
    model_panels = row_members(board, "Training")
    assert len(model_panels) >= 5
    for p in model_panels:
        for t in p["targets"]:
            assert MODEL_FILTER in t["expr"], (p["title"], t["expr"])


def test_every_per_model_series_query_is_filtered(board: Json) -> None:
    for p in data_panels(board):
        for t in p["targets"]:
            if PER_MODEL_METRIC.search(t["expr"]):
                assert MODEL_FILTER in t["expr"], (p["title"], t["expr"])


def test_per_model_legends_use_the_human_name(board: Json) -> None:
    for p in row_members(board, "Training"):
        for t in p["targets"]:
            assert "{{name}}" in t["legendFormat"], (p["title"], t)
            assert "group_left (name)" in t["expr"] or t["expr"] == MODEL_FILTER, t["expr"]


def test_the_model_variable_is_used_only_as_a_name_matcher(board: Json) -> None:
    for title, expr in gen.panel_queries(board):
        assert expr.count("$model") == expr.count('name=~"$model"'), (title, expr)
        assert "${" not in expr, (title, expr)
        for variable in re.findall(r"\$\w+", expr):
            assert variable in {"$model", "$__rate_interval", "$__range"}, (title, expr)


def test_rates_use_the_rate_interval(board: Json) -> None:
    rates = [expr for _, expr in gen.panel_queries(board) if "rate(" in expr]
    assert rates
    for expr in rates:
        assert re.search(r"rate\(\w+(\{[^}]*\})?\[\$__rate_interval\]\)", expr), expr


RANGE_FUNCTION = re.compile(r"\b(rate|increase)\(\w+(\{[^}]*\})?\[(?P<range>[^\]]+)\]\)")


def test_counter_ranges_follow_the_query_kind(board: Json) -> None:
    """Curves take `$__rate_interval`; instant totals take the time picker's `$__range`."""
    seen = {"$__rate_interval": 0, "$__range": 0}
    for p in data_panels(board):
        for t in p["targets"]:
            expr = t["expr"]
            for match in RANGE_FUNCTION.finditer(expr):
                expected = "$__range" if t["instant"] else "$__rate_interval"
                assert match["range"] == expected, (p["title"], expr)
                seen[expected] += 1
            assert expr.count("[") == len(RANGE_FUNCTION.findall(expr)), (p["title"], expr)
    assert all(seen.values()), seen


def test_expected_exporter_queries(board: Json) -> None:
    exprs = {expr for _, expr in gen.panel_queries(board)}
    assert "cohere_finetune_up" in exprs
    assert 'up{job="cohere-finetune"}' in exprs
    assert "cohere_finetune_poll_duration_seconds" in exprs
    assert "sum by (code) (rate(cohere_finetune_api_requests_total[$__rate_interval]))" in exprs
    assert any(
        'sum(rate(cohere_finetune_api_requests_total{code="429"}[$__rate_interval]))' in e
        for e in exprs
    )
    assert any("sum(cohere_finetune_model_up)" in e for e in exprs)


def test_status_table_is_built_from_instant_queries(board: Json) -> None:
    (table,) = [p for p in data_panels(board) if p["type"] == "table"]
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    renamed = table["transformations"][1]["options"]["renameByName"]
    ref_ids = {t["refId"] for t in table["targets"]}
    for field in renamed:
        if field.startswith("Value #"):
            assert field.removeprefix("Value #") in ref_ids, field
    assert {"Name", "Base model", "Status", "Step", "Last step age"} <= set(renamed.values())


def test_panel_queries_cover_every_panel_and_variable(board: Json) -> None:
    queries = gen.panel_queries(board)
    titles = {title for title, _ in queries}
    for p in data_panels(board):
        assert p["title"] in titles, p["title"]
    assert "variable model" in titles
    targets = sum(len(p["targets"]) for p in data_panels(board))
    assert len(queries) == targets + 1
    assert ("variable model", "group by (name) (cohere_finetune_model_info)") in queries


def test_panel_queries_reaches_into_collapsed_rows() -> None:
    nested = {
        "panels": [
            {
                "type": "row",
                "title": "Hidden",
                "collapsed": True,
                "panels": [{"type": "stat", "title": "Inner", "targets": [{"expr": "up"}]}],
            },
            {"type": "timeseries", "title": "Outer", "targets": [{"expr": "vector(1)"}]},
        ],
        "templating": {"list": [{"type": "custom", "name": "x", "query": "a,b"}]},
    }
    assert gen.panel_queries(nested) == [("Inner", "up"), ("Outer", "vector(1)")]


def test_queries_are_balanced(board: Json) -> None:
    for title, expr in gen.panel_queries(board):
        assert balance_error(expr) is None, (title, expr, balance_error(expr))


@pytest.mark.parametrize(
    "expr",
    [
        "sum(rate(x[5m])",
        'x{a="b"',
        'x{a="b}',
        "rate(x[5m)]",
        "x)",
        "x{a='b}'",
    ],
)
def test_balance_check_rejects_unbalanced(expr: str) -> None:
    assert balance_error(expr) is not None


def test_balance_check_accepts_quoted_brackets() -> None:
    assert balance_error('x{a=~"(\\"[{"}') is None


def substitute(expr: str) -> str:
    """`expr` as Grafana sends it for model "All", a 4m rate interval and a 1h time range."""
    return expr.replace("$model", ".*").replace("$__rate_interval", "4m").replace("$__range", "1h")


def test_queries_parse_as_promql(board: Json, tmp_path: Path) -> None:
    """promtool parses every query once Grafana's placeholders are substituted."""
    rules = [
        {
            "record": f"dashboard:query_{index}",
            "expr": substitute(expr),
        }
        for index, (_, expr) in enumerate(gen.panel_queries(board))
    ]
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    done = subprocess.run(
        [promtool_path(), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


# --- counters of every evaluated step -----------------------------------------------------

STEP_PANEL = "Loss outliers and non-finite steps (every step)"
OUTLIERS = "cohere_finetune_step_outliers_total"
NONFINITE = "cohere_finetune_step_nonfinite_total"


def every_step_expr(counter: str) -> str:
    return (
        f"sum by (name, metric) (increase({counter}[$__rate_interval])"
        f" * on (finetuned_model_id) group_left (name) {MODEL_FILTER})"
    )


def test_every_step_panel_is_in_the_training_row(board: Json) -> None:
    (found,) = [p for p in row_members(board, "Training") if p["title"] == STEP_PANEL]
    assert found["type"] == "timeseries"
    assert [(t["expr"], t["legendFormat"]) for t in found["targets"]] == [
        (every_step_expr(OUTLIERS), "{{name}} {{metric}} outliers"),
        (every_step_expr(NONFINITE), "{{name}} {{metric}} non-finite"),
    ]
    assert all(t["range"] and not t["instant"] for t in found["targets"])
    assert found["fieldConfig"]["defaults"]["min"] == 0


def test_status_table_counts_the_steps_over_the_time_range(board: Json) -> None:
    (table,) = [p for p in data_panels(board) if p["type"] == "table"]
    renamed = table["transformations"][1]["options"]["renameByName"]
    by_column = {
        renamed[f"Value #{t['refId']}"]: t["expr"]
        for t in table["targets"]
        if f"Value #{t['refId']}" in renamed
    }
    for column, counter in (("Outliers", OUTLIERS), ("Non-finite", NONFINITE)):
        assert by_column[column] == (
            "sum by (job, instance, finetuned_model_id) "
            f"(increase({counter}[$__range]))"
            f" * on (finetuned_model_id) group_left (name) {MODEL_FILTER}"
        )


def selector(labels: dict[str, str]) -> str:
    """`labels` written as promtool expects a sample's labels: `{a="1", b="2"}`."""
    return "{" + ", ".join(f'{key}="{value}"' for key, value in sorted(labels.items())) + "}"


def step_counter_queries(board: Json) -> list[tuple[str, str]]:
    return [
        (title, expr)
        for title, expr in gen.panel_queries(board)
        if OUTLIERS in expr or NONFINITE in expr
    ]


def test_step_counter_queries_answer_at_zero_and_count(board: Json, tmp_path: Path) -> None:
    """With the counters at 0 (as the exporter creates them) every query still returns a
    series, valued 0; one counted step shows as 1 in the curve and in the table's total."""
    queries = step_counter_queries(board)
    assert len(queries) == 4
    labels = 'job="cohere-finetune", instance="exporter:10042", finetuned_model_id="run-1"'
    series = [
        {
            "series": f'cohere_finetune_model_info{{{labels}, name="support-bot"}}',
            "values": "1x120",
        },
        {
            "series": f'{OUTLIERS}{{{labels}, metric="cross_entropy"}}',
            "values": "0x90 1x30",
        },
        {"series": f'{NONFINITE}{{{labels}, metric="cross_entropy"}}', "values": "0x120"},
    ]
    curve = {"metric": "cross_entropy", "name": "support-bot"}
    row = {
        "job": "cohere-finetune",
        "instance": "exporter:10042",
        "finetuned_model_id": "run-1",
        "name": "support-bot",
    }
    tests: list[Json] = []
    for title, expr in queries:
        labels_of = curve if title == STEP_PANEL else row
        outliers = OUTLIERS in expr
        # At 60m nothing has been counted; at 91m the outlier counter has just gone 0 -> 1
        # (inside both the 4m rate interval and the 1h range), the non-finite one has not.
        for when, value in (("60m", 0), ("91m", 1 if outliers else 0)):
            tests.append(
                {
                    "expr": substitute(expr),
                    "eval_time": when,
                    "exp_samples": [{"labels": selector(labels_of), "value": value}],
                }
            )
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
    assert done.returncode == 0, done.stdout + done.stderr


# --- provisioning -------------------------------------------------------------------------


def load_yaml(relative: str) -> Json:
    data: Json = yaml.safe_load((GRAFANA / "provisioning" / relative).read_text(encoding="utf-8"))
    return data


def test_datasource_provisioning() -> None:
    (source,) = load_yaml("datasources/prometheus.yaml")["datasources"]
    assert source["uid"] == "prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True


def test_dashboard_provisioning() -> None:
    (provider,) = load_yaml("dashboards/cohere-finetune.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

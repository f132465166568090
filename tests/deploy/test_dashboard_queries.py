"""The Grafana dashboard's queries: contract families only, filtered by the variables,
balanced, valid PromQL, and answering as meant for Cohere and Together runs side by side."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from exporter import contract
from tests.deploy.dashboard import (
    GRAFANA,
    PROVIDER_MATCHER,
    RUN_FILTER,
    RUN_JOIN,
    RUN_MATCHER,
    Json,
    data_panels,
    gen,
    panel,
    promtool_test,
    row_members,
    selector,
    substitute,
)
from tests.promtool import promtool_path

ROOT = GRAFANA.parents[1]
OUTLIERS = contract.STEP_OUTLIERS.sample
NONFINITE = contract.STEP_NONFINITE.sample
STEP_PANEL = "Loss outliers and non-finite steps (every step)"
FIXED = {v.sample for v in vars(contract).values() if isinstance(v, contract.Family)}
# Families about one run (their series carry finetune_id) and about one provider.
RUN_FAMILIES = {
    v.sample
    for v in vars(contract).values()
    if isinstance(v, contract.Family) and contract.RUN_ID_LABEL in v.labels
}
PROVIDER_FAMILIES = {
    v.sample
    for v in vars(contract).values()
    if isinstance(v, contract.Family) and v.labels[:1] == (contract.PROVIDER_LABEL,)
} - RUN_FAMILIES
FAMILY = re.compile(rf"\b{contract.PREFIX}_\w+")


@pytest.fixture(scope="module")
def board() -> Json:
    result: Json = gen.dashboard()
    return result


def families(expr: str) -> set[str]:
    return set(FAMILY.findall(expr)) - set(contract.RUN_LABELS)


def is_step_family(name: str) -> bool:
    suffix = name.removeprefix(contract.STEP_PREFIX)
    return name.startswith(contract.STEP_PREFIX) and contract.metric_label(suffix) == suffix


def test_every_panel_reads_contract_families_only(board: Json) -> None:
    for p in data_panels(board):
        read = set().union(*(families(t["expr"]) for t in p["targets"]))
        assert read, f"{p['title']} reads no family of the exporter"
        for name in read:
            assert name in FIXED or is_step_family(name), (p["title"], name)


def test_loss_panel_reads_both_providers_losses(board: Json) -> None:
    targets = panel(board, "Train vs eval loss")["targets"]
    read = set().union(*(families(t["expr"]) for t in targets))
    for metric in ("train/loss", "eval/loss", "cross_entropy", "loss"):
        assert contract.step_family_name(metric) in read, metric


def test_progress_panels_read_total_steps_and_eta(board: Json) -> None:
    fraction = families(panel(board, "Done (step / total)")["targets"][0]["expr"])
    assert {contract.STEP_NUMBER.sample, contract.RUN_TOTAL_STEPS.sample} <= fraction
    assert contract.RUN_ETA.sample in families(panel(board, "ETA")["targets"][0]["expr"])


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


def test_run_panels_are_filtered_by_provider_and_run(board: Json) -> None:
    run_panels = row_members(board, "Training")
    assert len(run_panels) >= 6
    for p in run_panels:
        for t in p["targets"]:
            assert RUN_FILTER in t["expr"], (p["title"], t["expr"])
            assert "{{name}}" in t["legendFormat"], (p["title"], t)
            assert RUN_JOIN in t["expr"] or t["expr"] == RUN_FILTER, t["expr"]


def test_health_panels_are_filtered_by_provider(board: Json) -> None:
    for p in row_members(board, "Exporter health"):
        for t in p["targets"]:
            for name in families(t["expr"]) & (PROVIDER_FAMILIES | {contract.RUN_UP.sample}):
                for use in re.findall(rf"\b{name}\b(\{{[^}}]*\}})?", t["expr"]):
                    assert PROVIDER_MATCHER in use, (p["title"], t["expr"])


def test_variables_are_used_only_as_matchers(board: Json) -> None:
    for title, expr in gen.panel_queries(board):
        assert expr.count("$run") == expr.count(RUN_MATCHER), (title, expr)
        assert expr.count("$provider") == expr.count(PROVIDER_MATCHER), (title, expr)
        assert "${" not in expr, (title, expr)
        for variable in re.findall(r"\$\w+", expr):
            assert variable in {"$run", "$provider", "$__rate_interval", "$__range"}, (title, expr)


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
    requests = f"{contract.API_REQUESTS.sample}{{{PROVIDER_MATCHER}}}"
    assert f"{contract.UP.sample}{{{PROVIDER_MATCHER}}}" in exprs
    assert f"{contract.POLL_DURATION.sample}{{{PROVIDER_MATCHER}}}" in exprs
    assert f"sum by (provider, code) (rate({requests}[$__rate_interval]))" in exprs
    assert any('code="429"}[$__rate_interval]' in e for e in exprs)
    assert f"{contract.BUDGET_REMAINING.sample}{{{PROVIDER_MATCHER}}}" in exprs
    assert contract.BUILD_INFO.sample in exprs
    # The scrape job is the one Prometheus is configured with (and the alerts watch).
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    (job,) = prometheus["scrape_configs"]
    assert f'up{{job="{job["job_name"]}"}}' in exprs


def test_panel_queries_cover_every_panel_and_variable(board: Json) -> None:
    queries = gen.panel_queries(board)
    titles = {title for title, _ in queries}
    for p in data_panels(board):
        assert p["title"] in titles, p["title"]
    assert {"variable provider", "variable run"} <= titles
    targets = sum(len(p["targets"]) for p in data_panels(board))
    assert len(queries) == targets + 2
    info = contract.RUN_INFO.sample
    assert ("variable run", f"group by (name) ({info}{{{PROVIDER_MATCHER}}})") in queries


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


def test_queries_parse_as_promql(board: Json, tmp_path: Path) -> None:
    """promtool parses every query once Grafana's placeholders are substituted."""
    rules = [
        {"record": f"dashboard:query_{index}", "expr": substitute(expr)}
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


def test_promql_check_rejects_a_broken_query(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    broken = {"record": "dashboard:broken", "expr": substitute(f"sum({RUN_FILTER}")}
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [broken]}]}))
    done = subprocess.run(
        [promtool_path(), "check", "rules", str(path)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode != 0


# --- answers on data: Cohere and Together side by side -------------------------------------

KEY = 'job="finetune", instance="exporter:10042"'
RUNS = {
    "cohere": ('finetune_id="run-1"', "support-bot"),
    "together": ('finetune_id="ft-1"', "qa-bot"),
}


def run_series(provider: str) -> str:
    return f'{KEY}, provider="{provider}", {RUNS[provider][0]}'


def sample_series(family: str, provider: str, extra: str, values: str) -> Json:
    """An input series of `family` for the run of `provider`, with `extra` labels."""
    return {"series": f"{family}{{{run_series(provider)}{extra}}}", "values": values}


def info_series() -> list[Json]:
    return [
        {
            "series": f'{contract.RUN_INFO.sample}{{{run_series(p)}, name="{name}"}}',
            "values": "1x120",
        }
        for p, (_, name) in RUNS.items()
    ]


def row_labels(provider: str) -> dict[str, str]:
    labels = {"job": "finetune", "instance": "exporter:10042", "provider": provider}
    labels["finetune_id"] = RUNS[provider][0].split('"')[1]
    labels["name"] = RUNS[provider][1]
    return labels


def test_run_table_loss_column_reads_each_providers_loss(board: Json, tmp_path: Path) -> None:
    """Together's row shows its train loss, Cohere's its cross-entropy; neither the other's
    eval loss nor a duplicate row."""
    table = panel(board, "Runs")
    renamed = table["transformations"][1]["options"]["renameByName"]
    (loss,) = [t["expr"] for t in table["targets"] if renamed.get(f"Value #{t['refId']}") == "Loss"]
    series = [
        *info_series(),
        sample_series(f"{contract.step_family_name('train/loss')}", "together", "", "0.5x120"),
        sample_series(f"{contract.step_family_name('eval/loss')}", "together", "", "0.7x120"),
        sample_series(f"{contract.step_family_name('cross_entropy')}", "cohere", "", "1.5x120"),
    ]
    expected = [
        {"labels": selector(row_labels("together")), "value": 0.5},
        {"labels": selector(row_labels("cohere")), "value": 1.5},
    ]
    test = {"expr": substitute(loss), "eval_time": "60m", "exp_samples": expected}
    assert promtool_test(tmp_path, series, [test]) == ""


def test_step_counter_queries_answer_at_zero_and_count(board: Json, tmp_path: Path) -> None:
    """With the counters at 0 (as the exporter creates them) every query still returns a
    series, valued 0; one counted step shows as 1 in the curve and in the table's total, for
    the Together run that had it and for no other run."""
    queries = [
        (title, expr)
        for title, expr in gen.panel_queries(board)
        if OUTLIERS in expr or NONFINITE in expr
    ]
    assert [title for title, _ in queries] == [STEP_PANEL, STEP_PANEL, "Runs", "Runs"]
    series = [
        *info_series(),
        sample_series(OUTLIERS, "together", ', metric="eval_loss"', "0x90 1x30"),
        sample_series(NONFINITE, "together", ', metric="eval_loss"', "0x120"),
        sample_series(OUTLIERS, "cohere", ', metric="cross_entropy"', "0x120"),
        sample_series(NONFINITE, "cohere", ', metric="cross_entropy"', "0x120"),
    ]
    tests: list[Json] = []
    for title, expr in queries:
        outliers = OUTLIERS in expr
        # At 60m nothing has been counted; at 91m the Together outlier counter has just gone
        # 0 -> 1 (inside both the 4m rate interval and the 1h range), the others have not.
        for when, together in (("60m", 0), ("91m", 1 if outliers else 0)):
            samples = []
            for provider, value, metric in (
                ("together", together, "eval_loss"),
                ("cohere", 0, "cross_entropy"),
            ):
                labels = row_labels(provider)
                if title == STEP_PANEL:
                    labels = {"name": labels["name"], "provider": provider, "metric": metric}
                samples.append({"labels": selector(labels), "value": value})
            tests.append({"expr": substitute(expr), "eval_time": when, "exp_samples": samples})
    assert promtool_test(tmp_path, series, tests) == ""


def test_every_step_panel_curves(board: Json) -> None:
    found = panel(board, STEP_PANEL)
    assert found in row_members(board, "Training")
    assert found["type"] == "timeseries"
    for target, (counter, kind) in zip(
        found["targets"], ((OUTLIERS, "outliers"), (NONFINITE, "non-finite")), strict=True
    ):
        assert target["expr"] == (
            f"sum by (name, provider, metric) (increase({counter}[$__rate_interval])"
            f" * {RUN_JOIN} {RUN_FILTER})"
        )
        assert target["legendFormat"] == f"{{{{name}}}} {{{{metric}}}} {kind}"
        assert target["range"]
        assert not target["instant"]
    assert found["fieldConfig"]["defaults"]["min"] == 0

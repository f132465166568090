"""The Grafana dashboard: built with the foundation SDK, generated file up to date, valid shape,
variables, provisioning."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from grafana_foundation_sdk.models.dashboard import Dashboard

from exporter import contract
from tests.deploy.dashboard import (
    COMMITTED,
    GENERATOR,
    GRAFANA,
    PROVIDER_MATCHER,
    Json,
    all_panels,
    data_panels,
    gen,
    panel,
    row_members,
)


@pytest.fixture(scope="module")
def board() -> Json:
    result: Json = gen.dashboard()
    return result


# --- the generated file -------------------------------------------------------------------


def test_the_dashboard_is_built_by_the_foundation_sdk() -> None:
    assert isinstance(gen.build(), Dashboard)


def test_committed_json_equals_generated() -> None:
    assert COMMITTED.read_text(encoding="utf-8") == gen.render(), (
        "deploy/grafana/dashboards/finetune.json is stale: "
        "run python deploy/grafana/generate_dashboard.py"
    )


def test_only_the_one_dashboard_is_shipped() -> None:
    assert sorted(p.name for p in (GRAFANA / "dashboards").iterdir()) == [COMMITTED.name]


def test_check_flag_passes_on_committed_file() -> None:
    done = subprocess.run(
        [sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def test_check_flag_fails_on_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "finetune.json"
    stale.write_text(gen.render().replace("Fine-tuning runs", "Stale"), encoding="utf-8")
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
    assert board["uid"] == "finetune"
    assert board["title"] == "Fine-tuning runs"
    assert board["schemaVersion"] >= 39
    assert {"cohere", "together"} <= set(board["tags"])
    assert board["refresh"] == "30s"
    assert board["time"] == {"from": "now-6h", "to": "now"}
    assert board["graphTooltip"] == 1
    assert isinstance(board["templating"]["list"], list)


def test_variables(board: Json) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "provider", "run"]
    datasource = variables["datasource"]
    assert (datasource["type"], datasource["query"]) == ("datasource", "prometheus")
    info = contract.RUN_INFO.sample
    expected = {
        "provider": f"label_values({info}, {contract.PROVIDER_LABEL})",
        # Runs by name, among the providers picked.
        "run": f"label_values({info}{{{PROVIDER_MATCHER}}}, name)",
    }
    for name, query in expected.items():
        variable = variables[name]
        assert variable["type"] == "query", name
        assert variable["datasource"]["uid"] == "${datasource}", name
        assert variable["query"] == query, name
        assert variable["multi"] is True, name
        assert variable["includeAll"] is True, name
        assert variable["allValue"] == ".*", name
        assert variable["refresh"] == 2, name  # on time range change: new runs appear


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


def test_the_asked_for_panels_are_there(board: Json) -> None:
    training = {p["title"] for p in row_members(board, "Training")}
    assert training == {
        "Train vs eval loss",
        "Accuracy",
        "Step progress",
        "Done (step / total)",
        "ETA",
        "Time since the newest step (training runs)",
        "Loss outliers and non-finite steps (every step)",
        "Runs",
    }
    health = {p["title"] for p in row_members(board, "Exporter health")}
    assert health == {
        "Exporter up",
        "Runs polled",
        "Rate-limited requests (429)",
        "Exporter version",
        "API requests by code",
        "Poll duration",
        "API budget",
    }


def test_panel_types_are_modern(board: Json) -> None:
    kinds = {p["type"] for p in data_panels(board)}
    assert kinds <= {"timeseries", "stat", "table", "bargauge"}
    assert {"timeseries", "stat", "table"} <= kinds


def test_every_data_panel_sets_a_unit(board: Json) -> None:
    for p in data_panels(board):
        assert p["fieldConfig"]["defaults"].get("unit"), p["title"]


def test_eval_loss_is_drawn_dashed_beside_train_loss(board: Json) -> None:
    losses = panel(board, "Train vs eval loss")
    legends = [t["legendFormat"] for t in losses["targets"]]
    assert legends == ["{{name}} train", "{{name}} eval", "{{name}} cross-entropy", "{{name}} loss"]
    (dashed,) = losses["fieldConfig"]["overrides"]
    assert dashed["matcher"] == {"id": "byRegexp", "options": ".* eval$"}
    assert dashed["properties"] == [{"id": "custom.lineStyle", "value": {"fill": "dash"}}]


def test_run_table_columns_and_phase_colours(board: Json) -> None:
    table = panel(board, "Runs")
    assert all(t["instant"] and t["format"] == "table" for t in table["targets"])
    assert [t["id"] for t in table["transformations"]] == ["merge", "organize"]
    renamed = table["transformations"][1]["options"]["renameByName"]
    ref_ids = {t["refId"] for t in table["targets"]}
    for field in renamed:
        if field.startswith("Value #"):
            assert field.removeprefix("Value #") in ref_ids, field
    assert {
        "Name",
        "Provider",
        "Phase",
        "Status",
        "Step",
        "Loss",
        "Last poll",
        "Outliers",
        "Non-finite",
    } <= set(renamed.values())
    fields = table["fieldConfig"]["overrides"]
    overrides = {o["matcher"]["options"]: o["properties"] for o in fields}
    (mapping,) = [p["value"] for p in overrides["Phase"] if p["id"] == "mappings"]
    assert set(mapping[0]["options"]) == set(contract.PHASE_VALUES)


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
    assert sorted(p.name for p in (GRAFANA / "provisioning" / "dashboards").iterdir()) == [
        "finetune.yaml"
    ]
    (provider,) = load_yaml("dashboards/finetune.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"

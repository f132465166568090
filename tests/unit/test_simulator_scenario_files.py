"""Scenario files: loading YAML and JSON, the bundled ones, and errors that name the field."""

from __future__ import annotations

import json
import math
import pathlib

import pytest

from exporter.simulator import (
    Scenario,
    ScenarioError,
    ScriptedModel,
    ScriptedSpike,
    SimClock,
    bundled_scenarios,
    load_scenario,
)
from exporter.simulator.cohere import CohereWorld

START = 1_700_000_000.0
EXAMPLE = pathlib.Path(__file__).parents[2] / "exporter/simulator/scenarios/spike-and-healthy.yaml"


def frozen_clock() -> SimClock:
    return SimClock(start_unix=START, frozen=True)


def write(tmp_path: pathlib.Path, name: str, text: str) -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- loading

YAML_TEXT = """
models:
  - name: spiky
    eval_every: 16
    step_seconds: 1.5
    total_steps: 160
    queue_seconds: 2
    deploy_seconds: 10
    starts_at: -30
    fail_at_step: 150
    spikes:
      - {step: 32, factor: 4, evaluations: 2}
      - {step: 96}
    non_finite:
      - [64, NaN]
      - {step: 80, value: -Infinity}
    extra_metrics: [loss]
    seed: 9
  - name: plain
"""

EXPECTED = Scenario(
    models=(
        ScriptedModel(
            name="spiky",
            eval_every=16,
            step_seconds=1.5,
            total_steps=160,
            queue_seconds=2.0,
            deploy_seconds=10.0,
            starts_at=-30.0,
            fail_at_step=150,
            spikes=(ScriptedSpike(step=32, factor=4.0, evaluations=2), ScriptedSpike(step=96)),
            non_finite=((64, "NaN"), (80, "-Infinity")),
            extra_metrics=("loss",),
            seed=9,
        ),
        ScriptedModel(name="plain"),
    )
)


def test_load_yaml(tmp_path: pathlib.Path) -> None:
    scenario = Scenario.load(write(tmp_path, "s.yaml", YAML_TEXT))
    assert scenario == EXPECTED
    assert isinstance(scenario.models[0].spikes[0].factor, float)
    assert isinstance(scenario.models[0].queue_seconds, float)


def test_load_json_with_strings_or_bare_nan(tmp_path: pathlib.Path) -> None:
    data = {
        "models": [
            {
                "name": "spiky",
                "eval_every": 16,
                "step_seconds": 1.5,
                "total_steps": 160,
                "queue_seconds": 2,
                "deploy_seconds": 10,
                "starts_at": -30,
                "fail_at_step": 150,
                "spikes": [{"step": 32, "factor": 4, "evaluations": 2}, {"step": 96}],
                "non_finite": [[64, "NaN"], {"step": 80, "value": "-Infinity"}],
                "extra_metrics": ["loss"],
                "seed": 9,
            },
            {"name": "plain"},
        ]
    }
    assert Scenario.load(write(tmp_path, "s.json", json.dumps(data))) == EXPECTED
    data["models"][0]["non_finite"] = [[64, math.nan], [80, -math.inf]]  # type: ignore[index]
    bare = json.dumps(data)  # json writes bare NaN / -Infinity tokens, and reads them back
    assert "NaN" in bare
    assert Scenario.load(write(tmp_path, "bare.json", bare)) == EXPECTED


def test_load_scenario_by_path_or_bundled_name(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, "s.yml", YAML_TEXT)
    assert load_scenario(str(path)) == EXPECTED
    assert "spike-and-healthy" in bundled_scenarios()
    assert load_scenario("spike-and-healthy") == Scenario.load(EXAMPLE)
    with pytest.raises(ValueError, match="no scenario file"):
        load_scenario(str(tmp_path / "missing.yaml"))


def test_example_scenario_is_as_documented() -> None:
    scenario = Scenario.load(EXAMPLE)
    models = {m.name: m for m in scenario.models}
    assert list(models) == ["spiky-run", "healthy-run", "finished-run", "nan-run"]
    spiky = models["spiky-run"]
    assert (spiky.eval_every, spiky.step_seconds, spiky.extra_metrics) == (8, 1.0, ("loss",))
    assert spiky.spikes == (ScriptedSpike(step=96, factor=5.0, evaluations=4),)
    healthy = models["healthy-run"]
    assert (healthy.eval_every, healthy.step_seconds, healthy.spikes) == (8, 1.0, ())
    assert models["finished-run"].starts_at == -2000.0
    assert models["nan-run"].non_finite == ((64, "NaN"),)
    world = CohereWorld(clock=frozen_clock(), scenario=scenario)
    statuses = {world.model(m)["name"]: world.status(m) for m in world.model_ids()}
    assert statuses == {
        "finished-run": "STATUS_READY",
        "spiky-run": "STATUS_QUEUED",
        "healthy-run": "STATUS_QUEUED",
        "nan-run": "STATUS_QUEUED",
    }


BAD = [
    # (file text, field named in the error)
    ("models:\n  - name: a\n    colour: red\n", r"models\[0\]\.colour: unknown field"),
    ("models: []\nextra: 1\n", r"extra: unknown field"),
    (
        "models:\n  - name: a\n    spikes: [{step: 90}]\n",
        r"models\[0\]\.spikes\[0\]\.step: 90 is not a multiple of eval_every \(8\)",
    ),
    (
        "models:\n  - name: a\n  - name: b\n    eval_every: -8\n",
        r"models\[1\]\.eval_every: must be at least 1",
    ),
    (
        "models:\n  - name: a\n    non_finite: [[64, nan]]\n",
        r"models\[0\]\.non_finite\[0\]\.value: 'nan' is not one of",
    ),
    (
        "models:\n  - name: a\n    non_finite: [[60, NaN]]\n",
        r"models\[0\]\.non_finite\[0\]\.step: 60 is not a multiple",
    ),
    ("models:\n  - name: a\n    spikes: [{step: 8, colour: red}]\n", r"spikes\[0\]\.colour"),
    ("models:\n  - name: a\n    spikes: [{factor: 3}]\n", r"spikes\[0\]\.step: missing"),
    ("models:\n  - name: a\n    spikes: [{step: 8, factor: 0}]\n", r"spikes\[0\]\.factor"),
    ("models:\n  - name: a\n    spikes: [{step: 8, evaluations: 0}]\n", r"\.evaluations"),
    (
        "models:\n  - name: a\n    spikes: [{step: 400, evaluations: 2}]\n",
        r"spikes\[0\]\.evaluations: 2 evaluations from step 400 run past",
    ),
    (
        "models:\n  - name: a\n    spikes: [{step: 8, evaluations: 2}, {step: 16}]\n",
        r"spikes\[1\]\.step: overlaps spikes\[0\]",
    ),
    (
        "models:\n  - name: a\n    fail_at_step: 100\n    spikes: [{step: 104}]\n",
        r"spikes\[0\]\.step: 104 is after the last evaluated step \(96\)",
    ),
    ("models:\n  - name: a\n    fail_at_step: 401\n", r"models\[0\]\.fail_at_step"),
    ("models:\n  - name: a\n    step_seconds: 0\n", r"models\[0\]\.step_seconds: must be above"),
    ("models:\n  - name: a\n    queue_seconds: -1\n", r"models\[0\]\.queue_seconds"),
    ("models:\n  - name: a\n    total_steps: 1.5\n", r"models\[0\]\.total_steps: must be an int"),
    ("models:\n  - name: a\n    starts_at: .inf\n", r"models\[0\]\.starts_at: must be finite"),
    ("models:\n  - name: a\n    seed: x\n", r"models\[0\]\.seed"),
    ("models:\n  - name: a\n    extra_metrics: [accuracy]\n", r"extra_metrics\[0\]"),
    ("models:\n  - name: a\n    extra_metrics: loss\n", r"models\[0\]\.extra_metrics: must be"),
    ("models:\n  - eval_every: 8\n", r"models\[0\]\.name: missing"),
    ("models:\n  - name: a\n  - name: a\n", r"models\[1\]\.name: 'a' is also models\[0\]"),
    ("models: 3\n", r"models: must be a list"),
    ("- name: a\n", r"must be a mapping"),
    ("{}\n", r"models: missing"),
    ("models: [\n", r"not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_files_name_the_field(tmp_path: pathlib.Path, text: str, message: str) -> None:
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ValueError, match=message) as caught:
        Scenario.load(path)
    assert isinstance(caught.value, ScenarioError)
    assert "bad.yaml" in str(caught.value)


def test_errors_cut_a_huge_value() -> None:
    data = {"models": [{"name": "a"}, {"name": "b", "seed": "x" * 10_000}]}
    with pytest.raises(ScenarioError, match=r"^models\[1\]\.seed: must be an integer") as caught:
        Scenario.from_dict(data)
    assert caught.value.field == "models[1].seed"
    assert "x" * 61 not in str(caught.value)


def test_bad_json_and_unreadable_file(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="not valid JSON"):
        Scenario.load(write(tmp_path, "bad.json", "{models: []}"))
    with pytest.raises(ValueError, match="cannot read scenario file"):
        Scenario.load(tmp_path / "absent.yaml")


def test_direct_construction_is_validated_too() -> None:
    with pytest.raises(ValueError, match=r"^eval_every: must be at least 1"):
        ScriptedModel(name="a", eval_every=0)
    with pytest.raises(ValueError, match=r"^spikes\[0\]\.step: 12 is not a multiple"):
        ScriptedModel(name="a", spikes=(ScriptedSpike(step=12),))
    with pytest.raises(ValueError, match=r"^non_finite\[0\]\.value"):
        ScriptedModel(name="a", non_finite=((8, "nan"),))
    with pytest.raises(ValueError, match=r"^models\[0\]: must be a mapping"):
        Scenario(models=("a",))

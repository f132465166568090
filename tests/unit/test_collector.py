"""The exposition produced from hand-built snapshots."""

from __future__ import annotations

import math

import pytest
from prometheus_client import generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import __version__
from exporter.collectors import registry_for
from exporter.contract import step_family_name
from tests.promtool import promtool_check_metrics
from tests.snapshots import cohere_view, snapshot_of, step

CHAT = cohere_view(
    "fee37446-7fc7-42f9-a026-c6ba2fcc422d",
    "chat-ft",
    "STATUS_FINETUNING",
    base_model="medium",
    labels={
        "base_model_version": "14.2.0",
        "base_type": "BASE_TYPE_CHAT",
        "strategy": "STRATEGY_TFEW",
    },
    newest_step=step(
        9,
        1705523119.331940174,
        {"accuracy": 0.7393720149993896, "cross_entropy": 0.7702581286430359, "step": 9.0},
    ),
    up=True,
    last_success=1705523200.0,
)
QUEUED = cohere_view("q-1", "queued", "STATUS_QUEUED", up=False)


def test_exposition_of_a_hand_built_snapshot() -> None:
    snapshot = snapshot_of(CHAT, QUEUED, up=True, poll_duration=0.25)
    text = generate_latest(registry_for(snapshot)).decode()
    model = f'finetuned_model_id="{CHAT.id}"'
    expected_lines = [
        "cohere_finetune_up 1.0",
        "cohere_finetune_poll_duration_seconds 0.25",
        f'cohere_finetune_build_info{{version="{__version__}"}} 1.0',
        f'cohere_finetune_model_info{{base_model="medium",base_model_version="14.2.0",'
        f'base_type="BASE_TYPE_CHAT",{model},name="chat-ft",strategy="STRATEGY_TFEW"}} 1.0',
        f'cohere_finetune_model_status{{{model},status="STATUS_FINETUNING"}} 1.0',
        f'cohere_finetune_model_status{{{model},status="STATUS_READY"}} 0.0',
        'cohere_finetune_model_status{finetuned_model_id="q-1",status="STATUS_QUEUED"} 1.0',
        f"cohere_finetune_model_up{{{model}}} 1.0",
        'cohere_finetune_model_up{finetuned_model_id="q-1"} 0.0',
        f"cohere_finetune_last_poll_success_timestamp_seconds{{{model}}} 1.7055232e+09",
        f"cohere_finetune_step_number{{{model}}} 9.0",
        f"cohere_finetune_step_accuracy{{{model}}} 0.7393720149993896",
        f"cohere_finetune_step_cross_entropy{{{model}}} 0.7702581286430359",
        "# TYPE cohere_finetune_step_cross_entropy gauge",
    ]
    lines = text.splitlines()
    for line in expected_lines:
        assert line in lines, line
    assert "cohere_finetune_step_step" not in text  # the step key is not repeated
    assert 'finetuned_model_id="q-1"} 9' not in text  # no steps for a queued model
    assert sum(1 for line in lines if line.startswith("cohere_finetune_model_status{")) == 18
    help_line = next(line for line in lines if line.startswith("# HELP cohere_finetune_step_cross"))
    assert "'cross_entropy'" in help_line
    assert "Polled" in help_line
    timestamp = next(line for line in lines if line.startswith("cohere_finetune_step_timestamp"))
    assert float(timestamp.split()[-1]) == pytest.approx(1705523119.331940174)
    assert all(
        len(line.split()) == 2 for line in lines if not line.startswith("#")
    )  # no sample timestamps


def test_non_finite_values_pass_through() -> None:
    newest = step(3, None, {"cross_entropy": math.nan, "loss": math.inf, "delta": -math.inf})
    model = cohere_view("m", "m", "STATUS_FINETUNING", newest_step=newest, up=True)
    text = generate_latest(registry_for(snapshot_of(model))).decode()
    assert 'cohere_finetune_step_cross_entropy{finetuned_model_id="m"} NaN' in text
    assert 'cohere_finetune_step_loss{finetuned_model_id="m"} +Inf' in text
    assert 'cohere_finetune_step_delta{finetuned_model_id="m"} -Inf' in text
    assert "cohere_finetune_step_timestamp_seconds{" not in text  # unknown created_at: no sample


@pytest.mark.parametrize(
    ("metric", "family"),
    [
        ("cross_entropy", "cohere_finetune_step_cross_entropy"),
        ("val loss (smoothed)", "cohere_finetune_step_val_loss__smoothed_"),
        ("f1-score", "cohere_finetune_step_f1_score"),
        ("number", "cohere_finetune_step_number_value"),
        ("timestamp_seconds", "cohere_finetune_step_timestamp_seconds_value"),
        ("outliers", "cohere_finetune_step_outliers_value"),  # the every-step counters' names
        ("nonfinite", "cohere_finetune_step_nonfinite_value"),
        ("tokens_total", "cohere_finetune_step_tokens_total_value"),
        ("ßcore", "cohere_finetune_step__core"),
        ("2nd", "cohere_finetune_step_2nd"),
        ("---", None),
        ("", None),
    ],
)
def test_family_names(metric: str, family: str | None) -> None:
    assert step_family_name(metric) == family


def test_hostile_names_make_a_valid_exposition() -> None:
    metrics = {
        'quote"d': 1.0,
        "back\\slash": 2.0,
        "new\nline": 3.0,
        "naïve métrique": 4.0,
        "number": 5.0,
        "a-b": 6.0,
        "a_b": 7.0,  # sanitises like "a-b": the first sorted name keeps the family
    }
    model = cohere_view(
        "m-1",
        'evil "name"\\ with\nnewline — ünïcode',
        "STATUS_SOMETHING_NEW",
        base_model="b",
        newest_step=step(1, 1.0, metrics),
        up=True,
    )
    registry = registry_for(snapshot_of(model, up=True))
    text = generate_latest(registry).decode()
    assert 'cohere_finetune_step_a_b{finetuned_model_id="m-1"} 6.0' in text
    assert 'name="evil \\"name\\"\\\\ with\\nnewline — ünïcode"' in text
    assert 'status="STATUS_SOMETHING_NEW"} 1.0' in text
    complaints = promtool_check_metrics(text.encode()).splitlines()
    # Single-letter parts of user-chosen names trip promtool's style lint (units such as "b" or
    # "m"); anything else, a parse error above all, would be ours.
    assert [c for c in complaints if not c.endswith("should not contain abbreviated units")] == []
    rendered = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    families = list(text_string_to_metric_families(rendered))  # type: ignore[no-untyped-call]
    assert {f.name for f in families} >= {"cohere_finetune_model", "cohere_finetune_step_number"}


def test_a_model_that_leaves_the_snapshot_leaves_the_exposition() -> None:
    assert CHAT.id in generate_latest(registry_for(snapshot_of(CHAT, QUEUED))).decode()
    after = generate_latest(registry_for(snapshot_of(QUEUED))).decode()
    assert CHAT.id not in after
    assert "q-1" in after


def test_openmetrics_rendering() -> None:
    registry = registry_for(snapshot_of(CHAT, up=True, poll_duration=0.1))
    text = generate_openmetrics(registry).decode()  # type: ignore[no-untyped-call]
    assert text.endswith("# EOF\n")
    assert "# TYPE cohere_finetune_model info" in text
    parsed = {f.name: f for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
    assert parsed["cohere_finetune_step_cross_entropy"].samples[0].value == pytest.approx(
        0.77025813
    )

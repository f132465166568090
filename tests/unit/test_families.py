"""The exposition written from hand-built snapshots."""

from __future__ import annotations

import math

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter import __version__
from exporter.contract import step_family_name
from exporter.core.snapshot import Snapshot
from exporter.encoding import EOF, Format, chunks
from exporter.families import blocks_for
from tests.promtool import promtool_check_metrics
from tests.snapshots import cohere_view, snapshot_of, step, together_view

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
        {"accuracy": 0.7393720149993896, "cross_entropy": 0.7702581286430359},
    ),
    up=True,
    last_success=1705523200.0,
)
QUEUED = cohere_view("q-1", "queued", "STATUS_QUEUED", up=False)


TOGETHER = together_view(
    "ft-44129430-ac08-4136-9774-aed81e0164a4",
    "acct/llama-3.1-8b-demo-4f2a",
    "running",
    newest_step=step(140, 1779196193.564587, {"train/loss": 0.61, "eval/loss": 0.72}),
    total_steps=500,
    eta_seconds=1200.0,
    tokens=1_234_567,
)


def render(snapshot: Snapshot, fmt: Format = "text") -> str:
    body = b"".join(chunks(blocks_for(snapshot), fmt))
    return (body + EOF if fmt == "openmetrics" else body).decode()


def line(family: str, value: str, /, **labels: str) -> str:
    """A sample line as prometheus_client writes it: labels in sorted order."""
    text = ",".join(f'{key}="{labels[key]}"' for key in sorted(labels))
    return f"{family}{{{text}}} {value}" if text else f"{family} {value}"


def test_exposition_of_a_hand_built_snapshot() -> None:
    snapshot = snapshot_of(CHAT, QUEUED, TOGETHER, up=True, poll_duration=0.25)
    text = render(snapshot)
    chat = {"provider": "cohere", "finetune_id": CHAT.id}
    queued = {"provider": "cohere", "finetune_id": "q-1"}
    job = {"provider": "together", "finetune_id": TOGETHER.id}
    expected_lines = [
        line("finetune_up", "1.0", provider="cohere"),
        line("finetune_up", "1.0", provider="together"),
        line("finetune_poll_duration_seconds", "0.25", provider="cohere"),
        line("finetune_exporter_build_info", "1.0", version=__version__),
        line(
            "finetune_run_info",
            "1.0",
            **chat,
            name="chat-ft",
            base_model="medium",
            base_model_version="14.2.0",
            base_type="BASE_TYPE_CHAT",
            strategy="STRATEGY_TFEW",
        ),
        line(
            "finetune_run_info",
            "1.0",
            **job,
            name="acct/llama-3.1-8b-demo-4f2a",
            base_model="meta-llama/Meta-Llama-3.1-8B-Instruct-Reference",
            training_type="Lora",
            training_method="sft",
        ),
        line("finetune_run_phase", "1.0", **chat, phase="training"),
        line("finetune_run_phase", "0.0", **chat, phase="succeeded"),
        line("finetune_run_phase", "1.0", **queued, phase="queued"),
        line("finetune_run_phase", "1.0", **job, phase="training"),
        line("finetune_run_status", "1.0", **chat, status="STATUS_FINETUNING"),
        line("finetune_run_status", "1.0", **job, status="running"),
        line("finetune_run_total_steps", "500.0", **job),
        line("finetune_run_eta_seconds", "1200.0", **job),
        line("finetune_run_tokens", "1.234567e+06", **job),
        line("finetune_run_up", "1.0", **chat),
        line("finetune_run_up", "0.0", **queued),
        line("finetune_run_last_poll_success_timestamp_seconds", "1.7055232e+09", **chat),
        line("finetune_step_number", "9.0", **chat),
        line("finetune_step_number", "140.0", **job),
        line("finetune_step_accuracy", "0.7393720149993896", **chat),
        line("finetune_step_cross_entropy", "0.7702581286430359", **chat),
        line("finetune_step_train_loss", "0.61", **job),
        line("finetune_step_eval_loss", "0.72", **job),
        "# TYPE finetune_step_cross_entropy gauge",
    ]
    lines = text.splitlines()
    for expected in expected_lines:
        assert expected in lines, expected
    assert not [x for x in lines if x.startswith("finetune_step_number") and '"q-1"' in x]
    phases = [x for x in lines if x.startswith("finetune_run_phase{")]
    assert len(phases) == 3 * 7
    assert sum(1 for x in phases if x.endswith(" 1.0")) == 3
    assert not [x for x in lines if x.startswith("finetune_run_total_steps") and "cohere" in x]
    help_line = next(x for x in lines if x.startswith("# HELP finetune_step_cross"))
    assert "'cross_entropy' (cohere)" in help_line
    assert "Polled" in help_line
    train_help = next(x for x in lines if x.startswith("# HELP finetune_step_train_loss"))
    assert "'train/loss' (together)" in train_help
    timestamp = next(x for x in lines if x.startswith("finetune_step_timestamp"))
    assert float(timestamp.split()[-1]) == pytest.approx(1705523119.331940174)
    assert all(len(x.split()) == 2 for x in lines if not x.startswith("#"))  # no sample timestamps


def test_non_finite_values_pass_through() -> None:
    newest = step(3, None, {"cross_entropy": math.nan, "loss": math.inf, "delta": -math.inf})
    model = cohere_view("m", "m", "STATUS_FINETUNING", newest_step=newest, up=True)
    text = render(snapshot_of(model))
    assert 'finetune_step_cross_entropy{finetune_id="m",provider="cohere"} NaN' in text
    assert 'finetune_step_loss{finetune_id="m",provider="cohere"} +Inf' in text
    assert 'finetune_step_delta{finetune_id="m",provider="cohere"} -Inf' in text
    assert "finetune_step_timestamp_seconds{" not in text  # unknown created_at: no sample


@pytest.mark.parametrize(
    ("metric", "family"),
    [
        ("cross_entropy", "finetune_step_cross_entropy"),
        ("val loss (smoothed)", "finetune_step_val_loss__smoothed_"),
        ("f1-score", "finetune_step_f1_score"),
        ("number", "finetune_step_number_value"),
        ("timestamp_seconds", "finetune_step_timestamp_seconds_value"),
        ("outliers", "finetune_step_outliers_value"),  # the every-step counters' names
        ("nonfinite", "finetune_step_nonfinite_value"),
        ("tokens_total", "finetune_step_tokens_total_value"),
        ("ßcore", "finetune_step__core"),
        ("2nd", "finetune_step_2nd"),
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
    snapshot = snapshot_of(model, up=True)
    text = render(snapshot)
    assert 'finetune_step_a_b{finetune_id="m-1",provider="cohere"} 6.0' in text
    assert 'name="evil \\"name\\"\\\\ with\\nnewline — ünïcode"' in text
    assert 'status="STATUS_SOMETHING_NEW"} 1.0' in text
    complaints = promtool_check_metrics(text.encode()).splitlines()
    # Single-letter parts of user-chosen names trip promtool's style lint (units such as "b" or
    # "m"); anything else, a parse error above all, would be ours.
    assert [c for c in complaints if not c.endswith("should not contain abbreviated units")] == []
    rendered = render(snapshot, "openmetrics")
    families = list(text_string_to_metric_families(rendered))  # type: ignore[no-untyped-call]
    assert {f.name for f in families} >= {"finetune_run", "finetune_step_number"}


def test_a_model_that_leaves_the_snapshot_leaves_the_exposition() -> None:
    assert CHAT.id in render(snapshot_of(CHAT, QUEUED))
    after = render(snapshot_of(QUEUED))
    assert CHAT.id not in after
    assert "q-1" in after


def test_openmetrics_rendering() -> None:
    text = render(snapshot_of(CHAT, up=True, poll_duration=0.1), "openmetrics")
    assert text.endswith("# EOF\n")
    assert "# TYPE finetune_run info" in text
    parsed = {f.name: f for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
    assert parsed["finetune_step_cross_entropy"].samples[0].value == pytest.approx(0.77025813)

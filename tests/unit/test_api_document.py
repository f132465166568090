"""``/api/runs``'s document: documented field names, non-finite values, the two-part encoding."""

from __future__ import annotations

import dataclasses
import gzip
import json
import math
import re
from array import array
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from exporter.core.history import HistoryBuilder
from exporter.web.api import (
    CurveDoc,
    ProviderDoc,
    RunDoc,
    RunsDocument,
    float32_values,
    head_json,
    run_doc,
    runs_json,
)
from exporter.web.status import deflate_tail, gzip_joined
from tests.snapshots import cohere_view, step, together_view

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()


def field_paths(model: type[BaseModel], prefix: str = "") -> set[str]:
    paths = set()
    nested: dict[str, type[BaseModel]] = {
        "providers": ProviderDoc,
        "runs": RunDoc,
        "history": CurveDoc,
    }
    for name in model.model_fields:
        paths.add(prefix + name)
        inner = nested.get(name)
        if inner is not None:
            joint = {"providers": "[].", "runs": "[].", "history": ".<metric>."}[name]
            paths |= field_paths(inner, f"{prefix}{name}{joint}")
    return paths


def documented_fields() -> set[str]:
    section = README.split("## The status page", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([^`]+)` \|", section, flags=re.MULTILINE))


def test_every_field_is_documented_in_the_readme_and_nothing_else() -> None:
    assert documented_fields() == field_paths(RunsDocument)


def strict_json(text: str | bytes) -> Any:
    """JSON as any other language reads it: NaN and Infinity literals are errors."""

    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def nonfinite_view() -> Any:
    builder = HistoryBuilder(["train/loss"])
    for number, value in enumerate([2.0, math.nan, 1.5, math.inf, -math.inf, 1.25]):
        builder.add(number, {"train/loss": value})
    builder.mark(1, [], ["train/loss"])
    builder.mark(2, ["train/loss"], [])
    metrics = {"train/loss": math.nan, "eval/loss": math.inf, "x": -math.inf, "ok": 0.5}
    view = together_view("ft-1", "n", "running", newest_step=step(5, 1.7e9, metrics))
    return dataclasses.replace(view, history=builder.history())


def test_non_finite_values_are_written_as_strings_and_read_back() -> None:
    encoded = runs_json((nonfinite_view(),))
    run = strict_json(b'{"runs":' + encoded)["runs"][0]
    assert run["metrics"] == {"train/loss": "NaN", "eval/loss": "+Inf", "x": "-Inf", "ok": 0.5}
    assert run["history"]["train/loss"] == {
        "steps": [0, 1, 2, 3, 4, 5],
        "values": [2.0, "NaN", 1.5, "+Inf", "-Inf", 1.25],
    }
    assert run["outlier_steps"] == [[2, "train/loss"]]
    assert run["nonfinite_steps"] == [[1, "train/loss"]]
    back = RunDoc.model_validate(run)
    assert math.isnan(back.metrics["train/loss"])
    assert back.metrics["eval/loss"] == math.inf
    assert back.history is not None
    assert math.isnan(back.history["train/loss"].values[1])


def test_head_and_cached_runs_make_one_document() -> None:
    views = (nonfinite_view(), cohere_view("m1", "c", "STATUS_READY"))
    provider = ProviderDoc(
        name="cohere",
        up=True,
        ready=True,
        last_cycle_at=1.7e9,
        poll_duration_seconds=0.5,
        requests_per_minute=400,
        requests_used=3,
    )
    fields: dict[str, Any] = {
        "version": 7,
        "generated_at": 1.7e9,
        "ready": True,
        "all": False,
        "hidden_finished": 2,
        "providers": [provider],
    }
    spliced = head_json(RunsDocument(**fields, runs=[])) + runs_json(views)
    whole = RunsDocument(**fields, runs=[run_doc(v) for v in views]).model_dump_json()
    assert strict_json(spliced) == strict_json(whole)
    assert list(strict_json(spliced)) == list(RunsDocument.model_fields)
    with pytest.raises(ValueError, match="empty run list"):
        head_json(RunsDocument(**fields, runs=[run_doc(views[0])]))


def test_float32_values_are_short_and_exact() -> None:
    kept = array("f", [0.1, 1 / 3, 2.5e-7, 123456.789, 1.0000001, math.nan, math.inf])
    short = float32_values(kept)
    assert short[:5] == [0.1, 0.33333334, 2.5e-7, 123456.79, 1.0000001]
    back = array("f", short)
    for a, b in zip(back, kept, strict=True):
        assert a == b or (math.isnan(a) and math.isnan(b))
    assert all(len(repr(v)) <= 12 for v in short)


@pytest.mark.parametrize(
    ("head", "tail"), [(b"<head>", b"<main>" * 1000), (b"", b"tail"), (b"head", b"")]
)
def test_a_head_spliced_onto_a_cached_deflate_stream_is_one_gzip_member(
    head: bytes, tail: bytes
) -> None:
    assert gzip.decompress(gzip_joined(head, tail, deflate_tail(tail))) == head + tail

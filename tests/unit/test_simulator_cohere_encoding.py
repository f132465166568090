"""The simulator's proto3 JSON must match protojson, or tests against it prove nothing."""

from __future__ import annotations

import json
import math

import pytest

from exporter.simulator.cohere import encoding

# 2024-01-17T20:25:19.331940174Z, the step timestamp of Cohere's official example.
EXAMPLE_NS = 1_705_523_119_331_940_174


def test_timestamp_keeps_nine_digits_for_nanoseconds() -> None:
    assert encoding.timestamp_from_ns(EXAMPLE_NS) == "2024-01-17T20:25:19.331940174Z"


@pytest.mark.parametrize(
    ("nanos", "expected"),
    [
        (0, "2024-01-17T20:25:19Z"),
        (331_000_000, "2024-01-17T20:25:19.331Z"),
        (331_940_000, "2024-01-17T20:25:19.331940Z"),
        (331_940_174, "2024-01-17T20:25:19.331940174Z"),
        (1, "2024-01-17T20:25:19.000000001Z"),
    ],
)
def test_timestamp_uses_zero_three_six_or_nine_digits(nanos: int, expected: str) -> None:
    whole = EXAMPLE_NS - EXAMPLE_NS % 1_000_000_000
    assert encoding.timestamp_from_ns(whole + nanos) == expected


def test_float_timestamp_is_stable_and_close() -> None:
    unix = EXAMPLE_NS / 1e9
    text = encoding.timestamp(unix)
    assert text.startswith("2024-01-17T20:25:19.3319")
    assert text.endswith("Z")
    assert len(text.split(".")[1]) == 10  # nine digits and the Z
    assert abs(encoding.unix_to_ns(unix) - EXAMPLE_NS) < 1_000


def test_non_finite_doubles_become_strings() -> None:
    assert encoding.double(math.nan) == "NaN"
    assert encoding.double(math.inf) == "Infinity"
    assert encoding.double(-math.inf) == "-Infinity"
    assert encoding.double(0.25) == 0.25


def test_message_omits_zero_values_but_keeps_map_entries() -> None:
    body = encoding.message(
        {
            "step_metrics": [
                {
                    "created_at": EXAMPLE_NS / 1e9,
                    "step_number": 0,
                    "metrics": {"accuracy": 0.0, "cross_entropy": math.nan, "step": 0.0},
                }
            ],
            "next_page_token": "",
            "total_size": 0,
            "flag": False,
            "tags": [],
            "settings": {"base_model": {"strategy": "STRATEGY_UNSPECIFIED", "version": ""}},
        }
    )
    assert list(body) == ["step_metrics"]
    step = body["step_metrics"][0]
    assert "step_number" not in step
    assert step["metrics"] == {"accuracy": 0.0, "cross_entropy": "NaN", "step": 0.0}
    assert step["created_at"].startswith("2024-01-17T20:25:19.")


def test_message_keeps_non_zero_values() -> None:
    body = encoding.message({"step_number": 9, "total_size": 5, "user_id": "u", "ok": True})
    assert body == {"step_number": 9, "total_size": 5, "user_id": "u", "ok": True}


def test_dumps_refuses_bare_nan() -> None:
    with pytest.raises(ValueError, match="JSON compliant"):
        encoding.dumps({"x": math.nan})
    assert json.loads(encoding.dumps(encoding.message({"metrics": {"x": math.inf}}))) == {
        "metrics": {"x": "Infinity"}
    }

"""Log lines: logfmt and JSON shapes, and the key masked wherever it sneaks in."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from exporter.logs import MASK, setup_logging

KEY = "sk-log-test-271828182845"


@pytest.fixture(autouse=True)
def restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_logfmt_line() -> None:
    stream = io.StringIO()
    setup_logging("info", "logfmt", stream=stream)
    logging.getLogger("exporter.poller").warning(
        "model polling failed", extra={"model": "m-1", "error": 'HTTP 503: "busy"'}
    )
    line = stream.getvalue().strip()
    assert "level=warn" in line
    assert 'msg="model polling failed"' in line
    assert "model=m-1" in line
    assert 'error="HTTP 503: \\"busy\\""' in line


def test_json_line_and_level_filter() -> None:
    stream = io.StringIO()
    setup_logging("warn", "json", stream=stream)
    logging.getLogger("exporter").info("hidden")
    logging.getLogger("exporter").error("shown", extra={"model": "m-2"})
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["msg"] == "shown"
    assert record["level"] == "error"
    assert record["model"] == "m-2"


@pytest.mark.parametrize("fmt", ["logfmt", "json"])
def test_key_is_masked_in_messages_extras_and_exceptions(fmt: str) -> None:
    stream = io.StringIO()
    setup_logging("debug", fmt, secrets=[KEY], stream=stream)
    logger = logging.getLogger("aiohttp.client")
    logger.debug("sending Authorization: Bearer %s", KEY)
    logger.info("extra", extra={"header": f"Bearer {KEY}"})
    try:
        raise RuntimeError(f"failed with {KEY}")
    except RuntimeError:
        logger.exception("boom")
    output = stream.getvalue()
    assert KEY not in output
    assert output.count(MASK) == 3

"""The benchmark harness stays in step with the exporter without a ten-minute run: its command
lines are accepted by ``serve``, its OpenMetrics cells really negotiate OpenMetrics, and its
reading of ``wrk`` and of the poll-duration family holds."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import harness
import poll
import scrape
import wrk

from exporter import contract
from exporter.cli import build_parser, setting_overrides
from exporter.exposition import negotiate
from exporter.settings import load_settings


def test_exporter_command_line_is_accepted_by_serve() -> None:
    argv = harness.exporter_argv(
        18042, "http://127.0.0.1:18043", interval=5.8, discovery=14.5, concurrency=32
    )
    args = build_parser().parse_args(argv[3:])
    settings = load_settings(**setting_overrides(args))
    assert args.command == "serve"
    assert settings.poll_interval == 5.8
    assert settings.poll_discovery_interval == 14.5
    assert settings.poll_concurrency == 32
    assert settings.limits_max_models == harness.DEFAULT_MAX_MODELS
    assert settings.cohere_max_requests_per_minute == harness.MAX_REQUESTS_PER_MINUTE


def test_each_cell_negotiates_its_own_format() -> None:
    for fmt, use_gzip in scrape.CELLS:
        headers = scrape.request_headers(fmt, use_gzip)
        assert negotiate(headers.get("Accept", ""))[0] == fmt
        assert ("Accept-Encoding" in headers) == use_gzip


def test_poll_duration_is_read_from_the_family_the_exporter_writes() -> None:
    body = f"# TYPE {contract.POLL_DURATION.name} gauge\n{contract.POLL_DURATION.name} 1.25\n"
    match = poll.POLL_DURATION_SAMPLE.search(body.encode())
    assert match is not None
    assert float(match.group(1)) == 1.25


WRK_OUTPUT = """\
Running 3s test @ http://127.0.0.1:18100/metrics
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.10ms    1.02ms  20.11ms   90.12%
    Req/Sec     1.71k   120.45     1.90k    70.00%
  Latency Distribution
     50%    1.90ms
     75%    2.40ms
     90%    3.10ms
     99%  850.00us
  10245 requests in 3.00s, 2.44GB read
  Socket errors: connect 0, read 7, write 1, timeout 2
  Non-2xx or 3xx responses: 4
Requests/sec:   3407.20
Transfer/sec:    833.12MB
"""


def test_wrk_report_is_read() -> None:
    result = wrk.parse_wrk(WRK_OUTPUT)
    assert result.rps == 3407.2
    assert result.requests == 10245
    assert result.p50_ms == 1.9
    assert result.p99_ms == 0.85
    assert result.errors == 3  # read errors are a closed connection after an answer
    assert result.non_2xx == 4


def test_wrk_sends_every_header() -> None:
    argv = wrk.wrk_argv("http://x/metrics", 3, scrape.request_headers("openmetrics", True))
    assert argv[-1] == "http://x/metrics"
    assert argv.count("-H") == 2
    assert f"Accept: {scrape.ACCEPT['openmetrics']['Accept']}" in argv

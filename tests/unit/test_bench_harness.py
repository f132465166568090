"""The benchmark harness stays in step with the exporter without a half-hour run: its command
lines are accepted by ``serve``, ``simulate`` and ``backfill``, its OpenMetrics cells really
negotiate OpenMetrics, and its readings (``wrk``, the poll durations in a gzip body's first
bytes, poll cycles from publications, backfilled steps) and its arithmetic (percentiles, the
least-squares slope) hold; the verdicts on them are in ``test_bench_targets``."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import commands
import cycles
import fleet
import harness
import latency_simulator
import long_job
import per_request
import plan
import scaling
import scrape
import table
import wrk
from first_scrape import classify

from exporter import contract, exposition
from exporter.backfill import PlacedStep, RunHistory, write_openmetrics
from exporter.cli import build_parser, setting_overrides
from exporter.core.provider import Run
from exporter.core.snapshot import ProviderPart, RunView, Snapshot
from exporter.exposition import EncodedSnapshot, negotiate
from exporter.settings import load_settings
from exporter.simulator import Scenario, SimClock
from exporter.simulator.cohere import CohereWorld
from exporter.simulator.cohere.plan import SimStep
from exporter.simulator.together import TogetherWorld

APIS = {"cohere": "http://127.0.0.1:18043", "together": "http://127.0.0.1:18044"}


def test_exporter_command_line_polls_exactly_the_given_providers() -> None:
    argv = commands.exporter_argv(
        18042, APIS, interval=5.8, discovery=14.5, concurrency=32, max_models=20_000
    )
    args = build_parser().parse_args(argv[3:])
    settings = load_settings(**setting_overrides(args))
    assert args.command == "serve"
    assert settings.providers == ("cohere", "together")
    assert settings.cohere_api_url == APIS["cohere"]
    assert settings.together_api_url == APIS["together"]
    assert settings.poll_interval == 5.8
    assert settings.poll_discovery_interval == 14.5
    assert settings.poll_concurrency == 32
    assert settings.limits_max_models == 20_000
    assert settings.cohere_max_requests_per_minute == commands.max_requests_per_minute("cohere")
    assert settings.together_max_requests_per_minute == commands.max_requests_per_minute("together")


def test_a_bare_url_is_a_cohere_only_exporter() -> None:
    argv = commands.exporter_argv(18042, APIS["cohere"], interval=30, discovery=300, concurrency=8)
    settings = load_settings(**setting_overrides(build_parser().parse_args(argv[3:])))
    assert settings.providers == ("cohere",)
    assert settings.limits_max_models == commands.DEFAULT_MAX_MODELS


def test_max_models_leaves_no_run_out() -> None:
    assert commands.max_models_for(50) == commands.DEFAULT_MAX_MODELS
    assert commands.max_models_for(5000) == max(commands.DEFAULT_MAX_MODELS, 10_000)


def test_simulate_and_backfill_command_lines_are_accepted(tmp_path: Path) -> None:
    speed = fleet.STILL_SPEED
    sim = build_parser().parse_args(
        commands.simulate_argv(18044, 7, speed, provider="together", scenario=long_job.LONG_JOB)[3:]
    )
    assert (sim.command, sim.provider, sim.runs, sim.speed) == ("simulate", "together", 7, speed)
    assert 0 < speed * 3600 < 0.01  # an hour of benchmark is under 10 simulated ms
    assert sim.scenario == str(long_job.LONG_JOB)
    out = tmp_path / "history.om"
    args = build_parser().parse_args(
        commands.backfill_argv(out, {"together": APIS["together"]})[3:]
    )
    settings = load_settings(**setting_overrides(args))
    assert args.command == "backfill"
    assert args.out == out
    assert settings.providers == ("together",)
    assert settings.together_api_url == APIS["together"]


def test_children_get_this_checkout_keys_and_none_of_the_callers_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FINETUNE_EXPORTER_POLL_INTERVAL", "1")
    monkeypatch.setenv("TOGETHER_BASE_URL", "https://api.together.ai")
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    env = harness.child_env()
    assert "FINETUNE_EXPORTER_POLL_INTERVAL" not in env
    assert "TOGETHER_BASE_URL" not in env
    assert env["CO_API_KEY"] == env["TOGETHER_API_KEY"] == harness.API_KEY
    assert env["PYTHONPATH"].split(":")[:2] == [str(harness.ROOT), "/elsewhere"]


def test_each_cell_negotiates_its_own_format() -> None:
    for fmt, use_gzip in scrape.CELLS:
        headers = scrape.request_headers(fmt, use_gzip)
        assert negotiate(headers.get("Accept", ""))[0] == fmt
        assert ("Accept-Encoding" in headers) == use_gzip


def test_runs_are_split_between_providers() -> None:
    assert fleet.split_runs(10_000) == {"cohere": 5000, "together": 5000}
    assert fleet.split_runs(101) == {"cohere": 51, "together": 50}


def test_active_runs_follow_the_exporters_phases() -> None:
    assert fleet.is_active("cohere", "STATUS_FINETUNING")
    assert not fleet.is_active("cohere", "STATUS_READY")
    assert fleet.is_active("together", "running")
    assert not fleet.is_active("together", "completed")
    assert fleet.is_active("together", "status_from_the_future")  # unknown: polled


def test_poll_durations_are_read_from_the_first_bytes_of_the_exporters_gzip_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(exposition, "JOINED_BODY_BYTES", 0)  # each gzip member a part of its own
    runs = tuple(RunView("together", Run(id=f"ft-{i:05d}", status="running")) for i in range(3000))
    parts = (
        ProviderPart("cohere", poll_duration=1.25, ready=True),
        ProviderPart("together", runs=runs, poll_duration=7.5, ready=True),
    )
    members = EncodedSnapshot.of(Snapshot.join(parts, 3)).zipped["openmetrics"]
    assert len(members) > 2  # gzip members back to back, as the exporter sends them
    zipped = b"".join(members)
    assert len(zipped) > cycles.PREFIX_BYTES  # the prefix is all that is inflated
    assert cycles.parse_poll_durations(cycles.inflate_prefix(zipped)) == {
        "cohere": 1.25,
        "together": 7.5,
    }


def test_a_scrape_is_first_after_a_new_snapshot_when_a_poll_duration_changed() -> None:
    assert classify(None, {"cohere": 1.0}) is None
    assert classify({"cohere": 1.0, "together": 2.0}, {"cohere": 1.0, "together": 2.0}) == "cached"
    assert classify({"cohere": 1.0, "together": 2.0}, {"cohere": 1.0, "together": 2.5}) == "first"


def _pub(
    provider: str, seen: float, duration: float, steps: int, read_at: float = 0.0
) -> cycles.Publication:
    counts = {"total": steps, cycles.METRICS_KIND[provider]: steps, "steps_by_run": {}}
    return cycles.Publication(provider, seen, duration, seen, counts, read_at or seen + 0.05)


def test_publications_of_one_cycle_are_grouped_and_the_last_cycle_is_left_out() -> None:
    pubs = [
        _pub("cohere", 5.2, 5.1, 100),  # progress of the cycle started at 0.1
        _pub("cohere", 7.3, 7.2, 180),  # its end
        _pub("cohere", 26.0, 6.0, 360),  # cycle started at 20, read before the next started
        _pub("cohere", 46.5, 6.5, 540, read_at=60.5),  # read after the next started (at 60)
        _pub("cohere", 66.0, 6.0, 720),  # the last: nothing says it has ended
    ]
    found = cycles.group_cycles(pubs, tolerance=2.0)
    assert [len(c.publications) for c in found] == [2, 1, 1]
    assert [c.duration for c in found] == [7.2, 6.0, 6.5]
    assert [c.overlapped for c in found] == [False, False, True]


def test_cycles_count_requests_between_ends_and_check_each_active_run_once() -> None:
    kind = cycles.METRICS_KIND["together"]

    def counts(steps: int, other: int, by_run: dict[str, int]) -> dict[str, object]:
        return {kind: steps, "total": steps + other, "steps_by_run": by_run}

    def pub(seen: float, data: dict[str, object]) -> cycles.Publication:
        return cycles.Publication("together", seen, 1.0, float(seen), data, seen + 0.1)

    baseline = {"together": counts(4, 1, {"a": 2, "b": 2})}
    pubs = [
        pub(10, counts(6, 1, {"a": 3, "b": 3})),  # settling cycle
        pub(20, counts(8, 1, {"a": 4, "b": 4})),  # each once
        pub(30, counts(10, 2, {"a": 6, "b": 4})),  # a twice, b never, one other request
        pub(40, counts(12, 2, {"a": 7, "b": 5})),  # not complete yet
    ]
    found = cycles.group_cycles(pubs, tolerance=2.0)
    counted = scaling.count_cycles(found, baseline, "together", {"a", "b"}, settle=1)
    assert counted.requests == [2, 2]
    assert counted.other == [0, 1]
    assert not counted.each_once
    once = scaling.count_cycles(found[:2], baseline, "together", {"a", "b"}, settle=1)
    assert once.each_once
    assert scaling.cpu_per_cycle(found, {"together": counted}, 1, 0.0) == 10.0
    assert scaling.cpu_per_cycle(found, {"together": counted}, 0, 3.0) == 9.0


def test_least_squares_slope() -> None:
    slope, intercept = scaling.least_squares([100, 1000, 10_000], [100, 1000, 10_000])
    assert slope == pytest.approx(1.0)
    assert intercept == pytest.approx(0.0, abs=1e-9)
    slope, intercept = scaling.least_squares([1, 2, 3], [7, 9, 11])
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(5.0)
    with pytest.raises(ValueError, match="two distinct"):
        scaling.least_squares([5, 5], [1, 2])


def test_scaling_interval_leaves_a_gap_after_the_cycle() -> None:
    assert scaling.scaling_interval(100) == scaling.MIN_INTERVAL
    assert scaling.scaling_interval(10_000) == 20


def test_percentile_interpolates_between_ranks() -> None:
    values = [float(v) for v in range(1, 101)]
    assert table.percentile(values, 50) == pytest.approx(50.5)
    assert table.percentile(values, 99) == pytest.approx(99.01)
    assert table.percentile([3.0], 99) == 3.0
    with pytest.raises(ValueError, match="no values"):
        table.percentile([], 50)


def test_window_is_a_whole_number_of_poll_intervals() -> None:
    assert per_request.whole_intervals(60, 5) == 60
    assert per_request.whole_intervals(20, 7) == 21
    assert per_request.whole_intervals(1, 5) == 5


def test_only_selects_measurements_in_run_order() -> None:
    assert plan.parse_only("long-job, scrape") == ("scrape", "long-job")
    with pytest.raises(ValueError, match="unknown measurement nope"):
        plan.parse_only("scrape,nope")
    assert plan.make_plan(True, None, None, ("status-page",)).runs("status-page")
    assert not plan.make_plan(True, None, None, ("status-page",)).runs("scrape")
    assert plan.make_plan(False, None, None).only == tuple(plan.MEASUREMENTS)


def test_the_scenarios_hold_one_finished_together_job() -> None:
    for path, steps in ((long_job.LONG_JOB, 50_000), (long_job.SHORT_JOB, 100)):
        scenario = Scenario.load(path)
        assert [m.total_steps for m in scenario.models] == [steps]
        world = TogetherWorld(clock=SimClock(frozen=True), scenario=scenario)
        assert [world.status(job) for job in world.job_ids()] == ["completed"]


def test_backfilled_step_numbers_are_read_from_the_exporters_writer() -> None:
    points = [PlacedStep(1000 * n, n, float(n), {"train/loss": 1.0 / n}) for n in (1, 2, 3)]
    out = io.StringIO()
    write_openmetrics([RunHistory("together", Run(id="ft-1", name="x"), points)], out)
    assert long_job.step_numbers(out.getvalue()) == {1, 2, 3}
    loss = long_job.samples(out.getvalue(), "finetune_step_train_loss")
    assert [labels[contract.RUN_ID_LABEL] for labels, _ in loss] == ["ft-1"] * 3


def test_exporter_samples_are_read_with_their_labels() -> None:
    text = (
        'finetune_run_phase{finetune_id="ft-1",phase="training",provider="together"} 0.0\n'
        'finetune_run_phase{finetune_id="ft-1",phase="succeeded",provider="together"} 1.0\n'
        'finetune_steps_processed_total{finetune_id="ft-1",provider="together"} 50000.0\n'
    )
    phases = long_job.samples(text, contract.RUN_PHASE.sample)
    assert [labels["phase"] for labels, value in phases if value == 1.0] == ["succeeded"]
    assert long_job.samples(text, contract.STEPS_PROCESSED.sample)[0][1] == 50_000.0


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


def test_previous_counts_are_the_end_of_the_same_providers_cycle_before() -> None:
    pubs = [
        _pub("cohere", 10.0, 1.0, 100),
        _pub("together", 11.0, 2.0, 7),
        _pub("cohere", 20.0, 1.0, 200),
        _pub("together", 21.0, 2.0, 14),
        _pub("cohere", 30.0, 1.0, 300),
        _pub("together", 31.0, 2.0, 21),
    ]
    found = cycles.group_cycles(pubs, tolerance=2.0)
    baseline = {"cohere": {"total": 1}, "together": {"total": 2}}
    cohere = [c for c in found if c.provider == "cohere"]
    together = [c for c in found if c.provider == "together"]
    assert cycles.previous_counts(cohere[0], found, baseline) == {"total": 1}
    assert cycles.previous_counts(together[0], found, baseline) == {"total": 2}
    assert cycles.previous_counts(cohere[1], found, baseline)["total"] == 100
    assert cycles.previous_counts(together[1], found, baseline)["total"] == 7


def test_wrk_report_in_seconds_and_without_requests() -> None:
    slow = WRK_OUTPUT.replace("850.00us", "1.50s").replace("1.90ms", "2.00m")
    result = wrk.parse_wrk(slow)
    assert result.p99_ms == 1500.0
    assert result.p50_ms == 120_000.0
    empty = wrk.parse_wrk("Running 3s test @ http://x\n  0 requests in 3.00s, 0B read\n")
    assert (empty.rps, empty.requests, empty.p50_ms, empty.p99_ms) == (0.0, 0, None, None)


def test_a_late_read_spoils_its_own_cycle_and_the_next() -> None:
    pubs = [
        _pub("cohere", 6.0, 6.0, 100),
        _pub("cohere", 26.0, 6.0, 200, read_at=40.5),  # read after the next started (at 40)
        _pub("cohere", 46.0, 6.0, 300),  # counted from that late read: some requests missing
        _pub("cohere", 66.0, 6.0, 400),
        _pub("cohere", 86.0, 6.0, 500),  # the last: nothing says it has ended
    ]
    found = cycles.group_cycles(pubs, tolerance=2.0)
    assert [cycles.countable(c, found) for c in found] == [True, False, False, True]
    counted = scaling.count_cycles(found, {"cohere": {}}, "cohere", set(), settle=0)
    assert counted.overlapped == 2
    assert counted.requests == [100, 100]


async def test_the_latency_simulator_sends_kept_answers_and_still_counts_them() -> None:
    world = CohereWorld(models=3, seed=1, clock=SimClock(frozen=True))
    app = latency_simulator.build_latency_app(world, 0.0, cache=True)
    model = world.model_ids()[0]
    path = str(app.router["list_step_metrics"].url_for(id=model))
    asked: list[str] = []
    steps = world.steps

    def counted(model_id: str) -> list[SimStep]:
        asked.append(model_id)
        return steps(model_id)

    world.steps = counted  # type: ignore[method-assign]
    async with TestServer(app) as server, ClientSession() as client:
        answers = []
        for _ in range(3):
            async with client.get(server.make_url(path)) as response:
                assert response.status == 200
                assert response.content_type == "application/json"
                answers.append(await response.read())
        async with client.get(server.make_url("/simulator/requests")) as response:
            counts = await response.json()
    assert answers[0] == answers[1] == answers[2]
    assert asked == [model]  # built once, then sent again
    assert json.loads(answers[0])["step_metrics"]  # a real page, kept
    assert counts["list_step_metrics"] == 3
    assert counts["steps_by_run"] == {model: 3}

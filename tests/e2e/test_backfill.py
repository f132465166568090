"""Simulator → backfill → promtool blocks → a real Prometheus: the history reads back exactly."""

from __future__ import annotations

import asyncio
import io
import json
import math
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from exporter import contract
from exporter.backfill import BackfillResult
from exporter.backfill_command import read_history
from exporter.settings import load_settings
from exporter.simulator import SimClock, build_app
from exporter.simulator.cohere import CohereWorld, SimStep
from tests.e2e.services import binary, free_port, get_json, running
from tests.stack import API_KEY, serve_app

pytestmark = pytest.mark.e2e
LOSS = str(contract.step_family_name("cross_entropy"))
INFO = contract.RUN_INFO.sample
# The simulated Cohere account is the one provider here; every series carries it.
PROVIDER = "cohere"


@dataclass
class Loaded:
    prometheus: str
    steps: dict[str, list[SimStep]]
    names: dict[str, str]
    result: BackfillResult

    def query(self, expr: str, at_ms: int) -> list[dict[str, Any]]:
        answer = get_json(f"{self.prometheus}/api/v1/query", query=expr, time=seconds(at_ms))
        assert answer["status"] == "success", answer
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


def ms(unix: float) -> int:
    return round(unix * 1000)


def seconds(at_ms: int) -> str:
    return f"{at_ms // 1000}.{at_ms % 1000:03d}"


async def backfill_simulator() -> tuple[CohereWorld, str, BackfillResult]:
    world = CohereWorld(models=6, seed=7, clock=SimClock(frozen=True), api_key=API_KEY)
    async with serve_app(build_app(world)) as sim:
        settings = load_settings(cohere_api_url=sim.url, cohere_api_key=API_KEY, poll_page_size=7)
        out = io.StringIO()
        result = await read_history(settings, out, None)
    return world, out.getvalue(), result


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Loaded]:
    promtool = binary("promtool", "prometheus")
    prometheus = binary("prometheus", "prometheus")
    work = tmp_path_factory.mktemp("backfill")
    history = work / "history.om"
    world, text, result = asyncio.run(backfill_simulator())
    history.write_text(text)
    data = work / "data"
    created = subprocess.run(
        [promtool, "tsdb", "create-blocks-from", "openmetrics", str(history), str(data)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert created.returncode == 0, created.stdout + created.stderr
    config = work / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={data}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    steps = {i: world.steps(i) for i in world.model_ids() if world.steps(i)}
    names = {i: str(world.model(i)["name"]) for i in steps}
    with running("prometheus", argv, work, f"{url}/-/ready"):
        yield Loaded(url, steps, names, result)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == b


def raw_samples(loaded: Loaded, expr: str) -> dict[str, dict[int, float]]:
    """Every stored sample of ``expr`` over the whole history, per model: timestamp → value."""
    stamps = [ms(s.created_at) for steps in loaded.steps.values() for s in steps]
    first, last = min(stamps), max(stamps)
    found: dict[str, dict[int, float]] = {}
    for series in loaded.query(f"{expr}[{last - first + 1}ms]", last):
        assert series["metric"][contract.PROVIDER_LABEL] == PROVIDER, series["metric"]
        model_id = series["metric"][contract.RUN_ID_LABEL]
        found[model_id] = {ms(float(t)): float(v) for t, v in series["values"]}
    return found


def test_every_step_reads_back_at_its_timestamp(loaded: Loaded) -> None:
    assert len(loaded.steps) >= 3
    assert loaded.result.steps == sum(len(s) for s in loaded.steps.values())
    stored = raw_samples(loaded, LOSS)
    assert set(stored) == set(loaded.steps)
    saw_nan = False
    for model_id, steps in loaded.steps.items():
        expected = {ms(s.created_at): s.metrics["cross_entropy"] for s in steps}
        got = stored[model_id]
        assert got.keys() == expected.keys(), model_id
        for stamp, value in expected.items():
            assert same(got[stamp], value), (model_id, stamp, got[stamp], value)
            saw_nan = saw_nan or math.isnan(value)
    assert saw_nan  # the simulator's NaN step is stored as NaN, not dropped


def test_step_numbers_read_back(loaded: Loaded) -> None:
    stored = raw_samples(loaded, contract.STEP_NUMBER.sample)
    for model_id, steps in loaded.steps.items():
        assert stored[model_id] == {ms(s.created_at): float(s.step_number) for s in steps}


def test_info_joins_over_the_whole_history(loaded: Loaded) -> None:
    key = ", ".join(contract.RUN_LABELS)
    expr = f"{LOSS} * on ({key}) group_left (name) {INFO}"
    for model_id, steps in loaded.steps.items():
        for sim_step in (steps[0], steps[len(steps) // 2], steps[-1]):
            answer = loaded.query(expr, ms(sim_step.created_at))
            mine = [s for s in answer if s["metric"][contract.RUN_ID_LABEL] == model_id]
            assert len(mine) == 1, json.dumps(answer)[:500]
            assert mine[0]["metric"]["name"] == loaded.names[model_id]
            assert same(float(mine[0]["value"][1]), sim_step.metrics["cross_entropy"])


def test_same_names_as_live_and_nothing_beyond_the_steps(loaded: Loaded) -> None:
    stamps = [ms(s.created_at) for steps in loaded.steps.values() for s in steps]
    first, last = min(stamps), max(stamps)
    hour = 3_600_000
    answer = loaded.query(
        f'{{__name__=~"{contract.PREFIX}_.+"}}[{last - first + hour + 1}ms]', last + hour
    )
    names = {series["metric"]["__name__"] for series in answer}
    step_metrics = ("accuracy", "cross_entropy", "generation_accuracy", "generation_cross_entropy")
    assert names == {
        INFO,
        contract.STEP_NUMBER.sample,
        contract.STEP_TIMESTAMP.sample,
        *(contract.step_family_name(metric) for metric in step_metrics),
    }
    times = [ms(float(t)) for series in answer for t, _ in series["values"]]
    assert min(times) == first
    assert max(times) == last
    assert len(times) == loaded.result.samples

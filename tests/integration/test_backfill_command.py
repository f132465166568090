"""The ``backfill`` command end to end against the ``simulate`` command, as separate processes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from exporter.backfill_command import terminal_progress
from tests.e2e.services import free_port, http_get, running

pytestmark = pytest.mark.integration
KEY = "sk-backfill-test"


def backfill(tmp_path: Path, sim: str, out: Path, key: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "exporter", "backfill", "--out", str(out), "--cohere.api-url", sim],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=tmp_path,
        env={**os.environ, "CO_API_KEY": key},
    )


def test_backfill_writes_every_step_and_stays_quiet(tmp_path: Path) -> None:
    port = free_port()
    sim = f"http://127.0.0.1:{port}"
    simulate = [
        sys.executable, "-m", "exporter", "simulate", "--web.listen-address",
        f"127.0.0.1:{port}", "--api-key", KEY, "--models", "5", "--speed", "0.001",
    ]  # fmt: skip
    with running("simulator", simulate, tmp_path, f"{sim}/healthz"):
        out = tmp_path / "history" / "steps.om"
        done = backfill(tmp_path, sim, out, KEY)
        assert done.returncode == 0, done.stderr
        assert done.stdout == ""
        assert done.stderr == ""  # not a terminal: no progress bar, no chatter
        truth = json.loads(http_get(f"{sim}/simulator/truth")[1])
        refused = backfill(tmp_path, sim, tmp_path / "refused.om", "wrong-key")
    text = out.read_text()
    assert text.endswith("# EOF\n")
    families = {f.name: f for f in text_string_to_metric_families(text)}  # type: ignore[no-untyped-call]
    per_model: dict[str, int] = {}
    for sample in families["finetune_step_number"].samples:
        model = sample.labels["finetune_id"]
        per_model[model] = per_model.get(model, 0) + 1
        assert sample.timestamp is not None
    expected = {m["id"]: m["step_count"] for m in truth["runs"] if m["step_count"]}
    assert per_model == expected
    assert refused.returncode == 1
    assert "401" in refused.stderr
    assert not (tmp_path / "refused.om").exists()
    assert [p.name for p in out.parent.iterdir()] == ["steps.om"]  # no temporary left behind


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    assert terminal_progress(io.StringIO()) is None
    screen = Terminal()
    show = terminal_progress(screen)
    assert show is not None
    for done in range(1, 4):
        show(done, 3, f"run-{done}")
    lines = screen.getvalue()
    assert "[" + "#" * 30 + "] 3/3 models" in lines
    assert lines.endswith("\n")

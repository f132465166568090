"""Which runs the page and /api/runs show, and in which order."""

from __future__ import annotations

import dataclasses

from exporter.core.provider import Phase
from exporter.core.snapshot import RunView
from exporter.web.runs import GROUP_ORDER, recency, select
from tests.snapshots import snapshot_of, step, together_view

STATUS: dict[Phase, str] = {
    "queued": "queued",
    "training": "running",
    "deploying": "uploading",
    "succeeded": "completed",
    "failed": "error",
    "cancelled": "cancelled",
    "unknown": "paused-by-operator",
}


def run(run_id: str, phase: Phase, created: float, stepped: float | None = None) -> RunView:
    newest = step(1, stepped, {}) if stepped is not None else None
    view = together_view(run_id, run_id, STATUS[phase], newest_step=newest)
    return dataclasses.replace(view, run=dataclasses.replace(view.run, created_at=created))


def test_groups_go_training_first_and_each_is_newest_first() -> None:
    views = [
        run("done-a", "succeeded", 10),
        run("train-old", "training", 1, stepped=50),
        run("queued", "queued", 30),
        run("train-new", "training", 2, stepped=90),
        run("odd", "unknown", 5),
        run("broke", "failed", 20),
        run("stopped", "cancelled", 25),
        run("ship", "deploying", 3),
        run("done-b", "succeeded", 40),
    ]
    selection = select(snapshot_of(*views), 50)
    assert [(phase, [v.id for v in group]) for phase, group in selection.groups] == [
        ("training", ["train-new", "train-old"]),  # by their newest step, not creation
        ("deploying", ["ship"]),
        ("queued", ["queued"]),
        ("unknown", ["odd"]),
        ("failed", ["broke"]),
        ("succeeded", ["done-b", "done-a"]),
        ("cancelled", ["stopped"]),
    ]
    assert [phase for phase, _ in selection.groups] == list(GROUP_ORDER)
    assert selection.hidden_finished == 0


def test_every_active_run_and_only_the_most_recent_finished_ones() -> None:
    active = [run(f"active-{i}", "training", i) for i in range(5)]
    finished = [run(f"done-{i}", "succeeded" if i % 2 else "failed", 100 + i) for i in range(6)]
    snapshot = snapshot_of(*active, *finished)
    selection = select(snapshot, 2)
    shown = {view.id for view in selection.runs}
    assert shown == {f"active-{i}" for i in range(5)} | {"done-5", "done-4"}
    assert (selection.finished_total, selection.hidden_finished) == (6, 4)
    everything = select(snapshot, 2, show_all=True)
    assert len(everything.runs) == 11
    assert everything.hidden_finished == 0
    assert {view.id for view in select(snapshot, 0).runs} == {f"active-{i}" for i in range(5)}


def test_ties_are_broken_by_provider_and_id_so_the_order_is_stable() -> None:
    views = [run(name, "training", 7) for name in ("c", "a", "b")]
    assert [v.id for v in select(snapshot_of(*views), 50).runs] == ["a", "b", "c"]
    assert [v.id for v in select(snapshot_of(*reversed(views)), 50).runs] == ["a", "b", "c"]


def test_recency_prefers_the_newest_step_and_ignores_unreadable_times() -> None:
    assert recency(run("r", "training", 5, stepped=9)) == 9
    assert recency(run("r", "training", 5)) == 5
    assert recency(run("r", "training", float("nan"), stepped=float("inf"))) == 0

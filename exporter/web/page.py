"""The status page's HTML: the run cards (rendered once per snapshot) and the header (per request).

The page is split where its cost is: the cards of thousands of runs depend on the snapshot
alone, so ``runs_html`` renders them once per snapshot version and the result is cached; the
header says how the exporter is doing right now (request budgets change by the second), so
``head_html`` renders it for every request, in microseconds. Everything an API said goes
through ``esc``; there is no ``style`` attribute anywhere (the CSP would refuse it): phase
colours come from classes, progress from ``<progress>``, curves from SVG attributes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from exporter import __version__
from exporter.core.snapshot import ProviderPart, RunView, Snapshot
from exporter.web.assets import SCRIPT, STYLE
from exporter.web.runs import TITLES, Selection
from exporter.web.svg import Chart, chart, series_order
from exporter.web.text import count, duration, esc, number, time_tag

TITLE = "Fine-tuning runs"
DASH = "\N{EN DASH}"


def is_loss(metric: str) -> bool:
    return "loss" in metric or "cross_entropy" in metric


def shown_metrics(metrics: Mapping[str, float]) -> list[tuple[str, float]]:
    """The newest loss-like values (training first), then the accuracy-like ones."""
    losses = series_order(m for m in metrics if is_loss(m))
    accuracies = sorted(m for m in metrics if "accuracy" in m and not is_loss(m))
    return [(m, metrics[m]) for m in (*losses, *accuracies)]


def _progress(view: RunView) -> str:
    run, newest = view.run, view.newest_step
    parts: list[str] = []
    bar = ""
    if newest is None:
        parts.append("no steps yet")
    elif run.total_steps is not None and run.total_steps > 0:
        total = run.total_steps
        done = max(0, min(newest.number, total))
        bar = f'<progress value="{done}" max="{total}"></progress>'
        parts.append(f"step {count(newest.number)} of {count(total)}")
    else:
        parts.append(f"step {count(newest.number)}")
    eta = run.eta_seconds
    if eta is not None and math.isfinite(eta) and eta > 0 and not run.is_terminal:
        parts.append(f"ETA {duration(eta)}")
    return f'<div class="pr">{bar}<span>{" · ".join(parts)}</span></div>'


def _values(view: RunView) -> str:
    if view.newest_step is None:
        return ""
    cells = []
    for metric, value in shown_metrics(view.newest_step.metrics):
        mark = "" if math.isfinite(value) else ' class="x"'
        cells.append(f"<div><dt>{esc(metric)}</dt><dd{mark}>{number(value)}</dd></div>")
    return f"<dl>{''.join(cells)}</dl>" if cells else ""


def _legend(drawn: Chart) -> str:
    keys = "".join(
        f"<span><i{f' class=k{i}' if i else ''}></i>{esc(name)}</span>"
        for i, name in enumerate(drawn.series)
    )
    if drawn.outliers:
        keys += '<span class="x">\u25cb outlier</span>'
    if drawn.nonfinite:
        keys += '<span class="x">\u00d7 not finite</span>'
    low, high = number(drawn.low), number(drawn.high)
    span = f"{low}{DASH}{high} · steps {count(drawn.first_step)}{DASH}{count(drawn.last_step)}"
    return f'<p class="k">{keys}<em>{span}</em></p>'


def _footer(view: RunView) -> str:
    notes: list[str] = []
    newest = view.newest_step
    if newest is not None and newest.created_at is not None:
        notes.append(f"last step {time_tag(newest.created_at)}")
    if view.missing:
        notes.append('<span class="x">not found at the provider</span>')
    elif not view.up and view.last_success is None:
        notes.append('<span class="x">not polled successfully yet</span>')
    elif not view.up and view.last_success is not None:
        ok = time_tag(view.last_success)
        notes.append(f'<span class="x">last poll failed</span> (last good {ok})')
    return f'<p class="f">{" · ".join(notes)}</p>' if notes else ""


def card(view: RunView) -> str:
    """One run: name and phase, provider and model, progress, newest values, curves."""
    run = view.run
    name = run.name or run.id
    status = "" if view.missing else run.status
    sub = [f'<span class="i">{esc(run.id)}</span>', esc(view.provider)]
    if run.base_model:
        sub.append(esc(run.base_model))
    drawn = chart(view.history, name)
    curve = ""
    if drawn is not None:
        curve = drawn.svg + _legend(drawn)
    return (
        f'<article class="r {run.phase}"><h3><span class="n">{esc(name)}</span>'
        f'<span class="p" title="status: {esc(status or "unknown")}">'
        f"{run.phase}</span></h3>"
        f'<p class="s">{" · ".join(sub)}</p>'
        f"{_progress(view)}{_values(view)}{curve}{_footer(view)}</article>"
    )


def _more(selection: Selection) -> str:
    if selection.show_all:
        if not selection.finished_total:
            return ""
        return '<p class="e">Showing every run. <a href=".">Active and recent runs only</a></p>'
    hidden = selection.hidden_finished
    if not hidden:
        return ""
    shown = selection.finished_total - hidden
    return (
        f'<p class="e">Showing the {count(shown)} most recent of {count(selection.finished_total)}'
        f' finished runs. <a href="?all=1">Show all runs</a></p>'
    )


def runs_html(snapshot: Snapshot, selection: Selection, refresh_seconds: float) -> str:
    """Everything after the header: the cards by phase, the footer and the script."""
    out = ["<main>"]
    for phase, views in selection.groups:
        out.append(
            f'<h2 class="{phase}" id="{phase}">{TITLES[phase]} <span>{count(len(views))}</span>'
            f'</h2><div class="g">{"".join(card(view) for view in views)}</div>'
        )
    if not selection.groups:
        why = "" if snapshot.ready else ": waiting for the first poll cycle"
        out.append(f'<p class="e">No runs to show{why}.</p>')
    out.append(_more(selection))
    out.append(
        f"</main><footer>finetune-exporter {esc(__version__)} · snapshot {snapshot.version} · "
        f"reloads every {duration(refresh_seconds)}</footer><script>{SCRIPT}</script>"
        "</body></html>\n"
    )
    return "".join(out)


@dataclass(frozen=True, slots=True)
class Budget:
    """One provider's request budget as the header shows it."""

    per_minute: int
    used: int
    hold_seconds: float


def _provider(part: ProviderPart, budget: Budget | None) -> str:
    state = '<b class="up">up</b>' if part.up else '<b class="dn">down</b>'
    bits = [f"{esc(part.name)} {state}"]
    if part.finished_at is not None:
        bits.append(f"last cycle {time_tag(part.finished_at)}")
    else:
        bits.append("first cycle running")
    if budget is not None:
        bits.append(f"<b>{count(budget.used)}</b> of {count(budget.per_minute)} requests/min")
        if budget.hold_seconds > 0:
            paused = duration(budget.hold_seconds)
            bits.append(f'<span class="x">paused {paused} after a 429</span>')
    return f"<span>{' · '.join(bits)}</span>"


def head_html(
    snapshot: Snapshot,
    budgets: Mapping[str, Budget],
    *,
    telemetry_path: str,
    refresh_seconds: float,
    show_all: bool,
    shown: int,
) -> str:
    """The document up to the end of the header: exporter health and the links, all relative
    so that the page works behind a path prefix."""
    providers: Iterable[str] = (_provider(p, budgets.get(p.name)) for p in snapshot.providers)
    state = "" if snapshot.ready else '<span class="x">not ready: first poll cycle running</span>'
    api = "api/runs?all=1" if show_all else "api/runs"
    metrics = esc(telemetry_path.lstrip("/"))
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f'<title>{TITLE}</title><link rel="icon" href="data:,"><style>{STYLE}</style></head>'
        f'<body data-refresh="{refresh_seconds:g}"><header class="top">'
        f"<h1>{TITLE}<small>{count(shown)} shown</small></h1>"
        f'<p class="hl">{"".join(providers)}{state}</p>'
        f'<nav><a href="{metrics}">metrics</a><a href="healthz">healthz</a>'
        f'<a href="readyz">readyz</a><a href="{api}">api/runs</a></nav></header>'
    )

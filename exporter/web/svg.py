"""A run's loss curves as a small inline SVG, drawn on the server from the run's ``History``.

Thousands of these can be on one page, so each is kept lean: integer coordinates in a fixed
``viewBox`` (the browser scales it), every subpath one absolute ``M`` followed by relative
``l`` pairs written without repeating the command, and colours, dashes and widths left to the
stylesheet by class (the frame lines too: they are the SVG box's borders). Each point of the
history is one vertex: a non-finite value breaks the line there (a new ``M`` starts after it)
and gets a cross above the frame instead; an isolated finite point is a zero-length subpath
(``M x y z``) that the round line cap shows as a dot. An outlier step gets a ring on its point,
or a triangle above the frame where downsampling dropped the point (its value is not kept).
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from exporter.core.history import Curve, History
from exporter.web.text import esc, number

WIDTH = 320
HEIGHT = 96
PAD_X = 2
PAD_Y = 4
MARK_TOP = -10  # marks without a value sit above the frame, in the SVG's top margin
#: Most series drawn per run; the legend says which ones (the stylesheet has four styles).
MAX_SERIES = 4
#: Words that make a metric an evaluation one (Together's ``eval/loss``, Cohere's
#: ``generation_cross_entropy``), matched as whole words of the name.
_EVAL_WORDS = frozenset({"eval", "evaluation", "val", "valid", "validation", "test", "generation"})


def is_eval(metric: str) -> bool:
    return not _EVAL_WORDS.isdisjoint(re.split(r"[^a-z0-9]+", metric.lower()))


def series_order(names: Iterable[str]) -> list[str]:
    """Training metrics first, then evaluation ones, each alphabetically: the first series is
    always drawn solid in the first colour, so "train" reads the same on every card."""
    return sorted(names, key=lambda name: (is_eval(name), name))


@dataclass(frozen=True, slots=True)
class Chart:
    """The SVG markup and what the legend under it needs."""

    svg: str
    series: tuple[str, ...]
    outliers: int  # marks drawn
    nonfinite: int
    low: float
    high: float
    first_step: int
    last_step: int


def _join(numbers: Iterable[int]) -> str:
    """SVG numbers with the fewest separators: a minus sign separates on its own."""
    out: list[str] = []
    for value in numbers:
        text = str(value)
        if out and value >= 0:
            out.append(" ")
        out.append(text)
    return "".join(out)


def path_data(points: Sequence[tuple[int, int] | None]) -> str:
    """``d`` for integer points in order; ``None`` is a gap (a non-finite value)."""
    parts: list[str] = []
    run: list[tuple[int, int]] = []

    def flush() -> None:
        if not run:
            return
        x0, y0 = run[0]
        parts.append(f"M{_join((x0, y0))}")
        if len(run) == 1:
            parts.append("z")
        else:
            deltas: list[int] = []
            for (xa, ya), (xb, yb) in itertools.pairwise(run):
                deltas += (xb - xa, yb - ya)
            parts.append("l" + _join(deltas))
        run.clear()

    for point in points:
        if point is None:
            flush()
        else:
            run.append(point)
    flush()
    return "".join(parts)


class _Scale:
    """Steps to x and values to y, in the viewBox's integer units."""

    def __init__(self, steps: tuple[int, int], values: tuple[float, float]) -> None:
        self.s0, self.s1 = steps
        self.v0, self.v1 = values

    def x(self, step: int) -> int:
        span = self.s1 - self.s0
        if span <= 0:
            return WIDTH // 2
        return round(PAD_X + (step - self.s0) * (WIDTH - 2 * PAD_X) / span)

    def y(self, value: float) -> int:
        span = self.v1 - self.v0
        if not span > 0:
            return HEIGHT // 2
        return round(PAD_Y + (self.v1 - value) * (HEIGHT - 2 * PAD_Y) / span)


def _value_at(curve: Curve | None, step: int) -> float | None:
    if curve is None:
        return None
    steps = curve.steps
    lo, hi = 0, len(steps)
    while lo < hi:
        mid = (lo + hi) // 2
        if steps[mid] < step:
            lo = mid + 1
        else:
            hi = mid
    return curve.values[lo] if lo < len(steps) and steps[lo] == step else None


def chart(history: History | None, label: str) -> Chart | None:
    """The curves of ``history`` with their marks, or None when there is no point to draw.

    ``label`` (the run's name) goes into the SVG ``<title>``, escaped like every other string.
    """
    if history is None:
        return None
    names = series_order(name for name, curve in history.curves.items() if len(curve))
    names = names[:MAX_SERIES]
    if not names:
        return None
    curves = {name: history.curves[name] for name in names}
    steps = [s for c in curves.values() for s in (c.steps[0], c.steps[-1])]
    steps += [s for s, m in (*history.outliers, *history.nonfinite) if m in curves]
    finite = [v for c in curves.values() for v in c.values if math.isfinite(v)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    scale = _Scale((min(steps), max(steps)), (low, high))
    body = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img"><title>{esc(label)}: '
        f"{esc(', '.join(names))}</title>"
    ]
    nonfinite: dict[tuple[int, str], float | None] = {
        (step, metric): None for step, metric in history.nonfinite if metric in curves
    }
    for index, name in enumerate(names):
        curve = curves[name]
        points: list[tuple[int, int] | None] = []
        for step, logged in zip(curve.steps, curve.values, strict=True):
            if math.isfinite(logged):
                points.append((scale.x(step), scale.y(logged)))
            else:
                points.append(None)
                nonfinite[(step, name)] = logged
        body.append(f'<path class="l s{index}" d="{path_data(points)}"/>')
    outliers = [(step, metric) for step, metric in history.outliers if metric in curves]
    for step, metric in outliers:
        x, found = scale.x(step), _value_at(curves[metric], step)
        if found is not None and math.isfinite(found):
            shape = f'<circle class="o" cx="{x}" cy="{scale.y(found)}" r="3.5">'
            end, told = "</circle>", f" {number(found)}"
        else:
            shape = f'<path class="o" d="M{x - 4} {MARK_TOP}h8l-4 7z">'
            end, told = "</path>", ""
        body.append(f"{shape}<title>step {step}: {esc(metric)}{told}, an outlier</title>{end}")
    for (step, metric), seen in sorted(nonfinite.items()):
        told = number(seen) if seen is not None else "not finite"
        x = scale.x(step)
        body.append(
            f'<path class="nf" d="M{x - 3} {MARK_TOP}l6 6m0-6l-6 6">'
            f"<title>step {step}: {esc(metric)} {told}</title></path>"
        )
    body.append("</svg>")
    drawn = len(outliers), len(nonfinite)
    return Chart("".join(body), tuple(names), *drawn, low, high, scale.s0, scale.s1)

#!/usr/bin/env python3
"""Build the Grafana dashboard of cohere-finetune-exporter.

    python deploy/grafana/generate_dashboard.py           # write dashboards/cohere-finetune.json
    python deploy/grafana/generate_dashboard.py --check   # exit 1 if the committed file is stale

The dashboard is plain Python dicts, so a review sees every query and option in one place.
Queries use four Grafana placeholders and nothing else: `${datasource}` (only as the datasource
uid, never inside an expression), `$model` (only as `name=~"$model"` on
`cohere_finetune_model_info`), `$__rate_interval` (only as a range, `[$__rate_interval]`) and
`$__range` (only as a range, `[$__range]`, in instant queries: totals over the time picker).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

Json = dict[str, Any]

HERE = Path(__file__).resolve().parent
OUTPUT = HERE / "dashboards" / "cohere-finetune.json"

UID = "cohere-finetune"
TITLE = "Cohere fine-tuning"
SCHEMA_VERSION = 39
GRID_WIDTH = 24

DATASOURCE: Json = {"type": "prometheus", "uid": "${datasource}"}

# The info metric restricted to the models picked in the `model` variable; every model panel
# joins it to gain the human-readable `name` label.
MODEL_INFO = 'cohere_finetune_model_info{name=~"$model"}'
MODEL_LEGEND = "{{name}}"


def by_model(expr: str) -> str:
    """`expr` (one series per `finetuned_model_id`) labelled with the model's `name`.

    Only models chosen in `$model` survive the join; the value of `expr` is kept as it is
    (the info metric is 1), NaN and infinities included.
    """
    return f"{expr} * on (finetuned_model_id) group_left (name) {MODEL_INFO}"


def counted_steps(counter: str, window: str) -> str:
    """Increase of a per-step counter (one series per model and `metric`) over `window`, per
    model name and `metric`. The exporter creates these series at 0, so a model without any
    counted step shows 0 rather than no data."""
    return f"sum by (name, metric) ({by_model(f'increase({counter}[{window}])')})"


def counted_steps_per_model(counter: str, window: str) -> str:
    """Increase of a per-step counter over `window`, all `metric`s of a model together, with
    the labels the status table merges on (`job`, `instance`, `finetuned_model_id`, `name`)."""
    return by_model(f"sum by (job, instance, finetuned_model_id) (increase({counter}[{window}]))")


# Counters of every evaluated step (not only the newest one on /metrics), per model and
# loss-like `metric`, and how panels name them.
STEP_COUNTERS: tuple[tuple[str, str], ...] = (
    ("cohere_finetune_step_outliers_total", "outliers"),
    ("cohere_finetune_step_nonfinite_total", "non-finite"),
)


def finite(metric: str) -> str:
    """`metric` without its NaN and ±Inf samples (comparisons with NaN are false)."""
    return f"({metric} > -Inf < +Inf)"


def target(
    ref_id: str,
    expr: str,
    legend: str,
    *,
    table: bool = False,
) -> Json:
    t: Json = {
        "datasource": DATASOURCE,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "refId": ref_id,
    }
    if table:
        t.update({"format": "table", "instant": True, "range": False})
    else:
        t.update({"instant": False, "range": True})
    return t


def thresholds(*steps: tuple[float | None, str]) -> Json:
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for value, color in steps],
    }


def field_config(
    unit: str,
    *,
    min_: float | None = None,
    max_: float | None = None,
    decimals: int | None = None,
    custom: Json | None = None,
    steps: Json | None = None,
    mappings: list[Json] | None = None,
    color: Json | None = None,
    overrides: list[Json] | None = None,
) -> Json:
    defaults: Json = {"unit": unit}
    for key, value in (
        ("min", min_),
        ("max", max_),
        ("decimals", decimals),
        ("custom", custom),
        ("thresholds", steps),
        ("mappings", mappings),
        ("color", color),
    ):
        if value is not None:
            defaults[key] = value
    return {"defaults": defaults, "overrides": overrides or []}


def panel(
    kind: str,
    title: str,
    description: str,
    targets: list[Json],
    fields: Json,
    options: Json,
    size: tuple[int, int],
) -> Json:
    """A panel without `id` and `gridPos`; `layout` assigns both."""
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DATASOURCE,
        "targets": targets,
        "fieldConfig": fields,
        "options": options,
        "gridPos": {"h": size[1], "w": size[0], "x": 0, "y": 0},
    }


def timeseries(
    title: str,
    description: str,
    targets: list[Json],
    fields: Json,
    size: tuple[int, int] = (12, 8),
) -> Json:
    options: Json = {
        "legend": {
            "calcs": ["lastNotNull"],
            "displayMode": "table",
            "placement": "bottom",
            "showLegend": True,
        },
        "tooltip": {"mode": "multi", "sort": "desc"},
    }
    return panel("timeseries", title, description, targets, fields, options, size)


def stat(
    title: str,
    description: str,
    targets: list[Json],
    fields: Json,
    size: tuple[int, int],
    *,
    text_mode: str = "value_and_name",
    color_mode: str = "background",
    graph: bool = False,
) -> Json:
    options: Json = {
        "colorMode": color_mode,
        "graphMode": "area" if graph else "none",
        "justifyMode": "auto",
        "orientation": "auto",
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
        "textMode": text_mode,
    }
    return panel("stat", title, description, targets, fields, options, size)


def row(title: str) -> Json:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "panels": [],
        "gridPos": {"h": 1, "w": GRID_WIDTH, "x": 0, "y": 0},
    }


STEP_LINES: Json = {"lineInterpolation": "stepAfter", "showPoints": "never", "fillOpacity": 0}


def training_panels() -> list[Json]:
    loss = timeseries(
        "Loss",
        "Cross-entropy (and loss, for models that report it) at the newest evaluated step. "
        "NaN and ±Inf are left out of the curves; the status table shows them.",
        [
            target(
                "A",
                by_model(finite("cohere_finetune_step_cross_entropy")),
                f"{MODEL_LEGEND} cross-entropy",
            ),
            target("B", by_model(finite("cohere_finetune_step_loss")), f"{MODEL_LEGEND} loss"),
        ],
        field_config("none", decimals=3, custom=STEP_LINES),
    )
    accuracy = timeseries(
        "Accuracy",
        "Accuracy and generation accuracy at the newest evaluated step. "
        "NaN and ±Inf are left out of the curves.",
        [
            target(
                "A",
                by_model(finite("cohere_finetune_step_accuracy")),
                f"{MODEL_LEGEND} accuracy",
            ),
            target(
                "B",
                by_model(finite("cohere_finetune_step_generation_accuracy")),
                f"{MODEL_LEGEND} generation accuracy",
            ),
        ],
        field_config("percentunit", min_=0, max_=1, custom=STEP_LINES),
    )
    counted = timeseries(
        "Loss outliers and non-finite steps (every step)",
        "Evaluated steps per interval whose loss-like metric was an outlier (at least "
        "--spike.factor times the median of the --spike.window steps before) or NaN/±Inf. "
        "The exporter judges every step, so a spike that lasted one evaluation between two "
        "polls shows here although the Loss panel never saw it.",
        [
            target(
                ref_id,
                counted_steps(counter, "$__rate_interval"),
                f"{MODEL_LEGEND} {{{{metric}}}} {kind}",
            )
            for ref_id, (counter, kind) in zip("AB", STEP_COUNTERS, strict=True)
        ],
        field_config(
            "none",
            min_=0,
            decimals=0,
            custom={"drawStyle": "bars", "fillOpacity": 80, "showPoints": "never"},
            overrides=[
                {
                    "matcher": {"id": "byRegexp", "options": ".* non-finite$"},
                    "properties": [
                        {"id": "color", "value": {"mode": "fixed", "fixedColor": "red"}}
                    ],
                }
            ],
        ),
        (GRID_WIDTH, 8),
    )
    counted["options"]["legend"]["calcs"] = ["max"]
    steps = timeseries(
        "Step progress",
        "Number of the newest evaluated step of each model.",
        [target("A", by_model("cohere_finetune_step_number"), MODEL_LEGEND)],
        field_config("none", min_=0, decimals=0, custom=STEP_LINES),
    )
    age = stat(
        "Time since last step (training runs)",
        "Seconds since the newest evaluated step of each model in STATUS_FINETUNING. "
        "Evaluations come every few minutes at most; an hour without one means the run stalls.",
        [
            target(
                "A",
                f"(time() - ({by_model('cohere_finetune_step_timestamp_seconds')}))"
                " and on (finetuned_model_id)"
                ' (cohere_finetune_model_status{status="STATUS_FINETUNING"} == 1)',
                MODEL_LEGEND,
            )
        ],
        field_config(
            "s",
            decimals=0,
            steps=thresholds((None, "green"), (900, "orange"), (3600, "red")),
        ),
        (12, 8),
    )
    age["fieldConfig"]["defaults"]["noValue"] = "No run in training"
    status = status_table()
    return [loss, accuracy, counted, steps, age, status]


def status_table() -> Json:
    """One row per model, merged from instant queries that share `finetuned_model_id`, `name`,
    `instance` and `job`."""
    newest = "cohere_finetune_step_timestamp_seconds"
    targets = [
        target("A", MODEL_INFO, MODEL_LEGEND, table=True),
        target("B", by_model("(cohere_finetune_model_status == 1)"), MODEL_LEGEND, table=True),
        target("C", by_model("cohere_finetune_step_number"), MODEL_LEGEND, table=True),
        target("D", by_model("cohere_finetune_step_cross_entropy"), MODEL_LEGEND, table=True),
        target("E", f"time() - ({by_model(newest)})", MODEL_LEGEND, table=True),
        target("F", by_model("cohere_finetune_model_up"), MODEL_LEGEND, table=True),
        *(
            target(ref_id, counted_steps_per_model(counter, "$__range"), MODEL_LEGEND, table=True)
            for ref_id, (counter, _) in zip("GH", STEP_COUNTERS, strict=True)
        ),
    ]
    status_colors = {
        "STATUS_READY": "green",
        "STATUS_FINETUNING": "blue",
        "STATUS_QUEUED": "text",
        "STATUS_DEPLOYING_API": "purple",
        "STATUS_FAILED": "red",
    }
    overrides = [
        override(
            "Status",
            ("custom.cellOptions", {"type": "color-text"}),
            (
                "mappings",
                [
                    {
                        "type": "value",
                        "options": {
                            value: {"color": color, "index": index}
                            for index, (value, color) in enumerate(status_colors.items())
                        },
                    }
                ],
            ),
        ),
        override("Step", ("decimals", 0)),
        override("Cross-entropy", ("decimals", 4)),
        override("Last step age", ("unit", "s"), ("decimals", 0)),
        override("Outliers", ("decimals", 0)),
        override(
            "Non-finite",
            ("decimals", 0),
            ("custom.cellOptions", {"type": "color-text"}),
            ("thresholds", thresholds((None, "text"), (0.5, "red"))),
            ("color", {"mode": "thresholds"}),
        ),
        override(
            "Last poll",
            ("custom.cellOptions", {"type": "color-text"}),
            (
                "mappings",
                [
                    {
                        "type": "value",
                        "options": {
                            "0": {"color": "red", "index": 0, "text": "failed"},
                            "1": {"color": "green", "index": 1, "text": "ok"},
                        },
                    }
                ],
            ),
        ),
    ]
    columns = {
        "name": "Name",
        "base_model": "Base model",
        "status": "Status",
        "Value #C": "Step",
        "Value #D": "Cross-entropy",
        "Value #E": "Last step age",
        "Value #F": "Last poll",
        "Value #G": "Outliers",
        "Value #H": "Non-finite",
        "finetuned_model_id": "Model ID",
    }
    hidden = [
        "Time",
        "__name__",
        "instance",
        "job",
        "base_model_version",
        "base_type",
        "strategy",
        "Value #A",
        "Value #B",
    ]
    table = panel(
        "table",
        "Model status",
        "One row per model: base model, current status, newest evaluated step, its "
        "cross-entropy (NaN and ±Inf shown as they are), its age, whether the last poll "
        "of the model succeeded, and how many evaluated steps over the dashboard's time range "
        "were loss outliers or non-finite.",
        targets,
        field_config("none", overrides=overrides),
        {"cellHeight": "sm", "showHeader": True, "sortBy": [{"displayName": "Name"}]},
        (GRID_WIDTH, 8),
    )
    table["transformations"] = [
        {"id": "merge", "options": {}},
        {
            "id": "organize",
            "options": {
                "excludeByName": dict.fromkeys(hidden, True),
                "indexByName": {field: index for index, field in enumerate(columns)},
                "renameByName": columns,
            },
        },
    ]
    return table


def override(name: str, *properties: tuple[str, Any]) -> Json:
    return {
        "matcher": {"id": "byName", "options": name},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


UP_MAPPINGS: list[Json] = [
    {
        "type": "value",
        "options": {
            "0": {"color": "red", "index": 0, "text": "DOWN"},
            "1": {"color": "green", "index": 1, "text": "UP"},
        },
    }
]


def exporter_panels() -> list[Json]:
    requests = "cohere_finetune_api_requests_total"
    up = stat(
        "Exporter up",
        "API: the last poll cycle reached the Cohere API and was authorised "
        "(cohere_finetune_up). Scrape: Prometheus reached the exporter (up).",
        [
            target("A", "cohere_finetune_up", "{{instance}} API"),
            target("B", 'up{job="cohere-finetune"}', "{{instance}} scrape"),
        ],
        field_config(
            "none",
            mappings=UP_MAPPINGS,
            steps=thresholds((None, "red"), (1, "green")),
        ),
        (6, 5),
    )
    models = stat(
        "Models polled",
        "Models whose last poll succeeded (up) or failed (down).",
        [
            target("A", "sum(cohere_finetune_model_up) or vector(0)", "up"),
            target("B", "count(cohere_finetune_model_up == 0) or vector(0)", "down"),
        ],
        field_config(
            "none",
            decimals=0,
            color={"mode": "fixed", "fixedColor": "text"},
            overrides=[
                override(
                    "down",
                    ("color", {"mode": "thresholds"}),
                    ("thresholds", thresholds((None, "green"), (1, "red"))),
                )
            ],
        ),
        (6, 5),
        color_mode="value",
    )
    throttled = stat(
        "Rate-limited requests (429)",
        "Requests the Cohere API answered with 429 Too Many Requests.",
        [
            target(
                "A",
                f'sum(rate({requests}{{code="429"}}[$__rate_interval])) or vector(0)',
                "429",
            )
        ],
        field_config("reqps", steps=thresholds((None, "green"), (0.0001, "red"))),
        (6, 5),
        text_mode="value",
        graph=True,
    )
    version = stat(
        "Exporter version",
        "Version of each running exporter (cohere_finetune_build_info).",
        [target("A", "cohere_finetune_build_info", "{{version}}")],
        field_config("none", color={"mode": "fixed", "fixedColor": "text"}),
        (6, 5),
        text_mode="name",
        color_mode="none",
    )
    by_code = timeseries(
        "API requests by code",
        "Requests to the Cohere API per second by HTTP status, timeout or connection_error.",
        [
            target(
                "A",
                f"sum by (code) (rate({requests}[$__rate_interval]))",
                "{{code}}",
            )
        ],
        field_config("reqps", min_=0),
    )
    duration = timeseries(
        "Poll duration",
        "Duration of the last poll cycle of each exporter.",
        [target("A", "cohere_finetune_poll_duration_seconds", "{{instance}}")],
        field_config("s", min_=0),
    )
    return [up, models, throttled, version, by_code, duration]


def layout(sections: list[tuple[Json, list[Json]]]) -> list[Json]:
    """Number the panels and place them left to right, wrapping at the grid's width."""
    placed: list[Json] = []
    y = 0
    for header, panels in sections:
        header["gridPos"]["y"] = y
        placed.append(header)
        y += header["gridPos"]["h"]
        x, line_height = 0, 0
        for p in panels:
            pos = p["gridPos"]
            if x + pos["w"] > GRID_WIDTH:
                y, x, line_height = y + line_height, 0, 0
            pos["x"], pos["y"] = x, y
            x += pos["w"]
            line_height = max(line_height, pos["h"])
            placed.append(p)
        y += line_height
    for number, p in enumerate(placed, start=1):
        p["id"] = number
    return placed


def variables() -> list[Json]:
    model_query = "label_values(cohere_finetune_model_info, name)"
    return [
        {
            "type": "datasource",
            "name": "datasource",
            "label": "Data source",
            "query": "prometheus",
            "refresh": 1,
            "hide": 0,
        },
        {
            "type": "query",
            "name": "model",
            "label": "Model",
            "datasource": DATASOURCE,
            "definition": model_query,
            "query": {
                "qryType": 1,
                "query": model_query,
                "refId": "PrometheusVariableQueryEditor-VariableQuery",
            },
            "refresh": 2,
            "multi": True,
            "includeAll": True,
            "allValue": ".*",
            "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
            "sort": 1,
            "hide": 0,
        },
    ]


def dashboard() -> dict[str, Any]:
    return {
        "uid": UID,
        "title": TITLE,
        "description": "Training-step metrics of Cohere fine-tuned models and the health of "
        "cohere-finetune-exporter.",
        "tags": ["cohere", "fine-tuning", "prometheus"],
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "timezone": "browser",
        "schemaVersion": SCHEMA_VERSION,
        "version": 1,
        "templating": {"list": variables()},
        "panels": layout(
            [
                (row("Training"), training_panels()),
                (row("Exporter health"), exporter_panels()),
            ]
        ),
    }


_LABEL_VALUES = re.compile(r"^label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)$")


def variable_expr(variable: Json) -> str:
    """The PromQL a query variable evaluates: `label_values(S, L)` becomes `group by (L) (S)`,
    whose series carry exactly the values Grafana lists; other queries pass through."""
    query = variable["query"]
    text = query["query"] if isinstance(query, dict) else str(query)
    match = _LABEL_VALUES.match(text.strip())
    if match:
        return f"group by ({match['label']}) ({match['selector']})"
    return text


def _all_panels(panels: list[Json]) -> list[Json]:
    flat: list[Json] = []
    for p in panels:
        flat.append(p)
        flat.extend(_all_panels(p.get("panels", [])))
    return flat


def panel_queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included,
    then ("variable <name>", PromQL) for every query variable. Expressions still hold
    `$model` and `$__rate_interval`; substitute them before sending one to Prometheus."""
    queries = [
        (p["title"], t["expr"])
        for p in _all_panels(dashboard.get("panels", []))
        for t in p.get("targets", [])
    ]
    queries.extend(
        (f"variable {v['name']}", variable_expr(v))
        for v in dashboard.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    )
    return queries


def render() -> str:
    return json.dumps(dashboard(), indent=2) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit 1 if the committed dashboard differs from the generated one",
    )
    parser.add_argument("--output", type=Path, default=OUTPUT, help="file to write or check")
    args = parser.parse_args(argv)
    output: Path = args.output
    text = render()
    if args.check:
        current = output.read_text(encoding="utf-8") if output.exists() else None
        if current != text:
            state = "is missing" if current is None else "differs from the generated dashboard"
            print(
                f"{output} {state}; run: python deploy/grafana/generate_dashboard.py",
                file=sys.stderr,
            )
            return 1
        return 0
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Build the Grafana dashboard of finetune-exporter with Grafana's typed builders.

    python deploy/grafana/generate_dashboard.py           # write dashboards/finetune.json
    python deploy/grafana/generate_dashboard.py --check   # exit 1 if the committed file is stale

Panels, queries, variables and options are grafana-foundation-sdk builders and models, so a
misspelt option fails type checking instead of vanishing in Grafana; every metric name comes
from exporter.contract. No panel needed hand-built JSON. Two values are plain data because the
SDK itself types them as bare objects: the options of the run table's transformations (`merge`,
and `organize` with its renamed, ordered and hidden columns), and the value of each field
override (`DynamicConfigValue.value`), which is an SDK model wherever one exists (line style,
colour, thresholds, cell options, value mappings) and a number or unit string otherwise.
Queries use five Grafana placeholders and nothing else: `${datasource}` (only as the
datasource uid, never inside an expression), `$provider` and `$run` (only as
`provider=~"$provider"` and `name=~"$run"`), `$__rate_interval` (only as a range,
`[$__rate_interval]`) and `$__range` (only as a range, `[$__range]`, in instant queries: totals
over the time picker).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from exporter import contract as c

HERE = Path(__file__).resolve().parent
# The panels live beside this script, which is not part of a package: make them importable
# however the script is loaded (run directly, or imported by path as the tests do).
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from health_panels import exporter_panels  # noqa: E402
from panel_kit import DATASOURCE, PROVIDER_FILTER  # noqa: E402
from run_panels import training_panels  # noqa: E402

Json = dict[str, Any]
OUTPUT = HERE / "dashboards" / "finetune.json"
UID = "finetune"
TITLE = "Fine-tuning runs"


def variable(name: str, label: str, selector: str, value_label: str) -> db.QueryVariable:
    return (
        db.QueryVariable(name)
        .label(label)
        .query(f"label_values({selector}, {value_label})")
        .datasource(DATASOURCE)
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
        .current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    )


def build() -> dm.Dashboard:
    board = (
        db.Dashboard(TITLE)
        .uid(UID)
        .description(
            "Training-step metrics of fine-tuning runs at Cohere and Together AI, and the "
            "health of finetune-exporter."
        )
        .tags(["fine-tuning", "cohere", "together", "prometheus"])
        .editable()
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .refresh("30s")
        .time("now-6h", "now")
        .timezone("browser")
        .with_variable(db.DatasourceVariable("datasource").label("Data source").type("prometheus"))
        .with_variable(variable("provider", "Provider", c.RUN_INFO.sample, c.PROVIDER_LABEL))
        .with_variable(variable("run", "Run", f"{c.RUN_INFO.sample}{{{PROVIDER_FILTER}}}", "name"))
        .with_row(db.Row("Training"))
    )
    for panel in training_panels():
        board = board.with_panel(panel)
    board = board.with_row(db.Row("Exporter health"))
    for panel in exporter_panels():
        board = board.with_panel(panel)
    built = board.build()
    for number, item in enumerate(built.panels or [], start=1):
        item.id_val = number
    return built


def render() -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(build()) + "\n"


def dashboard() -> Json:
    """The dashboard as Grafana reads it: the JSON the builders produce."""
    loaded: Json = json.loads(render())
    return loaded


_LABEL_VALUES = re.compile(r"^label_values\(\s*(?P<selector>.+?)\s*,\s*(?P<label>\w+)\s*\)$")


def variable_expr(item: Json) -> str:
    """The PromQL a query variable evaluates: `label_values(S, L)` becomes `group by (L) (S)`,
    whose series carry exactly the values Grafana lists; other queries pass through."""
    query_ = item["query"]
    text = query_["query"] if isinstance(query_, dict) else str(query_)
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


def panel_queries(board: Json) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, rows' nested panels included,
    then ("variable <name>", PromQL) for every query variable. Expressions still hold the
    placeholders; substitute them before sending one to Prometheus."""
    queries = [
        (p["title"], t["expr"])
        for p in _all_panels(board.get("panels", []))
        for t in p.get("targets", [])
    ]
    queries.extend(
        (f"variable {v['name']}", variable_expr(v))
        for v in board.get("templating", {}).get("list", [])
        if v.get("type") == "query"
    )
    return queries


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

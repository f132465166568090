"""What the dashboard's panels share: the queries' building blocks and panel shapes.

Every metric name comes from exporter.contract. Every run query joins finetune_run_info
restricted by the dashboard's `$provider` and `$run` variables (``by_run``); every health
query filters by `$provider` (``health``). Panels are grafana-foundation-sdk builders.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grafana_foundation_sdk.builders import bargauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import PromQueryFormat, QueryEditorMode

from exporter import contract as c

Panel = timeseries.Panel | stat.Panel | table.Panel | bargauge.Panel

#: The Prometheus job of the README's scrape config and the ServiceMonitor's relabeling.
JOB = "finetune"
DATASOURCE = dm.DataSourceRef(type_val="prometheus", uid="${datasource}")

RUN_KEY = ", ".join(("job", "instance", *c.RUN_LABELS))
PROVIDER_FILTER = f'{c.PROVIDER_LABEL}=~"$provider"'
# The info family restricted to the providers and runs picked in the variables; every run panel
# joins it to gain the run's human-readable `name`.
RUN_INFO = f'{c.RUN_INFO.sample}{{{PROVIDER_FILTER}, name=~"$run"}}'
LEGEND = "{{name}}"


def step(metric: str) -> str:
    """The family of provider metric ``metric`` (``train/loss`` -> finetune_step_train_loss)."""
    family = c.step_family_name(metric)
    assert family is not None, metric
    return family


TRAIN_LOSS, EVAL_LOSS = step("train/loss"), step("eval/loss")  # Together
CROSS_ENTROPY, COHERE_LOSS = step("cross_entropy"), step("loss")  # Cohere
ACCURACY, GENERATION_ACCURACY = step("accuracy"), step("generation_accuracy")  # Cohere
STEP_COUNTERS = ((c.STEP_OUTLIERS.sample, "outliers"), (c.STEP_NONFINITE.sample, "non-finite"))
PHASE_COLORS = {
    "queued": "text",
    "training": "blue",
    "deploying": "purple",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "orange",
    "unknown": "yellow",
}


def by_run(expr: str) -> str:
    """`expr` (one series per run) labelled with the run's `name`. Only runs chosen in the
    variables survive the join; the value is kept as it is (the info family is 1), NaN and
    infinities included. The instance is in the key so that two exporters briefly exporting one
    run (a rolling update) do not break the join."""
    return f"{expr} * on ({RUN_KEY}) group_left (name) {RUN_INFO}"


def finite(family: str) -> str:
    """`family` without its NaN and ±Inf samples (comparisons with NaN are false)."""
    return f"({family} > -Inf < +Inf)"


def health(family: c.Family, matchers: str = "") -> str:
    """A per-provider health family, restricted to the providers picked in `$provider`."""
    return f"{family.sample}{{{PROVIDER_FILTER}{matchers}}}"


def query(ref: str, expr: str, legend: str, *, table_row: bool = False) -> prometheus.Dataquery:
    built = (
        prometheus.Dataquery()
        .ref_id(ref)
        .expr(expr)
        .legend_format(legend)
        .datasource(DATASOURCE)
        .editor_mode(QueryEditorMode.CODE)
    )
    return built.instant().format(PromQueryFormat.TABLE) if table_row else built.range()


def thresholds(*steps: tuple[float | None, str]) -> db.ThresholdsConfig:
    return (
        db.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=value, color=color) for value, color in steps])
    )


def fixed_color(color: str) -> db.FieldColor:
    return db.FieldColor().mode(dm.FieldColorModeId.FIXED).fixed_color(color)


def value_map(options: Mapping[str, tuple[str, str | None]]) -> list[dm.ValueMapping]:
    """Value -> (color, display text) as one value mapping, indexed in the given order."""
    results = {
        value: dm.ValueMappingResult(color=color, text=text, index=index)
        for index, (value, (color, text)) in enumerate(options.items())
    }
    return [dm.ValueMap(options=results)]


def prop(key: str, value: object) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val=key, value=value)


def graph(
    title: str, description: str, unit: str, *targets: prometheus.Dataquery
) -> timeseries.Panel:
    """A time series panel, 12 wide: legend as a table with each series' last value."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(12)
        .height(8)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .placement(cm.LegendPlacement.BOTTOM)
            .calcs(["lastNotNull"])
        )
        .tooltip(
            cb.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def stepped(panel: timeseries.Panel) -> timeseries.Panel:
    """Gauges that hold the newest logged step's value change in steps, not in slopes."""
    return (
        panel.line_interpolation(cm.LineInterpolation.STEP_AFTER)
        .show_points(cm.VisibilityMode.NEVER)
        .fill_opacity(0)
    )


def single(title: str, description: str, unit: str, width: int, *targets: Any) -> stat.Panel:
    """A stat panel showing each series' last value with its name."""
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .unit(unit)
        .span(width)
        .height(8 if width >= 6 else 5)
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .justify_mode(cm.BigValueJustifyMode.AUTO)
        .orientation(cm.VizOrientation.AUTO)
        .text_mode(cm.BigValueTextMode.VALUE_AND_NAME)
        .color_mode(cm.BigValueColorMode.BACKGROUND)
        .graph_mode(cm.BigValueGraphMode.NONE)
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel


def counted_steps(counter: str) -> str:
    """Increase of a per-step counter per interval, per run name and `metric`. The exporter
    creates these series at 0, so a run without any counted step shows 0 rather than no data."""
    increase = f"increase({counter}[$__rate_interval])"
    return f"sum by (name, provider, metric) ({by_run(increase)})"


def per_run_total(counter: str) -> str:
    """Increase of a per-step counter over the time picker, all `metric`s of a run together,
    with the labels the run table merges on."""
    return by_run(f"sum by ({RUN_KEY}) (increase({counter}[$__range]))")

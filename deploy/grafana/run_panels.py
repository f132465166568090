"""The training row of the dashboard: losses, accuracy, progress, stalls, counted steps and
the run table, for Cohere and Together runs alike."""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, table
from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from panel_kit import (
    ACCURACY,
    COHERE_LOSS,
    CROSS_ENTROPY,
    DATASOURCE,
    EVAL_LOSS,
    GENERATION_ACCURACY,
    LEGEND,
    PHASE_COLORS,
    RUN_INFO,
    RUN_KEY,
    STEP_COUNTERS,
    TRAIN_LOSS,
    Panel,
    by_run,
    counted_steps,
    finite,
    fixed_color,
    graph,
    per_run_total,
    prop,
    query,
    single,
    stepped,
    thresholds,
    value_map,
)

from exporter import contract as c


def training_panels() -> list[Panel]:
    losses = graph(
        "Train vs eval loss",
        "Loss-like metrics at the newest logged step of each run. Together reports train/loss "
        "at every step and eval/loss at every evaluation (dashed): eval loss rising while train "
        "loss falls is overfitting. Cohere reports cross-entropy (and loss, for some models) at "
        "each evaluation. NaN and ±Inf are left out of the curves; the run table shows them.",
        "none",
        query("A", by_run(finite(TRAIN_LOSS)), f"{LEGEND} train"),
        query("B", by_run(finite(EVAL_LOSS)), f"{LEGEND} eval"),
        query("C", by_run(finite(CROSS_ENTROPY)), f"{LEGEND} cross-entropy"),
        query("D", by_run(finite(COHERE_LOSS)), f"{LEGEND} loss"),
    )
    losses = stepped(losses).decimals(3)
    losses = losses.override_by_regexp(".* eval$", [prop("custom.lineStyle", cm.LineStyle("dash"))])
    accuracy = graph(
        "Accuracy",
        "Accuracy and generation accuracy at the newest evaluation, where the provider reports "
        "them (Cohere). NaN and ±Inf are left out of the curves.",
        "percentunit",
        query("A", by_run(finite(ACCURACY)), f"{LEGEND} accuracy"),
        query("B", by_run(finite(GENERATION_ACCURACY)), f"{LEGEND} generation accuracy"),
    )
    accuracy = stepped(accuracy).min(0).max(1)
    steps = graph(
        "Step progress",
        "Number of the newest logged step of each run, and the steps the run will take in all "
        "where the provider tells (Together; dashed).",
        "none",
        query("A", by_run(c.STEP_NUMBER.sample), f"{LEGEND} step"),
        query("B", by_run(c.RUN_TOTAL_STEPS.sample), f"{LEGEND} total"),
    )
    steps = stepped(steps).min(0).decimals(0)
    steps = steps.override_by_regexp(".* total$", [prop("custom.lineStyle", cm.LineStyle("dash"))])
    fraction = (
        bargauge.Panel()
        .title("Done (step / total)")
        .description("Share of its steps each run has logged, where the provider tells the total.")
        .datasource(DATASOURCE)
        .unit("percentunit")
        .min(0)
        .max(1)
        .span(6)
        .height(8)
        .with_target(
            query("A", by_run(f"{c.STEP_NUMBER.sample} / {c.RUN_TOTAL_STEPS.sample}"), LEGEND)
        )
        .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False))
        .display_mode(cm.BarGaugeDisplayMode.BASIC)
        .orientation(cm.VizOrientation.HORIZONTAL)
        .thresholds(thresholds((None, "blue"), (1, "green")))
    )
    eta = single(
        "ETA",
        "Seconds the provider expects until the run's next phase, where it tells (Together).",
        "s",
        6,
        query("A", by_run(c.RUN_ETA.sample), LEGEND),
    )
    eta = eta.color_mode(cm.BigValueColorMode.NONE).no_value("Not told")
    training = 'phase="training"'
    age = single(
        "Time since the newest step (training runs)",
        "Seconds since the newest logged step of each run in phase training. FinetuneRunStalled "
        "fires at 30 minutes.",
        "s",
        12,
        query(
            "A",
            f"(time() - ({by_run(c.STEP_TIMESTAMP.sample)}))"
            f" and on ({RUN_KEY}) ({c.RUN_PHASE.sample}{{{training}}} == 1)",
            LEGEND,
        ),
    )
    age = age.decimals(0).thresholds(thresholds((None, "green"), (900, "orange"), (1800, "red")))
    counted = graph(
        "Loss outliers and non-finite steps (every step)",
        "Logged steps per interval whose loss-like metric was an outlier (at least "
        "--spike.factor times the median of the --spike.window steps before) or NaN/±Inf. "
        "The exporter judges every step, so a spike that lasted one evaluation between two "
        "polls shows here although the loss panel never saw it.",
        "none",
        *(
            query(ref, counted_steps(counter), f"{LEGEND} {{{{metric}}}} {kind}")
            for ref, (counter, kind) in zip("AB", STEP_COUNTERS, strict=True)
        ),
    )
    counted = (
        counted.draw_style(cm.GraphDrawStyle.BARS)
        .fill_opacity(80)
        .show_points(cm.VisibilityMode.NEVER)
        .min(0)
        .decimals(0)
        .legend(
            cb.VizLegendOptions()
            .show_legend(True)
            .display_mode(cm.LegendDisplayMode.TABLE)
            .calcs(["max"])
        )
        .override_by_regexp(".* non-finite$", [prop("color", fixed_color("red").build())])
    )
    return [losses, accuracy, steps, fraction, eta, age, counted, run_table()]


def run_table() -> table.Panel:
    """One row per run, merged from instant queries that share the run's key and `name`."""
    targets = [
        query("A", RUN_INFO, LEGEND, table_row=True),
        query("B", by_run(f"({c.RUN_PHASE.sample} == 1)"), LEGEND, table_row=True),
        query("C", by_run(c.RUN_STATUS.sample), LEGEND, table_row=True),
        query("D", by_run(c.STEP_NUMBER.sample), LEGEND, table_row=True),
        query("E", by_run(f"({TRAIN_LOSS} or {CROSS_ENTROPY})"), LEGEND, table_row=True),
        query("F", f"time() - ({by_run(c.STEP_TIMESTAMP.sample)})", LEGEND, table_row=True),
        query("G", by_run(c.RUN_UP.sample), LEGEND, table_row=True),
        query("H", per_run_total(c.STEP_OUTLIERS.sample), LEGEND, table_row=True),
        query("I", per_run_total(c.STEP_NONFINITE.sample), LEGEND, table_row=True),
    ]
    columns = {
        "name": "Name",
        c.PROVIDER_LABEL: "Provider",
        "phase": "Phase",
        "status": "Status",
        "Value #D": "Step",
        "Value #E": "Loss",
        "Value #F": "Last step age",
        "Value #G": "Last poll",
        "Value #H": "Outliers",
        "Value #I": "Non-finite",
        "base_model": "Base model",
        c.RUN_ID_LABEL: "Run ID",
    }
    # Constant columns (the state set's and the info families' 1s) and provider extras.
    hidden = ["Time", "__name__", "instance", "job", "Value #A", "Value #B", "Value #C"]
    hidden += ["base_model_version", "base_type", "strategy", "training_type", "training_method"]
    colored = cm.TableColorTextCellOptions()
    panel = (
        table.Panel()
        .title("Runs")
        .description(
            "One row per run: provider, phase (the same words for every provider) and the "
            "provider's own status, newest logged step and its loss (Together: train loss; "
            "Cohere: cross-entropy; NaN and ±Inf shown as they are), its age, whether the "
            "last poll of the run succeeded, and how many logged steps over the dashboard's time "
            "range were loss outliers or non-finite."
        )
        .datasource(DATASOURCE)
        .unit("none")
        .span(24)
        .height(9)
        .cell_height(cm.TableCellHeight.SM)
        .show_header(True)
        .sort_by([cb.TableSortByFieldState().display_name("Name")])
        .override_by_name(
            "Phase",
            [
                prop("custom.cellOptions", colored),
                prop("mappings", value_map({p: (PHASE_COLORS[p], None) for p in c.PHASE_VALUES})),
            ],
        )
        .override_by_name("Step", [prop("decimals", 0)])
        .override_by_name("Loss", [prop("decimals", 4)])
        .override_by_name("Last step age", [prop("unit", "s"), prop("decimals", 0)])
        .override_by_name("Outliers", [prop("decimals", 0)])
        .override_by_name(
            "Non-finite",
            [
                prop("decimals", 0),
                prop("custom.cellOptions", colored),
                prop("thresholds", thresholds((None, "text"), (0.5, "red")).build()),
                prop("color", db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS).build()),
            ],
        )
        .override_by_name(
            "Last poll",
            [
                prop("custom.cellOptions", colored),
                prop("mappings", value_map({"0": ("red", "failed"), "1": ("green", "ok")})),
            ],
        )
        .with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            dm.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": dict.fromkeys(hidden, True),
                    "indexByName": {field: index for index, field in enumerate(columns)},
                    "renameByName": columns,
                },
            )
        )
    )
    for target in targets:
        panel = panel.with_target(target)
    return panel

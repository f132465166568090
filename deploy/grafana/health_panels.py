"""The exporter-health row of the dashboard: per provider, whether polls reach the API, the
requests by code (invalid_body included), 429s, the request budget and poll durations."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from panel_kit import (
    JOB,
    Panel,
    fixed_color,
    graph,
    health,
    prop,
    query,
    single,
    thresholds,
    value_map,
)

from exporter import contract as c

UP_TEXT = {"0": ("red", "DOWN"), "1": ("green", "UP")}


def exporter_panels() -> list[Panel]:
    requests = c.API_REQUESTS
    # `or` this (0 for every provider with requests) so that no 429 shows as 0, not as no data.
    every_provider = f"sum by (provider) (rate({health(requests)}[$__rate_interval])) * 0"
    rate_limited = health(requests, ', code="429"')
    up = single(
        "Exporter up",
        "API: the provider's last poll cycle reached its API and was authorised (finetune_up, "
        "per provider). Scrape: Prometheus reached the exporter (up).",
        "none",
        6,
        query("A", health(c.UP), "{{provider}} API"),
        query("B", f'up{{job="{JOB}"}}', "{{instance}} scrape"),
    )
    up = up.mappings(value_map(UP_TEXT)).thresholds(thresholds((None, "red"), (1, "green")))
    runs_up = health(c.RUN_UP)
    polled = single(
        "Runs polled",
        "Runs whose last poll succeeded (up) or failed (down), per provider.",
        "none",
        6,
        query("A", f"sum by (provider) ({runs_up})", "{{provider}} up"),
        query(
            "B",
            f"count by (provider) ({runs_up} == 0) or sum by (provider) ({runs_up}) * 0",
            "{{provider}} down",
        ),
    )
    polled = (
        polled.decimals(0)
        .color_mode(cm.BigValueColorMode.VALUE)
        .color_scheme(fixed_color("text"))
        .override_by_regexp(
            ".* down$",
            [
                prop("color", db.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS).build()),
                prop("thresholds", thresholds((None, "green"), (1, "red")).build()),
            ],
        )
    )
    throttled = single(
        "Rate-limited requests (429)",
        "Requests each provider answered with 429 Too Many Requests.",
        "reqps",
        6,
        query(
            "A",
            f"sum by (provider) (rate({rate_limited}[$__rate_interval])) or {every_provider}",
            "{{provider}}",
        ),
    )
    throttled = throttled.graph_mode(cm.BigValueGraphMode.AREA).thresholds(
        thresholds((None, "green"), (0.0001, "red"))
    )
    version = single(
        "Exporter version",
        "Version of each running exporter (finetune_exporter_build_info).",
        "none",
        6,
        query("A", c.BUILD_INFO.sample, "{{version}}"),
    )
    version = (
        version.text_mode(cm.BigValueTextMode.NAME)
        .color_mode(cm.BigValueColorMode.NONE)
        .color_scheme(fixed_color("text"))
    )
    by_code = graph(
        "API requests by code",
        "Requests to each provider's API per second by HTTP status, timeout, connection_error "
        "or invalid_body (a 2xx answer whose body the exporter rejected).",
        "reqps",
        query(
            "A",
            f"sum by (provider, code) (rate({health(requests)}[$__rate_interval]))",
            "{{provider}} {{code}}",
        ),
    )
    by_code = (
        by_code.min(0)
        .span(8)
        .override_by_regexp(".* invalid_body$", [prop("color", fixed_color("red").build())])
        .override_by_regexp(".* 429$", [prop("color", fixed_color("orange").build())])
    )
    duration = graph(
        "Poll duration",
        "Duration of the last poll cycle of each provider, per exporter.",
        "s",
        query("A", health(c.POLL_DURATION), "{{provider}} {{instance}}"),
    )
    duration = duration.min(0).span(8)
    budget = graph(
        "API budget",
        "Requests that may still start in the current minute, and the client-side ceiling "
        "(--<provider>.max-requests-per-minute); at 0 the exporter waits for the next minute.",
        "none",
        query("A", health(c.BUDGET_REMAINING), "{{provider}} remaining"),
        query("B", health(c.BUDGET_PER_MINUTE), "{{provider}} per minute"),
    )
    budget = budget.min(0).span(8).decimals(0)
    return [up, polled, throttled, version, by_code, duration, budget]

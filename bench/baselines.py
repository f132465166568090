"""The two baseline servers that ``bench/run.py`` compares the exporter with.

Both serve the data of the expositions captured from the exporter (files holding the bytes of
one ``/metrics`` answer in each format), so all three servers answer with the same series:

``client_python``
    What a self-written exporter does: ``prometheus_client.start_http_server`` with a custom
    collector that builds a ``GaugeMetricFamily`` per family from the parsed plain-text data on
    every scrape, so every scrape encodes (in the format prometheus_client negotiates and, when
    asked, gzipped) the whole exposition again.

``static``
    The floor on this stack: an aiohttp server answering with the captured bytes as they are
    (or with a gzip of them made once at start-up), no logging, no middleware. Given the
    exporter's OpenMetrics body too, it answers a client whose ``Accept`` the exporter would
    answer with OpenMetrics with that body, chosen by the exporter's own negotiation.

Neither imports the exporter's settings (pydantic), so their memory stays that of a small
server; the harness tells them what they need on the command line::

    python bench/baselines.py client_python --port 18100 --path /metrics --source exp.text
    python bench/baselines.py static --port 18101 --path /metrics --source exp.text
        [--openmetrics-source exp.openmetrics --openmetrics-content-type 'application/...']
"""

from __future__ import annotations

import argparse
import gzip
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector, CollectorRegistry

from exporter.encoding import Format
from exporter.exposition import GZIP_LEVEL, negotiate

#: The exporter's answer to a client that sends no ``Accept`` header.
TEXT_CONTENT_TYPE = negotiate("")[1]


@dataclass(frozen=True)
class Family:
    """One sample name of the captured exposition, ready to be re-emitted as a gauge."""

    name: str
    documentation: str
    label_names: tuple[str, ...]
    samples: tuple[tuple[tuple[str, ...], float], ...]


def parse_families(text: str) -> list[Family]:
    """Group the parsed samples by sample name, so counters keep ``_total`` and info ``_info``."""
    families: list[Family] = []
    for parsed in text_string_to_metric_families(text):
        grouped: dict[str, list[tuple[dict[str, str], float]]] = {}
        for sample in parsed.samples:
            grouped.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
        for name, samples in grouped.items():
            label_names = tuple(samples[0][0])
            rows = tuple(
                (tuple(labels.get(label, "") for label in label_names), value)
                for labels, value in samples
            )
            families.append(Family(name, parsed.documentation, label_names, rows))
    return families


class ReplayCollector(Collector):
    """Rebuilds every family from plain Python data on each ``collect``, as exporters do."""

    def __init__(self, families: list[Family]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for family in self._families:
            gauge = GaugeMetricFamily(
                family.name, family.documentation, labels=list(family.label_names)
            )
            for values, value in family.samples:
                gauge.add_metric(list(values), value)
            yield gauge


def serve_client_python(port: int, source: Path) -> None:
    families = parse_families(source.read_text(encoding="utf-8"))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ReplayCollector(families))
    start_http_server(port, addr="127.0.0.1", registry=registry)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait()


@dataclass(frozen=True)
class StaticBody:
    """One format's captured bytes, gzipped once at the exporter's level so sizes match."""

    plain: bytes
    zipped: bytes
    content_type: str

    @staticmethod
    def read(source: Path, content_type: str) -> StaticBody:
        plain = source.read_bytes()
        return StaticBody(plain, gzip.compress(plain, compresslevel=GZIP_LEVEL), content_type)


def serve_static(port: int, path: str, bodies: dict[Format, StaticBody]) -> None:
    """Answer with the bytes of the format the exporter would choose for the same ``Accept``,
    falling back to the text body when no other format was captured."""
    text = bodies["text"]

    async def metrics(request: web.Request) -> web.Response:
        accept = request.headers.get("Accept")
        body = bodies.get(negotiate(accept)[0], text) if accept else text
        headers = {"Content-Type": body.content_type, "Vary": "Accept, Accept-Encoding"}
        if "gzip" in request.headers.get("Accept-Encoding", "").lower():
            headers["Content-Encoding"] = "gzip"
            return web.Response(body=body.zipped, headers=headers)
        return web.Response(body=body.plain, headers=headers)

    app = web.Application()
    app.router.add_get(path, metrics)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("kind", choices=("client_python", "static"))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--path", required=True, help="path of the static answers (client_python answers any)"
    )
    parser.add_argument("--source", type=Path, required=True, help="captured exposition")
    parser.add_argument(
        "--content-type",
        default=TEXT_CONTENT_TYPE,
        help="Content-Type of the static text answers (the exporter's)",
    )
    parser.add_argument(
        "--openmetrics-source", type=Path, default=None, help="captured OpenMetrics exposition"
    )
    parser.add_argument(
        "--openmetrics-content-type",
        default=None,
        help="Content-Type of the static OpenMetrics answers (the exporter's)",
    )
    args = parser.parse_args(argv)
    if args.kind == "client_python":
        serve_client_python(args.port, args.source)
        return 0
    bodies: dict[Format, StaticBody] = {"text": StaticBody.read(args.source, args.content_type)}
    if args.openmetrics_source is not None:
        if args.openmetrics_content_type is None:
            parser.error("--openmetrics-source needs --openmetrics-content-type")
        bodies["openmetrics"] = StaticBody.read(
            args.openmetrics_source, args.openmetrics_content_type
        )
    serve_static(args.port, args.path, bodies)
    return 0


if __name__ == "__main__":
    sys.exit(main())

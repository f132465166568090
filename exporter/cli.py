"""The command line: ``serve`` (default), ``demo``, ``simulate`` and ``check-config``.

Flags are generated from the fields of ``Settings`` and handed to pydantic-settings as init
arguments, so a flag wins over the environment, which wins over ``.env``, and every setting is
validated in one place whichever way it arrived.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from exporter import __version__
from exporter.core.heap import limit_heap_growth
from exporter.logs import setup_logging
from exporter.settings import PROVIDERS, ConfigError, Settings, load_settings, spelling
from exporter.simulate_command import add_simulate_flags, add_simulator_flags
from exporter.webconfig import WebConfigError, load_web_config

COMMANDS = ("serve", "demo", "simulate", "check-config", "backfill")
EXIT_CONFIG = 2
log = logging.getLogger("exporter")


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    for name, field in Settings.model_fields.items():
        spelled = spelling(name)
        if not spelled.flag:
            continue
        default = field.default if field.default not in (None, ()) else "unset"
        parser.add_argument(
            spelled.flag,
            dest=name,
            default=argparse.SUPPRESS,
            metavar=name.rsplit("_", 1)[-1].upper(),
            help=f"{field.description} (default: {default}; env: {', '.join(spelled.env)})",
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="finetune-exporter",
        description="Prometheus exporter for the training-step metrics of fine-tuning runs "
        "(Cohere, Together AI).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="poll the configured providers and serve /metrics (default)"
    )
    add_setting_flags(serve)
    check = commands.add_parser("check-config", help="validate settings, print them, exit 0 or 2")
    add_setting_flags(check)
    demo = commands.add_parser(
        "demo", help="simulate every provider and run the exporter on them: no key, no network"
    )
    add_setting_flags(demo)
    add_simulator_flags(demo, speed=10.0, runs=6)
    backfill = commands.add_parser(
        "backfill", help="write every step of the selected runs as OpenMetrics for promtool"
    )
    backfill.add_argument("--out", required=True, type=Path, help="OpenMetrics file to write")
    add_setting_flags(backfill)
    simulate = commands.add_parser("simulate", help="serve one provider's simulated API")
    add_simulate_flags(simulate)
    add_simulator_flags(simulate, speed=1.0, runs=6)
    return parser


def setting_overrides(args: argparse.Namespace) -> dict[str, Any]:
    return {k: v for k, v in vars(args).items() if k in Settings.model_fields}


def render_settings(settings: Settings) -> str:
    """Effective settings, one per line, with secrets shown only as set or unset."""
    lines = []
    for name in Settings.model_fields:
        spelled = spelling(name)
        value: Any = getattr(settings, name)
        if spelled.secret:
            value = "<set, hidden>" if value is not None else "<unset>"
        elif isinstance(value, tuple):
            value = ",".join(value) or "<all of the account>"
        elif value is None:
            value = "<unset>"
        lines.append(f"{spelled} = {value}")
    return "\n".join(lines)


def check_config(settings: Settings) -> None:
    """Everything ``serve`` would refuse at start-up, checked without sending a request."""
    problems: list[str] = []
    try:
        settings.polled_providers()
    except ConfigError as exc:
        problems.extend(exc.problems)
    try:
        load_web_config(settings.web_config_file)
    except WebConfigError as exc:
        problems.append(str(exc))
    if problems:
        raise ConfigError(problems)


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or (
        arguments[0] not in COMMANDS and arguments[0] not in {"-h", "--help", "--version"}
    ):
        arguments.insert(0, "serve")
    args = build_parser().parse_args(arguments)
    limit_heap_growth()  # before any large buffer: see exporter.core.heap
    try:
        if args.command == "simulate":
            from exporter.simulate_command import run_simulate

            return run_simulate(args)
        settings = load_settings(**_command_defaults(args.command), **setting_overrides(args))
        if args.command == "check-config":
            check_config(settings)
            print(render_settings(settings))
            return 0
        if args.command == "demo":
            return run_demo(settings, args)
        if args.command == "backfill":
            return run_backfill_command(settings, args.out)
        check_config(settings)
        setup_logging(settings.log_level, settings.log_format, settings.secrets())
        from exporter.service import serve

        asyncio.run(serve(settings))
        return 0
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    except WebConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 0


def run_backfill_command(settings: Settings, out: Path) -> int:
    from exporter.backfill_command import run_backfill
    from exporter.upstream.errors import ApiError

    check_config(settings)
    setup_logging(settings.log_level, settings.log_format, settings.secrets())
    try:
        run_backfill(settings, out)
    except ApiError as exc:
        print(f"error: backfill stopped, {out} not written: {exc}", file=sys.stderr)
        return 1
    return 0


def _command_defaults(command: str) -> dict[str, Any]:
    """Demo defaults: fast polls so curves move within seconds (flags still win)."""
    if command != "demo":
        return {}
    return {
        "poll_interval": 2.0,
        "poll_discovery_interval": 10.0,
        "poll_final_refresh_interval": 60.0,
    }


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    from exporter.demo import demo
    from exporter.simulate_command import faults_from, scenario_from

    load_web_config(settings.web_config_file)  # refused before anything starts
    scenario = scenario_from(args)
    faults = {name: faults_from(args, name) for name in PROVIDERS}
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(
        demo(
            settings,
            runs=args.runs,
            seed=args.seed,
            speed=args.speed,
            step_order=args.step_order,
            scenario=scenario,
            faults=faults,
        )
    )
    return 0

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
from typing import TYPE_CHECKING, Any

from exporter import __version__
from exporter.logs import setup_logging
from exporter.settings import ConfigError, Settings, load_settings, spelling
from exporter.webconfig import WebConfigError, load_web_config

if TYPE_CHECKING:
    from exporter.simulator import FaultInjector, Scenario

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


def add_simulator_flags(parser: argparse.ArgumentParser, *, speed: float, models: int) -> None:
    parser.add_argument("--models", type=int, default=models, help="simulated fine-tuned models")
    parser.add_argument("--seed", type=int, default=1, help="seed of the simulated account")
    parser.add_argument(
        "--speed", type=float, default=speed, help="simulated seconds per real second"
    )
    parser.add_argument(
        "--scenario",
        default=None,
        help="YAML/JSON file of scripted runs (or a bundled name: spike-and-healthy)",
    )
    parser.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SPEC",
        help="inject a fault, e.g. kind=status,status=503,probability=0.2 (repeatable)",
    )
    parser.add_argument(
        "--step-order",
        choices=("newest-first", "oldest-first"),
        default="newest-first",
        help="order of training-step pages (the docs say newest-first)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cohere-finetune-exporter",
        description="Prometheus exporter for the training-step metrics of Cohere fine-tunes.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="poll the API and serve /metrics (default)")
    add_setting_flags(serve)
    check = commands.add_parser("check-config", help="validate settings, print them, exit 0 or 2")
    add_setting_flags(check)
    demo = commands.add_parser(
        "demo", help="run the simulator and the exporter in one process: no key, no network"
    )
    add_setting_flags(demo)
    add_simulator_flags(demo, speed=10.0, models=6)
    backfill = commands.add_parser(
        "backfill", help="write every step of the selected models as OpenMetrics for promtool"
    )
    backfill.add_argument("--out", required=True, type=Path, help="OpenMetrics file to write")
    add_setting_flags(backfill)
    simulate = commands.add_parser("simulate", help="serve only the simulated Cohere API")
    simulate.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:10043",
        help="address of the simulated API (default: 127.0.0.1:10043)",
    )
    key = simulate.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: accept any request)",
    )
    key.add_argument("--api-key-file", default=None, help="read that key from a file")
    simulate.add_argument("--log.level", dest="log_level", default="info")
    add_simulator_flags(simulate, speed=1.0, models=6)
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
        settings.require_key()
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
    try:
        if args.command == "simulate":
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

    load_web_config(settings.web_config_file)  # refused before anything starts
    setup_logging(settings.log_level, settings.log_format)
    asyncio.run(
        demo(
            settings,
            models=args.models,
            seed=args.seed,
            speed=args.speed,
            step_order=args.step_order,
            scenario=scenario_from(args),
            faults=faults_from(args),
        )
    )
    return 0


def scenario_from(args: argparse.Namespace) -> Scenario | None:
    from exporter.simulator import load_scenario

    if args.scenario is None:
        return None
    try:
        return load_scenario(args.scenario)
    except ValueError as exc:
        raise ConfigError([f"--scenario: {exc}"]) from None


def faults_from(args: argparse.Namespace) -> FaultInjector:
    from exporter.simulator import Fault, FaultInjector

    try:
        return FaultInjector([Fault.parse(spec) for spec in args.fault], seed=args.seed)
    except ValueError as exc:
        raise ConfigError([f"--fault: {exc}"]) from None


def simulator_key(args: argparse.Namespace) -> str | None:
    if args.api_key_file is None:
        return str(args.api_key) if args.api_key else None
    try:
        key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(
            [f"--api-key-file: cannot read {args.api_key_file}: {exc.strerror}"]
        ) from None
    if not key:
        raise ConfigError([f"--api-key-file: {args.api_key_file} is empty"])
    return key


def run_simulate(args: argparse.Namespace) -> int:
    from exporter.service import serve_until_stopped
    from exporter.settings import parse_listen_address
    from exporter.simulator import SimClock, run_simulator
    from exporter.simulator.cohere import CohereWorld

    try:
        host, port = parse_listen_address(args.listen)
    except ValueError as exc:
        raise ConfigError([f"--web.listen-address: {exc}"]) from None
    if args.models < 0:
        raise ConfigError(["--models: must be 0 or more"])
    if args.speed <= 0:
        raise ConfigError(["--speed: must be above 0"])
    api_key = simulator_key(args)
    setup_logging(args.log_level, "logfmt", [api_key] if api_key else [])
    world = CohereWorld(
        models=args.models,
        seed=args.seed,
        clock=SimClock(speed=args.speed),
        step_order=args.step_order,
        api_key=api_key,
        scenario=scenario_from(args),
    )
    log.info("simulating the Cohere API", extra={"address": args.listen, "models": args.models})
    try:
        server = run_simulator(host or "0.0.0.0", port, world, faults_from(args))
        asyncio.run(serve_until_stopped(server))
    except OSError as exc:
        raise ConfigError(
            [f"--web.listen-address: cannot listen on {args.listen}: {exc.strerror}"]
        ) from None
    return 0

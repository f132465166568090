"""``simulate --provider P``: one provider's simulated API, and the flags ``demo`` shares.

The simulators stand in for the real APIs everywhere (tests, the demo, compose, benchmarks);
this module is the command line in front of them, kept apart from the exporter's own commands
so that ``serve`` never imports a simulator.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from exporter.logs import setup_logging
from exporter.settings import PROVIDERS, ConfigError

if TYPE_CHECKING:
    from exporter.simulator import FaultInjector, Scenario

log = logging.getLogger("exporter")


def add_simulator_flags(parser: argparse.ArgumentParser, *, speed: float, runs: int) -> None:
    """The flags that shape a simulated account (``simulate`` and ``demo``)."""
    parser.add_argument(
        "--runs", "--models", dest="runs", type=int, default=runs, help="simulated runs"
    )
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
        help="order of Cohere's training-step pages (its docs say newest-first)",
    )


def add_simulate_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of ``simulate`` alone: which provider, where, and which key it requires."""
    parser.add_argument(
        "--provider", choices=PROVIDERS, default="cohere", help="which API to simulate"
    )
    parser.add_argument(
        "--web.listen-address",
        dest="listen",
        default="127.0.0.1:10043",
        help="address of the simulated API (default: 127.0.0.1:10043)",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key",
        default=None,
        help="require 'Authorization: Bearer KEY' (default: accept any request)",
    )
    key.add_argument("--api-key-file", default=None, help="read that key from a file")
    parser.add_argument("--log.level", dest="log_level", default="info")


def scenario_from(args: argparse.Namespace) -> Scenario | None:
    from exporter.simulator import load_scenario

    if args.scenario is None:
        return None
    try:
        return load_scenario(args.scenario)
    except ValueError as exc:
        raise ConfigError([f"--scenario: {exc}"]) from None


def faults_from(args: argparse.Namespace, provider: str) -> FaultInjector:
    """The ``--fault`` specs that can fire on ``provider``'s simulator (the demo runs both: a
    fault that names another provider's endpoint is that provider's alone)."""
    from exporter.simulator import Fault, FaultInjector

    faults = []
    for spec in args.fault:
        try:
            fault = Fault.parse(spec)
        except ValueError as exc:
            raise ConfigError([f"--fault: {exc}"]) from None
        try:
            fault.check_provider(provider)
        except ValueError as exc:
            if args.command == "simulate":
                raise ConfigError([f"--fault: {exc}"]) from None
            continue
        faults.append(fault)
    injector = FaultInjector(faults, seed=args.seed)
    injector.bind(provider)
    return injector


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
    from exporter.setting_values import parse_listen_address
    from exporter.simulator import SimClock, new_world, run_simulator

    try:
        host, port = parse_listen_address(args.listen)
    except ValueError as exc:
        raise ConfigError([f"--web.listen-address: {exc}"]) from None
    if args.runs < 0:
        raise ConfigError(["--runs: must be 0 or more"])
    if args.speed <= 0:
        raise ConfigError(["--speed: must be above 0"])
    api_key = simulator_key(args)
    setup_logging(args.log_level, "logfmt", [api_key] if api_key else [])
    world = new_world(
        args.provider,
        runs=args.runs,
        seed=args.seed,
        clock=SimClock(speed=args.speed),
        api_key=api_key,
        scenario=scenario_from(args),
        step_order=args.step_order,
    )
    log.info(
        "simulating a provider's API",
        extra={"provider": args.provider, "address": args.listen, "runs": args.runs},
    )
    try:
        server = run_simulator(host or "0.0.0.0", port, world, faults_from(args, args.provider))
        asyncio.run(serve_until_stopped(server))
    except OSError as exc:
        raise ConfigError(
            [f"--web.listen-address: cannot listen on {args.listen}: {exc.strerror}"]
        ) from None
    return 0

#!/usr/bin/env python3
"""Regenerate prometheusrule.yaml from deploy/prometheus/alerts.yml, the one source of the rules.

    python deploy/kubernetes/sync_prometheusrule.py           # rewrite prometheusrule.yaml
    python deploy/kubernetes/sync_prometheusrule.py --check   # exit 1 if it is out of date

The rule file's ``groups:`` block is copied as text, indented under ``spec:``, so the comments
that explain each rule survive. The result is parsed back and its ``spec.groups`` compared with
the rule file's ``groups`` before anything is written. A rule that reads a ``finetune_*`` family
the metrics contract (``exporter.contract``) does not define is refused: shipped to a cluster, it
would never fire.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from exporter import contract

HERE = Path(__file__).resolve().parent
DEFAULT_SOURCE = HERE.parent / "prometheus" / "alerts.yml"
DEFAULT_TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# Generated from deploy/prometheus/alerts.yml by deploy/kubernetes/sync_prometheusrule.py.
# Do not edit: change alerts.yml and run the script (CI runs it with --check).
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: finetune-exporter
  labels:
    app.kubernetes.io/name: finetune-exporter
spec:
"""


class SyncError(Exception):
    """The rule file cannot be turned into a PrometheusRule."""


_FAMILY = re.compile(rf"\b{contract.PREFIX}_\w+")


def contract_names() -> frozenset[str]:
    """Every sample name the contract fixes, and the labels that share its prefix."""
    families = (v for v in vars(contract).values() if isinstance(v, contract.Family))
    return frozenset({family.sample for family in families} | set(contract.RUN_LABELS))


def unknown_families(rules: Any) -> list[str]:
    """``finetune_*`` names in the rules' expressions that the contract does not define. Step
    families (``finetune_step_<metric>``) are open-ended, one per provider metric, so any name
    that the contract's sanitising would produce unchanged passes."""
    known = contract_names()
    unknown: set[str] = set()
    for group in rules.get("groups") or []:
        for rule in group.get("rules") or []:
            for name in _FAMILY.findall(str(rule.get("expr", ""))):
                suffix = name.removeprefix(contract.STEP_PREFIX)
                step = name.startswith(contract.STEP_PREFIX)
                if name not in known and not (step and contract.metric_label(suffix) == suffix):
                    unknown.add(name)
    return sorted(unknown)


def render(rules_text: str) -> str:
    """The PrometheusRule manifest whose ``spec.groups`` are the groups of ``rules_text``."""
    rules = yaml.safe_load(rules_text)
    if not isinstance(rules, dict) or set(rules) != {"groups"}:
        raise SyncError("the rule file must hold exactly one top-level key, 'groups'")
    unknown = unknown_families(rules)
    if unknown:
        raise SyncError(f"not in exporter.contract: {', '.join(unknown)}")
    lines = rules_text.splitlines()
    try:
        start = lines.index("groups:")
    except ValueError:
        raise SyncError("the rule file has no unindented 'groups:' line") from None
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    manifest = HEADER + body
    parsed: Any = yaml.safe_load(manifest)
    if parsed["spec"]["groups"] != rules["groups"]:
        raise SyncError("the rule file's layout defeats the copy; spec.groups would differ")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if the target is stale"
    )
    parser.add_argument("--source", type=Path, default=DEFAULT_SOURCE, help="the rule file")
    parser.add_argument("--target", type=Path, default=DEFAULT_TARGET, help="the manifest")
    args = parser.parse_args(argv)
    source: Path = args.source
    target: Path = args.target

    try:
        manifest = render(source.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError, SyncError) as exc:
        print(f"{source}: {exc}", file=sys.stderr)
        return 2
    try:
        current = target.read_text(encoding="utf-8")
    except FileNotFoundError:
        current = None
    if args.check:
        if current != manifest:
            print(f"{target} is out of date: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    if current != manifest:
        target.write_text(manifest, encoding="utf-8")
        print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The sharded StatefulSet example: valid, and its shard count matches its replicas."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from exporter.settings import spelling
from tests.deploy.test_kubernetes import KEYS, NAME, required_tool

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes" / "statefulset-sharded.yaml"


def load() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    return loaded


def test_passes_strict_schema_validation() -> None:
    validate = required_tool("kubernetes-validate", "pip install kubernetes-validate")
    done = subprocess.run(
        [validate, "--strict", str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_replica_gets_its_own_shard() -> None:
    spec = load()["spec"]
    (container,) = spec["template"]["spec"]["containers"]
    assert f"--shard.count={spec['replicas']}" in container["args"]
    (variable,) = spelling("shard_index").env
    (index,) = [e for e in container["env"] if e["name"] == variable]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_keys_come_from_the_deployment_secret_like_the_deployment() -> None:
    (container,) = load()["spec"]["template"]["spec"]["containers"]
    refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"]
        for e in container["env"]
        if "secretKeyRef" in e["valueFrom"]
    }
    assert refs == {
        variable: {"name": NAME, "key": entry, "optional": True} for variable, entry in KEYS.items()
    }
    assert load()["spec"]["serviceName"] == NAME

"""The sharded StatefulSet example: valid, and its shard count matches its replicas."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.deploy.test_kubernetes import required_tool

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
    (index,) = [e for e in container["env"] if e["name"] == "COHERE_EXPORTER_SHARD_INDEX"]
    assert index["valueFrom"]["fieldRef"]["fieldPath"] == (
        "metadata.labels['apps.kubernetes.io/pod-index']"
    )
    assert container["securityContext"]["readOnlyRootFilesystem"] is True

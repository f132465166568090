"""deploy/kubernetes: renders with kustomize, validates, carries the settings the brief asks for."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from exporter import __version__
from exporter.settings import spelling

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
SYNC = KUBE / "sync_prometheusrule.py"
NAME = "finetune-exporter"
NAME_LABEL = {"app.kubernetes.io/name": NAME}
# Each provider's key: the variable the exporter reads and the Secret entry it comes from.
KEYS = {"CO_API_KEY": "cohere-api-key", "TOGETHER_API_KEY": "together-api-key"}
BUILT_IN_KINDS = ("Deployment", "Service")


def required_tool(name: str, hint: str) -> str:
    """Path of a command-line tool: skipped where absent and CI unset, a failure in CI."""
    beside_python = Path(sys.executable).parent / name
    path = str(beside_python) if beside_python.is_file() else shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI ({hint})")
        pytest.skip(f"{name} not installed ({hint})")
    return path


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    kubectl = required_tool("kubectl", "Debian package kubernetes-client")
    done = run(kubectl, "kustomize", str(KUBE))
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def only(rendered: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [doc for doc in rendered if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} documents of kind {kind}"
    return found[0]


@pytest.fixture
def container(rendered: list[dict[str, Any]]) -> dict[str, Any]:
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    exporter: dict[str, Any] = pod["containers"][0]
    return exporter


# -- the PrometheusRule mirrors alerts.yml -----------------------------------------------------


def test_prometheusrule_groups_are_the_alert_rule_groups() -> None:
    manifest = load_yaml(KUBE / "prometheusrule.yaml")
    assert manifest["apiVersion"] == "monitoring.coreos.com/v1"
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"]["groups"] == load_yaml(ALERTS)["groups"]


def test_sync_script_finds_prometheusrule_current() -> None:
    done = run(sys.executable, str(SYNC), "--check")
    assert done.returncode == 0, done.stderr


def test_sync_script_detects_and_repairs_drift(tmp_path: Path) -> None:
    target = tmp_path / "prometheusrule.yaml"
    committed = (KUBE / "prometheusrule.yaml").read_text(encoding="utf-8")
    target.write_text(committed.replace("for: 10m", "for: 1m", 1), encoding="utf-8")
    check = (sys.executable, str(SYNC), "--source", str(ALERTS), "--target", str(target))

    stale = run(*check, "--check")
    assert stale.returncode == 1
    assert "out of date" in stale.stderr

    assert run(*check).returncode == 0
    assert target.read_text(encoding="utf-8") == committed
    assert run(*check, "--check").returncode == 0


def test_sync_script_refuses_families_outside_the_contract(tmp_path: Path) -> None:
    source = tmp_path / "alerts.yml"
    rules = load_yaml(ALERTS)
    rules["groups"][0]["rules"][0]["expr"] += " or cohere_finetune_up or finetune_model_up"
    source.write_text(yaml.safe_dump(rules), encoding="utf-8")
    done = run(sys.executable, str(SYNC), "--source", str(source), "--target", str(tmp_path / "o"))
    assert done.returncode == 2
    assert "finetune_model_up" in done.stderr
    assert "cohere_finetune_up" not in done.stderr  # another prefix: not the contract's business
    assert not (tmp_path / "o").exists()


def test_sync_script_refuses_extra_top_level_keys(tmp_path: Path) -> None:
    source = tmp_path / "alerts.yml"
    source.write_text("groups: []\nextra: 1\n", encoding="utf-8")
    done = run(sys.executable, str(SYNC), "--source", str(source), "--target", str(tmp_path / "o"))
    assert done.returncode == 2
    assert not (tmp_path / "o").exists()


# -- the kustomization -------------------------------------------------------------------------


def test_secret_is_created_by_hand_not_by_the_kustomization() -> None:
    text = (KUBE / "kustomization.yaml").read_text(encoding="utf-8")
    kustomization = yaml.safe_load(text)
    assert "secret.example.yaml" not in kustomization["resources"]
    assert f"kubectl -n monitoring create secret generic {NAME}" in text
    for entry in KEYS.values():
        assert f"--from-literal={entry}=" in text
    example = load_yaml(KUBE / "secret.example.yaml")
    assert example["kind"] == "Secret"
    assert example["metadata"]["name"] == NAME
    assert set(example["stringData"]) == set(KEYS.values())


def test_renders_four_labelled_objects_in_monitoring(rendered: list[dict[str, Any]]) -> None:
    assert sorted(doc["kind"] for doc in rendered) == [
        "Deployment",
        "PrometheusRule",
        "Service",
        "ServiceMonitor",
    ]
    for doc in rendered:
        assert doc["metadata"]["namespace"] == "monitoring", doc["kind"]
        assert doc["metadata"]["labels"].items() >= NAME_LABEL.items(), doc["kind"]


def test_built_in_kinds_pass_strict_schema_validation(
    rendered: list[dict[str, Any]], tmp_path: Path
) -> None:
    validate = required_tool("kubernetes-validate", "pip install kubernetes-validate")
    manifests = tmp_path / "built-in.yaml"
    docs = [doc for doc in rendered if doc["kind"] in BUILT_IN_KINDS]
    assert len(docs) == len(BUILT_IN_KINDS)
    manifests.write_text(yaml.safe_dump_all(docs), encoding="utf-8")
    done = run(validate, "--strict", str(manifests))
    assert done.returncode == 0, done.stdout + done.stderr


def test_rendered_prometheusrule_is_unchanged(rendered: list[dict[str, Any]]) -> None:
    rule = only(rendered, "PrometheusRule")
    assert rule["spec"]["groups"] == load_yaml(ALERTS)["groups"]


# -- the Deployment ----------------------------------------------------------------------------


def test_deployment_runs_one_poller(rendered: list[dict[str, Any]]) -> None:
    spec = only(rendered, "Deployment")["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"] == NAME_LABEL
    assert spec["template"]["metadata"]["labels"].items() >= NAME_LABEL.items()


def test_container_image_args_and_port(container: dict[str, Any]) -> None:
    assert container["image"] == f"{NAME}:{__version__}"
    # No --providers and no key file: the keys present in the Secret choose the providers.
    assert container["args"] == ["serve", "--web.listen-address=:10042"]
    assert container["ports"] == [{"name": "http", "containerPort": 10042, "protocol": "TCP"}]


def test_pod_and_container_are_locked_down(
    rendered: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    pod = only(rendered, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    security = container["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == 10001
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}


def test_container_resources(container: dict[str, Any]) -> None:
    assert container["resources"] == {
        "requests": {"cpu": "10m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def test_container_probes(container: dict[str, Any]) -> None:
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}


def key_variables(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        env["name"]: env["valueFrom"]["secretKeyRef"]
        for env in container.get("env", [])
        if "secretKeyRef" in env.get("valueFrom", {})
    }


def test_each_api_key_is_an_optional_entry_of_the_secret(
    rendered: list[dict[str, Any]], container: dict[str, Any]
) -> None:
    """Either key may be missing: that provider is then not polled, and the pod still starts.
    The keys travel as variables only: no key file, no volume, no flag naming one."""
    refs = key_variables(container)
    assert set(refs) == set(KEYS)
    for variable, entry in KEYS.items():
        assert refs[variable] == {"name": NAME, "key": entry, "optional": True}, variable
    assert "volumes" not in only(rendered, "Deployment")["spec"]["template"]["spec"]
    assert not container.get("volumeMounts")
    assert not any("api-key" in arg for arg in container["args"])


def test_the_key_variables_are_those_the_exporter_reads() -> None:
    for provider, variable in (("cohere", "CO_API_KEY"), ("together", "TOGETHER_API_KEY")):
        assert variable in spelling(f"{provider}_api_key").env, provider
        assert KEYS[variable] == f"{provider}-api-key"


# -- Service and ServiceMonitor ----------------------------------------------------------------


def test_service_exposes_http(rendered: list[dict[str, Any]]) -> None:
    service = only(rendered, "Service")
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 10042, "targetPort": "http", "protocol": "TCP"}
    ]
    assert service["spec"]["selector"] == NAME_LABEL


def test_servicemonitor_scrapes_the_service_as_the_alerted_job(
    rendered: list[dict[str, Any]],
) -> None:
    monitor = only(rendered, "ServiceMonitor")
    service = only(rendered, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    selector: dict[str, str] = monitor["spec"]["selector"]["matchLabels"]
    assert service["metadata"]["labels"].items() >= selector.items()
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == "http"
    assert endpoint["interval"] == "60s"
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', ALERTS.read_text(encoding="utf-8")))
    assert len(jobs) == 1
    relabel = [r for r in endpoint["relabelings"] if r.get("targetLabel") == "job"]
    assert [r["replacement"] for r in relabel] == sorted(jobs)

"""What the schema validators (``make deploy-lint``) cannot see: the files agree with the code."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import yaml

from tollway.devstack.stack import SERVICES

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return data


def _k8s() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    return docs


def _module_exists(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def test_compose_runs_every_service_as_an_existing_module() -> None:
    services = _compose()["services"]
    commands = {name: s["command"][0] for name, s in services.items() if "command" in s}
    assert {f"tollway.{s}" for s in SERVICES} <= set(commands.values())
    assert all(_module_exists(m) for m in commands.values()), commands


def test_compose_dependencies_name_defined_services_with_healthchecks() -> None:
    services = _compose()["services"]
    for name, service in services.items():
        for dep, cond in (service.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            if cond["condition"] == "service_healthy":
                assert "healthcheck" in services[dep], f"{dep} has no healthcheck"
    assert all("healthcheck" in services[s] for s in SERVICES)


def test_kubernetes_runs_every_service_and_refers_only_to_defined_config() -> None:
    docs = _k8s()
    defined = {(d["kind"], d["metadata"]["name"]) for d in docs}
    pods = [d["spec"]["template"]["spec"] for d in docs if d["kind"] in {"Deployment", "Job"}]
    modules = {c["args"][0] for p in pods for c in p["containers"]}
    assert {f"tollway.{s}" for s in SERVICES} <= modules
    assert all(_module_exists(m) for m in modules), modules
    for pod in pods:
        for source in (e for c in pod["containers"] for e in c.get("envFrom", [])):
            kind, ref = (
                ("ConfigMap", "configMapRef")
                if "configMapRef" in source
                else ("Secret", "secretRef")
            )
            assert (kind, source[ref]["name"]) in defined


def test_autoscalers_target_existing_deployments_of_edge_and_router() -> None:
    docs = _k8s()
    deployments = {d["metadata"]["name"] for d in docs if d["kind"] == "Deployment"}
    targets = {
        d["spec"]["scaleTargetRef"]["name"] for d in docs if d["kind"] == "HorizontalPodAutoscaler"
    }
    assert targets == {"tollway-edge", "tollway-router"}
    assert targets <= deployments

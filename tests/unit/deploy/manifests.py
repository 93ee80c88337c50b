"""Render the kustomize overlays and walk what they produce (helpers for the deploy checks).

Rendering uses ``kubectl kustomize`` (or a standalone ``kustomize build``); when neither
is on PATH, ``scripts/install-deploy-tools.sh`` puts kubectl into the venv, which is
looked up next to the running interpreter.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import yaml

REPO = pathlib.Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy" / "k8s"
BASE = DEPLOY / "base"
OVERLAYS = ("dev", "prod")
INSTALL_HINT = "run `scripts/install-deploy-tools.sh` (the Makefile's test-deps target) once on this machine"

Manifest = dict[str, Any]

_POD_TEMPLATE_PATHS = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
}


def kustomize_command(directory: pathlib.Path) -> list[str]:
    """The command that renders ``directory``; raises ``FileNotFoundError`` when no tool is found."""
    venv_bin = pathlib.Path(sys.executable).parent
    kubectl = shutil.which("kubectl") or shutil.which("kubectl", path=str(venv_bin))
    if kubectl:
        return [kubectl, "kustomize", str(directory)]
    kustomize = shutil.which("kustomize") or shutil.which("kustomize", path=str(venv_bin))
    if kustomize:
        return [kustomize, "build", str(directory)]
    raise FileNotFoundError(f"neither kubectl nor kustomize is installed: {INSTALL_HINT}")


def render(directory: pathlib.Path) -> list[Manifest]:
    """Render a kustomization and return its objects; a failure carries kustomize's message."""
    # Rendering needs no cluster: keep a developer's kubeconfig out of it.
    env = {**os.environ, "KUBECONFIG": os.devnull}
    result = subprocess.run(
        kustomize_command(directory), capture_output=True, text=True, timeout=120, env=env, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"rendering {directory} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def name_of(obj: Manifest) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def of_kind(objects: list[Manifest], kind: str) -> list[Manifest]:
    return [obj for obj in objects if obj["kind"] == kind]


def one(objects: list[Manifest], kind: str, name: str) -> Manifest:
    found = [obj for obj in of_kind(objects, kind) if obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected exactly one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_templates(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest]]:
    """(owner, pod template) for every object that runs pods."""
    for obj in objects:
        if obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]
        elif obj["kind"] == "Pod":
            yield obj, obj
        elif obj["kind"] in _POD_TEMPLATE_PATHS:
            first, second = _POD_TEMPLATE_PATHS[obj["kind"]]
            yield obj, obj[first][second]


def containers(pod_spec: Manifest) -> Iterator[Manifest]:
    for key in ("initContainers", "containers", "ephemeralContainers"):
        yield from pod_spec.get(key) or []


def all_containers(objects: list[Manifest]) -> Iterator[tuple[Manifest, Manifest, Manifest]]:
    """(owner, pod spec, container) for every container of every pod template."""
    for owner, template in pod_templates(objects):
        spec = template["spec"]
        for container in containers(spec):
            yield owner, spec, container


def config_map_data(objects: list[Manifest], prefix: str) -> dict[str, str]:
    """The data of the one ConfigMap whose (hash-suffixed) name starts with ``prefix``."""
    found = [cm for cm in of_kind(objects, "ConfigMap") if cm["metadata"]["name"].startswith(prefix)]
    assert len(found) == 1, f"expected one ConfigMap named {prefix}*, found {[name_of(c) for c in found]}"
    data: dict[str, str] = found[0].get("data") or {}
    return data


def prometheus_rule_groups(objects: list[Manifest]) -> list[Manifest]:
    rules = of_kind(objects, "PrometheusRule")
    assert len(rules) == 1, "expected exactly one PrometheusRule"
    groups: list[Manifest] = rules[0]["spec"]["groups"]
    return groups


def alerting_rules(objects: list[Manifest]) -> list[Manifest]:
    return [rule for group in prometheus_rule_groups(objects) for rule in group["rules"] if "alert" in rule]

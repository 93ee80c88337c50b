"""Both overlays render, and every object they produce is valid Kubernetes, offline."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
from kubernetes_validate.utils import latest_version

from .conftest import rendered_overlay
from .crd_schemas import CRD_SCHEMAS
from .manifests import Manifest, name_of, of_kind

# The oldest Kubernetes release kleer-sync supports (deploy/README.md) and the newest
# one kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", latest_version())

KINDS_EVERY_OVERLAY_HAS = {
    "Namespace": 1,
    "ServiceAccount": 1,
    "ConfigMap": 3,
    "Deployment": 5,
    "Service": 5,
    "HorizontalPodAutoscaler": 2,
    "PodDisruptionBudget": 3,
    "Job": 1,
    "Ingress": 2,
    "NetworkPolicy": 4,
    "KafkaTopic": 3,
    "ServiceMonitor": 1,
    "PrometheusRule": 1,
}


def test_overlay_renders_every_kind_of_object(objects: list[Manifest]) -> None:
    counts: dict[str, int] = {}
    for obj in objects:
        counts[obj["kind"]] = counts.get(obj["kind"], 0) + 1
    assert counts == KINDS_EVERY_OVERLAY_HAS


def test_overlay_puts_every_namespaced_object_in_its_namespace(overlay: str, objects: list[Manifest]) -> None:
    (namespace,) = of_kind(objects, "Namespace")
    expected = namespace["metadata"]["name"]
    assert expected == {"dev": "kleer-sync-dev", "prod": "kleer-sync"}[overlay]
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == expected, name_of(obj)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_builtin_object_validates_against_the_kubernetes_schema(
    objects: list[Manifest], version: str
) -> None:
    problems = []
    for obj in objects:
        if (obj["apiVersion"], obj["kind"]) in CRD_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            path = ".".join(str(part) for part in error.path)
            problems.append(f"{name_of(obj)}: {path}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as missing:
            problems.append(f"{name_of(obj)}: {missing.message}")
    assert not problems, "\n".join(problems)


def test_every_custom_resource_matches_its_structural_schema(objects: list[Manifest]) -> None:
    problems = []
    for obj in objects:
        schema = CRD_SCHEMAS.get((obj["apiVersion"], obj["kind"]))
        if schema is None:
            continue
        for error in jsonschema.Draft202012Validator(schema).iter_errors(obj):
            problems.append(f"{name_of(obj)}: {'.'.join(map(str, error.path))}: {error.message}")
    assert not problems, "\n".join(problems)


def test_schema_check_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(of_kind(rendered_overlay("prod"), "Deployment")[0])
    deployment["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFileSystem"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSIONS[0], strict=True)


def test_crd_check_rejects_a_misspelt_field() -> None:
    (topic,) = of_kind(rendered_overlay("prod"), "KafkaTopic")[:1]
    broken = copy.deepcopy(topic)
    broken["spec"]["partition"] = broken["spec"].pop("partitions")
    schema = CRD_SCHEMAS[(topic["apiVersion"], topic["kind"])]
    assert not list(jsonschema.Draft202012Validator(schema).iter_errors(topic))
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(broken))

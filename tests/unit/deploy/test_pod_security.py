"""Every container runs non-root on a read-only root filesystem with no capabilities, within limits."""

from __future__ import annotations

import re
from typing import Any

from .manifests import REPO, Manifest, all_containers, name_of, pod_templates


def _effective(pod_spec: Manifest, container: Manifest, key: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    value = (container.get("securityContext") or {}).get(key)
    if value is None:
        value = (pod_spec.get("securityContext") or {}).get(key)
    return value


def test_every_container_runs_as_non_root(objects: list[Manifest]) -> None:
    for owner, pod_spec, container in all_containers(objects):
        where = f"{name_of(owner)} container {container['name']}"
        assert _effective(pod_spec, container, "runAsNonRoot") is True, where
        user = _effective(pod_spec, container, "runAsUser")
        assert isinstance(user, int) and user > 0, f"{where}: runAsUser must be a numeric non-root UID"
        assert (container.get("securityContext") or {}).get("allowPrivilegeEscalation") is False, where
        assert not (container.get("securityContext") or {}).get("privileged"), where


def test_every_container_has_a_read_only_root_filesystem(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        assert container["securityContext"]["readOnlyRootFilesystem"] is True, name_of(owner)


def test_every_container_drops_all_capabilities(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        capabilities = container["securityContext"].get("capabilities") or {}
        assert capabilities.get("drop") == ["ALL"], name_of(owner)
        assert not capabilities.get("add"), name_of(owner)


def test_every_container_uses_the_runtime_default_seccomp_profile(objects: list[Manifest]) -> None:
    for owner, pod_spec, container in all_containers(objects):
        assert _effective(pod_spec, container, "seccompProfile") == {"type": "RuntimeDefault"}, name_of(owner)


def test_every_container_gets_a_writable_tmp_from_an_empty_dir(objects: list[Manifest]) -> None:
    for owner, pod_spec, container in all_containers(objects):
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        assert "/tmp" in mounts, name_of(owner)
        volume = next(v for v in pod_spec["volumes"] if v["name"] == mounts["/tmp"])
        assert "emptyDir" in volume and volume["emptyDir"].get("sizeLimit"), name_of(owner)


def test_every_container_has_cpu_and_memory_requests_and_limits(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        resources = container["resources"]
        for bound in ("requests", "limits"):
            assert set(resources.get(bound, {})) >= {"cpu", "memory"}, f"{name_of(owner)} {bound}"


def test_no_pod_mounts_a_service_account_token_or_shares_host_namespaces(objects: list[Manifest]) -> None:
    for owner, template in pod_templates(objects):
        spec = template["spec"]
        assert spec.get("automountServiceAccountToken") is False, name_of(owner)
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            assert not spec.get(host), f"{name_of(owner)} {host}"


def test_long_running_processes_have_health_and_readiness_probes(objects: list[Manifest]) -> None:
    for owner, _, container in all_containers(objects):
        if owner["kind"] != "Deployment":
            continue
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name_of(owner)
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name_of(owner)


def test_pods_run_as_the_uid_the_image_creates(objects: list[Manifest]) -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    match = re.search(r"^USER\s+(\d+)", dockerfile, re.M)
    assert match, "the Dockerfile must switch to a numeric USER"
    for owner, pod_spec, container in all_containers(objects):
        assert _effective(pod_spec, container, "runAsUser") == int(match[1]), name_of(owner)

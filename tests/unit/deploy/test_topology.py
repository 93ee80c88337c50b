"""The manifests are wired together: commands, scaling, topics, routes, probes, policies."""

from __future__ import annotations

from urllib.parse import urlparse

import pytest

from libs.mapping.loader import parse_mappings
from services.topics import all_topic_names

from .manifests import Manifest, config_map_data, name_of, of_kind, one

COMMANDS = {
    "kleer-sync-inbound": ["inbound"],
    "kleer-sync-handlers": ["inbound", "handlers"],
    "kleer-sync-pusher": ["outbound", "pusher"],
    "kleer-sync-poller": ["outbound", "poller"],
    "kleer-sync-relay": ["relay"],
}
PARTITIONS = {"dev": 3, "prod": 12}
METRICS_PORT = 9102


def _container(deployment: Manifest) -> Manifest:
    containers: list[Manifest] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, name_of(deployment)
    return containers[0]


def _hpa_for(objects: list[Manifest], deployment: str) -> Manifest | None:
    found = [
        h
        for h in of_kind(objects, "HorizontalPodAutoscaler")
        if h["spec"]["scaleTargetRef"]["name"] == deployment
    ]
    return found[0] if found else None


def test_each_process_runs_its_kleer_sync_subcommand(objects: list[Manifest]) -> None:
    deployments = {d["metadata"]["name"]: _container(d)["args"] for d in of_kind(objects, "Deployment")}
    assert deployments == COMMANDS
    job = one(objects, "Job", "kleer-sync-db-migrate")
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["db", "migrate"]


def test_every_container_runs_the_same_tagged_release_image(objects: list[Manifest]) -> None:
    images = {
        c["image"]
        for d in of_kind(objects, "Deployment") + of_kind(objects, "Job")
        for c in d["spec"]["template"]["spec"]["containers"]
    }
    assert len(images) == 1, images
    (image,) = images
    tag = image.rsplit(":", 1)[-1] if "@" not in image else None
    assert "@sha256:" in image or (tag and tag != "latest" and "/" not in tag), image


def test_inbound_keeps_two_replicas_and_scales_on_cpu(objects: list[Manifest]) -> None:
    hpa = _hpa_for(objects, "kleer-sync-inbound")
    assert hpa is not None
    assert hpa["spec"]["minReplicas"] >= 2
    assert [m["resource"]["name"] for m in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in one(objects, "Deployment", "kleer-sync-inbound")["spec"], "the HPA owns replicas"


@pytest.mark.parametrize("name", ["kleer-sync-poller", "kleer-sync-relay"])
def test_lock_holding_processes_run_one_replica_recreated(name: str, objects: list[Manifest]) -> None:
    deployment = one(objects, "Deployment", name)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    assert _hpa_for(objects, name) is None


def test_topics_are_the_ones_the_relay_publishes_to(objects: list[Manifest]) -> None:
    prefix = config_map_data(objects, "kleer-sync-config")["KAFKA_TOPIC_PREFIX"]
    topics = {t["spec"].get("topicName", t["metadata"]["name"]) for t in of_kind(objects, "KafkaTopic")}
    assert topics == set(all_topic_names(prefix))


def test_topics_have_the_overlay_partition_count(overlay: str, objects: list[Manifest]) -> None:
    topics = of_kind(objects, "KafkaTopic")
    assert {t["spec"]["partitions"] for t in topics} == {PARTITIONS[overlay]}
    for topic in topics:
        assert topic["spec"]["config"]["min.insync.replicas"] <= topic["spec"]["replicas"], name_of(topic)


def test_relay_partitions_by_the_topics_partition_count(overlay: str, objects: list[Manifest]) -> None:
    # The relay computes each record's partition from KAFKA_PARTITIONS: a mismatch would
    # leave partitions unused or send a record's events to two partitions.
    assert int(config_map_data(objects, "kleer-sync-config")["KAFKA_PARTITIONS"]) == PARTITIONS[overlay]


def test_consumers_never_outnumber_partitions(overlay: str, objects: list[Manifest]) -> None:
    pusher = _hpa_for(objects, "kleer-sync-pusher")
    assert pusher is not None and pusher["spec"]["maxReplicas"] <= PARTITIONS[overlay]
    assert one(objects, "Deployment", "kleer-sync-handlers")["spec"]["replicas"] <= PARTITIONS[overlay]


def test_every_deployment_has_a_disruption_budget_or_is_a_singleton(objects: list[Manifest]) -> None:
    budgets = [b["spec"]["selector"]["matchLabels"] for b in of_kind(objects, "PodDisruptionBudget")]
    for deployment in of_kind(objects, "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covered = any(all(labels.get(k) == v for k, v in budget.items()) for budget in budgets)
        assert covered or deployment["spec"].get("replicas") == 1, name_of(deployment)


def test_inbound_drains_before_it_is_killed(objects: list[Manifest]) -> None:
    pod = one(objects, "Deployment", "kleer-sync-inbound")["spec"]["template"]["spec"]
    command = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    assert 0 < int(command[1]) < pod["terminationGracePeriodSeconds"] - 10


def test_mappings_file_is_mounted_from_its_config_map(objects: list[Manifest]) -> None:
    mappings_file = config_map_data(objects, "kleer-sync-config")["MAPPINGS_FILE"]
    directory, filename = mappings_file.rsplit("/", 1)
    assert filename in config_map_data(objects, "kleer-sync-mappings")
    for deployment in of_kind(objects, "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
        assert directory in mounts, name_of(deployment)
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[directory])
        assert volume["configMap"]["name"].startswith("kleer-sync-mappings-"), name_of(deployment)


def test_mappings_file_is_accepted_by_the_mapping_loader(objects: list[Manifest]) -> None:
    (text,) = config_map_data(objects, "kleer-sync-mappings").values()
    parse_mappings(text, "deploy/k8s/base/config/mappings.yaml")  # raises MappingsFileError with the fix


def test_ingress_host_is_the_public_base_url_host(objects: list[Manifest]) -> None:
    public = urlparse(config_map_data(objects, "kleer-sync-config")["PUBLIC_BASE_URL"])
    assert public.scheme == "https"
    for ingress in of_kind(objects, "Ingress"):
        assert [rule["host"] for rule in ingress["spec"]["rules"]] == [public.hostname], name_of(ingress)
        assert ingress["spec"]["tls"][0]["hosts"] == [public.hostname], name_of(ingress)


def test_ingress_routes_hubspot_paths_to_the_inbound_http_port(objects: list[Manifest]) -> None:
    routes = {
        path["path"]: path["backend"]["service"]
        for ingress in of_kind(objects, "Ingress")
        for rule in ingress["spec"]["rules"]
        for path in rule["http"]["paths"]
    }
    assert {"/webhooks", "/actions"} <= set(routes)
    service = one(objects, "Service", "kleer-sync-inbound")
    http = next(p for p in service["spec"]["ports"] if p["name"] == "http")
    for path, backend in routes.items():
        assert backend == {"name": "kleer-sync-inbound", "port": {"name": "http"}}, path
    container_ports = {
        p["name"]: p["containerPort"]
        for p in _container(one(objects, "Deployment", "kleer-sync-inbound"))["ports"]
    }
    assert container_ports[http["targetPort"]] == int(config_map_data(objects, "kleer-sync-config")["PORT"])


def test_every_process_is_scraped_once_on_its_metrics_port(objects: list[Manifest]) -> None:
    assert int(config_map_data(objects, "kleer-sync-config")["METRICS_PORT"]) == METRICS_PORT
    (monitor,) = of_kind(objects, "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    scraped = [
        s
        for s in of_kind(objects, "Service")
        if all(s["metadata"]["labels"].get(k) == v for k, v in selector.items())
    ]
    for deployment in of_kind(objects, "Deployment"):
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        services = [
            s for s in scraped if all(pod_labels.get(k) == v for k, v in s["spec"]["selector"].items())
        ]
        assert len(services) == 1, f"{name_of(deployment)} is behind {len(services)} scraped Services"
        ports = {p["name"]: p for p in services[0]["spec"]["ports"]}
        assert ports["metrics"]["targetPort"] == "metrics"
        container_ports = {p["name"]: p["containerPort"] for p in _container(deployment)["ports"]}
        assert container_ports["metrics"] == METRICS_PORT, name_of(deployment)
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]


def test_network_policies_admit_only_ingress_and_monitoring_and_the_needed_egress(
    objects: list[Manifest],
) -> None:
    policies = {p["metadata"]["name"]: p["spec"] for p in of_kind(objects, "NetworkPolicy")}
    deny = policies["kleer-sync-default-deny"]
    assert (
        set(deny["policyTypes"]) == {"Ingress", "Egress"} and "ingress" not in deny and "egress" not in deny
    )
    admitted = {}
    for spec in policies.values():
        for rule in spec.get("ingress", []):
            for source in rule["from"]:
                namespace = source["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
                admitted[namespace] = [p["port"] for p in rule["ports"]]
    assert admitted == {"ingress-nginx": ["http"], "monitoring": ["metrics"]}
    inbound = policies["kleer-sync-inbound-from-ingress"]["podSelector"]["matchLabels"]
    assert inbound["app.kubernetes.io/component"] == "inbound"
    egress_ports = {
        (port["port"], port.get("protocol", "TCP"))
        for spec in policies.values()
        for rule in spec.get("egress", [])
        for port in rule["ports"]
    }
    assert egress_ports == {
        (53, "UDP"),
        (53, "TCP"),
        (5432, "TCP"),
        (9092, "TCP"),
        (9093, "TCP"),
        (443, "TCP"),
    }


def test_grafana_dashboard_config_map_is_labelled_for_the_sidecar(objects: list[Manifest]) -> None:
    dashboard = one(objects, "ConfigMap", "kleer-sync-grafana-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"

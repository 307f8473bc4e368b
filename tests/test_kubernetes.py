"""deploy/kubernetes/: every manifest is valid against the Kubernetes schemas (offline, by
`kubernetes-validate`), and its names, ports and settings agree with each other, with
ring.toml and with the settings DPS accepts.

No cluster nor kustomize binary is needed: the kustomization is read as kustomize reads
it (its resources, and the ConfigMap its generator makes), which is what these checks
need.
"""

from __future__ import annotations

import os
import re
from typing import Any

import kubernetes_validate
import pytest
import yaml

from app import settings
from app.ring import load
from app.roles import GRACEFUL_SHUTDOWN
from tests.support import ROOT

DEPLOY = ROOT / "deploy" / "kubernetes"
VERSIONS = ["1.30.0", "1.37.0"]  # the oldest Kubernetes these manifests target, the newest
DRAIN_MARGIN = 5  # seconds of grace beyond preStop and the drain


def kustomization() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    return data


def generated() -> list[dict[str, Any]]:
    """The ConfigMaps the kustomization generates (before kustomize's name suffix)."""
    maps = []
    for generator in kustomization()["configMapGenerator"]:
        files = {name: (DEPLOY / name).read_text() for name in generator["files"]}
        maps.append(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": generator["name"]},
             "data": files}
        )  # fmt: skip
    return maps


def resources() -> list[dict[str, Any]]:
    docs = []
    for name in kustomization()["resources"]:
        docs += [doc for doc in yaml.safe_load_all((DEPLOY / name).read_text()) if doc]
    return docs + generated()


def one(kind: str, name: str) -> dict[str, Any]:
    [found] = [r for r in resources() if r["kind"] == kind and r["metadata"]["name"] == name]
    return found


def container(workload: dict[str, Any]) -> dict[str, Any]:
    [found] = workload["spec"]["template"]["spec"]["containers"]
    return found


def env(workload: dict[str, Any]) -> dict[str, Any]:
    """name -> value, or the valueFrom for those taken from elsewhere."""
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(workload)["env"]}


def expanded(value: str, variables: dict[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in an env value."""
    return re.sub(r"\$\(([A-Z_]+)\)", lambda m: variables[m.group(1)], value)


TOPIC_SERVERS = one("StatefulSet", "dps-ts")
GATEWAYS = one("Deployment", "dps-gateway")


def test_every_yaml_file_is_a_resource_of_the_kustomization() -> None:
    listed = set(kustomization()["resources"])
    on_disk = {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_is_valid_against_the_kubernetes_schemas(version: str) -> None:
    for resource in resources():
        kubernetes_validate.validate(resource, version, strict=True)


def test_the_validation_catches_a_mistake() -> None:
    broken = one("Deployment", "dps-gateway")
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[0], strict=True)


def test_the_topic_servers_pods_are_the_servers_ring_toml_declares() -> None:
    ring = load(DEPLOY / "ring.toml")
    name, replicas = TOPIC_SERVERS["metadata"]["name"], TOPIC_SERVERS["spec"]["replicas"]
    pods = [f"{name}-{i}" for i in range(replicas)]
    assert replicas >= 2 and set(pods) <= set(ring.servers)
    # Spare names continue the StatefulSet's own numbering, for scaling up in place.
    assert sorted(ring.servers) == [f"{name}-{i}" for i in range(len(ring.servers))]
    # The ring is mounted where DPS_RING says, on every node.
    for workload in (TOPIC_SERVERS, GATEWAYS):
        [mount] = container(workload)["volumeMounts"]
        [volume] = workload["spec"]["template"]["spec"]["volumes"]
        assert volume["configMap"]["name"] == "dps-ring" == generated()[0]["metadata"]["name"]
        assert env(workload)["DPS_RING"] == f"{mount['mountPath']}/ring.toml"


@pytest.mark.parametrize("workload", [TOPIC_SERVERS, GATEWAYS], ids=["ts", "ws"])
def test_each_nodes_environment_is_one_dps_accepts(
    monkeypatch: pytest.MonkeyPatch, workload: dict[str, Any]
) -> None:
    variables = env(workload)
    pod = f"{workload['metadata']['name']}-0"
    known = {settings.env_name(field) for field in settings.Settings.model_fields}
    assert set(variables) - {"POD_NAME"} <= known
    for name in list(os.environ):
        if name.startswith("DPS_") or name == "REDIS_URL":
            monkeypatch.delenv(name)
    for name, value in variables.items():
        if isinstance(value, dict):
            ref = value.get("secretKeyRef") or {}
            if ref.get("name") == "dps-cluster":
                value = "a-secret-from-the-secret"
            else:
                assert value == {"fieldRef": {"fieldPath": "metadata.name"}}
                value = pod
        monkeypatch.setenv(name, expanded(value, {"POD_NAME": pod}))
    node = settings.load()
    assert node.node_name == pod
    assert node.beyond_loopback
    port = container(workload)["ports"][0]
    assert port["containerPort"] == node.port
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        assert container(workload)[probe]["httpGet"] == {"path": path, "port": port["name"]}
    redis = one("Service", "dps-redis")
    assert node.redis_url == f"redis://dps-redis:{redis['spec']['ports'][0]['port']}"
    if node.app == "ts":
        headless = one("Service", TOPIC_SERVERS["spec"]["serviceName"])
        assert headless["spec"]["clusterIP"] == "None"
        assert node.advertise_address == f"{pod}.{headless['metadata']['name']}:{node.port}"


def test_the_cluster_secret_comes_from_the_secret_the_readme_creates() -> None:
    refs = [env(w)["DPS_CLUSTER_SECRET"]["secretKeyRef"] for w in (TOPIC_SERVERS, GATEWAYS)]
    assert refs == [{"name": "dps-cluster", "key": "cluster-secret"}] * 2
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Deploying on Kubernetes") :]
    assert "create secret generic dps-cluster" in section
    assert "--from-literal=cluster-secret=" in section


def test_services_select_their_pods_and_the_gateways_port() -> None:
    for service, workload in (("dps-gateway", GATEWAYS), ("dps-ts", TOPIC_SERVERS)):
        spec = one("Service", service)["spec"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert spec["selector"].items() <= labels.items()
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert spec["ports"][0]["targetPort"] == container(workload)["ports"][0]["name"]
    assert one("Service", "dps-gateway")["spec"]["ports"][0]["port"] == 4000


def test_only_gateways_and_topic_servers_reach_the_topic_servers_link_port() -> None:
    policy = one("NetworkPolicy", "dps-ts")["spec"]
    ts_labels = TOPIC_SERVERS["spec"]["template"]["metadata"]["labels"]
    gw_labels = GATEWAYS["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= ts_labels.items()
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    gateways, topic_servers = (source["podSelector"]["matchLabels"] for source in rule["from"])
    assert gateways.items() <= gw_labels.items()
    assert not gateways.items() <= ts_labels.items()
    assert topic_servers.items() <= ts_labels.items()
    assert not topic_servers.items() <= gw_labels.items()
    assert rule["ports"] == [{"port": int(env(TOPIC_SERVERS)["DPS_PORT"]), "protocol": "TCP"}]


def test_a_disruption_budget_keeps_all_but_one_topic_server() -> None:
    budget = one("PodDisruptionBudget", "dps-ts")["spec"]
    labels = TOPIC_SERVERS["spec"]["template"]["metadata"]["labels"]
    assert budget["maxUnavailable"] == 1
    assert budget["selector"]["matchLabels"].items() <= labels.items()


def test_the_grace_period_covers_prestop_and_the_drain() -> None:
    spec = GATEWAYS["spec"]["template"]["spec"]
    command = container(GATEWAYS)["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep"
    pre_stop = int(command[1])
    assert spec["terminationGracePeriodSeconds"] >= pre_stop + GRACEFUL_SHUTDOWN + DRAIN_MARGIN
    ts_spec = TOPIC_SERVERS["spec"]["template"]["spec"]
    assert ts_spec["terminationGracePeriodSeconds"] >= GRACEFUL_SHUTDOWN + DRAIN_MARGIN


def test_every_container_requests_resources_and_limits_its_memory() -> None:
    for workload in (w for w in resources() if w["kind"] in ("Deployment", "StatefulSet")):
        limits = container(workload)["resources"]
        assert {"cpu", "memory"} <= set(limits["requests"]), workload["metadata"]["name"]
        assert "memory" in limits["limits"], workload["metadata"]["name"]

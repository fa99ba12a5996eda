"""The Kubernetes manifests under deploy/k8s, checked offline (no cluster, no kubectl).

A small schema of what we rely on: known kinds and API versions, selectors that match their
pods, probes on ports that exist, container arguments that the real command line accepts,
and a proxy config that loads and names engine pods that the StatefulSets create.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ascendra_proxy.cli import SUBCOMMANDS
from ascendra_proxy.config import parse_config

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
API = {
    "ConfigMap": "v1",
    "Service": "v1",
    "Deployment": "apps/v1",
    "StatefulSet": "apps/v1",
    "HorizontalPodAutoscaler": "autoscaling/v2",
    "PodDisruptionBudget": "policy/v1",
    "ServiceAccount": "v1",
    "Role": "rbac.authorization.k8s.io/v1",
    "RoleBinding": "rbac.authorization.k8s.io/v1",
}
WORKLOADS = ("Deployment", "StatefulSet")


def _docs() -> list[dict[str, Any]]:
    docs = []
    for path in sorted(K8S.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


DOCS = _docs()


def _one(kind: str, name: str) -> dict[str, Any]:
    [doc] = [d for d in DOCS if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _pods_matching(selector: dict[str, str]) -> list[dict[str, Any]]:
    """Workloads whose pod labels carry every label of ``selector``."""
    return [
        d
        for d in DOCS
        if d["kind"] in WORKLOADS
        and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
    ]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    [c] = workload["spec"]["template"]["spec"]["containers"]
    return c


def test_every_document_has_a_known_kind_and_api_version() -> None:
    assert {d["kind"] for d in DOCS} == set(API)
    for d in DOCS:
        assert d["apiVersion"] == API[d["kind"]], d["metadata"]["name"]
        assert d["metadata"]["name"]


@pytest.mark.parametrize(
    "doc", [d for d in DOCS if d["kind"] in WORKLOADS], ids=lambda d: d["metadata"]["name"]
)
def test_workloads_select_their_own_pods_and_probe_ports_that_exist(doc: dict) -> None:
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    c = _container(doc)
    assert c["image"]
    ports = {p["name"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        http = c.get(probe, {}).get("httpGet")
        if http is not None:
            assert http["port"] in ports
    assert "readinessProbe" in c


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if d["kind"] in ("Service", "PodDisruptionBudget")],
    ids=lambda d: d["kind"] + "/" + d["metadata"]["name"],
)
def test_services_and_budgets_select_pods_that_exist(doc: dict) -> None:
    spec = doc["spec"]
    selector = spec["selector"] if doc["kind"] == "Service" else spec["selector"]["matchLabels"]
    [workload] = _pods_matching(selector)
    if doc["kind"] == "Service":
        names = {p["name"] for p in _container(workload)["ports"]}
        assert {p["targetPort"] for p in spec["ports"]} <= names


def test_the_autoscaler_scales_the_workers_on_cpu() -> None:
    hpa = _one("HorizontalPodAutoscaler", "ascendra-worker")
    ref = hpa["spec"]["scaleTargetRef"]
    assert _one(ref["kind"], ref["name"])["metadata"]["name"] == "ascendra-worker"
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert hpa["spec"]["minReplicas"] >= 2


def test_the_scheduler_pair_is_ready_only_when_leading() -> None:
    sched = _one("Deployment", "ascendra-scheduler")
    assert sched["spec"]["replicas"] == 2
    c = _container(sched)
    assert c["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert c["livenessProbe"]["httpGet"]["path"] == "/health"
    assert _flag(c["args"], "--elector") == "k8s"
    lease = _flag(c["args"], "--lease-key")
    account = sched["spec"]["template"]["spec"]["serviceAccountName"]
    assert _one("ServiceAccount", account)
    [binding] = [d for d in DOCS if d["kind"] == "RoleBinding"]
    assert {"kind": "ServiceAccount", "name": account} in binding["subjects"]
    [rule] = _one("Role", binding["roleRef"]["name"])["rules"]
    assert rule["apiGroups"] == ["coordination.k8s.io"] and rule["resources"] == ["leases"]
    assert {"get", "create", "update"} <= set(rule["verbs"])
    assert lease  # the Lease object the pair competes for
    worker = _container(_one("Deployment", "ascendra-worker"))
    target = urlsplit(_flag(worker["args"], "--scheduler"))
    service = _one("Service", str(target.hostname))
    assert service["spec"]["ports"][0]["port"] == target.port
    assert _pods_matching(service["spec"]["selector"]) == [sched]


def test_workers_drain_and_every_proxy_pod_is_scraped() -> None:
    worker = _one("Deployment", "ascendra-worker")
    assert worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 300
    for name in ("ascendra-worker", "ascendra-scheduler"):
        notes = _one("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert notes["prometheus.io/scrape"] == "true"
        assert notes["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize(
    "doc",
    [d for d in DOCS if d["kind"] in WORKLOADS and "ascendra-proxy" in _container(d)["image"]],
    ids=lambda d: d["metadata"]["name"],
)
def test_container_arguments_parse_with_the_real_command_line(doc: dict) -> None:
    args = _container(doc)["args"]
    module = importlib.import_module(SUBCOMMANDS[args[0]][0])
    parser = argparse.ArgumentParser(exit_on_error=False)
    module.add_arguments(parser)
    parser.parse_args(args[1:])


def test_the_config_loads_and_names_engine_pods_the_statefulsets_create() -> None:
    text = _one("ConfigMap", "ascendra-config")["data"]["proxy.yaml"]
    cfg = parse_config(yaml.safe_load(text), env={"ASCENDRA_ADMIN_KEY": "k"})
    pods = set()
    for sts in (d for d in DOCS if d["kind"] == "StatefulSet"):
        name, svc = sts["metadata"]["name"], sts["spec"]["serviceName"]
        pods |= {f"{name}-{i}.{svc}" for i in range(sts["spec"]["replicas"])}
    hosts = {urlsplit(b.url).hostname for _, b in cfg.backends()}
    assert hosts == pods


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]

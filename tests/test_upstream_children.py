"""Children against the rules of the upstream code that consumes them (docs/upstream-contracts.md).

Each test names the upstream file, at the version the chart pins, whose behaviour it encodes. These
rules are invisible to a server-side dry-run: the API server accepts the object, and only the
upstream controller (or Kafka itself) then fails on it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml
from streamotion_operator import builders
from streamotion_operator.config import OperatorConfig

from streamotion import naming
from streamotion.api.models import StreamPipeline

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
# A pipeline at every length limit: namespace 63 characters (DNS-1123 label), name 30 (the API's limit).
LONG_NS = "n" * 63


def load(example: Path, namespace: str = "team-a") -> StreamPipeline:
    p = StreamPipeline.model_validate(yaml.safe_load(example.read_text()))
    p.metadata.namespace = namespace
    return p


def longest(example: Path) -> StreamPipeline:
    p = load(example, LONG_NS)
    p.metadata.name = (p.metadata.name + "x" * 30)[:30]
    return p


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_ray_head_declares_the_ports_kuberay_looks_up_by_name(example):
    """ray-project/kuberay v1.7.0 ray-operator/controllers/ray/utils/constant.go names the head ports
    ("dashboard", "serve", "metrics"); rayservice_controller.go finds the dashboard through the head
    Service port named "dashboard" (FetchHeadServiceURL) and the serving port through the Ray
    container's port named "serve" (FindContainerPort, else 8000); common/service.go builds the head
    Service from the Ray container's declared ports only (getPortsFromCluster); common/pod.go adds a
    "metrics" port (8080) only when none of that name exists. The Ray container is containers[0]
    (utils.RayContainerIndex)."""
    ray = builders.ray_service(load(example), OperatorConfig.from_env())
    cluster = ray["spec"]["rayClusterConfig"]
    head = cluster["headGroupSpec"]["template"]["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in head["ports"]}
    assert len(ports) == len(head["ports"]), "duplicate port names"
    assert ports["dashboard"] == 8265
    assert ports["serve"] == builders.SERVE_PORT
    # our PodMonitor scrapes "metrics" on every Ray pod: Ray's agent must export on that number
    metrics_port = int(cluster["headGroupSpec"]["rayStartParams"]["metrics-export-port"])
    assert ports["metrics"] == metrics_port
    for group in cluster["workerGroupSpecs"]:
        worker = group["template"]["spec"]["containers"][0]
        wports = {p["name"]: p["containerPort"] for p in worker["ports"]}
        assert wports["metrics"] == int(group["rayStartParams"]["metrics-export-port"])
    monitor = next(
        m for m in builders.pod_monitors(load(example)) if m["metadata"]["name"].endswith("-model")
    )
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_model_url_is_the_serve_service_kuberay_creates(example):
    """ray-project/kuberay v1.7.0 ray-operator/controllers/ray/utils/util.go GenerateServeServiceName:
    a RayService's Serve Service is "<rayservice>-serve-svc". The job reaches the model there, so the
    URL the operator gives it must name exactly that Service, and the name must be a valid Service
    name (DNS-1035 label, at most 63 characters) for the longest pipeline the API admits."""
    for p in (load(example), longest(example)):
        url = urlparse(builders.model_url(p))
        host = url.hostname.split(".")
        assert (
            host[0] == f"{builders.ray_service(p, OperatorConfig.from_env())['metadata']['name']}-serve-svc"
        )
        assert host[1] == p.namespace
        assert url.port == builders.SERVE_PORT
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", host[0]) and len(host[0]) <= 63


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_topic_names_are_legal_kafka_topics_without_metric_collisions(example):
    """apache/kafka clients/src/main/java/org/apache/kafka/common/internals/Topic.java: a topic name is
    1-249 characters of [a-zA-Z0-9._-]; '.' and '_' collide in metric names (hasCollision), so two
    pipelines' topics must stay distinct after unifying '.' with '_'."""
    names = []
    for p in (load(example), longest(example), load(example, "team-a-b")):
        for topic in builders.kafka_topics(p, OperatorConfig.from_env()):
            name = topic["spec"]["topicName"]
            assert re.fullmatch(r"[a-zA-Z0-9._-]{1,249}", name), name
            names.append(name.replace(".", "_"))
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_dashboard_config_map_fits_the_api_servers_size_limit(example):
    """kubernetes v1.35.4 pkg/apis/core/validation/validation.go ValidateConfigMap: the data of a
    ConfigMap may hold at most core.MaxSecretSize (pkg/apis/core/types.go: 1 MiB) in all. Every
    dashboard a pipeline gets goes into one ConfigMap, so the largest set must fit with room to grow
    (half the limit)."""
    cm = builders.dashboards(longest(example), OperatorConfig.from_env())
    size = sum(len(k.encode()) + len(v.encode()) for k, v in cm["data"].items())
    assert cm["data"], "no dashboard rendered"
    assert size <= 512 * 1024, f"{size} bytes of dashboards in {cm['metadata']['name']}"
    for board in cm["data"].values():
        json.loads(board)


def test_dashboard_config_maps_carry_the_label_grafanas_sidecar_watches():
    """The chart's kube-prometheus-stack values configure Grafana's dashboard sidecar (kiwigrid
    k8s-sidecar, through the grafana chart's sidecar.dashboards.label/labelValue) to load ConfigMaps
    labelled grafana_dashboard=1 in ALL namespaces: pipeline dashboards must carry exactly that."""
    values = yaml.safe_load((ROOT / "charts/streamotion/values.yaml").read_text())
    sidecar = values["kube-prometheus-stack"]["grafana"]["sidecar"]["dashboards"]
    cm = builders.dashboards(load(EXAMPLES[0]), OperatorConfig.from_env())
    assert cm["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] == "ALL"
    assert naming.dashboard_config_map_name(load(EXAMPLES[0])) == cm["metadata"]["name"]


def test_prometheus_selects_the_operators_monitors_and_rules():
    """prometheus-community/helm-charts kube-prometheus-stack (88.2.0)
    templates/prometheus/prometheus.yaml: with ``*SelectorNilUsesHelmValues`` true (the upstream
    default) the Prometheus selects only PodMonitors, ServiceMonitors and PrometheusRules labelled
    ``release: <release>``; the operator's children carry no such label (they live in pipeline
    namespaces, not the release's), so the chart must turn those three off to select every one;
    namespace selectors left empty select every namespace."""
    values = yaml.safe_load((ROOT / "charts/streamotion/values.yaml").read_text())
    spec = values["kube-prometheus-stack"]["prometheus"]["prometheusSpec"]
    for kind in ("serviceMonitor", "podMonitor", "rule"):
        assert spec[f"{kind}SelectorNilUsesHelmValues"] is False
        assert not spec.get(f"{kind}Selector") and not spec.get(f"{kind}NamespaceSelector")
    p = load(EXAMPLES[0])
    for child in [*builders.pod_monitors(p), builders.prometheus_rule(p)]:
        assert "release" not in child["metadata"]["labels"]

"""The Helm chart: lint, render, schema, and every rendered object against the real API server.

There is no internet here for `helm dependency build`, so the tests render a temporary copy of the
chart whose charts/ holds minimal stand-ins (Chart.yaml only, same names and pinned versions) for
the five operator charts. Our own templates render exactly as in a real install; the subcharts'
objects are not rendered, and the upstream CRDs their charts install come from ../shared/crds,
which the test control plane serves.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml

from streamotion.dev.helm import KUBE_VERSION, ensure_helm, helm

ROOT = Path(__file__).resolve().parents[1]
CHART = Path(os.environ.get("STREAMOTION_CHART", ROOT / "charts" / "streamotion"))  # or a chart under review
VALUES = {"default": [], "kind": ["values-kind.yaml"], "gke": ["values-gke.yaml"]}


def chart_yaml() -> dict:
    return yaml.safe_load((CHART / "Chart.yaml").read_text())


@pytest.fixture(scope="module")
def chart(tmp_path_factory) -> Path:
    """A copy of the chart with local stand-ins for its pinned dependencies."""
    ensure_helm()
    copy = tmp_path_factory.mktemp("chart") / "streamotion"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    for dep in chart_yaml()["dependencies"]:
        sub = copy / "charts" / dep["name"]
        sub.mkdir(parents=True)
        (sub / "Chart.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v2", "name": dep["name"], "version": dep["version"]})
        )
    return copy


def render(
    chart: Path, *args: str, release: str = "streamotion", namespace: str = "streamotion"
) -> list[dict]:
    out = helm(
        "template", release, str(chart), "--namespace", namespace, "--kube-version", KUBE_VERSION, *args
    )
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def value_files(chart: Path, target: str) -> list[str]:
    return [a for f in VALUES[target] for a in ("-f", str(chart / f))]


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    hits = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(hits) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in hits]}"
    return hits[0]


# ----------------------------------------------------------------------------------- Chart.yaml
def test_dependencies_are_pinned_and_switchable():
    deps = {d["name"]: d for d in chart_yaml()["dependencies"]}
    assert set(deps) == {
        "strimzi-kafka-operator",
        "spark-operator",
        "kuberay-operator",
        "kube-prometheus-stack",
        "cloudnative-pg",
    }
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for name, dep in deps.items():
        assert all(part.isdigit() for part in str(dep["version"]).split(".")), f"{name}: not an exact version"
        assert dep["condition"] == f"{name}.enabled"
        assert values[name]["enabled"] is True, f"{name} is enabled by default (kind)"
    assert deps["strimzi-kafka-operator"]["repository"].startswith("oci://")


def test_crd_and_rbac_rules_ship_with_the_chart():
    crd = yaml.safe_load((CHART / "crds" / "streampipelines.streamotion.io.yaml").read_text())
    assert crd["kind"] == "CustomResourceDefinition"
    rules = yaml.safe_load((CHART / "files" / "operator-rbac-rules.yaml").read_text())
    assert isinstance(rules, list) and rules, (
        "files/operator-rbac-rules.yaml: a non-empty list of PolicyRules"
    )
    for rule in rules:
        assert rule["verbs"] and "*" not in rule["verbs"], f"least privilege: no wildcard verbs in {rule}"
        assert "*" not in rule.get("resources", []), f"least privilege: no wildcard resources in {rule}"
    granted = {(g, r) for rule in rules for g in rule.get("apiGroups", []) for r in rule.get("resources", [])}
    assert ("streamotion.io", "streampipelines") in granted
    assert ("streamotion.io", "streampipelines/status") in granted


# ----------------------------------------------------------------------------------- lint/render
@pytest.mark.parametrize("target", list(VALUES))
def test_lint(chart, target):
    result = helm("lint", str(chart), "--strict", "--kube-version", KUBE_VERSION, *value_files(chart, target))
    assert "0 chart(s) failed" in result.stdout, result.stdout


@pytest.mark.parametrize("target", list(VALUES))
def test_rendered_objects_are_accepted_by_the_api_server(chart, control_plane, namespace, target):
    """Every object of a default/kind/GKE render, server-side dry-run created against the upstream CRDs."""
    kafka_ns, dash_ns = f"{namespace}-kafka", f"{namespace}-dash"
    docs = render(
        chart,
        *value_files(chart, target),
        "--set",
        f"defaults.kafkaNamespace={kafka_ns},defaults.dashboardsNamespace={dash_ns}",
        release=f"st-{target}",
        namespace=namespace,
    )
    kinds = sorted(d["kind"] for d in docs)
    expected = {
        "Namespace",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "Service",
        "ServiceMonitor",
        "PodDisruptionBudget",
        "Kafka",
        "KafkaNodePool",
        "Secret",
        "Cluster",
        "ConfigMap",
    }
    assert expected <= set(kinds), kinds
    # The namespaces this release owns are created for real (dry-run objects cannot live in dry-run
    # namespaces); everything is then created as a server-side dry run, namespaces included.
    namespaces = [d for d in docs if d["kind"] == "Namespace"]
    assert sorted(n["metadata"]["name"] for n in namespaces) == sorted([kafka_ns, dash_ns])
    try:
        for ns in namespaces:
            control_plane.kubectl("create", "namespace", ns["metadata"]["name"])
        result = control_plane.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=helm",
            "-o",
            "name",
            "-f",
            "-",
            input=yaml.safe_dump_all(docs),
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) == len(docs)
    finally:
        for ns in namespaces:
            control_plane.kubectl("delete", "namespace", ns["metadata"]["name"], "--wait=false", check=False)


def test_operator_deployment_is_configured_for_the_operator(chart):
    from streamotion_operator.config import OperatorConfig

    docs = render(chart, "--set", "image.registry=registry.example/team,image.tag=1.2.3")
    deploy = find(docs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    # Every STREAMOTION_ setting the chart passes is one the operator reads.
    fields = {f"STREAMOTION_{name.upper()}" for name in OperatorConfig.__dataclass_fields__}
    fields |= {"STREAMOTION_LOG_FORMAT", "STREAMOTION_PEERING", "STREAMOTION_PRIORITY"}  # cli options
    assert {k for k in env if k.startswith("STREAMOTION_")} <= fields
    cfg = OperatorConfig.from_env(env)
    assert cfg.producer_image == "registry.example/team/streamotion/ingest:1.2.3"
    assert cfg.job_image == "registry.example/team/streamotion/jobs:1.2.3"
    assert cfg.model_image == "registry.example/team/streamotion/serving:1.2.3"
    assert cfg.model_gpu_image == "registry.example/team/streamotion/serving-gpu:1.2.3"  # `make images-gpu`
    assert cfg.kafka_namespace == "kafka"
    assert cfg.metrics_port == 9108
    assert container["args"] == ["operator"]
    # The metrics Service and ServiceMonitor reach the container's metrics port.
    assert {"name": "metrics", "containerPort": cfg.metrics_port, "protocol": "TCP"} in container["ports"]
    svc = find(docs, "Service")
    assert svc["spec"]["selector"].items() <= deploy["spec"]["template"]["metadata"]["labels"].items()
    assert find(docs, "ServiceMonitor")["spec"]["endpoints"][0]["port"] == "metrics"
    assert pod["serviceAccountName"] == find(docs, "ServiceAccount")["metadata"]["name"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    # The ClusterRole the operator binds to Spark drivers exists under the name it uses.
    roles = {d["metadata"]["name"] for d in docs if d["kind"] == "ClusterRole"}
    assert cfg.spark_driver_cluster_role in roles


def test_the_operator_dashboard_ships_for_grafanas_sidecar(chart):
    """The chart carries the generated operator dashboard in a ConfigMap that kube-prometheus-stack's
    Grafana sidecar loads (its label), unchanged; it can be switched off."""
    from streamotion.dashboards.build import generate

    docs = render(chart)
    cm = find(docs, "ConfigMap", "streamotion-operator-dashboard")
    sidecar = yaml.safe_load((chart / "values.yaml").read_text())["kube-prometheus-stack"]["grafana"][
        "sidecar"
    ]
    label = sidecar["dashboards"]
    assert cm["metadata"]["labels"][label["label"]] == label["labelValue"]
    assert cm["metadata"]["namespace"] == "streamotion"
    assert json.loads(cm["data"]["streamotion-operator.json"]) == generate()["operator.json"]
    off = render(chart, "--set", "operator.metrics.dashboard.enabled=false")
    assert not [d for d in off if d["metadata"]["name"] == "streamotion-operator-dashboard"]


def test_kind_values_match_kind_config(chart):
    kind_config = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    mapped = {m["containerPort"] for n in kind_config["nodes"] for m in n.get("extraPortMappings", [])}
    kind_values = yaml.safe_load((CHART / "values-kind.yaml").read_text())
    grafana = kind_values["kube-prometheus-stack"]["grafana"]["service"]
    assert grafana["type"] == "NodePort" and grafana["nodePort"] == 30300 in mapped
    assert kind_values["ingest"]["http"]["nodePort"] == 30080 in mapped
    env = {
        e["name"]: e.get("value")
        for e in find(render(chart, *value_files(chart, "kind")), "Deployment")["spec"]["template"]["spec"][
            "containers"
        ][0]["env"]
    }
    assert env["STREAMOTION_HTTP_SERVICE_TYPE"] == "NodePort"
    assert env["STREAMOTION_HTTP_NODE_PORT"] == "30080"
    assert env["STREAMOTION_PRODUCER_IMAGE"] == "streamotion/ingest:dev"  # what `make images` tags
    assert env["STREAMOTION_MODEL_GPU_IMAGE"] == "streamotion/serving-gpu:dev"


def test_gke_values(chart):
    docs = render(chart, *value_files(chart, "gke"))
    env = {
        e["name"]: e.get("value")
        for e in find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["STREAMOTION_GCP_SERVICE_ACCOUNT"].endswith(".iam.gserviceaccount.com")
    tolerations = json.loads(env["STREAMOTION_MODEL_TOLERATIONS"])
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in tolerations
    pool = find(docs, "KafkaNodePool")["spec"]
    assert pool["replicas"] == 3 and pool["storage"]["volumes"][0]["class"] == "premium-rwo"
    kafka_config = find(docs, "Kafka")["spec"]["kafka"]["config"]
    assert kafka_config["default.replication.factor"] == 3 and kafka_config["min.insync.replicas"] == 2


def test_first_install_has_no_race_with_other_operators(chart):
    """Objects of a kind whose CRD a subchart installs from templates, or that another operator's webhook
    validates (CloudNativePG's Cluster), are post-install hooks; the rest use CRDs from crds/ dirs."""
    docs = render(chart)
    cluster = find(docs, "Cluster")
    assert cluster["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
    for d in docs:
        if d["kind"] != "Cluster":
            assert "helm.sh/hook" not in d["metadata"].get("annotations", {}), d["kind"]
    # The PostgreSQL sink Secret the demo pipeline names is a regular release object, so Grafana's
    # env and the Cluster's bootstrap find it.
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    secret = find(docs, "Secret", demo["spec"]["sinks"][0]["postgres"]["credentialsSecret"])
    assert secret["type"] == "kubernetes.io/basic-auth" and set(secret["stringData"]) == {
        "username",
        "password",
    }
    assert cluster["spec"]["bootstrap"]["initdb"]["secret"]["name"] == secret["metadata"]["name"]
    assert f"{cluster['metadata']['name']}-rw" == demo["spec"]["sinks"][0]["postgres"]["host"]
    # Kafka and the pipelines agree on the cluster and its namespace.
    assert find(docs, "Kafka")["metadata"]["namespace"] == demo["spec"]["kafka"]["namespace"]
    assert find(docs, "Kafka")["metadata"]["name"] == demo["spec"]["kafka"]["cluster"]


def test_dependencies_can_be_disabled(chart):
    args = ["--set", ",".join(f"{d['name']}.enabled=false" for d in chart_yaml()["dependencies"])]
    kinds = {d["kind"] for d in render(chart, *args)}
    # Without the operators' charts (and without their APIs on the cluster) only our own objects render.
    assert {"Kafka", "KafkaNodePool", "Cluster", "ServiceMonitor"}.isdisjoint(kinds)
    assert {"Deployment", "ClusterRole", "ServiceAccount"} <= kinds
    with_api = render(
        chart,
        *args,
        "--api-versions",
        "kafka.strimzi.io/v1/Kafka",
        "--api-versions",
        "postgresql.cnpg.io/v1/Cluster",
    )
    assert {"Kafka", "Cluster"} <= {d["kind"] for d in with_api}


# ----------------------------------------------------------------------------------- the schema
BAD_VALUES = [
    ("defaults.kafkaNamespace=Kafka_NS", "/defaults/kafkaNamespace"),
    ("image.pullPolicy=Sometimes", "/image/pullPolicy"),
    ("kafka.replicas=0", "/kafka/replicas"),
    ("kafka.storage.type=hostPath", "/kafka/storage/type"),
    ("ingest.http.nodePort=8080", "/ingest/http/nodePort"),
    ("operator.resources.requests.cpu=lots", "/operator/resources/requests/cpu"),
    ("operator.replicaz=2", "replicaz"),
    ("gcp.workloadIdentity.gcpServiceAccount=me@example.com", "/gcp/workloadIdentity/gcpServiceAccount"),
    ("spark-operator.enabled=maybe", "/spark-operator/enabled"),
    ("versions.ray=latest", "/versions/ray"),
]


@pytest.mark.parametrize(("setting", "path"), BAD_VALUES, ids=[b[0].split("=")[0] for b in BAD_VALUES])
def test_schema_refuses_bad_values(chart, setting, path):
    flag = "--set-string" if setting.endswith(("=maybe", "=lots")) else "--set"
    result = helm("template", "x", str(chart), "--kube-version", KUBE_VERSION, flag, setting, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    assert path in result.stderr, result.stderr


# ----------------------------------------------------------------------------------- helm install
def test_install_upgrade_uninstall(chart, control_plane, namespace):
    """A real `helm install`/`upgrade`/`uninstall` against the API server (no kubelet: nothing starts)."""
    kube = ["--kubeconfig", str(control_plane.kubeconfig_path), "--namespace", namespace]
    kafka_ns, dash_ns = f"{namespace}-kafka", f"{namespace}-dash"
    sets = ["--set", f"defaults.kafkaNamespace={kafka_ns},defaults.dashboardsNamespace={dash_ns}"]
    # One Spark driver ClusterRole per cluster: drop one left by another test so Helm can own it.
    control_plane.kubectl("delete", "clusterrole", "streamotion-spark-driver", "--ignore-not-found")

    def get(*what: str, ns: str = namespace) -> dict:
        return json.loads(control_plane.kubectl("get", *what, "-n", ns, "-o", "json").stdout)

    try:
        helm("install", "st", str(chart), *kube, *sets, "--timeout", "2m")
        password = get("secret", "streamotion-pg-app")["data"]["password"]
        cluster = get("clusters.postgresql.cnpg.io", "streamotion-pg")
        assert cluster["metadata"]["annotations"]["helm.sh/hook"] == "post-install"
        assert get("kafkas.kafka.strimzi.io", "streamotion", ns=kafka_ns)["spec"]["kafka"]["listeners"]
        assert get("deployment", "st-streamotion-operator")["spec"]["replicas"] == 1
        # Upgrade: the generated password is kept (lookup) and the hook-created Cluster is left alone.
        helm("upgrade", "st", str(chart), *kube, *sets, "--set", "operator.workers=4", "--timeout", "2m")
        assert get("secret", "streamotion-pg-app")["data"]["password"] == password
        env = get("deployment", "st-streamotion-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "STREAMOTION_WORKERS", "value": "4"} in env
        after = get("clusters.postgresql.cnpg.io", "streamotion-pg")
        assert after["metadata"]["resourceVersion"] == cluster["metadata"]["resourceVersion"]
        helm("uninstall", "st", *kube, "--timeout", "2m")
        gone = control_plane.kubectl(
            "get", "deployment", "st-streamotion-operator", "-n", namespace, check=False
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        # Helm does not delete hook resources: the README has the uninstall order.
        assert get("clusters.postgresql.cnpg.io", "streamotion-pg")["metadata"]["name"] == "streamotion-pg"
    finally:
        helm("uninstall", "st", *kube, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "clusters.postgresql.cnpg.io", "--all", "-n", namespace, check=False)
        for ns in (kafka_ns, dash_ns):
            control_plane.kubectl(
                "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False
            )

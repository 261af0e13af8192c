"""The Helm chart: lint, render, schema, and every rendered object against the real API server.

There is no internet here for `helm dependency build`, so the tests render a temporary copy of the
chart whose charts/ holds minimal stand-ins (Chart.yaml only, same names and pinned versions) for
the five operator charts. Our own templates render exactly as in a real install; the subcharts'
objects are not rendered, and the upstream CRDs their charts install come from ../shared/crds,
which the test control plane serves.
"""

from __future__ import annotations

import base64
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
        "PodMonitor",
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
    svc = find(docs, "Service", "streamotion-operator-metrics")
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


@pytest.mark.parametrize(("target", "brokers", "replicas", "min_isr"), [("gke", 3, 3, 2), ("kind", 1, 1, 1)])
def test_operator_topic_defaults_follow_the_brokers(chart, target, brokers, replicas, min_isr):
    """The operator gets the chart Kafka's replication factor (STREAMOTION_KAFKA_REPLICAS = min(brokers, 3))
    and a pipeline without spec.kafka.replicas renders KafkaTopics with it and min.insync.replicas
    min(2, replicas): never more than the topic has (test_kafka_cluster.py writes such topics)."""
    from streamotion_operator import builders
    from streamotion_operator.config import OperatorConfig

    from streamotion.api.models import StreamPipeline

    docs = render(chart, *value_files(chart, target))
    assert find(docs, "KafkaNodePool")["spec"]["replicas"] == brokers
    kafka_config = find(docs, "Kafka")["spec"]["kafka"]["config"]
    assert (kafka_config["default.replication.factor"], kafka_config["min.insync.replicas"]) == (
        replicas,
        min_isr,
    )
    env = {
        e["name"]: e.get("value")
        for e in find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    cfg = OperatorConfig.from_env({k: v for k, v in env.items() if v is not None})
    demo = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    demo["metadata"]["namespace"] = "team"
    assert "replicas" not in demo["spec"]["kafka"]
    topics = builders.kafka_topics(StreamPipeline.model_validate(demo), cfg)
    assert {(t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"]) for t in topics} == {
        (replicas, str(min_isr))
    }
    # An explicit spec.kafka.replicas wins, with its own min.insync.replicas.
    demo["spec"]["kafka"]["replicas"] = 2
    topics = builders.kafka_topics(StreamPipeline.model_validate(demo), cfg)
    assert {(t["spec"]["replicas"], t["spec"]["config"]["min.insync.replicas"]) for t in topics} == {(2, "2")}


def test_first_install_has_no_race_with_other_operators(chart):
    """Objects of a kind whose CRD a subchart installs from templates, or that another operator's webhook
    validates, are hooks that run after the release's objects; the rest use CRDs from crds/ dirs.

    cloudnative-pg/charts cloudnative-pg-v0.29.0 charts/cloudnative-pg: templates/crds/crds.yaml (the
    Cluster CRD is a template) and templates/validatingwebhookconfiguration.yaml + values.yaml
    (vcluster.cnpg.io, failurePolicy Fail, served by the operator pod). helm/helm v4.3.1
    pkg/cmd/upgrade.go: `upgrade --install` of a release with history (a failed install) runs an
    upgrade, which fires post-upgrade hooks only (pkg/action/upgrade.go); pkg/action/hooks.go
    hookSetDeletePolicy: a hook without a delete policy gets before-hook-creation, which deletes an
    existing object of that name before creating the hook; deleteHookByPolicy(hook-failed) only runs
    when WatchUntilReady fails, and pkg/kube/statuswait.go (alwaysReady) / wait.go (legacy) report
    every kind but Job and Pod ready at once."""
    docs = render(chart)
    cluster = find(docs, "Cluster")
    annotations = cluster["metadata"]["annotations"]
    assert set(annotations["helm.sh/hook"].split(",")) == {"post-install", "post-upgrade"}
    policies = set(annotations["helm.sh/hook-delete-policy"].split(","))
    assert policies and policies.isdisjoint({"before-hook-creation", "hook-succeeded"})
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


def test_grafana_reads_postgres_from_the_primary_with_the_release_password(chart):
    """Grafana's PostgreSQL datasource follows postgres.name: host <name>-rw and the password of the
    Secret <name>-app, whatever the name, and no Grafana value names that Secret.

    cloudnative-pg/cloudnative-pg v1.30.0 pkg/specs/services.go: <name>-rw selects the pod labelled
    cnpg.io/instanceRole=primary, <name>-ro only cnpg.io/instanceRole=replica (no endpoints with one
    instance); suffixes in api/v1/cluster_types.go. grafana-community/helm-charts grafana-12.10.4 (the
    grafana chart kube-prometheus-stack-88.2.0 pins) charts/grafana/templates/_pod.tpl renders
    envValueFrom with tpl in the grafana chart's own context, where this chart's postgres.name is out
    of reach; its values.yaml sidecar.datasources.resource "both": the sidecar loads labelled Secrets
    too, and kiwigrid/k8s-sidecar 2.10.1 (its sidecar image) src/resources.py _process_secret writes
    each key base64-decoded as a file. prometheus-community/helm-charts kube-prometheus-stack-88.2.0
    values.yaml grafana.sidecar.datasources label grafana_datasource, labelValue "1"."""
    docs = render(chart, "--set", "postgres.name=orders-pg,postgres.owner=writer,postgres.database=orders")
    loaded = [d for d in docs if d["metadata"].get("labels", {}).get("grafana_datasource") == "1"]
    assert [d["kind"] for d in loaded] == ["Secret"]
    (text,) = loaded[0]["stringData"].values()
    (source,) = yaml.safe_load(text)["datasources"]
    assert source["url"] == "orders-pg-rw.streamotion.svc:5432"
    app = find(docs, "Secret", "orders-pg-app")["stringData"]
    assert source["user"] == app["username"] == "writer" and source["jsonData"]["database"] == "orders"
    assert source["secureJsonData"]["password"] == app["password"]
    values = yaml.safe_load((chart / "values.yaml").read_text())
    assert "-app" not in yaml.safe_dump(values["kube-prometheus-stack"])
    off = render(chart, "--set", "grafanaDatasources.postgres=false")
    assert not [d for d in off if d["metadata"].get("labels", {}).get("grafana_datasource")]


def deprecated_fields(schema: dict, value, path: str = "") -> list[str]:
    """The fields set in value whose OpenAPI schema description says they are deprecated."""
    found = []
    if isinstance(value, dict):
        for key, item in value.items():
            sub = schema.get("properties", {}).get(key, {})
            if "Deprecated:" in sub.get("description", ""):
                found.append(f"{path}.{key}")
            found += deprecated_fields(sub, item, f"{path}.{key}")
    elif isinstance(value, list):
        for item in value:
            found += deprecated_fields(schema.get("items", {}), item, f"{path}[]")
    return found


def test_postgres_instances_are_scraped_by_the_charts_podmonitor(chart):
    """The Cluster uses no field the pinned CRD deprecates; its instances' metrics come from a PodMonitor
    of the chart, rendered only with the PodMonitor API.

    cloudnative-pg/cloudnative-pg v1.30.0 api/v1/cluster_types.go: spec.monitoring.enablePodMonitor
    is deprecated ("create a PodMonitor manually"); pkg/specs/podmonitor.go: the operator's own
    PodMonitor (named after the Cluster) selects cnpg.io/cluster=<name>, cnpg.io/podRole=instance
    and scrapes the port "metrics"; pkg/specs/pods.go: instance pods carry those labels and the
    container port "metrics" is url.PostgresMetricsPort, 9187 (pkg/management/url/url.go)."""
    from tests.conftest import UPSTREAM_CRDS

    docs = render(chart)
    cluster = find(docs, "Cluster")
    crd = yaml.safe_load(
        (UPSTREAM_CRDS / "cloudnative-pg-1.30.0" / "postgresql.cnpg.io_clusters.yaml").read_text()
    )
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    spec_schema = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert deprecated_fields(spec_schema, cluster["spec"], "spec") == []
    assert deprecated_fields(spec_schema, {"monitoring": {"enablePodMonitor": True}}, "spec") == [
        "spec.monitoring.enablePodMonitor"
    ]
    monitor = find(docs, "PodMonitor")
    assert monitor["metadata"]["name"] != cluster["metadata"]["name"]
    assert monitor["metadata"]["namespace"] == cluster["metadata"]["namespace"]
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == [cluster["metadata"]["namespace"]]
    assert monitor["spec"]["selector"]["matchLabels"] == {
        "cnpg.io/cluster": cluster["metadata"]["name"],
        "cnpg.io/podRole": "instance",
    }
    assert [e["port"] for e in monitor["spec"]["podMetricsEndpoints"]] == ["metrics"]
    assert "PodMonitor" not in {
        d["kind"] for d in render(chart, "--set", "postgres.podMonitor.enabled=false")
    }
    off = ["--set", "kube-prometheus-stack.enabled=false"]
    assert "PodMonitor" not in {d["kind"] for d in render(chart, *off)}
    with_api = render(chart, *off, "--api-versions", "monitoring.coreos.com/v1/PodMonitor")
    assert find(with_api, "PodMonitor")["metadata"]["name"] == monitor["metadata"]["name"]


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
def install_args(control_plane, namespace: str) -> tuple[list[str], list[str], str, str]:
    """helm's cluster arguments and value settings for a real install into ``namespace`` (Kafka and
    dashboards in namespaces of their own), and those two namespaces.

    Tenancy is off: the chart's admission policy binds every namespace of this shared control plane,
    and the API server's policy cache lets it refuse other tests' pipelines for a moment after
    uninstall (tests/test_tenancy.py installs it with a binding scoped to its own namespace)."""
    kube = ["--kubeconfig", str(control_plane.kubeconfig_path), "--namespace", namespace]
    kafka_ns, dash_ns = f"{namespace}-kafka", f"{namespace}-dash"
    sets = [
        "--set",
        f"defaults.kafkaNamespace={kafka_ns},defaults.dashboardsNamespace={dash_ns},tenancy.enabled=false",
    ]
    return kube, sets, kafka_ns, dash_ns


def secret_value(secret: dict, key: str) -> str:
    return base64.b64decode(secret["data"][key]).decode()


def datasource_password(secret: dict) -> str:
    """The password in the Grafana datasource provisioning file of a Secret (as Grafana reads it raw)."""
    (key,) = secret["data"]
    (source,) = yaml.safe_load(secret_value(secret, key))["datasources"]
    return source["secureJsonData"]["password"]


def test_install_upgrade_uninstall(chart, control_plane, namespace):
    """A real `helm install`/`upgrade`/`uninstall` against the API server (no kubelet: nothing starts).

    Grafana expands $VAR in provisioning files and reads "$$" as a literal "$" (grafana/grafana
    pkg/services/provisioning/values/values.go interpolateValue; Grafana docs, Provision Grafana,
    "Use of the special character $")."""
    kube, sets, kafka_ns, dash_ns = install_args(control_plane, namespace)
    # One Spark driver ClusterRole per cluster: drop one left by another test so Helm can own it.
    control_plane.kubectl("delete", "clusterrole", "streamotion-spark-driver", "--ignore-not-found")

    def get(*what: str, ns: str = namespace) -> dict:
        return json.loads(control_plane.kubectl("get", *what, "-n", ns, "-o", "json").stdout)

    try:
        helm("install", "st", str(chart), *kube, *sets, "--timeout", "2m")
        password = secret_value(get("secret", "streamotion-pg-app"), "password")
        cluster = get("clusters.postgresql.cnpg.io", "streamotion-pg")
        assert "post-install" in cluster["metadata"]["annotations"]["helm.sh/hook"].split(",")
        assert get("kafkas.kafka.strimzi.io", "streamotion", ns=kafka_ns)["spec"]["kafka"]["listeners"]
        assert get("deployment", "st-streamotion-operator")["spec"]["replicas"] == 1
        assert datasource_password(get("secret", "st-streamotion-datasource-postgres")) == password
        webhook_tls = get("secret", "st-streamotion-operator-webhook-tls")["data"]
        # Upgrade: the conversion webhook's CA and certificate are kept (lookup: the CRD's caBundle stays valid).
        # Upgrade: the password in the cluster is kept (lookup), here one changed by hand, Grafana's
        # datasource gets it ("$$" is Grafana's literal "$"), and the hook-created Cluster is left alone.
        patch = json.dumps({"stringData": {"password": "kept$PATH"}})
        control_plane.kubectl("patch", "secret", "streamotion-pg-app", "-n", namespace, "-p", patch)
        helm("upgrade", "st", str(chart), *kube, *sets, "--set", "operator.workers=4", "--timeout", "2m")
        assert secret_value(get("secret", "streamotion-pg-app"), "password") == "kept$PATH"
        assert datasource_password(get("secret", "st-streamotion-datasource-postgres")) == "kept$$PATH"
        env = get("deployment", "st-streamotion-operator")["spec"]["template"]["spec"]["containers"][0]["env"]
        assert {"name": "STREAMOTION_WORKERS", "value": "4"} in env
        assert get("secret", "st-streamotion-operator-webhook-tls")["data"] == webhook_tls
        after = get("clusters.postgresql.cnpg.io", "streamotion-pg")
        assert after["metadata"]["resourceVersion"] == cluster["metadata"]["resourceVersion"]
        helm("uninstall", "st", *kube, "--timeout", "2m")
        gone = control_plane.kubectl(
            "get", "deployment", "st-streamotion-operator", "-n", namespace, check=False
        )
        assert gone.returncode != 0 and "NotFound" in gone.stderr
        # Helm does not delete hook resources: docs/operations/upgrade.md has the uninstall order.
        assert get("clusters.postgresql.cnpg.io", "streamotion-pg")["metadata"]["name"] == "streamotion-pg"
    finally:
        helm("uninstall", "st", *kube, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "clusters.postgresql.cnpg.io", "--all", "-n", namespace, check=False)
        for ns in (kafka_ns, dash_ns):
            control_plane.kubectl(
                "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False
            )


def test_a_rerun_after_a_failed_install_creates_postgres_and_never_replaces_it(
    chart, control_plane, namespace
):
    """`make up` re-runs `helm upgrade --install` after a first install that timed out: that creates the
    PostgreSQL Cluster; a healthy upgrade leaves it untouched; uninstall keeps it and a reinstall
    neither replaces nor changes it (its data).

    helm/helm v4.3.1 pkg/action/install.go: post-install hooks run only after a successful --wait;
    pkg/cmd/upgrade.go: `upgrade --install` of a release with history (the failed install) runs an
    upgrade, which fires post-upgrade hooks only (pkg/action/upgrade.go releasingUpgrade);
    pkg/action/hooks.go: without a delete policy a hook is before-hook-creation, deleted and created
    again on every run; pkg/action/uninstall.go deletes the release's objects, not its hooks."""
    kube, sets, kafka_ns, dash_ns = install_args(control_plane, namespace)
    control_plane.kubectl("delete", "clusterrole", "streamotion-spark-driver", "--ignore-not-found")

    def cluster() -> dict | None:
        got = control_plane.kubectl(
            "get", "clusters.postgresql.cnpg.io", "streamotion-pg", "-n", namespace, "-o", "json", check=False
        )
        return json.loads(got.stdout) if got.returncode == 0 else None

    try:
        # No kubelet here: the operator never gets ready, so --wait times out, like a slow first `make up`.
        failed = helm("install", "st", str(chart), *kube, *sets, "--wait", "--timeout", "10s", check=False)
        assert failed.returncode != 0
        assert cluster() is None
        helm("upgrade", "--install", "st", str(chart), *kube, *sets, "--timeout", "2m")
        created = cluster()
        assert created is not None, "the re-run did not create the PostgreSQL Cluster"
        assert created["spec"]["bootstrap"]["initdb"]["secret"]["name"] == "streamotion-pg-app"
        helm("upgrade", "--install", "st", str(chart), *kube, *sets, "--set", "operator.workers=4")
        after = cluster()
        assert after["metadata"]["uid"] == created["metadata"]["uid"]
        assert after["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
        helm("uninstall", "st", *kube, "--wait", "--timeout", "2m")  # its namespaces gone too
        assert cluster()["metadata"]["uid"] == created["metadata"]["uid"]
        helm("install", "st", str(chart), *kube, *sets, "--timeout", "2m")
        again = cluster()
        assert again["metadata"]["uid"] == created["metadata"]["uid"]
        assert again["metadata"]["resourceVersion"] == created["metadata"]["resourceVersion"]
    finally:
        helm("uninstall", "st", *kube, "--ignore-not-found", check=False)
        control_plane.kubectl("delete", "clusters.postgresql.cnpg.io", "--all", "-n", namespace, check=False)
        for ns in (kafka_ns, dash_ns):
            control_plane.kubectl(
                "delete", "namespace", ns, "--ignore-not-found", "--wait=false", check=False
            )

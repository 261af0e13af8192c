"""The cluster path: `make up` on kind, the chart's values for kind and GKE, host sizing.

`make up` runs for real here with stand-ins for docker, kind, kubectl and helm on PATH that record
their arguments (there is no Docker on the test machine); the values files are checked as Helm
merges them with values.yaml, against the upstream charts' keys and templates at their pinned tags.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from streamotion.dev.helm import KUBE_VERSION, helm
from tests import test_chart
from tests.test_chart import render, value_files

ROOT = Path(__file__).resolve().parents[1]
stand_in_chart = test_chart.chart  # fixture: a copy of the chart with stand-ins for its subcharts

# ----------------------------------------------------------------------------------- make up on kind
STUB = textwrap.dedent(
    """\
    #!/bin/bash
    # Records its arguments (one shell-quoted line per call) and plays the part `make up` needs.
    tool=$(basename "$0")
    printf '%s' "$tool" >> "$STUB_LOG"; printf ' %q' "$@" >> "$STUB_LOG"; echo >> "$STUB_LOG"
    case "$tool $1 $2" in
      "docker image inspect") echo "$STUB_PLATFORM" ;;
      "docker image save") [ "$3" = --help ] && echo "$STUB_SAVE_HELP" ;;
      "docker save "*)
        out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && { out=$2; shift; }; shift; done
        # The archive lists what was saved, so that kind's stand-in can report what it loaded.
        grep '^docker save ' "$STUB_LOG" | tail -1 > "$out" ;;
      "kind load image-archive")
        for a in "$@"; do [ -f "$a" ] && { printf 'archive %s: ' "$a"; cat "$a"; } >> "$STUB_LOG"; done ;;
    esac
    exit 0
    """
)


def run_make_up(tmp_path: Path, *, save_help: str, platform: str = "linux/arm64") -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_PLATFORM": platform,
        "STUB_SAVE_HELP": save_help,
    }
    result = subprocess.run(
        ["make", "-C", str(ROOT), "up", "IMAGE_TAG=t1", f"HELM={bin_dir / 'helm'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = log.read_text().splitlines()
    return [shlex.split(line) for line in lines if not line.startswith("archive ")] + [
        ["archive", *shlex.split(line.split(": ", 1)[1])] for line in lines if line.startswith("archive ")
    ]


IMAGES = [f"streamotion/{c}:t1" for c in ("operator", "ingest", "jobs", "serving")]


def test_make_up_loads_images_as_a_single_platform_archive(tmp_path):
    """`kind load docker-image` fails with Docker's containerd image store, the default of Docker 29:
    `docker save` then writes the whole multi-platform index while only the host platform's blobs
    exist, and kind imports with `ctr images import --all-platforms`
    (kubernetes-sigs/kind v0.32.0 pkg/cluster/nodeutils/util.go LoadImageArchive; issue
    kubernetes-sigs/kind#3795, workaround documented by kubernetes-sigs/kind#4247). `make up` saves
    every image for one platform (that of the built images) and loads that file with
    `kind load image-archive`, which opens the path once per node (v0.32.0
    pkg/cmd/kind/load/image-archive/image-archive.go loadImage: os.Open per node, concurrently), so a
    file, not a pipe."""
    calls = run_make_up(tmp_path, save_help="      --platform string   Save only the given platform")
    kind_loads = [c for c in calls if c[:2] == ["kind", "load"]]
    assert kind_loads and all(c[2] == "image-archive" for c in kind_loads), kind_loads
    assert not [c for c in calls if "docker-image" in c]
    (load,) = kind_loads
    assert load[3:5] == ["--name", "streamotion"]
    saves = [c for c in calls if c[:2] == ["docker", "save"]]
    assert len(saves) == 1
    save = saves[0]
    assert save[save.index("--platform") + 1] == "linux/arm64"  # what `docker image inspect` reported
    assert sorted(a for a in save if a.startswith("streamotion/")) == sorted(IMAGES)
    # kind loaded the file `docker save` wrote, and it held every image; the file is gone afterwards.
    (archive,) = [c for c in calls if c[0] == "archive"]
    assert archive[1:] == save
    assert load[-1] == save[save.index("-o") + 1] and not Path(load[-1]).exists()
    # The load happens after the images are built and before Helm installs anything.
    order = [c[:2] for c in calls]
    assert order.index(["kind", "load"]) > max(i for i, c in enumerate(order) if c == ["docker", "build"])
    assert order.index(["kind", "load"]) < order.index(["helm", "repo"])


def test_make_up_without_docker_save_platform(tmp_path):
    """Docker clients before 28.0 have no `docker save --platform` (and no containerd store by default):
    `make up` then saves without it, still through one archive."""
    calls = run_make_up(tmp_path, save_help="  -o, --output string   Write to a file")
    (save,) = [c for c in calls if c[:2] == ["docker", "save"]]
    assert "--platform" not in save and sorted(a for a in save if a.startswith("streamotion/")) == sorted(
        IMAGES
    )
    assert [c[2] for c in calls if c[:2] == ["kind", "load"]] == ["image-archive"]


@pytest.fixture(autouse=True)
def _no_make_flags(monkeypatch):
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    monkeypatch.delenv("MFLAGS", raising=False)


# ----------------------------------------------------------------------------------- values per target
CHART = ROOT / "charts" / "streamotion"


def merged_values(*files: str) -> dict:
    """values.yaml with the given values files on top, merged the way Helm merges them (maps deeply,
    everything else replaced, null deletes a key)."""

    def merge(base: dict, over: dict) -> dict:
        out = dict(base)
        for key, value in over.items():
            if value is None:
                out.pop(key, None)
            elif isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    for f in files:
        values = merge(values, yaml.safe_load((CHART / f).read_text()) or {})
    return values


# kube-prometheus-stack 88.2.0 (prometheus-community/helm-charts tag kube-prometheus-stack-88.2.0):
# values.yaml has `<component>.enabled: true` for each control-plane component below (lines
# "## Component scraping the kube controller manager" etc.) and `defaultRules.rules.<group>: true`;
# each component's ServiceMonitor (templates/exporters/<dir>/servicemonitor.yaml) renders only with
# `<component>.enabled`, and the rule groups below (templates/prometheus/rules-1.14/) render only with
# both `<component>.enabled` and `defaultRules.rules.<group>`. The alerting groups hold the
# absent(up{job=...}) alerts that fire forever where nothing is scraped:
# kubernetes-system-controller-manager.yaml KubeControllerManagerDown, kubernetes-system-scheduler.yaml
# KubeSchedulerDown, kubernetes-system-kube-proxy.yaml KubeProxyDown; etcd.yaml holds etcdMembersDown
# and friends; kube-scheduler.rules.yaml recording rules on scheduler metrics.
CONTROL_PLANE = {
    "kubeControllerManager": ["kubeControllerManager"],
    "kubeScheduler": ["kubeSchedulerAlerting", "kubeSchedulerRecording"],
    "kubeEtcd": ["etcd"],
    "kubeProxy": ["kubeProxy"],
}


@pytest.mark.parametrize("target", ["kind", "gke"])
def test_unscrapable_control_plane_has_no_monitors_and_no_alerts(target):
    """kind and GKE expose neither etcd, kube-controller-manager, kube-scheduler nor kube-proxy to
    Prometheus: kube-prometheus-stack 88.2.0's monitors for them are off, and so are the default
    rule groups whose KubeControllerManagerDown / KubeSchedulerDown / KubeProxyDown alerts are
    `absent(up{job="..."})` (templates/prometheus/rules-1.14/kubernetes-system-controller-manager.yaml,
    kubernetes-system-scheduler.yaml, kubernetes-system-kube-proxy.yaml) and etcd's (etcd.yaml)."""
    kps = merged_values(f"values-{target}.yaml")["kube-prometheus-stack"]
    rules = kps.get("defaultRules", {}).get("rules", {})
    for component, groups in CONTROL_PLANE.items():
        assert kps.get(component, {}).get("enabled") is False, f"{target}: {component}.enabled"
        for group in groups:
            assert rules.get(group) is False, f"{target}: defaultRules.rules.{group}"
    # Every other default rule group stays on (the switches are exactly these).
    assert set(rules) == {g for groups in CONTROL_PLANE.values() for g in groups}
    assert kps.get("defaultRules", {}).get("create", True) is True


def dashboard_datasources(board: dict) -> tuple[set[str], set[str], set[str]]:
    """The datasource types a dashboard's panels, targets and variables use, the uids they name, and the
    plugin types of its datasource variables (whose values the ``${name}`` uids are)."""
    types, uids, variable_types = set(), set(), set()

    def walk(node) -> None:
        if isinstance(node, dict):
            ds = node.get("datasource")
            if isinstance(ds, dict):
                types.add(ds.get("type"))
                uids.add(ds.get("uid"))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(board.get("panels", []))
    walk(board.get("templating", {}))
    for var in board.get("templating", {}).get("list", []):
        if var.get("type") == "datasource":
            variable_types.add(var["query"])
            uids.discard(f"${{{var['name']}}}")
            uids.discard(f"${var['name']}")
    return types, uids, variable_types


def test_gke_grafana_has_the_bigquery_plugin_and_a_workload_identity_datasource():
    """The BigQuery dashboards get a datasource on GKE. grafana chart 12.10.4 (grafana-community/
    helm-charts tag grafana-12.10.4, the one kube-prometheus-stack 88.2.0 pins in Chart.yaml):
    `plugins` goes to the ConfigMap key `plugins` (templates/_config.tpl) that the pod reads as
    GF_PLUGINS_PREINSTALL_SYNC (templates/_pod.tpl); `serviceAccount.annotations` land on the
    ServiceAccount <release>-grafana (templates/serviceaccount.yaml, _helpers.tpl
    grafana.serviceAccountName). kube-prometheus-stack 88.2.0
    templates/grafana/configmaps-datasources.yaml appends `grafana.additionalDataSources` to the
    datasources ConfigMap when `grafana.enabled` and `grafana.sidecar.datasources.enabled`.
    grafana/google-bigquery-datasource v3.2.0: plugin id `grafana-bigquery-datasource`
    (src/plugin.json); provisioning `jsonData.authenticationType: gce` uses the metadata server's
    credentials (docs/sources/configure.md, pkg/bigquery/http_client.go), and without
    `defaultProject` the metadata server's project (pkg/bigquery/datasource.go)."""
    board = json.loads((ROOT / "grafana" / "dashboards" / "emotions-bigquery.json").read_text())
    types, literal_uids, variable_types = dashboard_datasources(board)
    assert len(types) == 1 and variable_types <= types, (types, variable_types)
    (plugin,) = types

    grafana = merged_values("values-gke.yaml")["kube-prometheus-stack"]["grafana"]
    assert grafana["enabled"] and grafana["sidecar"]["datasources"]["enabled"]
    assert plugin in grafana["plugins"]
    sources = [d for d in grafana.get("additionalDataSources", []) if d["type"] == plugin]
    assert len(sources) == 1, grafana.get("additionalDataSources")
    (source,) = sources
    # A datasource the dashboard's panels can use: its type, and the uid of any panel naming one.
    assert literal_uids <= {source["uid"]}, literal_uids
    assert source["jsonData"]["authenticationType"] == "gce"
    # No key: Workload Identity.
    assert "secureJsonData" not in source and "privateKey" not in source["jsonData"]
    # The uid does not collide with the chart's other datasources (Prometheus from the sidecar values).
    assert source["uid"] != grafana["sidecar"]["datasources"].get("uid", "prometheus")
    # Grafana's ServiceAccount is bound to a Google service account, and not the jobs' read-write one.
    gsa = grafana["serviceAccount"]["annotations"]["iam.gke.io/gcp-service-account"]
    assert re.fullmatch(
        r"[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z][a-z0-9-]{4,28}[a-z0-9]\.iam\.gserviceaccount\.com", gsa
    )
    assert gsa != merged_values("values-gke.yaml")["gcp"]["workloadIdentity"]["gcpServiceAccount"]
    # The GKE guide (docs/getting-started/gke.md) creates that account with read access and binds
    # Grafana's ServiceAccount.
    gke = (ROOT / "docs" / "getting-started" / "gke.md").read_text()
    name = gsa.split("@")[0]
    assert f"gcloud iam service-accounts create {name}" in gke
    assert (
        f"serviceAccount:{name}@$PROJECT.iam.gserviceaccount.com \\\n  --role=roles/bigquery.dataViewer"
        in gke
    )
    assert "[streamotion/streamotion-grafana]" in gke


# ----------------------------------------------------------------------------------- Kubernetes version
@pytest.mark.parametrize(("kube", "accepted"), [("v1.29.15", False), ("v1.30.0", True), (KUBE_VERSION, True)])
def test_chart_requires_the_kubernetes_version_strimzi_supports(stand_in_chart, kube, accepted):
    """strimzi/strimzi-kafka-operator 1.2.0 supports Kubernetes 1.30 and newer only: CHANGELOG.md
    (0.51.0, "From Strimzi 0.51 on, we support only Kubernetes 1.30 and newer") and
    packaging/helm-charts/helm3/strimzi-kafka-operator/README.md ("Prerequisites: Kubernetes 1.30+").
    The other pinned charts ask for less (kube-prometheus-stack 88.2.0 >=1.25, cloudnative-pg 0.29.0
    >=1.29, spark-operator 2.5.2 and kuberay-operator 1.7.0 none), so the chart's kubeVersion is
    Strimzi's, and Helm refuses older clusters before installing anything."""
    result = helm("template", "x", str(stand_in_chart), "--kube-version", kube, check=False)
    assert (result.returncode == 0) is accepted, result.stderr
    if not accepted:
        assert "incompatible with Kubernetes" in result.stderr, result.stderr


# ----------------------------------------------------------------------------------- host sizing (kind)
MI = {
    "Ki": 1 / 1024,
    "Mi": 1,
    "Gi": 1024,
    "Ti": 1024 * 1024,
    "k": 1000 / 1024**2,
    "M": 1000**2 / 1024**2,
    "G": 1000**3 / 1024**2,
}


def mib(quantity) -> float:
    """A Kubernetes memory quantity in MiB."""
    text = str(quantity)
    for suffix in sorted(MI, key=len, reverse=True):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * MI[suffix]
    return float(text) / 1024**2


def container_requests(containers: list[dict]) -> float:
    """Memory requests of a pod's containers; as the API server defaults them, a container with a
    limit and no request requests its limit (kubernetes v1.35.4 pkg/apis/core/v1/defaults.go
    SetDefaults_Pod)."""
    total = 0.0
    for c in containers:
        resources = c.get("resources") or {}
        memory = (resources.get("requests") or {}).get("memory") or (resources.get("limits") or {}).get(
            "memory"
        )
        total += mib(memory) if memory else 0
    return total


def scala_object(package, name: str):
    """A Scala object (its MODULE$ singleton) through py4j."""
    return getattr(getattr(package, f"{name}$"), "MODULE$")


def spark_pod_memory(app: dict) -> tuple[float, float]:
    """Memory (MiB) of the driver pod and of one executor pod of a SparkApplication, computed by
    the pinned pyspark's own feature steps (its spark-kubernetes jar, 4.0.0): BasicDriverFeatureStep and
    BasicExecutorFeatureStep request memory plus overhead, max(factor * memory, 384 MiB), with the
    factor 0.4 for Python applications (NON_JVM_MEMORY_OVERHEAD_FACTOR), which the driver hands to its
    executors. kubeflow/spark-operator v2.5.2 internal/controller/sparkapplication/submission.go passes
    spec.driver/executor memory, memoryOverhead and spec.sparkConf to spark-submit as these confs."""
    from pyspark import SparkConf
    from pyspark.java_gateway import launch_gateway

    spec = app["spec"]
    conf_values = {
        "spark.master": "k8s://https://kubernetes.default.svc:443",
        "spark.kubernetes.container.image": spec.get("image", "image"),
        "spark.kubernetes.namespace": app["metadata"].get("namespace", "default"),
        "spark.app.name": app["metadata"]["name"],
        **{str(k): str(v) for k, v in (spec.get("sparkConf") or {}).items()},
    }
    for role in ("driver", "executor"):
        for field, key in (("memory", "memory"), ("memoryOverhead", "memoryOverhead"), ("cores", "cores")):
            if spec[role].get(field) is not None:
                conf_values[f"spark.{role}.{key}"] = str(spec[role][field])
    if spec.get("memoryOverheadFactor"):
        conf_values["spark.kubernetes.memoryOverheadFactor"] = str(spec["memoryOverheadFactor"])
    assert spec["type"] == "Python"
    gateway = launch_gateway(SparkConf())
    try:
        jvm = gateway.jvm
        k8s = jvm.org.apache.spark.deploy.k8s
        conf = jvm.org.apache.spark.SparkConf(False)
        for k, v in conf_values.items():
            conf.set(k, v)
        none = jvm.scala.Option.empty()
        driver_conf = k8s.KubernetesConf.createDriverConf(
            conf,
            "spark-app",
            k8s.submit.PythonMainAppResource(spec["mainApplicationFile"]),
            "org.apache.spark.deploy.PythonRunner",
            gateway.new_array(jvm.java.lang.String, 0),
            none,
        )
        driver_step = k8s.features.BasicDriverFeatureStep(driver_conf)
        driver = driver_step.configurePod(k8s.SparkPod.initialPod())
        # What the driver hands its executors (system properties of the driver JVM).
        executor_conf_values = conf.clone()
        for step in (driver_step, k8s.features.DriverCommandFeatureStep(driver_conf)):
            props = step.getAdditionalPodSystemProperties().iterator()
            while props.hasNext():
                kv = props.next()
                executor_conf_values.set(kv._1(), kv._2())
        executor_conf = k8s.KubernetesConf.createExecutorConf(executor_conf_values, "1", "spark-app", none, 0)
        profile = scala_object(jvm.org.apache.spark.resource, "ResourceProfile").getOrCreateDefaultProfile(
            executor_conf_values
        )
        secret_file = scala_object(
            jvm.org.apache.spark.internal.config, "package"
        ).AUTH_SECRET_FILE_EXECUTOR()
        security = jvm.org.apache.spark.SecurityManager(executor_conf_values, none, secret_file)
        executor_step = k8s.features.BasicExecutorFeatureStep(executor_conf, security, profile)
        executor = executor_step.configurePod(k8s.SparkPod.initialPod())
        return (
            mib(driver.container().getResources().getRequests().get("memory").toString()),
            mib(executor.container().getResources().getRequests().get("memory").toString()),
        )
    finally:
        gateway.shutdown()
        gateway.proc.kill()
        gateway.proc.wait()


# Memory requests (MiB) of what `make up` installs that our templates do not render (the operator
# charts' own pods; the stand-in subcharts of the chart fixture render nothing), at the pinned versions:
# - strimzi-kafka-operator 1.2.0 packaging/helm-charts/helm3/strimzi-kafka-operator/values.yaml
#   resources.requests.memory 384Mi (values-kind.yaml overrides it); the entity operator of our Kafka
#   has no default resources (cluster-operator .../model/EntityTopicOperator.java sets none).
# - kuberay-operator 1.7.0 helm-chart/kuberay-operator/values.yaml: resources.limits.memory 512Mi and no
#   requests, so the API server requests 512Mi (SetDefaults_Pod); KubeRay v1.7.0
#   ray-operator/controllers/ray/common/pod.go BuildAutoscalerContainer adds a 512Mi autoscaler
#   container to the head pod of a RayCluster with enableInTreeAutoscaling.
# - spark-operator 2.5.2 (controller, webhook), cloudnative-pg 0.29.0, kube-prometheus-stack 88.2.0's
#   prometheus-operator (and its config reloaders: --config-reloader-memory-request 0), kube-state-metrics
#   8.2.0 and grafana 12.10.4's sidecars: `resources: {}`, no requests.
# - kind v0.32.0 pkg/build/nodeimage/const_cni.go: kindnet requests 50Mi on every node; kubeadm
#   (kubernetes v1.35.4 cmd/kubeadm/app/phases/addons/dns/manifests.go, .../phases/etcd/local.go):
#   two CoreDNS pods of 70Mi, etcd 100Mi on the control plane.
STRIMZI_OPERATOR_DEFAULT = 384
KUBERAY_OPERATOR = 512
RAY_AUTOSCALER = 512
KINDNET, COREDNS, COREDNS_REPLICAS, ETCD = 50, 70, 2, 100


def kind_memory_requests(chart: Path) -> tuple[dict[str, float], float]:
    """MiB requested by a default `make up` (chart with values-kind.yaml, kind, examples/demo.yaml), by
    part, and the MiB the model's workers add when Ray Serve scales them to maxReplicas."""
    parts: dict[str, float] = {}

    def add(name: str, amount: float) -> None:
        parts[name] = parts.get(name, 0) + amount

    # Our templates, rendered.
    for d in render(chart, *value_files(chart, "kind")):
        spec = d.get("spec") or {}
        if d["kind"] in ("Deployment", "StatefulSet"):
            add(
                d["metadata"]["name"],
                container_requests(spec["template"]["spec"]["containers"]) * spec.get("replicas", 1),
            )
        elif d["kind"] == "KafkaNodePool":
            add("Kafka", container_requests([spec]) * spec["replicas"])
        elif d["kind"] == "Cluster":
            add("PostgreSQL", container_requests([spec]) * spec.get("instances", 1))
    # The operator charts, from the values Helm hands them.
    values = merged_values("values-kind.yaml")
    strimzi = values["strimzi-kafka-operator"].get("resources", {}).get("requests", {}).get("memory")
    add("Strimzi operator", mib(strimzi) if strimzi else STRIMZI_OPERATOR_DEFAULT)
    assert not values["kuberay-operator"].get("resources")
    add("KubeRay operator", KUBERAY_OPERATOR)
    kps = values["kube-prometheus-stack"]
    add("Prometheus", container_requests([kps["prometheus"]["prometheusSpec"]]))
    add("Grafana", container_requests([kps["grafana"]]))
    # kind's own pods.
    nodes = yaml.safe_load((ROOT / "kind-config.yaml").read_text())["nodes"]
    add("kube-system", KINDNET * len(nodes) + COREDNS * COREDNS_REPLICAS)
    add("kube-system", ETCD * sum(n["role"] == "control-plane" for n in nodes))
    # The demo pipeline, as the operator renders it.
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamotion",
            "render",
            str(ROOT / "examples" / "demo.yaml"),
            "-n",
            "streamotion",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    scale_up = 0.0
    for d in (d for d in yaml.safe_load_all(out) if d):
        spec = d.get("spec") or {}
        if d["kind"] == "Deployment":
            add(
                "demo producers",
                container_requests(spec["template"]["spec"]["containers"]) * spec.get("replicas", 1),
            )
        elif d["kind"] == "SparkApplication":
            driver, executor = spark_pod_memory(d)
            add("demo Spark", driver + executor * spec["executor"].get("instances", 1))
        elif d["kind"] == "RayService":
            cluster = spec["rayClusterConfig"]
            head = container_requests(cluster["headGroupSpec"]["template"]["spec"]["containers"])
            if cluster.get("enableInTreeAutoscaling") and not (cluster.get("autoscalerOptions") or {}).get(
                "resources"
            ):
                head += RAY_AUTOSCALER
            add("demo Ray", head)
            for group in cluster.get("workerGroupSpecs", []):
                each = container_requests(group["template"]["spec"]["containers"])
                replicas = group.get("replicas", group.get("minReplicas", 1))
                add("demo Ray", each * replicas)
                scale_up += each * (group.get("maxReplicas", replicas) - replicas)
    return parts, scale_up


def test_docs_host_sizing_covers_what_make_up_requests(stand_in_chart):
    """The host sizing for kind (docs/operations/sizing.md) is the memory a default `make up` requests, summed from the
    rendered objects (our templates with values-kind.yaml, `streamotion render examples/demo.yaml`,
    Spark's own pod sizing) and the pinned upstream charts' defaults; the host figure covers the
    model at its maximum number of workers. kind nodes are containers without memory limits, each
    reporting the host's memory as allocatable, so nothing refuses pods beyond the host: requests
    are the figure to size by."""
    parts, scale_up = kind_memory_requests(stand_in_chart)
    total = sum(parts.values())
    section = (ROOT / "docs" / "operations" / "sizing.md").read_text()
    sizing = re.search(
        r"requests about \*\*([\d.]+) GiB\*\* of memory, \*\*([\d.]+) GiB\*\* once the model\s+scales.*?"
        r"at least \*\*(\d+) GiB\*\*",
        section,
        re.S,
    )
    assert sizing, "docs/operations/sizing.md: the host sizing sentence"
    at_start, at_max, host = (float(g) for g in sizing.groups())
    summary = {k: round(v) for k, v in parts.items()}
    assert abs(at_start - total / 1024) < 0.051, (total / 1024, summary)
    assert abs(at_max - (total + scale_up) / 1024) < 0.051, ((total + scale_up) / 1024, summary)
    assert host * 1024 >= total + scale_up, summary


def test_gke_scrapes_kube_dns_not_coredns():
    """kube-prometheus-stack 88.2.0 values.yaml: ``coreDns`` (on by default) scrapes the pods behind
    ``k8s-app: kube-dns`` on port 9153; ``kubeDns`` (off by default) scrapes kube-dns's own metrics on
    10055 (kubedns) and 10054 (dnsmasq sidecar). GKE's cluster DNS is the kube-dns add-on
    (kubernetes v1.35.4 cluster/addons/dns/kube-dns/kube-dns.yaml.in: containerPort 10055 ``metrics``,
    the sidecar on 10054, nothing on 9153), so on GKE the CoreDNS target is down for ever and the
    general TargetDown alert fires: the GKE values scrape kube-dns instead. kind runs CoreDNS and keeps
    the default."""
    gke = merged_values("values-gke.yaml")["kube-prometheus-stack"]
    assert gke["coreDns"]["enabled"] is False and gke["kubeDns"]["enabled"] is True
    kind = merged_values("values-kind.yaml")["kube-prometheus-stack"]
    assert kind.get("coreDns", {}).get("enabled", True) is True
    assert kind.get("kubeDns", {}).get("enabled", False) is False


@pytest.mark.parametrize("target", ["default", "kind", "gke"])
def test_no_grafana_datasource_points_at_the_disabled_alertmanager(target):
    """kube-prometheus-stack 88.2.0 templates/grafana/configmaps-datasources.yaml provisions an
    Alertmanager datasource whenever ``grafana.sidecar.datasources.alertmanager.enabled`` (default true),
    whether or not ``alertmanager.enabled``: with Alertmanager off (our values) Grafana would list a
    datasource whose Service does not exist. Off together."""
    files = [] if target == "default" else [f"values-{target}.yaml"]
    kps = merged_values(*files)["kube-prometheus-stack"]
    assert kps["alertmanager"]["enabled"] is False
    assert kps["grafana"]["sidecar"]["datasources"]["alertmanager"]["enabled"] is False

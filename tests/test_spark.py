"""The SparkApplication against what Spark and spark-operator do with it, and the Spark version line.

spark-operator builds nothing itself: ``spark-submit`` (in the operator's image) builds the driver pod
with Spark's own feature steps, the driver builds its executors the same way, and spark-operator's
mutating webhook then appends what ``spec.driver`` / ``spec.executor`` ask for. These tests build the
pods that way and let the real API server judge them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from streamotion_operator import builders
from streamotion_operator.config import OperatorConfig
from streamotion_operator.kube import Kube

from streamotion.api.validate import parse

ROOT = Path(__file__).resolve().parents[1]

# The ports Spark's own Kubernetes feature steps declare on its containers, as (name, containerPort)
# with default settings: apache/spark v4.0.0 (Maven Central spark-kubernetes_2.13 4.0.0 sources,
# identical in 4.0.2) resource-managers/kubernetes/core/src/main/scala/org/apache/spark/deploy/k8s/
#   Constants.scala: DRIVER_PORT_NAME "driver-rpc-port" (7078), BLOCK_MANAGER_PORT_NAME "blockmanager"
#     (7079), UI_PORT_NAME "spark-ui";
#   features/BasicDriverFeatureStep.scala: the driver container gets driver-rpc-port, blockmanager and
#     spark-ui (SparkUI.getUIPort: spark.ui.port, 4040);
#   features/BasicExecutorFeatureStep.scala: the executor container gets blockmanager.
SPARK_OWN_PORTS = {
    "driver": [("driver-rpc-port", 7078), ("blockmanager", 7079), ("spark-ui", 4040)],
    "executor": [("blockmanager", 7079)],
}
SPARK_CONTAINER = {"driver": "spark-kubernetes-driver", "executor": "spark-kubernetes-executor"}


def full_pipeline(namespace: str = "team-a", bigquery_key: str = "bq-key"):
    """examples/full.yaml (PostgreSQL and BigQuery sinks, checkpoint PVC) with a BigQuery key Secret."""
    doc = yaml.safe_load((ROOT / "examples" / "full.yaml").read_text())
    doc["metadata"]["namespace"] = namespace
    for sink in doc["spec"]["sinks"]:
        if sink["type"] == "bigquery":
            sink["bigquery"]["credentialsSecret"] = bigquery_key
    p = parse(doc)
    assert not p.spec.processing.checkpoint.uri, "full.yaml is expected to use the checkpoint PVC"
    return p


def spark_operator_pod(app: dict, role: str) -> dict:
    """The ``role`` (driver|executor) pod as Spark and spark-operator v2.5.2 would build it.

    Spark's container first (its own ports, ``SPARK_OWN_PORTS``), then kubeflow/spark-operator v2.5.2
    internal/webhook/sparkpod_defaulter.go mutateSparkPod: addEnvVars appends spec.<role>.env,
    addVolumes adds only the spec.volumes that spec.<role>.volumeMounts name (and those mounts),
    addContainerPorts/addContainerPort append spec.<role>.ports without de-duplication,
    addContainerSecurityContext / addPodSecurityContext set the security contexts."""
    spec = app["spec"]
    part = spec[role]
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = [m for m in part.get("volumeMounts", []) if m["name"] in volumes]
    used = list(dict.fromkeys(m["name"] for m in mounts))
    container = {
        "name": SPARK_CONTAINER[role],
        "image": spec["image"],
        "ports": [{"name": n, "containerPort": port, "protocol": "TCP"} for n, port in SPARK_OWN_PORTS[role]],
        "env": [{"name": "SPARK_USER", "value": "spark"}, *part.get("env", [])],
        "volumeMounts": mounts,
        "securityContext": part.get("securityContext", {}),
    }
    container["ports"] += [
        {"name": p["name"], "containerPort": p["containerPort"], "protocol": p.get("protocol", "TCP")}
        for p in part.get("ports", [])
    ]
    pod_spec = {
        "containers": [container],
        "volumes": [volumes[name] for name in used],
        "securityContext": part.get("podSecurityContext", {}),
        "restartPolicy": "Never",
    }
    if role == "driver":
        pod_spec["serviceAccountName"] = part["serviceAccount"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app['metadata']['name']}-{role}",
            "labels": {**part.get("labels", {}), "spark-role": role},
        },
        "spec": pod_spec,
    }


# ------------------------------------------------------------------------------------ ports
def test_our_ports_never_take_a_name_spark_declares():
    """Spark declares driver-rpc-port, blockmanager and spark-ui on the driver and blockmanager on
    executors (apache/spark v4.0.0 k8s Constants.scala, BasicDriverFeatureStep.scala,
    BasicExecutorFeatureStep.scala); kubeflow/spark-operator v2.5.2 internal/webhook/
    sparkpod_defaulter.go addContainerPorts appends spec.driver.ports / spec.executor.ports without
    de-duplication, so a name of Spark's in ours is a duplicate the API server refuses."""
    app = builders.spark_application(full_pipeline(), OperatorConfig())
    for role, own in SPARK_OWN_PORTS.items():
        ours = [p["name"] for p in app["spec"][role].get("ports", [])]
        reserved = {name for name, _ in own}
        assert not reserved & set(ours), f"{role} ports reuse Spark's own names: {reserved & set(ours)}"
        numbers = [p["containerPort"] for p in app["spec"][role].get("ports", [])]
        assert not {port for _, port in own} & set(numbers), f"{role} ports reuse Spark's port numbers"


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


def test_spark_operator_pods_are_admitted_and_the_ui_port_is_scraped(control_plane, kube, namespace):
    """The driver and executor pods, built as Spark 4.0 + spark-operator v2.5.2 build them (Spark's
    ports, then ours appended: kubeflow/spark-operator v2.5.2 internal/webhook/sparkpod_defaulter.go
    addContainerPorts), are created by the real API server (which refuses duplicate port names), and
    every port the job PodMonitor scrapes on the driver is one the driver pod has: ``spark-ui`` is
    Spark's own (apache/spark v4.0.0 k8s features/BasicDriverFeatureStep.scala, UI_PORT_NAME)."""
    p = full_pipeline(namespace)
    app = builders.spark_application(p, OperatorConfig())
    kube.dry_run_apply(app)  # still valid against spark-operator's CRD
    pods = {role: spark_operator_pod(app, role) for role in ("driver", "executor")}
    for role, pod in pods.items():
        created = kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod, what=f"{role} pod")
        names = [port["name"] for port in created["spec"]["containers"][0]["ports"]]
        assert len(names) == len(set(names)), f"{role} pod port names repeat: {names}"
    (job,) = [m for m in builders.pod_monitors(p) if m["metadata"]["name"] == f"{p.name}-job"]
    assert job["spec"]["selector"]["matchLabels"]["spark-role"] == "driver"
    driver_ports = {port["name"] for port in pods["driver"]["spec"]["containers"][0]["ports"]}
    scraped = {e["port"] for e in job["spec"]["podMetricsEndpoints"]}
    assert "spark-ui" in scraped and scraped <= driver_ports
    assert builders.SPARK_UI_PORT_NAME == "spark-ui"


def test_a_duplicate_port_name_is_refused_by_the_api_server(control_plane, kube, namespace):
    """What the test above relies on: the API server refuses a container with two ports of one name."""
    from streamotion_operator.kube import ApiError

    app = builders.spark_application(full_pipeline(namespace), OperatorConfig())
    pod = spark_operator_pod(app, "driver")
    pod["spec"]["containers"][0]["ports"].append(
        {"name": "spark-ui", "containerPort": 4041, "protocol": "TCP"}
    )
    with pytest.raises(ApiError) as err:
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod)
    assert err.value.status == 422 and "spark-ui" in str(err.value)


# ------------------------------------------------------------------- what each pod is given
SECRET_ENV = {"PGUSER", "PGPASSWORD", "GOOGLE_APPLICATION_CREDENTIALS"}


def test_executors_hold_the_sink_credentials_and_only_the_driver_mounts_the_checkpoint():
    """The checkpoint claim is ReadWriteOnce: mounted by executors on other nodes it cannot attach
    (Multi-Attach). Only the driver uses it (Structured Streaming's checkpoint is written by the
    driver). The sinks are written from the executors (jobs/streamotion_jobs/job.py: each partition
    stages its rows itself, the driver only commits), so executors get the PostgreSQL credentials
    and the BigQuery key too. spark-operator mounts a volume only in the pods whose volumeMounts name
    it (kubeflow/spark-operator v2.5.2 internal/webhook/sparkpod_defaulter.go addVolumes) and appends
    spec.executor.env to the executor container (addEnvVars)."""
    p = full_pipeline()
    app = builders.spark_application(p, OperatorConfig())
    spec = app["spec"]
    driver, executor = spec["driver"], spec["executor"]

    def mounted(part):
        return {m["name"] for m in part["volumeMounts"]}

    def env(part):
        return {e["name"]: e for e in part["env"]}

    assert {"checkpoint", "bigquery-key"} <= mounted(driver)
    assert set(env(driver)) >= SECRET_ENV
    assert set(env(executor)) >= SECRET_ENV
    for name in ("PGUSER", "PGPASSWORD"):  # by reference, the same Secret keys as the driver's
        assert env(executor)[name] == env(driver)[name] and "valueFrom" in env(executor)[name]
    assert "bigquery-key" in mounted(executor) and "checkpoint" not in mounted(executor)
    # the executor pod spark-operator would build: the key Secret volume, never the claim
    pod = spark_operator_pod(app, "executor")
    assert not any("persistentVolumeClaim" in v for v in pod["spec"]["volumes"])
    assert any(v.get("secret", {}).get("secretName") == "bq-key" for v in pod["spec"]["volumes"])
    claim = {v["name"]: v for v in spec["volumes"]}["checkpoint"]["persistentVolumeClaim"]["claimName"]
    (pvc,) = builders.checkpoint_claim(p)
    assert claim == pvc["metadata"]["name"] and pvc["spec"]["accessModes"] == ["ReadWriteOnce"]
    driver_pod = spark_operator_pod(app, "driver")
    assert any(
        v.get("persistentVolumeClaim", {}).get("claimName") == claim for v in driver_pod["spec"]["volumes"]
    )
    # still what executors need: the pipeline file and a writable /tmp (read-only root filesystem)
    assert {"pipeline", "tmp"} <= mounted(executor)
    # every volume is still mounted by someone
    assert {v["name"] for v in spec["volumes"]} == mounted(driver) | mounted(executor)


def test_the_sinks_are_written_from_the_executors():
    """What the test above relies on: the micro-batch never reaches the driver as rows (no toPandas
    or collect of the batch in the job), and the PostgreSQL sink stages from executor functions
    (mapInPandas) that capture only the DSN (without a password), schema and batch metadata."""
    import inspect
    import pickle

    from streamotion_jobs import job
    from streamotion_jobs.sinks import BatchInfo
    from streamotion_jobs.sinks.postgres import PostgresSink, stager

    source = inspect.getsource(job.StreamingJob.process_batch)
    assert ".toPandas()" not in source and "sink.stage" not in source  # staged in _write
    assert "sink.stage(" in inspect.getsource(job.StreamingJob._write)
    assert "mapInPandas(fn" in inspect.getsource(PostgresSink.stage)
    info = BatchInfo("ns/p", "q", 1, 60.0, 60.0, 0, {"t": {0: 1}})
    fn = stager("host=db dbname=app", "s", "events", info)
    shipped = pickle.dumps(fn.__closure__ and [c.cell_contents for c in fn.__closure__])
    assert b"password" not in shipped.lower()


# ------------------------------------------------------------------------------- versions
# The Spark line spark-operator submits with: kubeflow/spark-operator v2.5.2 Dockerfile
# ARG SPARK_IMAGE=docker.io/apache/spark:4.0.4 (the operator image is FROM it and runs its spark-submit).
SPARK_OPERATOR_SPARK_LINE = {"2.5.2": "4.0"}


def test_the_job_is_on_the_spark_line_spark_operator_submits_with():
    """spark-operator v2.5.2's image is built FROM docker.io/apache/spark:4.0.4 (kubeflow/spark-operator
    v2.5.2 Dockerfile, ARG SPARK_IMAGE) and its spark-submit builds the driver pod, so the job's Spark
    (pyspark pin, job image base, values.yaml versions.spark, the operator's default sparkVersion) is on
    that line: 4.0 (Scala 2.13)."""
    chart = yaml.safe_load((ROOT / "charts" / "streamotion" / "Chart.yaml").read_text())
    (dep,) = [d for d in chart["dependencies"] if d["name"] == "spark-operator"]
    assert dep["version"] in SPARK_OPERATOR_SPARK_LINE, (
        f"spark-operator {dep['version']}: check the Spark version of its image (Dockerfile ARG SPARK_IMAGE)"
    )
    line = SPARK_OPERATOR_SPARK_LINE[dep["version"]]

    def on_line(version: str) -> bool:
        return re.fullmatch(rf"{re.escape(line)}\.\d+", version) is not None

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (pin,) = [r for r in pyproject["project"]["optional-dependencies"]["jobs"] if r.startswith("pyspark")]
    pyspark = pin.split("==")[1]
    base = re.search(r"^FROM apache/spark:(\S+)$", (ROOT / "jobs" / "Dockerfile").read_text(), re.M).group(1)
    image = re.fullmatch(r"(\d+\.\d+\.\d+)-scala(\d+\.\d+)-java\d+-python3-ubuntu", base)
    assert image, base
    values = yaml.safe_load((ROOT / "charts" / "streamotion" / "values.yaml").read_text())
    versions = {
        "pyspark": pyspark,
        "jobs/Dockerfile": image.group(1),
        "values.yaml versions.spark": values["versions"]["spark"],
        "OperatorConfig.spark_version": OperatorConfig().spark_version,
    }
    assert all(on_line(v) for v in versions.values()), f"not all on Spark {line}: {versions}"
    assert len(set(versions.values())) == 1, versions
    from streamotion_jobs import spark

    assert image.group(2) == spark.SCALA_BINARY == "2.13"  # Spark 4 is built for Scala 2.13 only

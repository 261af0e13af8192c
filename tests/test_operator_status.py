"""Status that means what it says, on the real API server: a child counts as ready only once its
controller has observed its current spec, and a topic created again under the pipeline is reported.

Children's controllers do not run here; their status is patched the way each reports it at the
pinned versions (cited per test).
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest
import yaml
from streamotion_operator.builders import KINDS
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import ACCEPTED_TOPIC_IDS
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    BASE_SPEC,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    make_ready,
    pipeline,
    report_sinks,
    set_status,
    topic_id,
    wait_for,
)

from streamotion import naming
from streamotion.api.models import API_VERSION, StreamPipeline

pytestmark = pytest.mark.timeout(240)


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    boards = tmp_path_factory.mktemp("dashboards")
    (boards / "overview.json").write_text(json.dumps({"uid": "o", "title": "O"}))
    control_plane.kubectl("create", "namespace", "kafka", check=False)
    cfg = OperatorConfig(resync_seconds=1, dashboards_dir=str(boards), cleanup_poll_seconds=0.5)
    op = OperatorThread(control_plane.kubeconfig_path, cfg).start()
    yield op
    control_plane.kubectl("delete", "streampipelines", "--all", "-A", "--timeout=90s", check=False)
    op.stop()


def _spec(**changes):
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["dashboards"] = {"enabled": False}
    spec.update(changes)
    return spec


def _running(kube, ns, name, spec):
    create_secrets(kube, ns)
    apply_pipeline(kube, pipeline(name, ns, spec))
    wait_for(lambda: len(children(kube, ns, name)) >= 10, 60, what="children")

    def ready():
        make_ready(kube, ns, name)
        return condition(get_pipeline(kube, ns, name), "Ready").get("status") == "True"

    wait_for(ready, 60, interval=0.5, what=f"{ns}/{name} Ready")


def _cond(kube, ns, name, ctype):
    return condition(get_pipeline(kube, ns, name), ctype)


def _child(kube, ns, name, kind):
    return next(v for k, v in children(kube, ns, name).items() if k[0] == kind)


def test_kafka_topic_is_ready_only_once_strimzi_observed_the_new_spec(operator, kube, namespace):
    """strimzi/strimzi-kafka-operator@1.2.0 topic-operator/.../KubernetesHandler.java (updateStatus):
    "we always set the observedGeneration because it shows that the operator works, and that it saw
    the last update to the resource"; a Ready condition from before a spec change is stale."""
    name = "kt"
    _running(kube, namespace, name, _spec())
    raw = naming.topic_resource_name(StreamPipeline.model_validate(pipeline(name, namespace, _spec())), "raw")
    spec = _spec()
    spec["kafka"] = {**spec["kafka"], "partitions": 4}
    apply_pipeline(kube, pipeline(name, namespace, spec))
    wait_for(
        lambda: kube.get(KINDS["KafkaTopic"], "kafka", raw)["spec"]["partitions"] == 4,
        30,
        what="4 partitions",
    )
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "TopicsReady")).get("status") == "False" and c,
        20,
        what="TopicsReady False",
    )
    assert "has not observed its new spec" in c["message"], c
    make_ready(kube, namespace, name, pods=False, job=False, model=False)  # Strimzi reconciled both topics
    wait_for(
        lambda: _cond(kube, namespace, name, "TopicsReady").get("status") == "True", 20, what="TopicsReady"
    )


def test_ray_service_is_ready_only_once_kuberay_observed_the_new_spec(operator, kube, namespace):
    """ray-project/kuberay@v1.7.0 ray-operator/controllers/ray/rayservice_controller.go
    (calculateStatus: Status.ObservedGeneration = ObjectMeta.Generation) and
    apis/ray/v1/rayservice_types.go (conditions Ready and UpgradeInProgress: the old cluster keeps
    serving, Ready, while the new spec's cluster comes up)."""
    name = "rs"
    _running(kube, namespace, name, _spec())
    spec = _spec(model={**BASE_SPEC["model"], "replicas": {"min": 1, "max": 3}})
    apply_pipeline(kube, pipeline(name, namespace, spec))
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "ModelReady")).get("status") == "False" and c,
        20,
        what="ModelReady False",
    )
    assert "has not observed its new spec" in c["message"], c
    rs = _child(kube, namespace, name, "RayService")
    upgrading = {"type": "UpgradeInProgress", "status": "True", "reason": "Upgrading", "message": "new cluster",
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    ready = next(x for x in rs["status"]["conditions"] if x["type"] == "Ready")
    status = {"observedGeneration": rs["metadata"]["generation"], "conditions": [ready, upgrading]}
    set_status(kube, "RayService", namespace, rs["metadata"]["name"], status)
    c = wait_for(
        lambda: "upgrading" in (c := _cond(kube, namespace, name, "ModelReady")).get("message", "") and c,
        20,
        what="ModelReady says upgrading",
    )
    assert c["status"] == "False"
    set_status(kube, "RayService", namespace, rs["metadata"]["name"], {"conditions": [ready]})
    wait_for(
        lambda: _cond(kube, namespace, name, "ModelReady").get("status") == "True", 20, what="ModelReady"
    )


def test_spark_application_is_ready_only_once_submitted_after_its_spec_changed(operator, kube, namespace):
    """kubeflow/spark-operator@v2.5.2 api/v1beta2/sparkapplication_types.go: SparkApplicationStatus
    has no observedGeneration; internal/controller/sparkapplication/event_filter.go: a spec change
    sets the state INVALIDATING ("best effort as we can potentially miss updates") and the
    application is submitted again (status.lastSubmissionAttemptTime). RUNNING from a submission
    before the change is the old spec running."""
    name = "sa"
    _running(kube, namespace, name, _spec())
    app = _child(kube, namespace, name, "SparkApplication")
    time.sleep(1.2)  # the change comes a second after the submission
    spec = _spec(processing={"executors": {"instances": 2, "cores": 1, "memory": "1g"}})
    apply_pipeline(kube, pipeline(name, namespace, spec))
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "ProcessingReady")).get("status") == "False" and c,
        20,
        what="ProcessingReady False",
    )
    assert "before its spec changed" in c["message"], c
    processing = get_pipeline(kube, namespace, name)["status"]["processing"]
    assert processing["appliedGeneration"] == app["metadata"]["generation"] + 1
    make_ready(kube, namespace, name)  # submitted again, RUNNING
    wait_for(
        lambda: _cond(kube, namespace, name, "ProcessingReady").get("status") == "True",
        20,
        what="ProcessingReady",
    )


def test_a_topic_created_again_is_reported_until_accepted(operator, kube, namespace):
    """strimzi/strimzi-kafka-operator@1.2.0 api/.../topic/KafkaTopicStatus.java: status.topicId is
    Kafka's id of the topic; a topic deleted and created again (by hand, or on another cluster)
    has a new one, and the job's checkpoint offsets belong to the old one."""
    name = "again"
    _running(kube, namespace, name, _spec())
    topics = get_pipeline(kube, namespace, name)["status"]["topics"]
    raw_kt = next(
        v for k, v in children(kube, namespace, name).items() if k[0] == "KafkaTopic" and "-raw-" in k[2]
    )
    assert topics["topicIds"]["raw"] == topic_id(raw_kt)
    # deleted by hand: the operator creates the KafkaTopic again, Strimzi an empty topic with a new id
    kube.delete(KINDS["KafkaTopic"], "kafka", raw_kt["metadata"]["name"])

    def recreated():
        kt = kube.get(KINDS["KafkaTopic"], "kafka", raw_kt["metadata"]["name"])
        return kt and kt["metadata"]["uid"] != raw_kt["metadata"]["uid"] and kt

    new_kt = wait_for(recreated, 30, what="the KafkaTopic created again")
    make_ready(kube, namespace, name)
    new_id = topic_id(new_kt)
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "TopicsReady")).get("reason") == "TopicRecreated" and c,
        20,
        what="TopicsReady TopicRecreated",
    )
    assert c["status"] == "False" and new_id in c["message"] and topic_id(raw_kt) in c["message"]
    body = get_pipeline(kube, namespace, name)
    assert body["status"]["topics"]["topicIds"]["raw"] == topic_id(raw_kt)  # kept until accepted
    assert condition(body, "Ready")["status"] == "False"
    events = kube.request("GET", f"/api/v1/namespaces/{namespace}/events")["items"]
    assert any(e["reason"] == "TopicRecreated" and e["type"] == "Warning" for e in events)
    kube.request(
        "PATCH",
        f"/apis/{API_VERSION}/namespaces/{namespace}/streampipelines/{name}",
        body={"metadata": {"annotations": {ACCEPTED_TOPIC_IDS: f"raw={new_id}"}}},
        content_type="application/merge-patch+json",
    )
    wait_for(
        lambda: _cond(kube, namespace, name, "TopicsReady").get("status") == "True",
        20,
        what="TopicsReady again",
    )
    assert get_pipeline(kube, namespace, name)["status"]["topics"]["topicIds"]["raw"] == new_id


def test_sinks_ready_follows_the_jobs_own_report(operator, kube, namespace):
    """SinksReady is what the job says of its sinks (streamotion_jobs.report), not that a Secret exists."""
    name = "sinks"
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline(name, namespace, _spec()))
    wait_for(lambda: len(children(kube, namespace, name)) >= 10, 60, what="children")
    # every child ready, the Secret there, but the job has said nothing yet
    make_ready(kube, namespace, name, job=False)
    set_status(
        kube, "SparkApplication", namespace, f"{name}-job",
        {"applicationState": {"state": "RUNNING"}, "driverInfo": {}, "lastSubmissionAttemptTime": "2099-01-01T00:00:00Z"},
    )  # fmt: skip
    c = wait_for(
        lambda: (
            "has not reported" in (c := _cond(kube, namespace, name, "SinksReady")).get("message", "") and c
        ),
        20,
        what="SinksReady waiting for the job's report",
    )
    assert c["status"] == "False"
    report_sinks(kube, namespace, name)
    wait_for(
        lambda: _cond(kube, namespace, name, "SinksReady").get("status") == "True", 20, what="SinksReady"
    )
    report_sinks(kube, namespace, name, failing={0: "OperationalError: connection refused"})
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "SinksReady")).get("reason") == "SinkFailing" and c,
        20,
        what="SinksReady SinkFailing",
    )
    assert c["status"] == "False" and "connection refused" in c["message"]
    assert get_pipeline(kube, namespace, name)["status"]["sinks"][0]["ready"] is False


def test_the_driver_can_write_its_report_with_the_charts_role_only(
    operator, kube, namespace, control_plane, root
):
    """The job's SinkReport, through the API server with a token of the pipeline's Spark
    ServiceAccount bound only to the chart's streamotion-spark-driver ClusterRole (no new right)."""
    from streamotion_jobs.report import ApiWriter, SinkReport

    rbac = (root / "charts/streamotion/templates/spark-driver-rbac.yaml").read_text()
    rules = yaml.safe_load(rbac[rbac.index("rules:") :])["rules"]
    role = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": operator.runtime.cfg.spark_driver_cluster_role}, "rules": rules}  # fmt: skip
    control_plane.kubectl("apply", "-f", "-", input=json.dumps(role))
    name = "report"
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline(name, namespace, _spec()))
    wait_for(lambda: len(children(kube, namespace, name)) >= 10, 60, what="children")
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}-spark/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 600},
        },
    )["status"]["token"]
    cfg = yaml.safe_load(Path(control_plane.kubeconfig_path).read_text())
    cluster = cfg["clusters"][0]["cluster"]
    ca = cluster.get("certificate-authority")
    if not ca:
        ca_path = control_plane.workdir / "report-ca.crt"
        ca_path.write_bytes(base64.b64decode(cluster["certificate-authority-data"]))
        ca = str(ca_path)
    writer = ApiWriter(cluster["server"], namespace, f"{name}-job-report", lambda: token, ca)
    report = SinkReport(["postgres"], writer)
    report.failing(0, ConnectionRefusedError("pg:5432 refused"))
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "SinksReady")).get("reason") == "SinkFailing" and c,
        20,
        what="SinksReady SinkFailing from the job's report",
    )
    assert "ConnectionRefusedError: pg:5432 refused" in c["message"]
    report.ok(0)
    wait_for(
        lambda: _cond(kube, namespace, name, "SinksReady").get("status") == "True", 20, what="SinksReady"
    )
    cm = kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}-job-report")
    assert json.loads(cm["data"][naming.JOB_REPORT_KEY])[0]["ok"] is True
    # the operator's next applies leave the driver's data alone
    time.sleep(2.5)
    cm2 = kube.request("GET", f"/api/v1/namespaces/{namespace}/configmaps/{name}-job-report")
    assert cm2["data"] == cm["data"]


def test_the_job_reports_a_topic_behind_its_checkpoint(operator, kube, namespace):
    """The job side of TopicRecreated: Spark's Kafka source stops the query with error class
    KAFKA_DATA_LOSS.PARTITION_OFFSET_CHANGED, "Partition <topicPartition> offset was changed from
    <prevOffset> to <newOffset>." (org.apache.spark:spark-sql-kafka-0-10_2.13:4.0.0
    error/kafka-error-conditions.json; KafkaOffsetReaderAdmin getOffsetRangesFromResolvedOffsets
    throws KafkaExceptions.partitionOffsetChanged); the job's report carries it to TopicsReady."""
    from streamotion_jobs.report import SinkReport

    name = "behind"
    _running(kube, namespace, name, _spec())

    def write(data):
        kube.request(
            "PATCH",
            f"/api/v1/namespaces/{namespace}/configmaps/{name}-job-report",
            body={"data": data},
            content_type="application/merge-patch+json",
        )

    report = SinkReport(["postgres"], write)
    report.ok(0)
    assert not report.query_failed("java.net.ConnectException: Connection refused")
    spark_error = (
        "[STREAM_FAILED] Query [id = 1, runId = 2] terminated with exception: "
        "[KAFKA_DATA_LOSS.PARTITION_OFFSET_CHANGED] Some data may have been lost because they are not "
        "available in Kafka any more; either the data was aged out by Kafka or the topic may have been "
        "deleted before all the data in the topic was processed. If you don't want your streaming query "
        "to fail on such cases, set the source option failOnDataLoss to false. Reason: Partition "
        f"streamotion.{namespace}.{name}.raw-0 offset was changed from 1234 to 0. SQLSTATE: 22000"
    )
    assert report.query_failed(spark_error)
    c = wait_for(
        lambda: (c := _cond(kube, namespace, name, "TopicsReady")).get("reason") == "TopicRecreated" and c,
        20,
        what="TopicsReady TopicRecreated from the job",
    )
    assert (
        c["status"] == "False"
        and "changed from 1234 to 0" in c["message"]
        and "the job reports" in c["message"]
    )
    report.query_progressing()
    wait_for(
        lambda: _cond(kube, namespace, name, "TopicsReady").get("status") == "True", 20, what="TopicsReady"
    )

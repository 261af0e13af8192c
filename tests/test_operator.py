"""The operator in-process against the real control plane (upstream CRDs, garbage collector on).

No kubelet, Strimzi, spark-operator or KubeRay runs: children's readiness is reported by
patching their status the way those controllers would, and the status transitions asserted.
"""

from __future__ import annotations

import json
import threading

import pytest
import yaml
from streamotion_operator.builders import SPEC_HASH_ANNOTATION
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import PIPELINE_KIND
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    BASE_SPEC,
    SECRET,
    SECRETS,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    generations,
    get_pipeline,
    make_ready,
    pipeline,
    ready_condition,
    set_status,
    versions,
    wait_for,
)

from streamotion import naming

pytestmark = pytest.mark.timeout(240)
KAFKA_NS = "kafka"
MONITORING_NS = "monitoring"


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


@pytest.fixture(scope="module")
def op_config(root, tmp_path_factory):
    boards = tmp_path_factory.mktemp("dashboards")
    board = {
        "uid": "streamotion-overview",
        "title": "Streamotion overview",
        "templating": {"list": [{"name": "pipeline", "type": "query", "current": {}}]},
    }
    (boards / "overview.json").write_text(json.dumps(board))
    return OperatorConfig(resync_seconds=2, kafka_namespace=KAFKA_NS, dashboards_dir=str(boards))


@pytest.fixture(scope="module")
def operator(control_plane, op_config):
    for ns in (KAFKA_NS, MONITORING_NS):
        control_plane.kubectl("create", "namespace", ns, check=False)
    op = OperatorThread(control_plane.kubeconfig_path, op_config).start()
    yield op
    # let the operator release its finalizers before it stops (no namespace stuck Terminating)
    control_plane.kubectl("delete", "streampipelines", "--all", "-A", "--timeout=90s", check=False)
    op.stop()


def phase(kube, ns, name):
    return ((get_pipeline(kube, ns, name) or {}).get("status") or {}).get("phase")


def wait_phase(kube, ns, name, want, timeout=60):
    return wait_for(lambda: phase(kube, ns, name) == want, timeout, what=f"{ns}/{name} phase {want}")


def events(kube, ns, name):
    items = kube.request("GET", f"/api/v1/namespaces/{ns}/events").get("items", [])
    return [
        e
        for e in items
        if e["involvedObject"].get("name") == name and e["involvedObject"]["kind"] == "StreamPipeline"
    ]


def expected_children(ns, name, sources=("reddit", "demo"), copies=False):
    """The children of a pipeline of BASE_SPEC; ``copies``: with the Kafka credentials' copies
    (made once Strimzi has written them: make_ready)."""
    topic = {"raw": "raw", "deadLetter": "dlq"}
    from streamotion.api.models import StreamPipeline

    p = StreamPipeline.model_validate(pipeline(name, ns))
    keys = {
        ("ConfigMap", ns, f"{name}-pipeline"),
        ("ConfigMap", ns, f"{name}-job-report"),
        ("ConfigMap", MONITORING_NS, naming.dashboard_config_map_name(p)),
    }
    keys |= {("KafkaTopic", KAFKA_NS, naming.topic_resource_name(p, r)) for r in topic}
    keys |= {("Deployment", ns, f"{name}-src-{s}") for s in sources}
    keys |= {
        ("SparkApplication", ns, f"{name}-job"),
        ("RayService", ns, f"{name}-model"),
        ("PersistentVolumeClaim", ns, f"{name}-checkpoint"),
        ("ServiceAccount", ns, f"{name}-spark"),
        ("RoleBinding", ns, f"{name}-spark"),
        ("PodMonitor", ns, f"{name}-producer"),
        ("PodMonitor", ns, f"{name}-job"),
        ("PodMonitor", ns, f"{name}-model"),
        ("PrometheusRule", ns, f"{name}-alerts"),
    }
    from streamotion.security.acls import component_identities

    users = {i.user for i in component_identities(p) if i.source is None or i.source in sources}
    keys |= {("KafkaUser", KAFKA_NS, u) for u in users}
    keys |= {("NetworkPolicy", ns, f"{name}-{c}") for c in [*(f"src-{s}" for s in sources), "job", "model"]}
    if copies:
        keys |= {("Secret", ns, u) for u in users} | {("Secret", ns, f"{name}-kafka-ca")}
    return keys


def wait_children(kube, ns, name, keys, timeout=60):
    return wait_for(lambda: keys <= set(children(kube, ns, name)), timeout, what=f"children of {ns}/{name}")


# ------------------------------------------------------------------------------------- create
def test_create_reports_status_through_to_running(operator, kube, namespace):
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline("emo", namespace))
    keys = expected_children(namespace, "emo")
    wait_children(kube, namespace, "emo", keys)
    wait_phase(kube, namespace, "emo", "Provisioning")
    body = get_pipeline(kube, namespace, "emo")
    st = body["status"]
    assert st["observedGeneration"] == body["metadata"]["generation"]
    assert condition(body, "Ready")["status"] == "False"
    # each component condition says why it is not ready
    assert "KafkaTopic" in condition(body, "TopicsReady")["message"]
    assert "SparkApplication emo-job" in condition(body, "ProcessingReady")["message"]
    assert "RayService emo-model" in condition(body, "ModelReady")["message"]
    # the Secret is there, but SinksReady is the job's own report, and the job has not run yet
    assert condition(body, "SinksReady")["status"] == "False"
    assert "the job has not reported" in condition(body, "SinksReady")["message"]
    assert st["sourcesReady"] == "0/2"
    assert st["topics"]["raw"] == f"streamotion.{namespace}.emo.raw"

    kids = children(kube, namespace, "emo")
    uid = body["metadata"]["uid"]
    for (kind, ns, _n), obj in kids.items():
        labels = obj["metadata"]["labels"]
        for label in ("name", "instance", "component", "managed-by", "part-of"):
            assert f"app.kubernetes.io/{label}" in labels
        assert labels[naming.PIPELINE_LABEL] == "emo"
        owners = obj["metadata"].get("ownerReferences") or []
        if ns == namespace:
            assert owners and owners[0]["uid"] == uid and owners[0]["controller"] is True
        else:
            assert not owners
        managers = {m["manager"] for m in obj["metadata"]["managedFields"] if m["operation"] == "Apply"}
        assert managers == {naming.FIELD_MANAGER}, (kind, managers)
        # credentials by reference only: no Secret value anywhere in a child
        text = json.dumps(obj)
        for data in SECRETS.values():
            for value in data.values():
                if "s3cr3t" in value:
                    assert value not in text, kind
    topic = kids[("KafkaTopic", KAFKA_NS, naming.topic_resource_name(_p(namespace, "emo"), "raw"))]
    assert topic["metadata"]["labels"]["strimzi.io/cluster"] == "streamotion"
    assert topic["spec"]["partitions"] == 3
    dep = kids[("Deployment", namespace, "emo-src-reddit")]
    pod = dep["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"][:2] == naming.PRODUCER_COMMAND and "--source" in c["command"]
    assert {
        "name": "REDDIT_CLIENT_SECRET",
        "valueFrom": {"secretKeyRef": {"name": "reddit-credentials", "key": "client_secret"}},
    } in c["env"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    dash = kids[("ConfigMap", MONITORING_NS, naming.dashboard_config_map_name(_p(namespace, "emo")))]
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    board = json.loads(next(iter(dash["data"].values())))
    assert board["templating"]["list"][0]["current"]["value"] == "emo"

    make_ready(kube, namespace, "emo")
    wait_phase(kube, namespace, "emo", "Running")
    body = get_pipeline(kube, namespace, "emo")
    assert condition(body, "Ready")["status"] == "True"
    assert body["status"]["sourcesReady"] == "2/2"
    # posted right after the status write the phase wait saw: read until they are there
    wait_for(
        lambda: (
            {"Pending", "Created", "Provisioning", "Running"}
            <= {e["reason"] for e in events(kube, namespace, "emo")}
        ),
        timeout=30,
        what="the Pending, Created, Provisioning and Running events",
    )

    # a child that stops being ready: Degraded, and the condition says why
    broken = {
        **ready_condition(),
        "status": "False",
        "reason": "Unhealthy",
        "message": "serve app is UNHEALTHY",
    }
    set_status(kube, "RayService", namespace, "emo-model", {"conditions": [broken]})
    wait_phase(kube, namespace, "emo", "Degraded")
    model = condition(get_pipeline(kube, namespace, "emo"), "ModelReady")
    assert model["status"] == "False" and "serve app is UNHEALTHY" in model["message"]
    assert any(e["reason"] == "Degraded" and e["type"] == "Warning" for e in events(kube, namespace, "emo"))


def _p(ns, name):
    from streamotion.api.models import StreamPipeline

    return StreamPipeline.model_validate(pipeline(name, ns))


# ------------------------------------------------------------------------------------ updates
def test_updates_touch_only_their_children(operator, kube, namespace):
    create_secrets(kube, namespace)
    spec = json.loads(json.dumps(BASE_SPEC))
    apply_pipeline(kube, pipeline("upd", namespace, spec))
    wait_children(kube, namespace, "upd", expected_children(namespace, "upd"))
    make_ready(kube, namespace, "upd")
    wait_phase(kube, namespace, "upd", "Running")
    p = _p(namespace, "upd")
    raw = ("KafkaTopic", KAFKA_NS, naming.topic_resource_name(p, "raw"))
    dlq = ("KafkaTopic", KAFKA_NS, naming.topic_resource_name(p, "deadLetter"))
    job = ("SparkApplication", namespace, "upd-job")
    model = ("RayService", namespace, "upd-model")
    config = ("ConfigMap", namespace, "upd-pipeline")

    def step(change, expect_changed, check):
        before = generations(kube, namespace, "upd")
        change(spec)
        gen = apply_pipeline(kube, pipeline("upd", namespace, spec))["metadata"]["generation"]

        def settled():
            body = get_pipeline(kube, namespace, "upd")
            return body["status"].get("observedGeneration") == gen and check(children(kube, namespace, "upd"))

        wait_for(settled, 30, what="the update to be applied")
        after = generations(kube, namespace, "upd")
        changed = {k for k in before.keys() & after.keys() if before[k] != after[k]}
        assert changed - {config} <= expect_changed, changed
        return before, after

    # more partitions: only the topics
    step(
        lambda s: s["kafka"].update(partitions=6),
        {raw, dlq},
        lambda kids: kids[raw]["spec"]["partitions"] == 6,
    )
    # a new model name: only the RayService's Serve config
    step(
        lambda s: s["model"].update(name="bhadresh-savani/distilbert-base-uncased-emotion"),
        {model},
        lambda kids: "bhadresh-savani" in kids[model]["spec"]["serveConfigV2"],
    )
    serve = yaml.safe_load(children(kube, namespace, "upd")[model]["spec"]["serveConfigV2"])
    assert serve["applications"][0]["args"]["model"] == "bhadresh-savani/distilbert-base-uncased-emotion"
    # processing sizing: only the SparkApplication, with a new spec hash
    old_hash = children(kube, namespace, "upd")[job]["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    step(
        lambda s: s["processing"]["executors"].update(instances=3),
        {job},
        lambda kids: kids[job]["spec"]["executor"]["instances"] == 3,
    )
    kid = children(kube, namespace, "upd")[job]
    assert kid["metadata"]["annotations"][SPEC_HASH_ANNOTATION] != old_hash
    body = get_pipeline(kube, namespace, "upd")
    assert body["status"]["processing"]["specHash"] == kid["metadata"]["annotations"][SPEC_HASH_ANNOTATION]
    # a source added creates its Deployment (and Service for http); removed deletes it
    create_secrets(kube, namespace, {"ingest-token": {"token": "t"}})
    http = {"name": "web", "type": "http", "http": {"port": 8080, "tokenSecret": "ingest-token"}}
    step(
        lambda s: s["sources"].append(http),
        {("Deployment", namespace, "upd-src-web"), ("Service", namespace, "upd-src-web"),
         ("PrometheusRule", namespace, "upd-alerts")},
        lambda kids: ("Service", namespace, "upd-src-web") in kids,
    )  # fmt: skip
    svc = children(kube, namespace, "upd")[("Service", namespace, "upd-src-web")]
    assert {p["name"] for p in svc["spec"]["ports"]} == {"http", "metrics"}
    step(
        lambda s: s.update(sources=[x for x in s["sources"] if x["name"] != "reddit"]),
        {("PrometheusRule", namespace, "upd-alerts")},
        lambda kids: ("Deployment", namespace, "upd-src-reddit") not in kids,
    )
    # fewer partitions: refused with a clear condition, the topic keeps its partitions
    spec["kafka"]["partitions"] = 2
    apply_pipeline(kube, pipeline("upd", namespace, spec))
    cond = wait_for(
        lambda: (
            condition(get_pipeline(kube, namespace, "upd"), "TopicsReady").get("reason")
            == "PartitionsDecreaseRefused"
            and condition(get_pipeline(kube, namespace, "upd"), "TopicsReady")
        ),
        30,
        what="partitions refusal",
    )
    assert cond["status"] == "False" and "cannot remove partitions" in cond["message"]
    assert children(kube, namespace, "upd")[raw]["spec"]["partitions"] == 6
    assert any(e["reason"] == "PartitionsDecreaseRefused" for e in events(kube, namespace, "upd"))
    spec["kafka"]["partitions"] = 6
    apply_pipeline(kube, pipeline("upd", namespace, spec))

    def topics_ready():  # Strimzi observes the topics' last spec (status.observedGeneration)
        make_ready(kube, namespace, "upd", pods=False, job=False, model=False)
        return condition(get_pipeline(kube, namespace, "upd"), "TopicsReady").get("status") == "True"

    wait_for(topics_ready, 30)


# ----------------------------------------------------------------------------- suspend, drift
def test_suspend_and_resume(operator, kube, namespace):
    create_secrets(kube, namespace)
    body = pipeline("sus", namespace)
    apply_pipeline(kube, body)
    wait_children(kube, namespace, "sus", expected_children(namespace, "sus"))
    make_ready(kube, namespace, "sus")
    wait_phase(kube, namespace, "sus", "Running")
    body["spec"]["suspend"] = True
    apply_pipeline(kube, body)
    wait_phase(kube, namespace, "sus", "Suspended")
    kids = children(kube, namespace, "sus")
    assert all(o["spec"]["replicas"] == 0 for (k, _, _), o in kids.items() if k == "Deployment")
    assert kids[("SparkApplication", namespace, "sus-job")]["spec"]["suspend"] is True
    assert kids[("RayService", namespace, "sus-model")]["spec"]["suspend"] is True
    assert condition(get_pipeline(kube, namespace, "sus"), "Ready")["reason"] == "Suspended"
    body["spec"]["suspend"] = False
    apply_pipeline(kube, body)
    wait_for(
        lambda: all(
            o["spec"]["replicas"] == 1
            for (k, _, _), o in children(kube, namespace, "sus").items()
            if k == "Deployment"
        ),
        30,
    )
    kids = children(kube, namespace, "sus")
    assert kids[("SparkApplication", namespace, "sus-job")]["spec"]["suspend"] is False
    assert kids[("RayService", namespace, "sus-model")]["spec"]["suspend"] is False
    make_ready(kube, namespace, "sus")
    wait_phase(kube, namespace, "sus", "Running")


def test_drift_is_repaired(operator, kube, namespace, control_plane):
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline("drift", namespace))
    wait_children(kube, namespace, "drift", expected_children(namespace, "drift"))
    dep = ("Deployment", namespace, "drift-src-demo")
    old_uid = children(kube, namespace, "drift")[dep]["metadata"]["uid"]
    control_plane.kubectl("delete", "deployment", "-n", namespace, "drift-src-demo")
    control_plane.kubectl(
        "patch", "sparkapplication", "-n", namespace, "drift-job", "--type=merge",
        "-p", '{"spec": {"executor": {"instances": 7}}}',
    )  # fmt: skip
    control_plane.kubectl(
        "patch",
        "configmap",
        "-n",
        namespace,
        "drift-pipeline",
        "--type=merge",
        "-p",
        '{"data": {"pipeline.yaml": "x"}}',
    )
    control_plane.kubectl("delete", "podmonitor", "-n", namespace, "drift-model")

    def repaired():
        kids = children(kube, namespace, "drift")
        return (
            dep in kids
            and kids[dep]["metadata"]["uid"] != old_uid
            and kids[("SparkApplication", namespace, "drift-job")]["spec"]["executor"]["instances"] == 1
            and kids[("ConfigMap", namespace, "drift-pipeline")]["data"]["pipeline.yaml"] != "x"
            and ("PodMonitor", namespace, "drift-model") in kids
        )

    wait_for(repaired, 60, what="drift repair")


# ------------------------------------------------------------------------- missing dependency
def test_missing_secret_is_reported_and_recovers(operator, kube, namespace):
    apply_pipeline(kube, pipeline("sec", namespace))
    wait_children(kube, namespace, "sec", expected_children(namespace, "sec"))
    cond = wait_for(
        lambda: (
            condition(get_pipeline(kube, namespace, "sec"), "SourcesReady").get("reason") == "SecretMissing"
            and condition(get_pipeline(kube, namespace, "sec"), "SourcesReady")
        ),
        30,
    )
    assert cond["status"] == "False" and "reddit-credentials" in cond["message"]
    assert "spec.sources[0].reddit.credentialsSecret" in cond["message"]
    sinks = condition(get_pipeline(kube, namespace, "sec"), "SinksReady")
    assert sinks["status"] == "False" and "pg-app" in sinks["message"]
    assert phase(kube, namespace, "sec") == "Degraded"
    assert any(
        e["reason"] == "SecretMissing" and e["type"] == "Warning" for e in events(kube, namespace, "sec")
    )
    # a Secret without the keys the source reads is named as such
    create_secrets(kube, namespace, {"reddit-credentials": {"client_id": "x"}, "pg-app": SECRETS["pg-app"]})
    cond = wait_for(
        lambda: (
            "lacks key" in condition(get_pipeline(kube, namespace, "sec"), "SourcesReady").get("message", "")
            and condition(get_pipeline(kube, namespace, "sec"), "SourcesReady")
        ),
        30,
    )
    assert "client_secret" in cond["message"]
    kube.delete(SECRET, namespace, "reddit-credentials")
    create_secrets(kube, namespace, {"reddit-credentials": SECRETS["reddit-credentials"]})
    make_ready(kube, namespace, "sec")
    wait_phase(kube, namespace, "sec", "Running")


# --------------------------------------------------------------------------------- delete
def test_delete_removes_every_child(operator, kube, namespace):
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline("gone", namespace))
    keys = expected_children(namespace, "gone")
    wait_children(kube, namespace, "gone", keys)
    assert naming.FINALIZER in get_pipeline(kube, namespace, "gone")["metadata"]["finalizers"]
    kube.delete(PIPELINE_KIND, namespace, "gone")
    wait_for(lambda: get_pipeline(kube, namespace, "gone") is None, 60, what="the pipeline to be deleted")
    # topics and dashboards by the delete handler, the rest by the garbage collector
    wait_for(lambda: not children(kube, namespace, "gone"), 90, what="every child to be deleted")


# ----------------------------------------------------------------------------- restart, scale
def test_restart_makes_no_duplicates_and_no_churn(operator, kube, namespace, control_plane, op_config):
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline("rst", namespace))
    keys = expected_children(namespace, "rst")
    wait_children(kube, namespace, "rst", keys)
    make_ready(kube, namespace, "rst")
    wait_phase(kube, namespace, "rst", "Running")
    before = versions(kube, namespace, "rst")
    pipeline_rv = get_pipeline(kube, namespace, "rst")["metadata"]["resourceVersion"]
    fresh = OperatorThread(control_plane.kubeconfig_path, op_config).start()
    try:
        noop = fresh.controller.metrics.reconciles.labels("noop")
        wait_for(lambda: noop._value.get() >= 3, 30, what="the fresh operator to reconcile")
        # a direct reconcile also changes nothing
        out = fresh.controller.reconcile(namespace, "rst")
        assert not (out.created or out.updated or out.deleted)
    finally:
        fresh.stop()
    assert versions(kube, namespace, "rst") == before
    assert set(before) == expected_children(namespace, "rst", copies=True)
    assert get_pipeline(kube, namespace, "rst")["metadata"]["resourceVersion"] == pipeline_rv


def test_twenty_pipelines_at_once(operator, kube, namespace):
    create_secrets(kube, namespace)
    names = [f"many-{i:02d}" for i in range(20)]
    threads = [threading.Thread(target=apply_pipeline, args=(kube, pipeline(n, namespace))) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for n in names:
        wait_children(kube, namespace, n, expected_children(namespace, n), timeout=120)
    for n in names:
        make_ready(kube, namespace, n)
    for n in names:
        wait_phase(kube, namespace, n, "Running", timeout=120)
    metrics = operator.runtime.metrics
    assert metrics.phase.labels("Running")._value.get() >= 20


def test_missing_dashboards_namespace_is_named(operator, kube, namespace):
    create_secrets(kube, namespace)
    body = pipeline("nsm", namespace)
    body["spec"]["dashboards"]["namespace"] = f"{namespace[:40]}-nope"
    apply_pipeline(kube, body)
    cond = wait_for(
        lambda: (
            (c := condition(get_pipeline(kube, namespace, "nsm"), "DashboardsReady")).get("reason")
            == "NamespaceMissing"
            and c
        ),
        30,
        what="NamespaceMissing",
    )
    assert cond["status"] == "False"
    assert f"namespace {namespace[:40]}-nope (spec.dashboards.namespace) not found" in cond["message"]
    assert phase(kube, namespace, "nsm") == "Degraded"

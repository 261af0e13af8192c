"""The operator's load on the API server, and the pace of the rewrites an operator upgrade causes.

Against a control plane of this module's own, without kube-controller-manager, so that every
request the API server counts (its own ``apiserver_request_total`` and
``apiserver_watch_events_total``) comes from the operator or from the test.
"""

from __future__ import annotations

import itertools
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from streamotion_operator.builders import KINDS
from streamotion_operator.config import OperatorConfig
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    api_requests,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    make_ready,
    pipeline,
    requests_between,
    set_status,
    wait_for,
)

from streamotion.dev.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(300)
KAFKA_NS = "kafka"
NS = "load"
CHILDREN_PER_PIPELINE = 15


@pytest.fixture(scope="module")
def quiet_cluster(tmp_path_factory):
    """etcd and kube-apiserver only: no other client than the operator and the test."""
    from tests.conftest import UPSTREAM_CRDS

    cp = ControlPlane(
        workdir=tmp_path_factory.mktemp("k8s-quiet"), crd_dirs=[UPSTREAM_CRDS], controller_manager=False
    )
    cp.start()
    for ns in (KAFKA_NS, "monitoring", NS):
        cp.kubectl("create", "namespace", ns)
    yield cp
    cp.stop()


@pytest.fixture(scope="module")
def kube(quiet_cluster):
    k = Kube.from_kubeconfig(quiet_cluster.kubeconfig_path)
    create_secrets(k, NS)
    yield k
    k.close()


def _settle(kube, names):
    for n in names:
        wait_for(lambda n=n: len(children(kube, NS, n)) >= CHILDREN_PER_PIPELINE, 60, what=f"children of {n}")
    for n in names:
        make_ready(kube, NS, n, pods=False)
        for (kind, ns, name), obj in children(kube, NS, n).items():
            if kind == "Deployment":  # no kube-controller-manager: report what it would
                r = obj["spec"].get("replicas", 1)
                status = {"observedGeneration": obj["metadata"]["generation"], "replicas": r}
                set_status(kube, kind, ns, name, {**status, "readyReplicas": r, "availableReplicas": r})
    for n in names:
        wait_for(
            lambda n=n: condition(get_pipeline(kube, NS, n), "Ready").get("status") == "True",
            60,
            what=f"{n} Ready",
        )


def test_steady_state_makes_no_request(quiet_cluster, kube):
    """A resync of unchanged pipelines is served from what the watches delivered: no LIST of
    children, no GET of the pipeline or of Secrets already read, no write. (Before: each reconcile
    made 11 cluster-wide LISTs, a GET of the pipeline and one per Secret: about 430 requests here.)

    kopf 1.45.2 fills every ``@kopf.index`` from its initial list before it runs any other handler,
    daemons included (kopf/_core/reactor/processing.py: ``operator_indexed.wait_for(True)``), so a
    reconcile never sees a half-filled cache."""
    names = ["s1", "s2", "s3"]
    cfg = OperatorConfig(resync_seconds=1, kafka_namespace=KAFKA_NS)
    with OperatorThread(quiet_cluster.kubeconfig_path, cfg) as op:
        for n in names:
            apply_pipeline(kube, pipeline(n, NS))
        _settle(kube, names)
        time.sleep(3)  # the last status writes reach the watch
        reconciles = sum(s.value for s in _samples(op, "streamotion_operator_reconciles_total"))
        before = api_requests(kube)
        time.sleep(10)  # about ten resyncs of each pipeline
        delta = requests_between(before, api_requests(kube))
        done = sum(s.value for s in _samples(op, "streamotion_operator_reconciles_total")) - reconciles
        _delete(kube, names)
    assert done >= len(names) * 5, f"the pipelines were not resynced ({done} reconciles)"
    assert not [k for k in delta if k[0] == "LIST"], delta
    assert sum(delta.values()) <= len(names), f"requests in 10 s of steady state: {delta}"


def test_unrelated_objects_never_reach_the_operator(quiet_cluster, kube):
    """Every watch on children carries a server-side label selector: the API server sends the
    operator no event about Deployments and ConfigMaps it does not manage (before: the Deployment
    watch received every Deployment in the cluster and filtered on the client).

    kopf 1.45.2 filters a handler's ``labels=`` on the client (kopf/_core/intents/registries.py,
    _matches_labels); only ``settings.watching.label_selectors`` reach the API server, as the
    ``labelSelector`` of the initial list and of the watch (kopf/_cogs/configs/configuration.py,
    kopf/_cogs/clients/fetching.py, kopf/_cogs/clients/watching.py)."""
    cfg = OperatorConfig(resync_seconds=5, kafka_namespace=KAFKA_NS)
    with OperatorThread(quiet_cluster.kubeconfig_path, cfg):
        time.sleep(2)
        before = _watch_events(kube)
        quiet_cluster.kubectl("create", "namespace", "unrelated")
        for i in range(40):
            kube.request(
                "POST",
                KINDS["ConfigMap"].path("unrelated"),
                body={"metadata": {"name": f"cm-{i}", "labels": {"app": "other"}}, "data": {"k": "v" * 100}},
            )
            kube.request(
                "POST",
                KINDS["Deployment"].path("unrelated"),
                body={
                    "metadata": {"name": f"d-{i}"},
                    "spec": {
                        "selector": {"matchLabels": {"app": f"d-{i}"}},
                        "template": {
                            "metadata": {"labels": {"app": f"d-{i}"}},
                            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
                        },
                    },
                },
            )
        time.sleep(2)
        after = _watch_events(kube)
    sent = {r: after.get(r, 0) - before.get(r, 0) for r in ("configmaps", "deployments")}
    assert sent == {"configmaps": 0, "deployments": 0}, sent


def test_operator_upgrade_rewrites_at_a_pace(quiet_cluster, kube):
    """A new operator version that changes the SparkApplication and RayService of every pipeline
    rewrites at most ``rollout_max_rewrites`` of each per ``rollout_period_seconds``; the others
    report RolloutPending (the condition stays True: they run the previous spec) with an event, and all
    converge. A change of a pipeline's own spec, and drift repair, are applied at once, whatever the pace.

    Why these two kinds: spark-operator v2.5.2 re-runs an application whose spec changed (anything
    but suspend and timeToLiveSeconds: state Invalidating, then a new submission), while a change of
    its metadata alone does not (kubeflow/spark-operator@v2.5.2
    internal/controller/sparkapplication/event_filter.go, Update); KubeRay v1.7.0 prepares a second
    RayCluster when the hash of the RayService's cluster spec changes and switches over once it
    serves (ray-project/kuberay@v1.7.0 ray-operator/controllers/ray/rayservice_controller.go,
    shouldPrepareNewCluster). So the generation annotation the pacing relies on is metadata, and
    only spec rewrites are paced."""
    names = [f"u{i}" for i in range(4)]
    period = 6.0
    old = OperatorConfig(resync_seconds=2, kafka_namespace=KAFKA_NS)
    with OperatorThread(quiet_cluster.kubeconfig_path, old):
        for n in names:
            apply_pipeline(kube, pipeline(n, NS))
        _settle(kube, names)
    new = OperatorConfig(
        resync_seconds=2,
        kafka_namespace=KAFKA_NS,
        job_image="ghcr.io/streamotion/job:9.9.9",
        model_image="ghcr.io/streamotion/model:9.9.9",
        rollout_max_rewrites=1,
        rollout_period_seconds=period,
    )
    seen_app: dict[str, float] = {}
    seen_ray: dict[str, float] = {}
    pending_seen: set[str] = set()
    with OperatorThread(quiet_cluster.kubeconfig_path, new):
        deadline = time.monotonic() + len(names) * period + 30
        while (len(seen_app) < len(names) or len(seen_ray) < len(names)) and time.monotonic() < deadline:
            now = time.monotonic()
            for app in kube.list(KINDS["SparkApplication"], NS):
                if app["spec"].get("image") == new.job_image:
                    seen_app.setdefault(app["metadata"]["name"], now)
            for rs in kube.list(KINDS["RayService"], NS):
                if new.model_image in str(rs["spec"]):
                    seen_ray.setdefault(rs["metadata"]["name"], now)
            for n in names:
                body = get_pipeline(kube, NS, n)
                processing = condition(body, "ProcessingReady")
                if processing.get("reason") == "RolloutPending":
                    assert processing["status"] == "True", processing  # the job runs its previous spec
                    pending_seen.add(n)
            time.sleep(0.2)
        assert len(seen_app) == len(names) and len(seen_ray) == len(names), (seen_app, seen_ray)
        for seen in (seen_app, seen_ray):
            times = sorted(seen.values())
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert all(g >= period - 1.0 for g in gaps), f"rewrites closer than {period}s: {gaps}"
        assert len(pending_seen) >= len(names) - 1, pending_seen
        reasons = {
            e["involvedObject"]["name"]
            for e in kube.request("GET", f"/api/v1/namespaces/{NS}/events")["items"]
            if e.get("reason") == "RolloutPending"
        }
        assert len(reasons) >= len(names) - 1, reasons
        for n in names:  # converged: nothing pending any more
            wait_for(
                lambda n=n: (
                    condition(get_pipeline(kube, NS, n), "ProcessingReady").get("reason") != "RolloutPending"
                ),
                3 * period,
                what=f"{n} rolled out",
            )
        # the pace is spent, yet a change of the pipelines' own spec is applied at once
        started = time.monotonic()
        for n in names[:3]:
            spec = pipeline(n, NS)["spec"]
            spec["processing"]["executors"]["instances"] = 2
            apply_pipeline(kube, pipeline(n, NS, spec))

        def resized():
            apps = {a["metadata"]["name"]: a for a in kube.list(KINDS["SparkApplication"], NS)}
            return all(apps[f"{n}-job"]["spec"]["executor"]["instances"] == 2 for n in names[:3])

        wait_for(resized, period, what="spec changes applied without pacing")
        assert time.monotonic() - started < period
        # nor is drift: a SparkApplication edited by hand is repaired at once
        app = KINDS["SparkApplication"]
        drifted = f"{names[3]}-job"
        kube.request(
            "PATCH",
            app.path(NS, drifted),
            body={"spec": {"executor": {"cores": 9}}},
            content_type="application/merge-patch+json",
        )
        started = time.monotonic()
        wait_for(
            lambda: kube.get(app, NS, drifted)["spec"]["executor"]["cores"] == 1,
            period,
            what="drift repaired",
        )
        assert time.monotonic() - started < period
        _delete(kube, names)


def _delete(kube, names):
    """Delete the pipelines while the operator runs (it releases its finalizer)."""
    from streamotion_operator.controller import PIPELINE_KIND

    for n in names:
        kube.delete(PIPELINE_KIND, NS, n)
    wait_for(lambda: all(get_pipeline(kube, NS, n) is None for n in names), 60, what="pipelines deleted")


def _samples(op: OperatorThread, name: str):
    from prometheus_client import generate_latest

    text = generate_latest(op.runtime.metrics.registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples if s.name == name]


def _watch_events(kube: Kube) -> dict[str, float]:
    """``apiserver_watch_events_total`` by resource: events the API server sent to watchers."""
    m, url, h, _, _ = kube.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    text = kube.api.call_api(m, url, header_params=h).read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name == "apiserver_watch_events":
            for s in family.samples:
                if s.name.endswith("_total"):
                    r = s.labels.get("resource") or s.labels.get("kind", "")
                    out[r] = out.get(r, 0.0) + s.value
    return out

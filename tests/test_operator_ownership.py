"""What the operator may write and delete in a shared cluster (issue #22), against the real control
plane: never an object it did not create, never a checkpoint implicitly, names that do not
collide across namespaces, and no rewrite of what the API server merely normalised."""

from __future__ import annotations

import copy
import time

import pytest
from streamotion_operator import builders
from streamotion_operator.builders import KINDS
from streamotion_operator.controller import PIPELINE_KIND
from streamotion_operator.testing import (
    BASE_SPEC,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    pipeline,
    versions,
    wait_for,
)

from streamotion import naming
from streamotion.api.models import StreamPipeline
from tests import test_operator as base
from tests.test_operator import MONITORING_NS, events, expected_children, wait_children

# the module fixtures of tests/test_operator.py: one operator for this file
kube = base.kube
op_config = base.op_config
operator = base.operator

pytestmark = pytest.mark.timeout(240)


def _create(kube, kind: str, namespace: str, body: dict) -> dict:
    """An object created by someone else (no streamotion field manager)."""
    return kube.request(
        "POST", KINDS[kind].path(namespace), body=body, query={"fieldManager": "someone-else"}
    )


def _get(kube, kind: str, namespace: str, name: str) -> dict | None:
    return kube.get(KINDS[kind], namespace, name)


# ------------------------------------------------------------------------------- item 1
def test_objects_the_operator_did_not_create_are_never_taken_over(operator, kube, namespace):
    create_secrets(kube, namespace)
    sa = _create(kube, "ServiceAccount", namespace, {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "own-spark", "labels": {"team": "payments"}},
    })  # fmt: skip
    cm = _create(kube, "ConfigMap", namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "own-pipeline"}, "data": {"mine": "1"},
    })  # fmt: skip
    # labelled like a child of the pipeline, but created by someone else: never pruned
    lookalike_labels = {
        naming.PIPELINE_LABEL: "own",
        naming.PIPELINE_NS_LABEL: namespace,
        "app.kubernetes.io/managed-by": naming.MANAGED_BY,
    }
    lookalike = _create(kube, "ConfigMap", namespace, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "own-extra", "labels": lookalike_labels}, "data": {"keep": "me"},
    })  # fmt: skip
    apply_pipeline(kube, pipeline("own", namespace))

    def conflict():
        c = condition(get_pipeline(kube, namespace, "own"), "ProcessingReady")
        return c.get("reason") == "ChildConflict" and c

    cond = wait_for(conflict, 30, what="ChildConflict")
    assert cond["status"] == "False"
    assert f"ServiceAccount {namespace}/own-spark already exists" in cond["message"]
    assert f"ConfigMap {namespace}/own-pipeline already exists" in cond["message"]
    assert "not created by the operator" in cond["message"]
    # the workloads that would run as / mount someone else's objects are held back
    assert f"SparkApplication {namespace}/own-job not applied" in cond["message"]
    assert f"RoleBinding {namespace}/own-spark not applied" in cond["message"]
    body = get_pipeline(kube, namespace, "own")
    assert body["status"]["phase"] == "Degraded"
    warnings = [e for e in events(kube, namespace, "own") if e["reason"] == "ChildConflict"]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "own-spark" in " ".join(e["message"] for e in warnings)
    # the other children are there, e.g. the topics (no dependency on the conflicting objects)
    wait_for(
        lambda: ("PodMonitor", namespace, "own-job") in children(kube, namespace, "own"), 30,
        what="the unaffected children",
    )  # fmt: skip
    kids = children(kube, namespace, "own")
    assert ("SparkApplication", namespace, "own-job") not in kids
    assert ("Deployment", namespace, "own-src-demo") not in kids  # mounts own-pipeline
    time.sleep(5)  # a few resyncs (2 s): still untouched, not deleted
    for kind, obj in (("ServiceAccount", sa), ("ConfigMap", cm), ("ConfigMap", lookalike)):
        now = _get(kube, kind, namespace, obj["metadata"]["name"])
        assert now is not None, obj["metadata"]["name"]
        assert now["metadata"]["resourceVersion"] == obj["metadata"]["resourceVersion"], kind
        assert not now["metadata"].get("ownerReferences")
    assert _get(kube, "ConfigMap", namespace, "own-pipeline")["data"] == {"mine": "1"}

    # the owner removes theirs: the operator creates its own and the conflict clears
    kube.delete(KINDS["ConfigMap"], namespace, "own-pipeline")
    kube.delete(KINDS["ServiceAccount"], namespace, "own-spark")
    wait_children(kube, namespace, "own", expected_children(namespace, "own"))
    wait_for(
        lambda: (
            condition(get_pipeline(kube, namespace, "own"), "ProcessingReady").get("reason")
            != "ChildConflict"
        ),
        30,
        what="the conflict to clear",
    )
    # deleting the pipeline leaves the lookalike alone
    kube.delete(PIPELINE_KIND, namespace, "own")
    wait_for(lambda: get_pipeline(kube, namespace, "own") is None, 60, what="the pipeline to go")
    assert _get(kube, "ConfigMap", namespace, "own-extra")["data"] == {"keep": "me"}


def test_an_object_in_another_namespace_is_not_taken_over(operator, kube, namespace):
    """The dashboards ConfigMap lives in the dashboards namespace: a foreign object there with the
    child's name is refused too, and the delete handler does not delete it."""
    create_secrets(kube, namespace)
    p = StreamPipeline.model_validate(pipeline("xns", namespace))
    name = naming.dashboard_config_map_name(p)
    foreign = _create(kube, "ConfigMap", MONITORING_NS, {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"grafana_dashboard": "1"}}, "data": {"board.json": "{}"},
    })  # fmt: skip
    apply_pipeline(kube, pipeline("xns", namespace))
    cond = wait_for(
        lambda: (
            (c := condition(get_pipeline(kube, namespace, "xns"), "DashboardsReady")).get("reason")
            == "ChildConflict"
            and c
        ),
        30,
        what="ChildConflict on the dashboards",
    )
    assert f"ConfigMap {MONITORING_NS}/{name} already exists" in cond["message"]
    kube.delete(PIPELINE_KIND, namespace, "xns")
    wait_for(lambda: get_pipeline(kube, namespace, "xns") is None, 60, what="the pipeline to go")
    now = _get(kube, "ConfigMap", MONITORING_NS, name)
    assert now is not None and now["metadata"]["resourceVersion"] == foreign["metadata"]["resourceVersion"]
    kube.delete(KINDS["ConfigMap"], MONITORING_NS, name)


# ------------------------------------------------------------------------------- item 2
def test_the_checkpoint_claim_is_never_pruned(operator, kube, namespace):
    create_secrets(kube, namespace)
    spec = copy.deepcopy(BASE_SPEC)
    apply_pipeline(kube, pipeline("ckp", namespace, spec))
    claim = ("PersistentVolumeClaim", namespace, "ckp-checkpoint")
    wait_children(kube, namespace, "ckp", expected_children(namespace, "ckp"))
    uid = children(kube, namespace, "ckp")[claim]["metadata"]["uid"]
    spec["processing"]["checkpoint"] = {"uri": "gs://bucket/ckp"}
    gen = apply_pipeline(kube, pipeline("ckp", namespace, spec))["metadata"]["generation"]

    def moved():
        body = get_pipeline(kube, namespace, "ckp")
        job = children(kube, namespace, "ckp").get(("SparkApplication", namespace, "ckp-job"))
        return body["status"].get("observedGeneration") == gen and job and "ckp-checkpoint" not in str(job)

    wait_for(moved, 30, what="the job to use checkpoint.uri")
    time.sleep(5)  # a few resyncs (2 s)
    kept = _get(kube, "PersistentVolumeClaim", namespace, "ckp-checkpoint")
    assert (
        kept is not None and kept["metadata"]["uid"] == uid and not kept["metadata"].get("deletionTimestamp")
    )
    assert not any("PersistentVolumeClaim" in e["message"] for e in events(kube, namespace, "ckp")
                   if e["reason"] == "Deleted")  # fmt: skip
    # it goes with the pipeline (ownerReference, garbage collector)
    kube.delete(PIPELINE_KIND, namespace, "ckp")
    wait_for(lambda: _get(kube, "PersistentVolumeClaim", namespace, "ckp-checkpoint") is None, 90,
             what="the claim to go with the pipeline")  # fmt: skip


# ------------------------------------------------------------------------------- item 3
def test_names_outside_the_pipeline_namespace_do_not_collide(operator, kube, namespace, control_plane):
    """team-a/x and team/a-x: one ConfigMap name (and one set of Grafana file names) before."""
    other = f"{namespace}-a"
    control_plane.kubectl("create", "namespace", other)
    try:
        create_secrets(kube, namespace)
        create_secrets(kube, other)
        one = StreamPipeline.model_validate(pipeline("a-x", namespace))
        two = StreamPipeline.model_validate(pipeline("x", other))
        names = {naming.dashboard_config_map_name(one), naming.dashboard_config_map_name(two)}
        assert len(names) == 2
        assert naming.topic_resource_name(one, "raw") != naming.topic_resource_name(two, "raw")
        assert naming.topic_names(one)["raw"] != naming.topic_names(two)["raw"]

        # what an older operator applied for `one`: its dashboards under the old name
        old = builders.dashboards(one, operator.cfg)
        old_name = f"streamotion-{namespace}-a-x-dashboards"
        old["metadata"]["name"] = old_name
        kube.apply(old)

        apply_pipeline(kube, pipeline("a-x", namespace))
        apply_pipeline(kube, pipeline("x", other))
        wait_children(kube, namespace, "a-x", expected_children(namespace, "a-x"))
        wait_children(kube, other, "x", expected_children(other, "x"))
        for ns, n in ((namespace, "a-x"), (other, "x")):
            wait_for(
                lambda ns=ns, n=n: (
                    condition(get_pipeline(kube, ns, n), "DashboardsReady").get("status") == "True"
                ),
                30,
                what=f"{ns}/{n} dashboards",
            )
        cm1 = children(kube, namespace, "a-x")[
            ("ConfigMap", MONITORING_NS, naming.dashboard_config_map_name(one))
        ]
        cm2 = children(kube, other, "x")[("ConfigMap", MONITORING_NS, naming.dashboard_config_map_name(two))]
        assert cm1["metadata"]["labels"][naming.PIPELINE_NS_LABEL] == namespace
        assert cm2["metadata"]["labels"][naming.PIPELINE_NS_LABEL] == other
        assert cm1["data"] and not set(cm1["data"]) & set(cm2["data"])  # Grafana's files
        # migration: the old name is pruned once the new one is applied
        wait_for(lambda: _get(kube, "ConfigMap", MONITORING_NS, old_name) is None, 30, what="old ConfigMap")
        # and nothing is rewritten afterwards (no ping-pong between the two)
        before = {**versions(kube, namespace, "a-x"), **versions(kube, other, "x")}
        time.sleep(5)
        after = {**versions(kube, namespace, "a-x"), **versions(kube, other, "x")}
        assert {k: v for k, v in after.items() if k[0] == "ConfigMap"} == {
            k: v for k, v in before.items() if k[0] == "ConfigMap"
        }
    finally:
        for ns, n in ((namespace, "a-x"), (other, "x")):
            kube.delete(PIPELINE_KIND, ns, n)
        for ns, n in ((namespace, "a-x"), (other, "x")):
            wait_for(lambda ns=ns, n=n: get_pipeline(kube, ns, n) is None, 60, what="cleanup")
        control_plane.kubectl("delete", "namespace", other, "--wait=false", check=False)


# ------------------------------------------------------------------------------- item 4
def test_quantities_the_server_normalised_are_not_rewritten(operator, kube, namespace):
    create_secrets(kube, namespace)
    spec = copy.deepcopy(BASE_SPEC)
    spec["processing"]["checkpoint"] = {"size": "1024Mi"}
    apply_pipeline(kube, pipeline("qty", namespace, spec))
    wait_children(kube, namespace, "qty", expected_children(namespace, "qty"))
    claim = children(kube, namespace, "qty")[("PersistentVolumeClaim", namespace, "qty-checkpoint")]
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"  # the server's canonical form
    ctl = operator.controller
    for _ in range(2):
        out = ctl.reconcile(namespace, "qty")
        assert not (out.created or out.updated or out.deleted), out
    before = versions(kube, namespace, "qty")
    time.sleep(5)  # the operator's own resyncs (2 s)
    assert versions(kube, namespace, "qty") == before
    updated = [e["message"] for e in events(kube, namespace, "qty") if e["reason"] == "Updated"]
    assert not updated


# ------------------------------------------------------------------------------- item 5
def test_observed_generation_waits_for_the_children_of_that_generation(
    operator, kube, namespace, control_plane
):
    create_secrets(kube, namespace)
    body = pipeline("gen", namespace)
    gen1 = apply_pipeline(kube, body)["metadata"]["generation"]
    wait_children(kube, namespace, "gen", expected_children(namespace, "gen"))
    wait_for(lambda: get_pipeline(kube, namespace, "gen")["status"].get("observedGeneration") == gen1, 30)
    missing = f"{namespace[:40]}-dash"
    body["spec"]["dashboards"]["namespace"] = missing
    gen2 = apply_pipeline(kube, body)["metadata"]["generation"]
    assert gen2 > gen1
    wait_for(
        lambda: (
            condition(get_pipeline(kube, namespace, "gen"), "DashboardsReady").get("reason")
            == "NamespaceMissing"
        ),
        30,
        what="NamespaceMissing",
    )
    time.sleep(3)  # another resync (2 s)
    st = get_pipeline(kube, namespace, "gen")["status"]
    assert st["observedGeneration"] == gen1  # the dashboards of generation 2 are not applied
    assert condition(get_pipeline(kube, namespace, "gen"), "DashboardsReady")["observedGeneration"] == gen2
    control_plane.kubectl("create", "namespace", missing)
    try:
        wait_for(
            lambda: get_pipeline(kube, namespace, "gen")["status"].get("observedGeneration") == gen2,
            30,
            what="observedGeneration to follow once applied",
        )
        p = StreamPipeline.model_validate(body)
        assert ("ConfigMap", missing, naming.dashboard_config_map_name(p)) in children(kube, namespace, "gen")
    finally:
        kube.delete(PIPELINE_KIND, namespace, "gen")
        wait_for(lambda: get_pipeline(kube, namespace, "gen") is None, 60, what="cleanup")
        control_plane.kubectl("delete", "namespace", missing, "--wait=false", check=False)

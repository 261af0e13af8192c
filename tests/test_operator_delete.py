"""Deleting a pipeline on the real API server: the delete handler waits (bounded, reported) for the
topics to be gone, retries API errors instead of giving up, and uninstalling in the documented
order (docs/operations/upgrade.md) leaves no namespace stuck.

Strimzi does not run here: ``FakeTopicOperator`` does to KafkaTopics what Strimzi 1.2.0's topic
operator does with its finalizer (strimzi/strimzi-kafka-operator@1.2.0
``topic-operator/src/main/java/io/strimzi/operator/topic/KubernetesHandler.java``:
``FINALIZER_STRIMZI_IO_TO = "strimzi.io/topic-operator"`` added to every managed KafkaTopic;
``BatchingTopicController.java`` ``onDelete``/``deleteManagedTopics``: on deletion it deletes the
topic in Kafka and only then removes the finalizer; a failed Kafka deletion keeps it).
"""

from __future__ import annotations

import json
import threading
import time

import pytest
from streamotion_operator.builders import KINDS
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import (
    PIPELINE_KIND,
    PIPELINE_UID_ANNOTATION,
    STRIMZI_TOPIC_FINALIZER,
)
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.testing import (
    BASE_SPEC,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    pipeline,
    wait_for,
)

from streamotion import naming

pytestmark = pytest.mark.timeout(240)
TOPIC = KINDS["KafkaTopic"]


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


@pytest.fixture(scope="module")
def operator(control_plane, tmp_path_factory):
    boards = tmp_path_factory.mktemp("dashboards")
    (boards / "overview.json").write_text(json.dumps({"uid": "o", "title": "O"}))
    cfg = OperatorConfig(
        resync_seconds=2,
        dashboards_dir=str(boards),
        cleanup_timeout_seconds=60,
        cleanup_poll_seconds=0.5,
    )
    op = OperatorThread(control_plane.kubeconfig_path, cfg).start()
    yield op
    control_plane.kubectl("delete", "streampipelines", "--all", "-A", "--timeout=90s", check=False)
    op.stop()


class FakeTopicOperator:
    """Strimzi's topic operator, as far as its finalizer goes: adds ``strimzi.io/topic-operator`` to
    the KafkaTopics of ``namespace``; removes it ``delay`` seconds after one is marked deleted."""

    def __init__(self, kube: Kube, namespace: str, delay: float = 0.0):
        self.kube, self.namespace, self.delay = kube, namespace, delay
        self.seen_deleting: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FakeTopicOperator:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _finalizers(self, name: str, finalizers: list[str]) -> None:
        try:
            self.kube.request(
                "PATCH",
                TOPIC.path(self.namespace, name),
                body={"metadata": {"finalizers": finalizers}},
                content_type="application/merge-patch+json",
            )
        except ApiError as exc:
            if exc.status not in (404, 409, 422):
                raise

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                items = self.kube.list(TOPIC, self.namespace, None)
            except ApiError:
                items = []
            for kt in items:
                m = kt["metadata"]
                fins = m.get("finalizers") or []
                if m.get("deletionTimestamp"):
                    first = self.seen_deleting.setdefault(m["name"], time.monotonic())
                    if STRIMZI_TOPIC_FINALIZER in fins and time.monotonic() - first >= self.delay:
                        self._finalizers(m["name"], [f for f in fins if f != STRIMZI_TOPIC_FINALIZER])
                elif STRIMZI_TOPIC_FINALIZER not in fins:
                    self._finalizers(m["name"], [*fins, STRIMZI_TOPIC_FINALIZER])
            self._stop.wait(0.2)


def _spec(kafka_ns: str) -> dict:
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["kafka"]["namespace"] = kafka_ns
    spec["dashboards"] = {"enabled": False}
    return spec


def _topics(kube: Kube, ns: str, name: str) -> dict:
    return {k: v for k, v in children(kube, ns, name).items() if k[0] == "KafkaTopic"}


def _events(kube: Kube, ns: str, name: str, reason: str) -> list[dict]:
    items = kube.request("GET", f"/api/v1/namespaces/{ns}/events").get("items", [])
    return [e for e in items if e["involvedObject"].get("name") == name and e["reason"] == reason]


def _setup(control_plane, kube, namespace, name):
    kafka_ns = f"{namespace}-kafka"[:63]
    control_plane.kubectl("create", "namespace", kafka_ns)
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline(name, namespace, _spec(kafka_ns)))
    wait_for(lambda: len(_topics(kube, namespace, name)) == 2, 60, what="the two KafkaTopics")
    return kafka_ns


def test_delete_waits_for_strimzi_to_delete_the_topics_and_says_so(operator, control_plane, kube, namespace):
    name = "waits"
    kafka_ns = _setup(control_plane, kube, namespace, name)
    with FakeTopicOperator(kube, kafka_ns, delay=6):
        wait_for(
            lambda: all(
                STRIMZI_TOPIC_FINALIZER in (t["metadata"].get("finalizers") or [])
                for t in _topics(kube, namespace, name).values()
            ),
            30,
            what="Strimzi's finalizer on the topics",
        )
        uid = get_pipeline(kube, namespace, name)["metadata"]["uid"]
        assert all(
            t["metadata"]["annotations"][PIPELINE_UID_ANNOTATION] == uid
            for t in _topics(kube, namespace, name).values()
        )
        kube.delete(PIPELINE_KIND, namespace, name)
        # Strimzi has not deleted the topics yet: the pipeline stays, and says why
        body = wait_for(
            lambda: (
                (b := get_pipeline(kube, namespace, name))
                and condition(b, "Ready").get("reason") == "WaitingForCleanup"
                and b
            ),
            10,
            what="Ready reason WaitingForCleanup",
        )
        assert "strimzi.io/topic-operator" in condition(body, "Ready")["message"]
        assert _events(kube, namespace, name, "WaitingForCleanup")
        assert get_pipeline(kube, namespace, name) is not None
        wait_for(lambda: get_pipeline(kube, namespace, name) is None, 40, what="the pipeline to go")
        assert not _topics(kube, namespace, name), "the pipeline went before its topics"
    assert not _events(kube, namespace, name, "CleanupTimedOut")


def test_cleanup_outlasts_api_errors(operator, control_plane, kube, namespace):
    """The API server refuses to delete the topics for 15 s (a ValidatingAdmissionPolicy on DELETE):
    the old handler gave up after about 8 s and left them for a later pipeline of that name."""
    name = "errors"
    kafka_ns = _setup(control_plane, kube, namespace, name)
    policy = f"deny-topic-delete-{kafka_ns}"[:63]
    vap = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": policy},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": ["kafka.strimzi.io"],
                        "apiVersions": ["*"],
                        "operations": ["DELETE"],
                        "resources": ["kafkatopics"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": kafka_ns}},
            },
            "validations": [{"expression": "false", "message": "topic deletion refused (test)"}],
        },
    }
    binding = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": policy},
        "spec": {"policyName": policy, "validationActions": ["Deny"]},
    }
    base = "/apis/admissionregistration.k8s.io/v1"
    kube.request("POST", f"{base}/validatingadmissionpolicies", body=vap)
    kube.request("POST", f"{base}/validatingadmissionpolicybindings", body=binding)
    try:
        probe = {
            "apiVersion": TOPIC.api_version,
            "kind": "KafkaTopic",
            "metadata": {"name": "probe", "namespace": kafka_ns},
            "spec": {"partitions": 1, "replicas": 1},
        }

        def refused():
            if kube.get(TOPIC, kafka_ns, "probe") is None:
                kube.request("POST", TOPIC.path(kafka_ns), body=probe)
            try:
                kube.delete(TOPIC, kafka_ns, "probe")
            except ApiError as exc:
                return exc.status in (403, 422)
            raise AssertionError("the probe topic was deleted: the policy is not in force")

        wait_for(refused, 30, what="the policy to refuse topic deletion")
        kube.delete(PIPELINE_KIND, namespace, name)
        time.sleep(15)
        body = get_pipeline(kube, namespace, name)
        assert body is not None, "the delete handler gave up while the API refused to delete the topics"
        assert "cleanup failed" in condition(body, "Ready")["message"]
        assert len(_topics(kube, namespace, name)) == 2
    finally:
        kube.request("DELETE", f"{base}/validatingadmissionpolicybindings/{policy}")
        kube.request("DELETE", f"{base}/validatingadmissionpolicies/{policy}")
    wait_for(lambda: get_pipeline(kube, namespace, name) is None, 40, what="the pipeline to go")
    assert not _topics(kube, namespace, name)


def test_timeout_is_bounded_reported_and_nothing_is_inherited(operator, control_plane, kube, namespace):
    name = "stuck"
    kafka_ns = _setup(control_plane, kube, namespace, name)
    strimzi = FakeTopicOperator(kube, kafka_ns, delay=3600).__enter__()  # never deletes in time
    try:
        wait_for(
            lambda: all(
                STRIMZI_TOPIC_FINALIZER in (t["metadata"].get("finalizers") or [])
                for t in _topics(kube, namespace, name).values()
            ),
            30,
            what="Strimzi's finalizer on the topics",
        )
        old_uid = get_pipeline(kube, namespace, name)["metadata"]["uid"]
        operator.runtime.cfg.cleanup_timeout_seconds = 6
        try:
            kube.delete(PIPELINE_KIND, namespace, name)
            wait_for(lambda: get_pipeline(kube, namespace, name) is None, 30, what="the finalizer released")
        finally:
            operator.runtime.cfg.cleanup_timeout_seconds = 60
        timed_out = _events(kube, namespace, name, "CleanupTimedOut")
        assert timed_out and timed_out[0]["type"] == "Warning"
        assert "KafkaTopic" in timed_out[0]["message"]
        left = _topics(kube, namespace, name)
        assert len(left) == 2 and all(t["metadata"].get("deletionTimestamp") for t in left.values())

        # a new pipeline of the same name does not adopt the old one's topics
        rvs = {k: t["metadata"]["resourceVersion"] for k, t in left.items()}
        apply_pipeline(kube, pipeline(name, namespace, _spec(kafka_ns)))
        body = wait_for(
            lambda: (
                (b := get_pipeline(kube, namespace, name))
                and condition(b, "TopicsReady").get("reason") == "ChildTerminating"
                and b
            ),
            30,
            what="TopicsReady reason ChildTerminating",
        )
        assert "being deleted" in condition(body, "TopicsReady")["message"]
        new_uid = body["metadata"]["uid"]
        time.sleep(3)  # a few reconciles
        now = _topics(kube, namespace, name)
        assert {k: t["metadata"]["resourceVersion"] for k, t in now.items()} == rvs
        assert all(t["metadata"]["annotations"][PIPELINE_UID_ANNOTATION] == old_uid for t in now.values())
    finally:
        strimzi.stop()
    # Strimzi comes back and finishes: the new pipeline gets topics of its own
    with FakeTopicOperator(kube, kafka_ns, delay=0):
        wait_for(
            lambda: (
                len(t := _topics(kube, namespace, name)) == 2
                and all(x["metadata"]["annotations"][PIPELINE_UID_ANNOTATION] == new_uid for x in t.values())
            ),
            60,
            what="new topics for the new pipeline",
        )


def test_uninstall_in_the_documented_order_leaves_no_namespace_stuck(
    operator, control_plane, kube, namespace
):
    """docs/operations/upgrade.md: delete the pipelines (--wait), then the release, which deletes the
    kafka namespace with Strimzi in it. Strimzi deletes topics a few seconds after they are marked."""
    name = "uninstall"
    kafka_ns = _setup(control_plane, kube, namespace, name)
    with FakeTopicOperator(kube, kafka_ns, delay=4) as strimzi:
        wait_for(
            lambda: all(
                STRIMZI_TOPIC_FINALIZER in (t["metadata"].get("finalizers") or [])
                for t in _topics(kube, namespace, name).values()
            ),
            30,
            what="Strimzi's finalizer on the topics",
        )
        r = control_plane.kubectl(
            "delete", "streampipelines", "--all", "-n", namespace, "--wait", "--timeout=90s", check=False
        )
        assert r.returncode == 0, r.stderr
        left = control_plane.kubectl(
            "get", "kafkatopics", "-n", kafka_ns, "-l", "app.kubernetes.io/managed-by=streamotion-operator"
        )
        assert "No resources found" in left.stderr + left.stdout
        strimzi.stop()  # helm uninstall: Strimzi goes with the release
    control_plane.kubectl("delete", "namespace", kafka_ns, "--wait=false")
    control_plane.kubectl("delete", "namespace", namespace, "--wait=false")

    def gone(ns):
        try:
            return kube.request("GET", f"/api/v1/namespaces/{ns}") is None
        except ApiError as exc:
            return exc.status == 404

    wait_for(lambda: gone(kafka_ns) and gone(namespace), 90, what="both namespaces to be deleted")


def test_cleanup_never_deletes_another_pipelines_topics(operator, control_plane, kube, namespace):
    """A topic annotated with another pipeline's uid is not this pipeline's to delete."""
    name = "mine"
    kafka_ns = _setup(control_plane, kube, namespace, name)
    topic_key = next(iter(_topics(kube, namespace, name)))
    operator.controller.kube.request(
        "PATCH",
        TOPIC.path(kafka_ns, topic_key[2]),
        body={"metadata": {"annotations": {PIPELINE_UID_ANNOTATION: "someone-else"}}},
        content_type="application/merge-patch+json",
    )
    done = operator.controller.cleanup(
        namespace, name, get_pipeline(kube, namespace, name)["metadata"]["uid"]
    )
    assert f"KafkaTopic {kafka_ns}/{topic_key[2]}" not in done.deleted
    assert kube.get(TOPIC, kafka_ns, topic_key[2]) is not None
    assert naming.FINALIZER in get_pipeline(kube, namespace, name)["metadata"]["finalizers"]

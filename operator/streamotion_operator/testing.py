"""Helpers for tests and the benchmark: no kubelet or upstream operators run there, so child
readiness is simulated the way those controllers report it (status subresources)."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

from streamotion import naming
from streamotion.api.models import API_VERSION, KIND
from streamotion_operator.builders import KINDS, Kind
from streamotion_operator.controller import PIPELINE_KIND, now
from streamotion_operator.kube import ApiError, Kube

T = TypeVar("T")
POD = Kind("v1", "Pod", "pods")
SECRET = Kind("v1", "Secret", "secrets")

BASE_SPEC: dict[str, Any] = {
    "kafka": {"cluster": "streamotion", "partitions": 3},
    "sources": [
        {
            "name": "reddit",
            "type": "reddit",
            "reddit": {"subreddits": ["worldnews"], "credentialsSecret": "reddit-credentials"},
        },
        {"name": "demo", "type": "replay", "replay": {"dataset": "goemotions", "ratePerSecond": 5}},
    ],
    "processing": {"executors": {"instances": 1, "cores": 1, "memory": "1g"}},
    "model": {"name": "j-hartmann/emotion-english-distilroberta-base", "replicas": {"min": 1, "max": 2}},
    "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "pg-app"}}],
    "dashboards": {"enabled": True, "namespace": "monitoring"},
}
SECRETS = {
    "reddit-credentials": {
        "client_id": "id",
        "client_secret": "s3cr3t-value",
        "user_agent": "streamotion-test",
    },
    "pg-app": {"username": "app", "password": "pg-s3cr3t-value"},
}


def wait_for(fn: Callable[[], T], timeout: float = 60, interval: float = 0.25, what: str = "condition") -> T:
    """Poll ``fn`` until it returns something truthy; fail with its last value after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except AssertionError as exc:
            last = exc
        else:
            if last:
                return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}; last: {last!r}")
        time.sleep(interval)


def pipeline(name: str, namespace: str, spec: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(spec or BASE_SPEC)
    spec.update(changes)
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def create_secrets(kube: Kube, namespace: str, secrets: dict[str, dict[str, str]] | None = None) -> None:
    for name, data in (secrets or SECRETS).items():
        kube.request(
            "POST",
            SECRET.path(namespace),
            body={"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "stringData": data},
        )


def apply_pipeline(kube: Kube, body: dict[str, Any]) -> dict[str, Any]:
    m = body["metadata"]
    return kube.request(
        "PATCH",
        PIPELINE_KIND.path(m["namespace"], m["name"]),
        body=body,
        query={"fieldManager": "test-user", "force": "true"},
        content_type="application/apply-patch+yaml",
    )


def get_pipeline(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    return kube.get(PIPELINE_KIND, namespace, name)


def condition(body: dict[str, Any] | None, ctype: str) -> dict[str, Any]:
    for c in ((body or {}).get("status") or {}).get("conditions") or []:
        if c["type"] == ctype:
            return c
    return {}


def children(kube: Kube, namespace: str, name: str) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Every live child of the pipeline, by (kind, namespace, name)."""
    sel = {
        naming.PIPELINE_LABEL: name,
        naming.PIPELINE_NS_LABEL: namespace,
        "app.kubernetes.io/managed-by": naming.MANAGED_BY,  # not Strimzi's user Secrets (same pipeline labels)
    }
    out = {}
    for kind in KINDS.values():
        if not kube.installed(kind, ttl=0):
            continue
        for item in kube.list(kind, None, sel):
            out[(kind.kind, item["metadata"]["namespace"], item["metadata"]["name"])] = item
    return out


def versions(kube: Kube, namespace: str, name: str) -> dict[tuple[str, str, str], str]:
    """resourceVersion of every child (any write, status included, changes it)."""
    return {k: v["metadata"]["resourceVersion"] for k, v in children(kube, namespace, name).items()}


def generations(kube: Kube, namespace: str, name: str) -> dict[tuple[str, str, str], str]:
    """What says a child's desired state changed: its generation, else (no generation) its resourceVersion."""
    return {
        k: str(v["metadata"].get("generation") or v["metadata"]["resourceVersion"])
        for k, v in children(kube, namespace, name).items()
    }


def _status(kube: Kube, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> None:
    kube.request(
        "PATCH",
        kind.path(namespace, name) + "/status",
        body={"status": status},
        content_type="application/merge-patch+json",
    )


def set_status(kube: Kube, kind: str, namespace: str, name: str, status: dict[str, Any]) -> None:
    """Merge-patch a child's status the way its controller would."""
    _status(kube, KINDS[kind], namespace, name, status)


def ready_condition(**extra: Any) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": "True",
        "lastTransitionTime": now(),
        "reason": "Ready",
        "message": "",
        **extra,
    }


def make_ready(kube: Kube, namespace: str, name: str, *, topics: bool = True, pods: bool = True,
               job: bool = True, model: bool = True, pods_timeout: float = 90) -> None:  # fmt: skip
    """Report every child Ready the way its controller would (Strimzi, kubelet, spark-operator, KubeRay)."""
    kids = children(kube, namespace, name)
    if any(k[0] == "KafkaUser" for k in kids):
        strimzi_credentials(kube, namespace, name)
    for (kind, ns, n), obj in kids.items():
        gen = obj["metadata"].get("generation", 1)
        if kind == "KafkaTopic" and topics:
            status = {"conditions": [ready_condition()], "observedGeneration": gen}
            status["topicId"] = topic_id(obj)
            _status(kube, KINDS[kind], ns, n, status)
        elif kind == "SparkApplication" and job:
            state = {"state": "RUNNING"}
            _status(
                kube,
                KINDS[kind],
                ns,
                n,
                {"applicationState": state, "driverInfo": {}, "lastSubmissionAttemptTime": now()},
            )
        elif kind == "RayService" and model:
            cond = {**ready_condition(), "reason": "RayServiceReady"}
            _status(kube, KINDS[kind], ns, n, {"conditions": [cond], "observedGeneration": gen})
        elif kind == "KafkaConnector" and pods:
            _status(kube, KINDS[kind], ns, n, connector_running(n, gen))
        elif kind == "ConfigMap" and n == f"{name}-job-report" and job:
            report_sinks(kube, namespace, name)
    if pods:
        selector = {naming.PIPELINE_LABEL: name, "app.kubernetes.io/component": "producer"}
        # The controller-manager creates the producers' pods some time after their Deployments;
        # under load that can be after this call, so wait (bounded) for every replica's pod.
        want = sum(
            int(obj.get("spec", {}).get("replicas", 1))
            for (kind, _, _), obj in kids.items()
            if kind == "Deployment"
            and obj["metadata"].get("labels", {}).get("app.kubernetes.io/component") == "producer"
        )
        wait_for(
            lambda: len(kube.list(POD, namespace, selector)) >= want,
            pods_timeout,
            interval=0.5,
            what=f"{want} producer pods of {namespace}/{name}",
        )
        make_pods_ready(kube, namespace, selector)


def _b64(text: str) -> str:
    import base64

    return base64.b64encode(text.encode()).decode()


def write_secret(kube: Kube, namespace: str, name: str, labels: dict[str, str], data: dict[str, str]) -> None:
    """Create or replace a Secret (``data`` in clear text), as an upstream operator writes one."""
    body = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "type": "Opaque",
        "data": {k: _b64(v) for k, v in data.items()},
    }
    kube.request(
        "PATCH",
        SECRET.path(namespace, name),
        body=body,
        query={"fieldManager": "strimzi-simulated", "force": "true"},
        content_type="application/apply-patch+yaml",
    )


def strimzi_credentials(kube: Kube, namespace: str, name: str, generation: int = 0) -> list[str]:
    """What Strimzi writes for the pipeline's KafkaUsers (strimzi 1.2.0 user-operator
    KafkaUserModel: a Secret named like the user in its namespace, the KafkaUser's labels but
    app.kubernetes.io/* (Labels.fromResource), managed-by strimzi-user-operator; keys user.crt,
    user.key, ca.crt, user.p12, user.password for tls, password and sasl.jaas.config for
    scram-sha-512) and the cluster CA certificate Secret <cluster>-cluster-ca-cert (key ca.crt),
    then the KafkaUser's Ready condition. ``generation``: a different one rotates the contents.
    Returns the Secrets written, as namespace/name."""
    written = []
    for (kind, ns, n), obj in children(kube, namespace, name).items():
        if kind != "KafkaUser":
            continue
        own = obj["metadata"]["labels"]
        labels = {k: v for k, v in own.items() if not k.startswith("app.kubernetes.io/")}
        labels.update(
            {
                "app.kubernetes.io/managed-by": "strimzi-user-operator",
                "app.kubernetes.io/name": "strimzi-user-operator",
                "app.kubernetes.io/instance": n,
                "strimzi.io/kind": "KafkaUser",
            }
        )
        if obj["spec"]["authentication"]["type"] == "tls":
            data = {
                "user.crt": f"CERT {n} {generation}",
                "user.key": f"KEY {n} {generation}",
                "ca.crt": f"CLIENTS CA {generation}",
                "user.p12": f"P12 {n} {generation}",
                "user.password": f"P12 PASSWORD {generation}",
            }
        else:
            data = {
                "password": f"password-{n}-{generation}",
                "sasl.jaas.config": "org.apache.kafka.common.security.scram.ScramLoginModule required "
                f'username="{n}" password="password-{n}-{generation}";',
            }
        write_secret(kube, ns, n, labels, data)
        written.append(f"{ns}/{n}")
        _status(kube, KINDS[kind], ns, n, {"conditions": [ready_condition()], "username": f"CN={n}"})
        cluster = own.get("strimzi.io/cluster", "streamotion")
        ca = f"{cluster}-cluster-ca-cert"
        if f"{ns}/{ca}" not in written:
            write_secret(
                kube,
                ns,
                ca,
                {"strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka"},
                {"ca.crt": f"CLUSTER CA {generation}", "ca.p12": "P12", "ca.password": "x"},
            )
            written.append(f"{ns}/{ca}")
    return written


def connector_running(name: str, generation: int = 1, task_state: str = "RUNNING", trace: str = "") -> dict:
    """A KafkaConnector's status as Strimzi 1.2.0 writes it: Ready, and Kafka Connect's REST status
    of the connector and its tasks in connectorStatus (AbstractConnectOperator.java)."""
    task = {"id": 0, "state": task_state, "worker_id": "10.0.0.1:8083", **({"trace": trace} if trace else {})}
    return {
        "conditions": [ready_condition()],
        "observedGeneration": generation,
        "connectorStatus": {
            "name": name,
            "connector": {"state": "RUNNING", "worker_id": "10.0.0.1:8083"},
            "tasks": [task],
            "type": "source",
        },
        "tasksMax": 1,
    }


def report_sinks(kube: Kube, namespace: str, name: str, failing: dict[int, str] | None = None) -> None:
    """What the job's driver writes (streamotion_jobs.report): every sink of the pipeline working,
    but those in ``failing`` (index: error)."""
    failing = failing or {}
    body = get_pipeline(kube, namespace, name) or {}
    entries = [
        {
            "index": i,
            "type": s.get("type"),
            "ok": i not in failing,
            "since": now(),
            "message": failing.get(i, ""),
        }
        for i, s in enumerate((body.get("spec") or {}).get("sinks") or [])
    ]
    kube.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/configmaps/{name}-job-report",
        body={"data": {naming.JOB_REPORT_KEY: json.dumps(entries)}},
        content_type="application/merge-patch+json",
    )


def topic_id(kafka_topic: dict[str, Any]) -> str:
    """A Kafka topic id (22 characters of base64, like Strimzi's status.topicId) for a KafkaTopic:
    one per KafkaTopic object, so a KafkaTopic deleted and created again gets a new one."""
    import base64
    import uuid

    raw = uuid.UUID(kafka_topic["metadata"]["uid"]).bytes
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def make_pods_ready(kube: Kube, namespace: str, selector: dict[str, str]) -> int:
    """What a kubelet reports for a started pod: Running and Ready (the ReplicaSet counts it available)."""
    n = 0
    for pod in kube.list(POD, namespace, selector):
        conds = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
        if conds.get("Ready", {}).get("status") == "True":
            continue
        t = now()
        status = {
            "phase": "Running",
            "conditions": [
                {"type": c, "status": "True", "lastTransitionTime": t}
                for c in ("PodScheduled", "Initialized", "ContainersReady", "Ready")
            ],
            "startTime": t,
        }
        try:
            _status(kube, POD, namespace, pod["metadata"]["name"], status)
            n += 1
        except ApiError as exc:
            if exc.status != 404:
                raise
    return n


# Requests the API server served (its own metric apiserver_request_total), by verb and resource.
# WATCH and CONNECT are long-running (counted when they end); leases are the API server's own
# heartbeats (kube-apiserver identity leases), not a client's.
LONG_RUNNING = frozenset({"WATCH", "WATCHLIST", "CONNECT"})


def api_requests(kube: Kube, by_scope: bool = False) -> dict[tuple[str, ...], float]:
    """``apiserver_request_total`` summed by (verb, resource, subresource), and by scope (cluster,
    namespace, resource) too with ``by_scope``; long-running verbs and leases left out. Reading it is
    itself a request (a GET of no resource, counted in the next read)."""
    from prometheus_client.parser import text_string_to_metric_families

    m, url, h, _, _ = kube.api.param_serialize("GET", "/metrics", auth_settings=["BearerToken"])
    resp = kube.api.call_api(m, url, header_params=h, _request_timeout=(10, 60))
    text = (resp.read() if hasattr(resp, "read") else resp.data).decode()
    out: dict[tuple[str, str, str], float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "apiserver_request":
            continue
        for s in family.samples:
            if not s.name.endswith("_total"):
                continue
            verb, resource = s.labels.get("verb", ""), s.labels.get("resource", "")
            if verb in LONG_RUNNING or resource == "leases":
                continue
            k: tuple[str, ...] = (verb, resource, s.labels.get("subresource", ""))
            if by_scope:
                k = (*k, s.labels.get("scope", ""))
            out[k] = out.get(k, 0.0) + s.value
    return out


def requests_between(before: dict[tuple[str, ...], float], after: dict[tuple[str, ...], float]):
    """The requests served between two :func:`api_requests` reads (the first read itself left out)."""
    delta = {k: v - before.get(k, 0.0) for k, v in after.items() if v - before.get(k, 0.0) > 0}
    metrics_get = next((k for k in delta if k[0] == "GET" and not k[1] and not k[2]), None)
    if metrics_get is not None:
        delta[metrics_get] -= 1  # the first read of /metrics
        if not delta[metrics_get]:
            del delta[metrics_get]
    return delta

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
    sel = {naming.PIPELINE_LABEL: name, naming.PIPELINE_NS_LABEL: namespace}
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
               job: bool = True, model: bool = True) -> None:  # fmt: skip
    """Report every child Ready the way its controller would (Strimzi, kubelet, spark-operator, KubeRay)."""
    kids = children(kube, namespace, name)
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
        elif kind == "ConfigMap" and n == f"{name}-job-report" and job:
            report_sinks(kube, namespace, name)
    if pods:
        make_pods_ready(
            kube, namespace, {naming.PIPELINE_LABEL: name, "app.kubernetes.io/component": "producer"}
        )


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

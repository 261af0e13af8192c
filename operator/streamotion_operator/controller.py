"""One reconcile of one StreamPipeline: apply what changed, prune what is gone, report honest status.

Synchronous and independent of kopf, so the kopf handlers, the tests and the benchmark all drive
the same code. A reconcile with nothing to change makes no write (children keep their
resourceVersion), so it can run as often as needed to repair drift. Given a :class:`View` (what
the operator's watches delivered, see ``cache``) it makes no read either: a resync of an unchanged
pipeline makes no request at all. Rewrites of SparkApplications and RayServices that come from the
operator (a new version or configuration), not from the pipeline's spec, are paced (``pacing``).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from streamotion import naming
from streamotion.api.models import API_VERSION, KIND, PLURAL, StreamPipeline
from streamotion_operator import builders, tenancy
from streamotion_operator.builders import KINDS, Kind
from streamotion_operator.cache import View, slim, unpack
from streamotion_operator.config import OperatorConfig
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.metrics import Metrics
from streamotion_operator.pacing import GENERATION_ANNOTATION, PACED, Pacer
from streamotion_operator.status import (
    CHILD_CONFLICT,
    CHILD_TERMINATING,
    CREDENTIALS_PENDING,
    ROLLOUT_PENDING,
    TOPIC_RECREATED,
    TRANSIENT_REASONS,
    Problem,
    now,
    pipeline_status,
    status_patch,
)

log = logging.getLogger("streamotion.operator")

PIPELINE_KIND = Kind(API_VERSION, KIND, PLURAL)
APPLIED_HASH_ANNOTATION = "streamotion.io/applied-hash"
# The uid of the pipeline a child in another namespace (topic, dashboards) was created for: no
# ownerReference can cross namespaces, and a later pipeline of the same name must not inherit it.
PIPELINE_UID_ANNOTATION = "streamotion.io/pipeline-uid"
# Strimzi's topic operator puts this finalizer on every KafkaTopic it manages and removes it once
# it has deleted the topic in Kafka (strimzi 1.2.0 topic-operator KubernetesHandler.java).
STRIMZI_TOPIC_FINALIZER = "strimzi.io/topic-operator"
# "<role>=<topic id>,...": the user accepts topics that were created again (reason TopicRecreated).
ACCEPTED_TOPIC_IDS = "streamotion.io/accepted-topic-ids"
# Kinds whose children are deleted when the spec no longer asks for them. Never topics nor the
# checkpoint claim (data): those go only with the pipeline (the claim through its ownerReference).
PRUNABLE = (
    "Deployment",
    "Service",
    "PodMonitor",
    "PrometheusRule",
    "ConfigMap",
    "NetworkPolicy",
    "KafkaUser",
)
# Children that use other children by name (mount the pipeline ConfigMap or the checkpoint claim,
# run as or grant a role to the Spark ServiceAccount): not applied while one of those is someone
# else's object (it would run with, write into or grant rights to that object).
WORKLOADS = ("Deployment", "SparkApplication", "RayService", "RoleBinding")
# Maps whose values are resource quantities (resources.requests/limits, PVC capacity): the API
# server stores built-in kinds' quantities in canonical form (1024Mi is stored as 1Gi).
QUANTITY_MAPS = frozenset({"requests", "limits", "capacity"})

EventFn = Callable[[dict[str, Any], str, str, str], None]


def same_quantity(want: Any, have: Any) -> bool:
    """Whether two Kubernetes resource quantities are equal as quantities ("1024Mi" is "1Gi")."""
    if want == have:
        return True
    if isinstance(want, bool) or isinstance(have, bool) or not isinstance(want, str | int | float):
        return False
    from kubernetes.utils import parse_quantity

    try:
        return parse_quantity(want) == parse_quantity(have)
    except (ValueError, TypeError):
        return False


def is_subset(want: Any, have: Any, quantities: bool = False) -> bool:
    """Whether every field of ``want`` has the same value in ``have`` (server defaults ignored).

    ``quantities``: ``want`` is a map of resource quantities, compared as quantities."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return False
        for k, v in want.items():
            if k not in have:
                # the API server drops empty maps and lists (a ConfigMap without data): absent equals empty
                if v in ({}, [], None):
                    continue
                return False
            if quantities and not isinstance(v, dict | list):
                if not same_quantity(v, have[k]):
                    return False
            elif not is_subset(v, have[k], k in QUANTITY_MAPS):
                return False
        return True
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(is_subset(w, h) for w, h in zip(want, have, strict=True))
        )
    if isinstance(want, bool) or isinstance(have, bool):
        return want is have
    if isinstance(want, int | float) and isinstance(have, int | float):
        return want == have
    return want == have


def foreign_reason(obj: dict[str, Any], name: str, namespace: str, uid: str | None) -> str | None:
    """Why ``obj`` is not a child the operator created for pipeline ``namespace/name`` (None: it is).

    A child is the operator's when it carries the pipeline's labels (streamotion.io/pipeline,
    streamotion.io/pipeline-namespace, app.kubernetes.io/managed-by=streamotion-operator), the
    field manager ``streamotion-operator`` has applied it (managedFields, operation Apply), and
    any controller ownerReference it has is this very pipeline (``uid``; None: not checked), as is
    the pipeline uid it was annotated with in another namespace (a child an earlier pipeline of the
    same name left behind). Anything else is never written, adopted or deleted."""
    m = obj.get("metadata") or {}
    labels = m.get("labels") or {}
    if (
        labels.get(naming.PIPELINE_LABEL) != name
        or labels.get(naming.PIPELINE_NS_LABEL) != namespace
        or labels.get("app.kubernetes.io/managed-by") != naming.MANAGED_BY
    ):
        return "it does not carry this pipeline's labels"
    if not any(
        f.get("manager") == naming.FIELD_MANAGER and f.get("operation") == "Apply"
        for f in m.get("managedFields") or []
    ):
        return f"field manager {naming.FIELD_MANAGER} never applied it"
    for ref in m.get("ownerReferences") or []:
        if ref.get("controller") and uid and ref.get("uid") != uid:
            return f"it is controlled by {ref.get('kind')} {ref.get('name')} (uid {ref.get('uid')})"
    created_for = (m.get("annotations") or {}).get(PIPELINE_UID_ANNOTATION)
    if uid and created_for and created_for != uid:
        return f"it was created for an earlier pipeline of that name (uid {created_for})"
    return None


@dataclass
class Outcome:
    """What one reconcile did and found."""

    status: dict[str, Any] | None = None
    created: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    gone: bool = False
    spark_applied: dict[str, Any] | None = None
    topic_ids: dict[str, str] | None = None
    retry_after: float | None = None
    """Reconcile again after this many seconds (a paced rewrite waits for its slot)."""


class Controller:
    def __init__(
        self,
        kube: Kube,
        cfg: OperatorConfig | None = None,
        metrics: Metrics | None = None,
        event: EventFn | None = None,
        io_workers: int = 6,
    ):
        self.kube = kube
        self.cfg = cfg or OperatorConfig.from_env()
        self.metrics = metrics or Metrics()
        self.event = event or (lambda body, type_, reason, message: None)
        self._io = ThreadPoolExecutor(max_workers=io_workers, thread_name_prefix="kube-io")
        # resourceVersion of each object as this controller last wrote it: watch events that only
        # echo our own writes need no new reconcile.
        self.own_versions: dict[tuple[str, str, str], str] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._locks_lock = threading.Lock()
        self.pacer = Pacer(self.cfg.rollout_max_rewrites, self.cfg.rollout_period_seconds)
        # What this controller wrote that the watches may not have delivered yet, per pipeline:
        # key -> (resourceVersion before the write or None, the object written or None: deleted, when).
        self._written: dict[tuple[str, str], dict[tuple[str, str, str], tuple[str | None, Any, float]]] = {}
        # pipeline -> (resourceVersion before, after our last status write, the status written)
        self._status_written: dict[tuple[str, str], tuple[str, str, dict[str, Any]]] = {}
        # Secrets found, by (namespace, name): (when checked, their keys); missing ones are not kept
        self._secrets: dict[tuple[str, str], tuple[float, set[str]]] = {}
        # Kafka credentials to copy, by (namespace, name): (when read, {metadata, data})
        self._sources: dict[tuple[str, str], tuple[float, dict[str, Any]]] = {}
        # Copies (Secrets are not watched): key -> (hash of what was applied, when it was read back)
        self._copies: dict[tuple[str, str, str], tuple[str, float]] = {}

    def close(self) -> None:
        self._io.shutdown(wait=False, cancel_futures=True)

    def lock(self, namespace: str, name: str) -> threading.Lock:
        """Serializes reconcile and cleanup of one pipeline (a daemon and the delete handler)."""
        with self._locks_lock:
            return self._locks.setdefault((namespace, name), threading.Lock())

    # ---------------------------------------------------------------------------- reconcile
    def reconcile(self, namespace: str, name: str, view: View | None = None) -> Outcome:
        """Reconcile one pipeline; ``view``: what the watches delivered (None: read from the API)."""
        started = time.perf_counter()
        try:
            with self.lock(namespace, name):
                out = self._reconcile(namespace, name, view)
        except Exception as exc:
            self.metrics.reconciles.labels("error").inc()
            self.metrics.errors.labels(type(exc).__name__).inc()
            raise
        finally:
            self.metrics.duration.observe(time.perf_counter() - started)
        self.metrics.reconciles.labels(
            "changed" if out.created or out.updated or out.deleted else "noop"
        ).inc()
        return out

    def _reconcile(self, namespace: str, name: str, view: View | None) -> Outcome:
        out = Outcome()
        body = self._pipeline(namespace, name, view)
        if body is None or body["metadata"].get("deletionTimestamp"):
            out.gone = True
            self.metrics.observe(namespace, name, None, False)
            self._written.pop((namespace, name), None)
            self._status_written.pop((namespace, name), None)
            return out
        generation = body["metadata"].get("generation")
        old_status = body.get("status") or {}
        try:
            p = StreamPipeline.model_validate(
                {k: body[k] for k in ("apiVersion", "kind", "metadata", "spec")}
            )
        except ValidationError as exc:
            out.problems.append(Problem("Ready", "InvalidSpec", _validation_message(exc)))
            out.status = self._status(body, None, {}, out, generation)
            self._write_status(body, out.status, old_status)
            return out
        refused = tenancy.violations(p, self.cfg)
        if refused:  # stored before the admission policy, or with it off: nothing is applied
            out.problems.append(Problem("Ready", tenancy.REASON, "; ".join(refused) + "; nothing applied"))
            out.status = self._status(body, p, {}, out, generation)
            self._write_status(body, out.status, old_status)
            self._events(body, old_status, out)
            return out

        if not old_status.get("phase"):
            # First sight: say so before creating anything (Pending -> Provisioning -> Running).
            pending = {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "Unknown",
                        "lastTransitionTime": now(),
                        "reason": "Pending",
                        "message": "creating the pipeline's children",
                    }
                ],
            }
            self._write_status(body, pending, old_status)
            self.event(body, "Normal", "Pending", "creating the pipeline's children")
            old_status = body["status"] = pending
        kafka_secrets = self._kafka_secrets(p, view)
        desired = builders.build(p, self.cfg, kafka_secrets)
        self._credentials_pending(p, kafka_secrets, out)
        owner = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": name,
            "uid": body["metadata"]["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
        live = self._live(p, view)
        uid = body["metadata"]["uid"]
        wanted_keys = set()
        conflicts: dict[tuple[str, str, str], str] = {}
        current: dict[tuple[str, str, str], dict[str, Any]] = {}
        to_apply: list[tuple[dict[str, Any], dict[str, Any] | None, str]] = []
        copy_hashes: dict[tuple[str, str, str], str] = {}  # children of unwatched kinds (Secrets)
        for obj in desired:
            kind = KINDS[obj["kind"]]
            cond = builders.COMPONENT_CONDITION[builders.component_of(obj)]
            if not self._installed(kind, view):
                self._missing_crd(kind, cond, out)
                continue
            cross_namespace = obj["metadata"]["namespace"] != namespace
            if not cross_namespace:
                obj["metadata"]["ownerReferences"] = [owner]
            k = builders.key(obj)
            wanted_keys.add(k)
            if not kind.watched:
                copy_hashes[k] = builders.spec_hash(obj)
                copied = self._copies.get(k)
                if (
                    copied
                    and copied[0] == copy_hashes[k]
                    and (time.monotonic() - copied[1] < self.cfg.secret_check_seconds)
                ):
                    current[k] = obj  # applied as it is now, recently: no read
                    continue
            have = live.get(k)
            if have is None:
                # not among the pipeline's labelled children: an object of that name may still
                # exist (someone else's); applying would take it over
                try:
                    have = self.kube.get(kind, k[1], k[2])
                except ApiError as exc:  # e.g. forbidden: reported like a failed apply
                    out.problems.append(self._apply_problem(obj, cond, exc, p))
                    continue
            if have is not None and (have.get("metadata") or {}).get("deletionTimestamp"):
                # still being deleted (its finalizers, e.g. Strimzi's, not done): applying now would
                # only update an object about to go; it is created again once it is gone
                left = ", ".join(have["metadata"].get("finalizers") or []) or "none"
                out.problems.append(
                    Problem(
                        cond,
                        CHILD_TERMINATING,
                        f"{k[0]} {k[1]}/{k[2]} is being deleted (finalizers left: {left}); "
                        "it is created again once it is gone",
                    )
                )
                continue
            why = foreign_reason(have, name, namespace, uid) if have is not None else None
            if why:
                conflicts[k] = why
                out.problems.append(
                    Problem(
                        cond,
                        CHILD_CONFLICT,
                        f"{k[0]} {k[1]}/{k[2]} already exists and was not created by the operator for "
                        f"this pipeline ({why}): left untouched; delete or rename it",
                    )
                )
                continue
            used = _uses(obj, conflicts)
            if used:
                out.problems.append(
                    Problem(
                        cond,
                        CHILD_CONFLICT,
                        f"{k[0]} {k[1]}/{k[2]} not applied: it would use {', '.join(used)}, which the "
                        "operator did not create",
                    )
                )
                if have is not None:
                    current[k] = have
                continue
            if obj["kind"] == "KafkaTopic" and have:
                self._guard_partitions(obj, have, out)
            if obj["kind"] in PACED:
                obj["metadata"].setdefault("annotations", {})[GENERATION_ANNOTATION] = str(generation)
            obj["metadata"].setdefault("annotations", {})[APPLIED_HASH_ANNOTATION] = builders.spec_hash(obj)
            if cross_namespace:
                obj["metadata"]["annotations"][PIPELINE_UID_ANNOTATION] = uid
            if have is not None and (
                is_subset(slim(obj), slim(have)) or self._defer(obj, have, cond, generation, out)
            ):
                current[k] = have  # nothing to write, or a rewrite waiting for its slot
                if k in copy_hashes:
                    self._copies[k] = (copy_hashes[k], time.monotonic())
            else:
                to_apply.append((obj, have, cond))

        def apply(item):
            try:
                return self.kube.apply(item[0])
            except ApiError as exc:
                return exc

        # Independent objects: written concurrently (server-side apply, one field manager). Roles
        # first: the API server lets the operator bind a Role only once it can read the Role's rules
        # (RBAC escalation check), so a RoleBinding written beside its new Role would be refused.
        roles = [x for x in to_apply if x[0]["kind"] == "Role"]
        to_apply = roles + [x for x in to_apply if x[0]["kind"] != "Role"]
        results = [*self._io.map(apply, roles), *self._io.map(apply, to_apply[len(roles) :])]
        for (obj, have, cond), result in zip(to_apply, results, strict=True):
            if isinstance(result, ApiError):
                out.problems.append(self._apply_problem(obj, cond, result, p))
                continue
            current[builders.key(obj)] = result
            if builders.key(obj) in copy_hashes:
                self._copies[builders.key(obj)] = (copy_hashes[builders.key(obj)], time.monotonic())
            self.own_versions[builders.key(obj)] = result.get("metadata", {}).get("resourceVersion", "")
            if obj["kind"] == "SparkApplication":
                out.spark_applied = _spec_applied(result, have)
            before = have["metadata"].get("resourceVersion") if have is not None else None
            self._remember(namespace, name, builders.key(obj), before, slim(result))
            label = f"{obj['kind']} {obj['metadata']['namespace']}/{obj['metadata']['name']}"
            (out.updated if have is not None else out.created).append(label)
            self.metrics.applied.labels(obj["kind"], "update" if have is not None else "create").inc()
        for k, obj in live.items():
            if k in wanted_keys or k[0] not in PRUNABLE or foreign_reason(obj, name, namespace, uid):
                continue
            try:
                if self.kube.delete(KINDS[k[0]], k[1], k[2]):
                    out.deleted.append(f"{k[0]} {k[1]}/{k[2]}")
                    self.metrics.applied.labels(k[0], "delete").inc()
                self._remember(namespace, name, k, obj["metadata"].get("resourceVersion"), None)
            except ApiError as exc:
                log.warning("deleting %s %s/%s failed: %s", *k, exc)
        self._check_secrets(p, out)
        out.topic_ids = self._check_topic_ids(body, p, current, out)
        out.status = self._status(body, p, current, out, generation)
        self._write_status(body, out.status, old_status)
        self._events(body, old_status, out)
        return out

    # -------------------------------------------------------------------------------- reads
    def _pipeline(self, namespace: str, name: str, view: View | None) -> dict[str, Any] | None:
        """The pipeline from the view (with the status this controller last wrote, when the watch
        has not delivered that write yet), else from the API server."""
        if view is None:
            return self.kube.get(PIPELINE_KIND, namespace, name)
        if view.pipeline is None:
            return None
        body = {**view.pipeline, "metadata": dict(view.pipeline["metadata"])}
        mem = self._status_written.get((namespace, name))
        if mem is not None:
            if body["metadata"].get("resourceVersion") == mem[0]:
                body["status"] = mem[2]
                body["metadata"]["resourceVersion"] = mem[1]
            else:
                self._status_written.pop((namespace, name), None)
        return body

    def _installed(self, kind: Kind, view: View | None) -> bool:
        if view is None or kind.crd is None:  # built-in kinds are always served
            return self.kube.installed(kind)
        return (kind.api_version, kind.plural) in view.installed

    def _remember(
        self, namespace: str, name: str, k: tuple[str, str, str], before: str | None, obj: Any
    ) -> None:
        self._written.setdefault((namespace, name), {})[k] = (before, obj, time.monotonic())

    def delivered(self, namespace: str, name: str, k: tuple[str, str, str]) -> None:
        """The watches delivered child ``k`` of pipeline ``namespace/name`` (called by the index):
        a creation this controller remembers is in the view from now on, even if deleted later."""
        mem = self._written.get((namespace, name))
        if mem and (mem.get(k) or (None, None, 0))[0] is None:
            mem.pop(k, None)

    def _overlay(self, p: StreamPipeline, live: dict[tuple[str, str, str], dict[str, Any]]) -> None:
        """Put this controller's own writes the watches have not delivered yet over ``live``."""
        mem = self._written.get((p.namespace, p.name))
        if not mem:
            return
        now_ = time.monotonic()
        for k, (before, obj, when) in list(mem.items()):
            have = live.get(k)
            rv = have["metadata"].get("resourceVersion") if have is not None else None
            if rv != before or now_ - when > max(30.0, 2 * self.cfg.resync_seconds):
                mem.pop(k, None)  # delivered (or superseded)
            elif obj is None:
                live.pop(k, None)
            else:
                live[k] = obj

    def _live(self, p: StreamPipeline, view: View | None) -> dict[tuple[str, str, str], dict[str, Any]]:
        if view is not None:
            live = {k: unpack(v) for k, v in view.children.items()}
            self._overlay(p, live)
            return live
        sel = {naming.PIPELINE_LABEL: p.name, naming.PIPELINE_NS_LABEL: p.namespace}
        live = {}
        kinds = [kind for kind in KINDS.values() if kind.watched and self.kube.installed(kind)]
        for kind, items in zip(
            kinds, self._io.map(lambda k: self.kube.list(k, None, sel), kinds), strict=True
        ):
            for item in items:
                item.setdefault("kind", kind.kind)
                item.setdefault("apiVersion", kind.api_version)
                live[builders.key(item)] = item
        return live

    def _missing_crd(self, kind: Kind, cond: str, out: Outcome) -> None:
        msg = f"{kind.describe()} is not installed in the cluster: install {kind.crd} (its CRD is missing)"
        if not any(pr.condition == cond and pr.message == msg for pr in out.problems):
            out.problems.append(Problem(cond, "DependencyMissing", msg))

    def _guard_partitions(self, obj: dict[str, Any], have: dict[str, Any], out: Outcome) -> None:
        current = (have.get("spec") or {}).get("partitions")
        wanted = obj["spec"]["partitions"]
        if isinstance(current, int) and wanted < current:
            obj["spec"]["partitions"] = current
            out.problems.append(
                Problem(
                    "TopicsReady",
                    "PartitionsDecreaseRefused",
                    f"spec.kafka.partitions {wanted} is less than the {current} partitions topic "
                    f"{obj['spec']['topicName']} has: Kafka cannot remove partitions; kept {current}",
                )
            )

    def _apply_problem(self, obj: dict[str, Any], cond: str, exc: ApiError, p: StreamPipeline) -> Problem:
        ns = obj["metadata"]["namespace"]
        if exc.status == 404 and ns != p.namespace:
            field_path = {
                "KafkaTopic": "spec.kafka.namespace",
                "KafkaConnector": "spec.kafka.namespace (the Kafka Connect cluster's, by default)",
            }.get(obj["kind"], "spec.dashboards.namespace")
            return Problem(cond, "NamespaceMissing", f"namespace {ns} ({field_path}) not found")
        log.warning("apply failed: %s", exc)
        return Problem(cond, "ApplyFailed", str(exc)[:1000])

    def _check_topic_ids(
        self, body: dict[str, Any], p: StreamPipeline, current: dict, out: Outcome
    ) -> dict[str, str]:
        """The Kafka topic ids to record in status.topics.topicIds; a problem TopicRecreated where a
        topic's id differs from the recorded one (deleted by hand and created again, empty, or a
        changed spec.kafka.cluster): the job's checkpoint holds offsets of the old topic.

        Strimzi's KafkaTopic status.topicId is Kafka's id of the topic (strimzi 1.2.0
        api/.../topic/KafkaTopicStatus.java, set by topic-operator BatchingTopicController.java).
        The recorded id is replaced only when the user accepts the new one with the annotation
        ``streamotion.io/accepted-topic-ids: "<role>=<id>,..."`` (docs: Troubleshooting)."""
        recorded = dict((((body.get("status") or {}).get("topics")) or {}).get("topicIds") or {})
        accepted = _parse_ids(((body["metadata"].get("annotations")) or {}).get(ACCEPTED_TOPIC_IDS))
        kafka_ns = builders.kafka_namespace(p, self.cfg)
        ids = dict(recorded)
        for role in naming.topic_names(p):
            kt = current.get(("KafkaTopic", kafka_ns, naming.topic_resource_name(p, role)))
            now_id = ((kt or {}).get("status") or {}).get("topicId")
            if not now_id:
                continue
            before = recorded.get(role)
            if before and before != now_id and accepted.get(role) != now_id:
                topic = naming.topic_names(p)[role]
                out.problems.append(
                    Problem(
                        "TopicsReady",
                        TOPIC_RECREATED,
                        f"topic {topic} was deleted and created again (topic id {before}, now {now_id}): "
                        "its earlier messages are not in it and the job's checkpoint points past its "
                        "end. See Troubleshooting, TopicRecreated; to go on with the new topic: kubectl "
                        f"annotate streampipeline {p.name} -n {p.namespace} --overwrite "
                        f"{ACCEPTED_TOPIC_IDS}={role}={now_id}",
                    )
                )
                continue
            ids[role] = now_id
        return ids

    def _secret_keys(self, namespace: str, name: str) -> set[str] | None:
        """The keys of a Secret (None: not found). A Secret found is read again only after
        ``secret_check_seconds`` (the operator never watches Secrets); a missing one every time."""
        hit = self._secrets.get((namespace, name))
        if hit and time.monotonic() - hit[0] < self.cfg.secret_check_seconds:
            return hit[1]
        secret = self.kube.get(Kind("v1", "Secret", "secrets"), namespace, name)
        if secret is None:
            self._secrets.pop((namespace, name), None)
            return None
        keys = set(secret.get("data") or {}) | set(secret.get("stringData") or {})
        self._secrets[(namespace, name)] = (time.monotonic(), keys)
        return keys

    def _kafka_secrets(self, p: StreamPipeline, view: View | None) -> dict[tuple[str, str], Any]:
        """The source Secrets of the pipeline's Kafka credential copies, by (namespace, name), None
        where missing. Read by name (the operator never lists nor watches Secrets), again after
        ``secret_check_seconds`` (Strimzi renews certificates well before the old ones expire: its
        renewal period is days), a missing one at every reconcile."""
        out: dict[tuple[str, str], Any] = {}
        for c in builders.credential_copies(p, self.cfg):
            hit = self._sources.get(c.source)
            if hit and time.monotonic() - hit[0] < self.cfg.secret_check_seconds:
                out[c.source] = hit[1]
                continue
            secret = self.kube.get(KINDS["Secret"], *c.source)
            if secret is None:
                self._sources.pop(c.source, None)
                out[c.source] = None
                continue
            kept = {
                "metadata": {"name": c.source[1], "namespace": c.source[0]},
                "data": secret.get("data") or {},
            }
            self._sources[c.source] = (time.monotonic(), kept)
            out[c.source] = kept
        return out

    def _credentials_pending(
        self, p: StreamPipeline, sources: dict[tuple[str, str], Any], out: Outcome
    ) -> None:
        """CredentialsPending on the conditions of the components whose credentials are not there
        yet (Strimzi's User Operator writes them once it has reconciled the KafkaUser)."""
        for c in builders.credential_copies(p, self.cfg):
            src = sources.get(c.source)
            keys = set((src or {}).get("data") or {})
            if src is not None and (c.keys is None or set(c.keys) <= keys):
                continue
            what = (
                f"the cluster CA certificate Secret {c.source[0]}/{c.source[1]} (label "
                f"{builders.CREDENTIALS_LABEL}=cluster-ca, set by the Kafka's "
                "spec.kafka.template.clusterCaCert)"
                if c.component == "config"
                else f"Secret {c.source[0]}/{c.source[1]} of KafkaUser {c.source[1]} (written by Strimzi's "
                "User Operator)"
            )
            conds = (
                ("SourcesReady", "ProcessingReady")
                if c.component == "config"
                else (builders.COMPONENT_CONDITION[c.component],)
            )
            for cond in conds:
                out.problems.append(
                    Problem(
                        cond,
                        CREDENTIALS_PENDING,
                        f"waiting for {what}; copied to {p.namespace}/{c.name} once there",
                    )
                )

    def _check_secrets(self, p: StreamPipeline, out: Outcome) -> None:
        cache: dict[str, set[str] | None] = {}
        for ref in builders.secret_refs(p):
            if ref.name not in cache:
                cache[ref.name] = self._secret_keys(p.namespace, ref.name)
            keys = cache[ref.name]
            cond = "SourcesReady" if ref.component.startswith("source:") else "SinksReady"
            if keys is None:
                msg = f"Secret {p.namespace}/{ref.name} ({ref.what}) not found"
                out.problems.append(Problem(cond, "SecretMissing", msg))
                continue
            missing = [k for k in ref.keys if k not in keys]
            if missing:
                self._secrets.pop((p.namespace, ref.name), None)  # read again next time
                msg = f"Secret {p.namespace}/{ref.name} ({ref.what}) lacks key(s) {', '.join(missing)}"
                out.problems.append(Problem(cond, "SecretMissing", msg))

    # ------------------------------------------------------------------------------- pacing
    def _defer(
        self, obj: dict[str, Any], have: dict[str, Any], cond: str, generation: int | None, out: Outcome
    ) -> bool:
        """Whether the rewrite of ``have`` into ``obj`` waits for a slot of the rollout pace.

        Only SparkApplications and RayServices whose spec would change (spark-operator restarts the
        job, KubeRay starts a second cluster) for the same pipeline generation: a change that comes
        from the operator (new version or configuration): not from the user's spec (generation
        annotation), nor drift (the live object carries the applied hash the operator wants now)."""
        if obj["kind"] not in PACED or is_subset(obj.get("spec"), have.get("spec")):
            return False
        annotations = have["metadata"].get("annotations") or {}
        if annotations.get(GENERATION_ANNOTATION, str(generation)) != str(generation):
            return False  # the pipeline's spec changed: applied at once
        if (
            annotations.get(APPLIED_HASH_ANNOTATION)
            == obj["metadata"]["annotations"][APPLIED_HASH_ANNOTATION]
        ):
            return False  # what the operator wants did not change: drift, repaired at once
        m = obj["metadata"]
        who = (m["namespace"], m["name"])
        if self.pacer.acquire(obj["kind"], who):
            return False
        wait = self.pacer.wait(obj["kind"])
        out.retry_after = wait if out.retry_after is None else min(out.retry_after, wait)
        out.problems.append(
            Problem(
                cond,
                ROLLOUT_PENDING,
                f"{obj['kind']} {m['namespace']}/{m['name']} runs the previous operator's spec: its "
                f"rewrite is queued ({self.pacer.describe(obj['kind'])}; next slot in about {wait:.0f}s)",
            )
        )
        return True

    # ------------------------------------------------------------------------------- status
    def _status(
        self,
        body: dict[str, Any],
        p: StreamPipeline | None,
        current: dict[tuple[str, str, str], dict[str, Any]],
        out: Outcome,
        generation: int | None,
    ) -> dict[str, Any]:
        status = pipeline_status(
            body, p, current, out.problems, generation, self.cfg, out.spark_applied, out.topic_ids
        )
        if p is not None:
            ready = next(c for c in status["conditions"] if c["type"] == "Ready")["status"] == "True"
            self.metrics.observe(p.namespace, p.name, status["phase"], ready)
        return status

    def _write_status(self, body: dict[str, Any], status: dict[str, Any], old: dict[str, Any]) -> None:
        patch = status_patch(status, old)
        if not patch:
            return
        m = body["metadata"]
        try:
            written = self.kube.patch_status(PIPELINE_KIND, m["namespace"], m["name"], patch)
            self.own_versions[(KIND, m["namespace"], m["name"])] = written["metadata"]["resourceVersion"]
            self._status_written[(m["namespace"], m["name"])] = (
                m.get("resourceVersion", ""),
                written["metadata"]["resourceVersion"],
                written.get("status") or {},
            )
            m["resourceVersion"] = written["metadata"]["resourceVersion"]
        except ApiError as exc:
            if exc.status != 404:
                raise

    def _events(self, body: dict[str, Any], old: dict[str, Any], out: Outcome) -> None:
        if out.created:
            self.event(body, "Normal", "Created", _summary("created", out.created))
        if out.updated:
            self.event(body, "Normal", "Updated", _summary("updated", out.updated))
        if out.deleted:
            self.event(body, "Normal", "Deleted", _summary("deleted", out.deleted))
        new = out.status or {}
        if new.get("phase") != old.get("phase"):
            ready = next((c for c in new.get("conditions", []) if c["type"] == "Ready"), {})
            type_ = "Warning" if new.get("phase") in ("Degraded", "Failed") else "Normal"
            self.event(body, type_, new.get("phase") or "Unknown", ready.get("message", ""))
        old_reasons = {c["type"]: c.get("reason") for c in old.get("conditions") or []}
        for c in new.get("conditions", []):
            if (
                c["reason"] == ROLLOUT_PENDING
                and c["type"] != "Ready"
                and old_reasons.get(c["type"]) != c["reason"]
            ):
                self.event(body, "Normal", ROLLOUT_PENDING, f"{c['type']}: {c['message']}")
            if (
                c["status"] == "False"
                and c["reason"] in TRANSIENT_REASONS | {"ApplyFailed"}
                and old_reasons.get(c["type"]) != c["reason"]
                and c["type"] != "Ready"
            ):
                self.event(body, "Warning", c["reason"], f"{c['type']}: {c['message']}")

    # ------------------------------------------------------------------------------- delete
    def cleanup(
        self,
        namespace: str,
        name: str,
        uid: str | None = None,
        children: dict[tuple[str, str, str], bytes] | None = None,
    ) -> Cleanup:
        """Delete the children no ownerReference covers (other namespaces): topics, dashboards.

        Returns what was deleted now and what is still there (a KafkaTopic stays until Strimzi's
        topic operator has deleted the topic in Kafka and removed its finalizer). ``children``: the
        pipeline's children as the watches delivered them (a :class:`View`'s): then nothing is
        listed or read, only deleted, and what is left is what the watches still hold; None: they
        are listed by label (one LIST per kind, cluster-wide)."""
        with self.lock(namespace, name):
            return self._cleanup(namespace, name, uid, children)

    def _cleanup(
        self,
        namespace: str,
        name: str,
        uid: str | None,
        children: dict[tuple[str, str, str], bytes] | None = None,
    ) -> Cleanup:
        done = Cleanup()
        for kind in (KINDS["KafkaTopic"], KINDS["KafkaUser"], KINDS["KafkaConnector"], KINDS["ConfigMap"]):
            if children is not None:
                items = [unpack(v) for k, v in sorted(children.items()) if k[0] == kind.kind]
            elif self.kube.installed(kind, ttl=0):
                sel = {naming.PIPELINE_LABEL: name, naming.PIPELINE_NS_LABEL: namespace}
                items = self.kube.list(kind, None, sel)
            else:
                continue
            for item in items:
                m = item["metadata"]
                if m.get("namespace") == namespace and kind.kind == "ConfigMap":
                    continue  # garbage-collected through its ownerReference
                if foreign_reason(item, name, namespace, uid):
                    continue  # labelled like a child, but not created by the operator for this pipeline
                label = f"{kind.kind} {m['namespace']}/{m['name']}"
                existed = True
                if not m.get("deletionTimestamp"):
                    existed = self.kube.delete(kind, m["namespace"], m["name"])
                    if existed:
                        done.deleted.append(label)
                if children is not None:
                    # gone at once without finalizers; else left until the watch delivers its deletion
                    left = m.get("finalizers") or []
                    if not existed or not left:
                        continue
                else:  # still there until its finalizers are done (a 404 above: already gone)
                    fresh = self.kube.get(kind, m["namespace"], m["name"])
                    if fresh is None:
                        continue
                    left = fresh["metadata"].get("finalizers") or []
                done.remaining.append(label + (f" (finalizers: {', '.join(left)})" if left else ""))
        self.metrics.observe(namespace, name, None, False)
        return done


@dataclass
class Cleanup:
    """What one cleanup pass of a deleted pipeline did and what is still there."""

    deleted: list[str] = field(default_factory=list)
    remaining: list[str] = field(default_factory=list)


def _parse_ids(text: str | None) -> dict[str, str]:
    out = {}
    for part in (text or "").split(","):
        role, _, tid = part.strip().partition("=")
        if role and tid:
            out[role.strip()] = tid.strip()
    return out


def _spec_applied(result: dict[str, Any], before: dict[str, Any] | None) -> dict[str, Any] | None:
    """The generation and the API server's time of an apply that changed a child's spec (None: the
    spec did not change). The time is that of the operator's Apply entry in managedFields."""
    m = result.get("metadata") or {}
    generation = m.get("generation")
    if before is not None and (before.get("metadata") or {}).get("generation") == generation:
        return None
    times = [
        f.get("time")
        for f in m.get("managedFields") or []
        if f.get("manager") == naming.FIELD_MANAGER and f.get("operation") == "Apply" and f.get("time")
    ]
    at = max(times) if times else m.get("creationTimestamp")
    return {"appliedGeneration": generation, "specAppliedAt": at} if at else None


def _uses(obj: dict[str, Any], conflicts: dict[tuple[str, str, str], str]) -> list[str]:
    """The conflicting objects a workload child would use (mount, run as) by name."""
    if obj["kind"] not in WORKLOADS or not conflicts:
        return []
    text = json.dumps({k: v for k, v in obj.items() if k != "metadata"})
    ns = obj["metadata"]["namespace"]
    return [f"{c[0]} {c[1]}/{c[2]}" for c in conflicts if c[1] == ns and json.dumps(c[2]) in text]


def _summary(verb: str, items: list[str]) -> str:
    shown = ", ".join(items[:8])
    return f"{verb} {shown}" + (f" and {len(items) - 8} more" if len(items) > 8 else "")


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(x) for x in err["loc"])
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)

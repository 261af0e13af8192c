"""Status of a StreamPipeline: its conditions, phase and per-component readiness (topics, sources,
processing, model, sinks, dashboards), computed from the problems a reconcile met and the children
as the API server returned them; and the merge patch that writes it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streamotion import cdc, naming
from streamotion.api.models import CONDITION_TYPES, StreamPipeline
from streamotion_operator import builders, tenancy
from streamotion_operator.builders.connect import connect_namespace
from streamotion_operator.config import OperatorConfig

CHILD_CONFLICT = "ChildConflict"
CHILD_TERMINATING = "ChildTerminating"
TOPIC_RECREATED = "TopicRecreated"
SINK_FAILING = "SinkFailing"
CREDENTIALS_PENDING = "CredentialsPending"
"""A component's Kafka credentials (its KafkaUser's Secret, the cluster CA) are not there yet to copy."""
ROLLOUT_PENDING = "RolloutPending"
CONNECTOR_FAILED = "ConnectorFailed"
"""A cdc source's connector or one of its tasks is FAILED in Kafka Connect (Strimzi's connectorStatus)."""
"""A SparkApplication or RayService still runs the previous operator's spec, its rewrite queued (pacing)."""
TRANSIENT_REASONS = {
    TOPIC_RECREATED,
    CHILD_TERMINATING,
    "DependencyMissing",
    "NamespaceMissing",
    "SecretMissing",
    "PartitionsDecreaseRefused",
    CHILD_CONFLICT,
}
# Reasons meaning a desired child was not applied: status.observedGeneration stays behind.
NOT_APPLIED = frozenset(
    {
        "ApplyFailed",
        CHILD_CONFLICT,
        CHILD_TERMINATING,
        "NamespaceMissing",
        "DependencyMissing",
        "InvalidSpec",
        tenancy.REASON,
    }
)
COMPONENT_CONDITIONS = CONDITION_TYPES[1:]  # all but Ready


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Problem:
    condition: str
    reason: str
    message: str


def pipeline_status(
    body: dict[str, Any],
    p: StreamPipeline | None,
    current: dict[tuple[str, str, str], dict[str, Any]],
    found: list[Problem],
    generation: int | None,
    cfg: OperatorConfig,
    spark_applied: dict[str, Any] | None = None,
    topic_ids: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The status of ``body``: ``p`` is its parsed spec (None: invalid), ``current`` its children as
    applied or read back, ``found`` the problems this reconcile met, ``spark_applied`` the
    SparkApplication's generation and the API server's time when this reconcile changed its spec."""
    old = body.get("status") or {}
    # paced rewrites: the component runs (the previous operator's spec), its rewrite is queued
    pending: dict[str, list[str]] = {}
    for pr in found:
        if pr.reason == ROLLOUT_PENDING:
            pending.setdefault(pr.condition, []).append(pr.message)
    found = [pr for pr in found if pr.reason != ROLLOUT_PENDING]
    # observedGeneration: the generation the children were applied for; kept at the last one
    # while some child of this generation could not be applied (the spec is not in effect)
    if p is None or any(pr.reason in NOT_APPLIED for pr in found):
        observed = old.get("observedGeneration")
    else:
        observed = generation
    status: dict[str, Any] = {"observedGeneration": observed} if observed is not None else {}
    problems: dict[str, list[Problem]] = {}
    # credentials still to come are the least of a condition's problems: any other reason goes first
    for pr in sorted(found, key=lambda pr: pr.reason == CREDENTIALS_PENDING):
        problems.setdefault(pr.condition, []).append(pr)
    waiting: dict[str, list[str]] = {c: [] for c in COMPONENT_CONDITIONS}
    if p is not None:
        # a component waiting only for its credentials still reports what else it waits for
        hard = {c: prs for c, prs in problems.items() if any(x.reason != CREDENTIALS_PENDING for x in prs)}
        _component_status(p, cfg, current, status, waiting, hard, old, spark_applied, topic_ids)
        for c, prs in hard.items():
            problems.setdefault(c, prs)
    suspended = bool(p and p.spec.suspend)
    conds: dict[str, tuple[str, str, str]] = {}
    for c in COMPONENT_CONDITIONS:
        if p is None:
            conds[c] = ("Unknown", "InvalidSpec", "the spec could not be read")
        elif c in problems:
            first = problems[c][0]
            # waiting for credentials: what else the component waits for, too
            also = waiting[c] if first.reason == CREDENTIALS_PENDING else []
            conds[c] = ("False", first.reason, "; ".join([*also, *(x.message for x in problems[c])]))
        elif suspended and c in ("SourcesReady", "ProcessingReady", "ModelReady"):
            conds[c] = ("False", "Suspended", "spec.suspend is true")
        elif waiting[c]:
            conds[c] = ("False", "NotReady", "; ".join(waiting[c] + pending.get(c, [])))
        elif c == "DashboardsReady" and not p.spec.dashboards.enabled:
            conds[c] = ("True", "Disabled", "spec.dashboards.enabled is false")
        elif c in pending:
            conds[c] = ("True", ROLLOUT_PENDING, "; ".join(pending[c]))
        else:
            conds[c] = ("True", "Ready", "ready")
    not_ready = [c for c in COMPONENT_CONDITIONS if conds[c][0] != "True"]
    if "Ready" in problems:
        conds["Ready"] = ("False", problems["Ready"][0].reason, problems["Ready"][0].message)
    elif suspended:
        conds["Ready"] = ("False", "Suspended", "the pipeline is suspended (spec.suspend: true)")
    elif not_ready:
        msg = "; ".join(f"{c}: {conds[c][2]}" for c in not_ready)
        conds["Ready"] = ("False", conds[not_ready[0]][1], msg[:4000])
    elif any(c in pending for c in COMPONENT_CONDITIONS):
        msg = "all components are ready; " + "; ".join(
            m for c in COMPONENT_CONDITIONS for m in pending.get(c, [])
        )
        conds["Ready"] = ("True", ROLLOUT_PENDING, msg[:4000])
    else:
        conds["Ready"] = ("True", "Ready", "all components are ready")

    old_conds = {c.get("type"): c for c in old.get("conditions") or []}
    status["conditions"] = []
    for ctype in ("Ready", *COMPONENT_CONDITIONS):
        st, reason, message = conds[ctype]
        prev = old_conds.get(ctype)
        changed = not prev or prev.get("status") != st
        status["conditions"].append(
            {
                "type": ctype,
                "status": st,
                "observedGeneration": generation,
                "lastTransitionTime": now() if changed else prev.get("lastTransitionTime", now()),
                "reason": reason,
                "message": message,
            }
        )
    # Phase
    hard = any(pr.reason in TRANSIENT_REASONS or pr.reason == "ApplyFailed" for pr in found)
    failed = (status.get("processing") or {}).get("state") == "FAILED" or "Ready" in problems
    if failed:
        phase = "Failed"
    elif suspended:
        phase = "Suspended"
    elif conds["Ready"][0] == "True":
        phase = "Running"
    elif hard or (
        old.get("phase") in ("Running", "Degraded") and old.get("observedGeneration") == generation
    ):
        phase = "Degraded"  # was running this very spec: something broke
    else:
        phase = "Provisioning"  # new, or rolling out a changed spec
    status["phase"] = phase
    return status


def _component_status(
    p, cfg, current, status, waiting, problems, old=None, spark_applied=None, topic_ids=None
) -> None:
    by_kind: dict[str, dict[str, dict[str, Any]]] = {}
    for (kind, _ns, n), obj in current.items():
        by_kind.setdefault(kind, {})[n] = obj
    # topics
    topics = naming.topic_names(p)
    ready_topics = True
    for role in topics:
        rn = naming.topic_resource_name(p, role)
        obj = by_kind.get("KafkaTopic", {}).get(rn)
        ok, why = _condition_ready(obj, f"KafkaTopic {builders.kafka_namespace(p, cfg)}/{rn}")
        if not ok:
            ready_topics = False
            if "TopicsReady" not in problems:
                waiting["TopicsReady"].append(why)
    query = _job_query(by_kind.get("ConfigMap", {}).get(naming.job_report_name(p)))
    if query.get("topicRecreated") and not any(
        x.reason == TOPIC_RECREATED for x in problems.get("TopicsReady", [])
    ):
        msg = (
            f"the job reports since {query.get('since', '?')} that topic {topics['raw']} ends before what "
            f"it had read ({str(query.get('message') or '')[:300]}): the topic was deleted and created "
            "again, or truncated. See Troubleshooting, TopicRecreated"
        )
        problems.setdefault("TopicsReady", []).append(Problem("TopicsReady", TOPIC_RECREATED, msg))
        ready_topics = False
    status["topics"] = {
        "namespace": builders.kafka_namespace(p, cfg),
        "raw": topics["raw"],
        "deadLetter": topics["deadLetter"],
        "ready": ready_topics and "TopicsReady" not in problems,
        **({"topicIds": topic_ids} if topic_ids else {}),
    }
    # sources
    sources = []
    secret_msgs = {pr.message for pr in problems.get("SourcesReady", [])}
    for s in p.spec.sources:
        dn = naming.producer_name(p, s.name)
        obj = by_kind.get("Deployment", {}).get(dn)
        want = 0 if p.spec.suspend else s.replicas
        st = (obj or {}).get("status") or {}
        avail = int(st.get("availableReplicas") or 0)
        msg = None
        if obj is None:
            msg = f"Deployment {dn} not created yet"
        elif (st.get("observedGeneration") or 0) < obj["metadata"].get("generation", 0):
            msg = f"Deployment {dn} is rolling out"
        elif avail < want:
            msg = f"Deployment {dn} has {avail}/{want} available replicas"
        if s.cdc is not None and want > 0:  # its connector runs (suspended or 0 replicas: stopped)
            cn = cdc.connector_name(p, s.name)
            connector = by_kind.get("KafkaConnector", {}).get(cn)
            failed, why = connector_state(connector, f"KafkaConnector {connect_namespace(p, cfg)}/{cn}")
            if failed:
                msg = why
                problems.setdefault("SourcesReady", []).append(
                    Problem("SourcesReady", CONNECTOR_FAILED, f"source {s.name}: {why}")
                )
            elif why:
                msg = f"{msg}; {why}" if msg else why
        secret = builders.source_secret(s)
        if secret and any(f"/{secret} " in m for m in secret_msgs):
            msg = next(m for m in secret_msgs if f"/{secret} " in m)
        sources.append(
            {
                "name": s.name,
                "ready": msg is None,
                "replicas": want,
                "availableReplicas": avail,
                **({"message": msg} if msg else {}),
            }
        )
        if msg and "SourcesReady" not in problems and not p.spec.suspend:
            waiting["SourcesReady"].append(f"source {s.name}: {msg}")
    status["sources"] = sources
    status["sourcesReady"] = f"{sum(s['ready'] for s in sources)}/{len(sources)}"
    # processing
    an = naming.spark_app_name(p)
    app = by_kind.get("SparkApplication", {}).get(an)
    app_state = ((app or {}).get("status") or {}).get("applicationState") or {}
    state = app_state.get("state")
    proc_msg = None
    if app is None:
        proc_msg = f"SparkApplication {an} not created"
    elif state != "RUNNING":
        proc_msg = f"SparkApplication {an} is {state or 'not submitted yet'}"
        if app_state.get("errorMessage"):
            proc_msg += f": {app_state['errorMessage']}"
    applied = _spark_applied(app, (old or {}).get("processing") or {}, spark_applied)
    if app is not None and state == "RUNNING" and applied:
        submitted = ((app.get("status") or {}).get("lastSubmissionAttemptTime")) or ""
        if _time(submitted) < _time(applied["specAppliedAt"]):
            proc_msg = (
                f"SparkApplication {an} is RUNNING a submission from {submitted or 'an unknown time'}, "
                f"before its spec changed at {applied['specAppliedAt']}: waiting for spark-operator to "
                "submit it again"
            )
    status["processing"] = {
        **(applied or {}),
        "application": an,
        **({"state": state} if state else {}),
        **(
            {"specHash": app["metadata"].get("annotations", {}).get(builders.SPEC_HASH_ANNOTATION)}
            if app
            else {}
        ),
        "ready": proc_msg is None and "ProcessingReady" not in problems,
        **({"message": proc_msg} if proc_msg else {}),
    }
    if proc_msg and "ProcessingReady" not in problems and not p.spec.suspend:
        waiting["ProcessingReady"].append(proc_msg)
    # model
    rn = naming.ray_service_name(p)
    ok, why = _condition_ready(by_kind.get("RayService", {}).get(rn), f"RayService {rn}", upgrading=True)
    status["model"] = {
        "service": rn,
        "name": p.spec.model.name,
        "ready": ok and "ModelReady" not in problems,
        **({"message": why} if not ok else {}),
    }
    if not ok and "ModelReady" not in problems and not p.spec.suspend:
        waiting["ModelReady"].append(why)
    # sinks
    sinks = []
    sink_msgs = [pr.message for pr in problems.get("SinksReady", [])]
    report = _job_report(by_kind.get("ConfigMap", {}).get(naming.job_report_name(p)))
    for i, sink in enumerate(p.spec.sinks):
        if sink.postgres:
            pg = sink.postgres
            target = f"{pg.host}:{pg.port}/{pg.database}.{pg.schema_}"
        else:
            target = f"{sink.bigquery.project}.{sink.bigquery.dataset}"
        msg = next((m for m in sink_msgs if f"spec.sinks[{i}]" in m), None)
        if msg is None and not p.spec.suspend:
            failing, msg = _reported(report, i, sink.type)
            if msg and failing:
                problems.setdefault("SinksReady", []).append(Problem("SinksReady", SINK_FAILING, msg))
            elif msg and "SinksReady" not in problems:
                waiting["SinksReady"].append(msg)
        sinks.append(
            {
                "type": sink.type,
                "target": target,
                "ready": msg is None,
                **({"message": msg} if msg else {}),
            }
        )
    status["sinks"] = sinks
    status["sinksReady"] = f"{sum(s['ready'] for s in sinks)}/{len(sinks)}"
    # dashboards
    if p.spec.dashboards.enabled:
        cm = naming.dashboard_config_map_name(p)
        if (
            "ConfigMap",
            p.spec.dashboards.namespace,
            cm,
        ) not in current and "DashboardsReady" not in problems:
            waiting["DashboardsReady"].append(f"ConfigMap {p.spec.dashboards.namespace}/{cm} not created")


def connector_state(obj: dict[str, Any] | None, what: str) -> tuple[bool, str | None]:
    """(failed, why not running) of a cdc source's KafkaConnector; why None: it and its tasks run.

    Strimzi 1.2.0 copies Kafka Connect's REST status into status.connectorStatus (``connector.state``,
    ``tasks[].state`` and their ``trace``; AbstractConnectOperator.java) and reports its own errors
    (an invalid config, Connect unreachable) in the Ready condition (KafkaConnectorStatus)."""
    ok, why = _condition_ready(obj, what)
    st = (obj or {}).get("status") or {}
    cs = st.get("connectorStatus") or {}
    connector = cs.get("connector") if isinstance(cs.get("connector"), dict) else {}
    tasks = [t for t in cs.get("tasks") or [] if isinstance(t, dict)]
    failed = [("connector", connector)] if connector.get("state") == "FAILED" else []
    failed += [(f"task {t.get('id', '?')}", t) for t in tasks if t.get("state") == "FAILED"]
    if failed:
        parts = []
        for label, entry in failed:
            trace = str(entry.get("trace") or "no trace").strip().splitlines()
            parts.append(f"{label} FAILED: {trace[0][:500] if trace else 'no trace'}")
        return True, f"{what}: " + "; ".join(parts)
    if not ok:
        return False, why
    if connector.get("state") != "RUNNING":
        return False, f"{what}: connector is {connector.get('state') or 'not reported yet'}"
    if not tasks or any(t.get("state") != "RUNNING" for t in tasks):
        states = ", ".join(f"task {t.get('id', '?')} {t.get('state')}" for t in tasks) or "no task yet"
        return False, f"{what}: {states}"
    return False, None


def _condition_ready(obj: dict[str, Any] | None, what: str, upgrading: bool = False) -> tuple[bool, str]:
    """Ready when the child's Ready condition is True for its current spec: its controller has
    observed its generation (Strimzi's KafkaTopic and KubeRay's RayService both set
    status.observedGeneration as they reconcile) and, with ``upgrading``, no UpgradeInProgress
    condition is True (KubeRay keeps serving the old cluster while it brings up the new one)."""
    if obj is None:
        return False, f"{what} not created"
    st = obj.get("status") or {}
    conds = {c.get("type"): c for c in st.get("conditions") or []}
    ready = conds.get("Ready")
    generation = (obj.get("metadata") or {}).get("generation") or 0
    observed = st.get("observedGeneration") or 0
    if ready and ready.get("status") == "True" and observed < generation:
        return (
            False,
            f"{what} has not observed its new spec yet (generation {generation}, observed {observed})",
        )
    if upgrading and (conds.get("UpgradeInProgress") or {}).get("status") == "True":
        detail = conds["UpgradeInProgress"].get("message") or "upgrade in progress"
        return False, f"{what} is upgrading to its new spec: {detail}"
    if ready and ready.get("status") == "True":
        return True, ""
    if ready:
        detail = ready.get("message") or ready.get("reason") or "not Ready"
        return False, f"{what} is not Ready: {detail}"
    return False, f"{what} has no Ready condition yet"


def _job_report(cm: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The job's own report of its sinks (streamotion_jobs.report), None when it has not written one."""
    raw = ((cm or {}).get("data") or {}).get(naming.JOB_REPORT_KEY)
    if not raw:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return [e for e in doc if isinstance(e, dict)] if isinstance(doc, list) else None


def _job_query(cm: dict[str, Any] | None) -> dict[str, Any]:
    """The job's report of its streaming query (streamotion_jobs.report), {} when none."""
    raw = ((cm or {}).get("data") or {}).get(naming.JOB_QUERY_KEY)
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _reported(report: list[dict[str, Any]] | None, index: int, type_: str) -> tuple[bool, str | None]:
    """(failing, why) sink ``index`` is not ready by the job's report (why None: the job reported
    it working)."""
    entry = next((e for e in report or [] if e.get("index") == index and e.get("type") == type_), None)
    if entry is None:
        return False, f"spec.sinks[{index}] ({type_}): the job has not reported this sink yet"
    if entry.get("ok") is True:
        return False, None
    return True, (
        f"spec.sinks[{index}] ({type_}): the job reports it failing since {entry.get('since', '?')}: "
        f"{str(entry.get('message') or 'no detail')[:500]}"
    )


def _spark_applied(
    app: dict[str, Any] | None, old_processing: dict[str, Any], new: dict[str, Any] | None
) -> dict[str, Any] | None:
    """When the operator last changed the SparkApplication's spec, for its current generation.

    spark-operator v2.5.2 keeps no status.observedGeneration; on a spec change its update filter
    sets the state to INVALIDATING and the application is submitted again, which sets
    status.lastSubmissionAttemptTime (kubeflow/spark-operator@v2.5.2
    internal/controller/sparkapplication/event_filter.go, api/v1beta2/sparkapplication_types.go).
    So the job runs its current spec once it is RUNNING from a submission at or after this time."""
    if app is None:
        return None
    generation = (app.get("metadata") or {}).get("generation")
    for rec in (new, old_processing):
        if rec and rec.get("specAppliedAt") and rec.get("appliedGeneration") == generation:
            return {"appliedGeneration": generation, "specAppliedAt": rec["specAppliedAt"]}
    return None


def _time(stamp: str) -> datetime:
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except (TypeError, ValueError):
        return datetime.min.replace(tzinfo=UTC)


def status_patch(new: dict[str, Any], old: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch from ``old`` to ``new`` (nulls remove fields; lists are replaced)."""
    patch: dict[str, Any] = {}
    for k, v in new.items():
        o = old.get(k)
        if isinstance(v, dict) and isinstance(o, dict):
            sub = status_patch(v, o)
            if sub:
                patch[k] = sub
        elif v != o:
            patch[k] = v
    for k in old:
        if k not in new:
            patch[k] = None
    return patch

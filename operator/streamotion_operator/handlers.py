"""kopf wiring: one daemon per StreamPipeline drives the Controller; child events wake it up.

* a daemon per pipeline reconciles on start, whenever the pipeline or one of its watched
  children changes, and at least every ``resync_seconds`` (drift repair, readiness), from what
  the watches delivered (kopf indexes of the pipelines, of every child kind and of the installed
  CRDs; see ``cache``): a resync of an unchanged pipeline makes no API request;
* every watch on children carries the server-side label selector
  ``app.kubernetes.io/managed-by=streamotion-operator`` (kopf ``settings.watching.label_selectors``),
  so the rest of the cluster's objects never reach the operator;
* a delete handler (behind the ``streamotion.io/cleanup`` finalizer) removes the children in
  other namespaces and waits, for a bounded and reported time, until they are gone (Strimzi's own
  finalizer on KafkaTopics); the namespaced ones go with the garbage collector (ownerReferences);
* everything is registered on a fresh registry, so several operators can run in one process
  (tests) and nothing happens at import time.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kopf

from streamotion import naming
from streamotion.api.models import GROUP, KIND, PLURAL, VERSION
from streamotion_operator import builders
from streamotion_operator.builders import KINDS
from streamotion_operator.cache import MANAGED_SELECTOR, View, pack, slim
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import PIPELINE_KIND, Controller
from streamotion_operator.kube import Kube
from streamotion_operator.metrics import Metrics

# Children whose changes should wake their pipeline's daemon at once (status, deletion).
# (KafkaUser: Strimzi's User Operator marks it Ready once it has written the user's credentials,
# which the operator then copies.)
WATCHED_CHILDREN = (
    "Deployment",
    "KafkaTopic",
    "KafkaUser",
    "KafkaConnector",
    "SparkApplication",
    "RayService",
)
PIPELINE_INDEX = "streamotion_pipelines"
CRD_INDEX = "streamotion_crds"


def child_index(kind_name: str) -> str:
    """The kopf index (and handler kwarg) of one child kind."""
    return f"streamotion_children_{kind_name.lower()}"


def view(indices: dict[str, Any], namespace: str, name: str) -> View:
    """One pipeline's :class:`View` from the kopf indexes (call it on the operator's event loop)."""
    key = (namespace, name)
    pipelines = indices[PIPELINE_INDEX]
    body = next(iter(pipelines[key]), None) if key in pipelines else None
    children: dict[tuple[str, str, str], bytes] = {}
    for kind_name in KINDS:
        index = indices.get(child_index(kind_name))
        if index is not None and key in index:
            for child_key, packed in index[key]:
                children[child_key] = packed
    crds = indices[CRD_INDEX]
    installed = frozenset(x for served in crds.get("served", ()) for x in served)
    return View(body, children, installed)


class Runtime:
    """State shared by the handlers of one operator instance."""

    def __init__(
        self,
        cfg: OperatorConfig,
        kubeconfig: str | Path | None = None,
        metrics: Metrics | None = None,
    ):
        self.cfg = cfg
        self.kubeconfig = str(kubeconfig) if kubeconfig else None
        self.kube = Kube.from_kubeconfig(self.kubeconfig)
        self.metrics = metrics or Metrics()
        self.controller = Controller(self.kube, cfg, self.metrics, event=self.post_event)
        self.pool = ThreadPoolExecutor(max_workers=cfg.workers, thread_name_prefix="reconcile")
        self.wakeups: dict[tuple[str, str], asyncio.Event] = {}
        self.log = logging.getLogger("streamotion.operator")

    def wakeup(self, namespace: str | None, name: str | None) -> None:
        if not namespace or not name:
            return
        ev = self.wakeups.get((namespace, name))
        if ev is not None:
            ev.set()

    def post_event(self, body: dict[str, Any], type_: str, reason: str, message: str) -> None:
        m = body["metadata"]
        try:
            self.kube.request(
                "POST",
                f"/api/v1/namespaces/{m['namespace']}/events",
                body={
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {"generateName": f"{m['name']}.", "namespace": m["namespace"]},
                    "involvedObject": {
                        "apiVersion": body.get("apiVersion"),
                        "kind": body.get("kind"),
                        "name": m["name"],
                        "namespace": m["namespace"],
                        "uid": m.get("uid"),
                        "resourceVersion": m.get("resourceVersion"),
                    },
                    "type": type_,
                    "reason": reason,
                    "message": message[:1024],
                    "source": {"component": naming.MANAGED_BY},
                    "reportingComponent": naming.MANAGED_BY,
                    "firstTimestamp": _now(),
                    "lastTimestamp": _now(),
                    "count": 1,
                },
            )
        except Exception as exc:  # events are best effort
            self.log.warning("posting event %s on %s/%s failed: %s", reason, m["namespace"], m["name"], exc)

    def connection_info(self) -> kopf.ConnectionInfo:
        cfg = self.kube.api.configuration
        header = cfg.get_api_key_with_prefix("BearerToken") or cfg.get_api_key_with_prefix("authorization")
        parts = header.split(" ", 1) if header else []
        scheme, token = (None, None) if not parts else (None, parts[0]) if len(parts) == 1 else parts
        return kopf.ConnectionInfo(
            server=cfg.host,
            ca_path=cfg.ssl_ca_cert,
            insecure=not cfg.verify_ssl,
            scheme=scheme,
            token=token,
            certificate_path=cfg.cert_file,
            private_key_path=cfg.key_file,
        )

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.controller.close()
        self.kube.close()


def _now() -> str:
    from streamotion_operator.controller import now

    return now()


def make_settings(
    cfg: OperatorConfig, *, fast: bool = False, peering: str | None = None
) -> kopf.OperatorSettings:
    settings = kopf.OperatorSettings()
    settings.persistence.finalizer = naming.FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="streamotion.io")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix="streamotion.io", key="last-handled-configuration"
    )
    settings.posting.level = logging.WARNING
    settings.execution.max_workers = max(8, cfg.workers)
    settings.watching.server_timeout = 60 if fast else 600
    settings.watching.client_timeout = 90 if fast else 660
    settings.watching.connect_timeout = 10
    settings.watching.reconnect_backoff = 0.2 if fast else 1.0
    settings.queueing.idle_timeout = 1.0 if fast else 5.0
    settings.background.cancellation_polling = 1 if fast else 10
    # Server-side filtering: the API server sends the operator its own children only.
    # kopf 1.45.2 kopf/_cogs/configs/configuration.py (WatchingSettings.label_selectors), applied as
    # labelSelector to the initial list (kopf/_cogs/clients/fetching.py) and the watch
    # (kopf/_cogs/clients/watching.py); a handler's own ``labels=`` filter is client-side only
    # (kopf/_core/intents/registries.py _matches_labels).
    for kind in KINDS.values():
        if kind.watched:
            settings.watching.label_selectors[kind.group, kind.version, kind.plural] = MANAGED_SELECTOR
    if peering:
        settings.peering.name = peering
        settings.peering.standalone = False
    else:
        settings.peering.standalone = True
    return settings


def make_registry(rt: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return rt.connection_info()

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry, id="wake-pipeline")
    async def pipeline_changed(name: str, namespace: str, meta, **_: Any) -> None:
        if rt.controller.own_versions.get((KIND, namespace, name)) != meta.get("resourceVersion"):
            rt.wakeup(namespace, name)

    # kopf indexes: filled from the watches before any daemon starts (kopf waits for every
    # index to be populated from its initial list: kopf/_core/reactor/processing.py).
    @kopf.index(GROUP, VERSION, PLURAL, registry=registry, id=PIPELINE_INDEX)
    def index_pipeline(body, name: str, namespace: str, **_: Any) -> dict[Any, Any]:
        meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}  # unused, large
        kept = {k: body[k] for k in ("spec", "status") if k in body}
        return {
            (namespace, name): {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": meta, **kept}
        }

    @kopf.index("apiextensions.k8s.io", "v1", "customresourcedefinitions", registry=registry, id=CRD_INDEX)
    def index_crd(spec, **_: Any) -> dict[Any, Any]:
        plural = (spec.get("names") or {}).get("plural")
        served = [
            (f"{spec.get('group')}/{v['name']}", plural)
            for v in spec.get("versions") or []
            if v.get("served")
        ]
        return {"served": served}

    if rt.cfg.webhook_port:
        _register_webhook(rt, registry)

    for kind in (k for k in KINDS.values() if k.watched):

        def index_child(body, labels, kind=kind, **_: Any) -> dict[Any, Any]:
            owner = (labels.get(naming.PIPELINE_NS_LABEL), labels.get(naming.PIPELINE_LABEL))
            if not owner[0] or not owner[1]:
                return {}
            obj = slim({**body, "kind": kind.kind, "apiVersion": kind.api_version})
            rt.controller.delivered(owner[0], owner[1], builders.key(obj))
            return {owner: (builders.key(obj), pack(obj))}

        kopf.index(kind.group, kind.version, kind.plural, registry=registry, id=child_index(kind.kind))(
            index_child
        )

    @kopf.daemon(GROUP, VERSION, PLURAL, registry=registry, cancellation_timeout=10)
    async def pipeline_daemon(stopped, name: str, namespace: str, logger, **kwargs: Any) -> None:
        key = (namespace, name)
        wake = rt.wakeups.setdefault(key, asyncio.Event())
        loop = asyncio.get_running_loop()
        failures = 0
        try:
            while not stopped:
                wake.clear()
                delay = rt.cfg.resync_seconds
                try:
                    snapshot = view(kwargs, namespace, name)
                    out = await loop.run_in_executor(
                        rt.pool, rt.controller.reconcile, namespace, name, snapshot
                    )
                    failures = 0
                    if out.retry_after is not None:
                        delay = max(rt.cfg.min_interval_seconds, min(delay, out.retry_after))
                    if out.created or out.updated or out.deleted:
                        logger.info(
                            f"applied: created {out.created or '-'}; updated {out.updated or '-'}; "
                            f"deleted {out.deleted or '-'}; phase {(out.status or {}).get('phase')}"
                        )
                except Exception as exc:
                    failures += 1
                    delay = min(rt.cfg.resync_seconds, 0.5 * 2**failures)
                    logger.error(f"reconcile failed (attempt {failures}, retry in {delay:.1f}s): {exc}")
                await asyncio.sleep(rt.cfg.min_interval_seconds)  # coalesce bursts of child events
                await _wait_any(wake, stopped, max(0.0, delay - rt.cfg.min_interval_seconds))
        finally:
            if rt.wakeups.get(key) is wake:
                rt.wakeups.pop(key, None)

    @kopf.on.delete(GROUP, VERSION, PLURAL, registry=registry)
    async def pipeline_deleted(name: str, namespace: str, body, meta, logger, **kwargs: Any) -> None:
        await delete_children(rt, dict(body), name, namespace, meta.get("uid"), logger, indices=kwargs)

    managed = {"app.kubernetes.io/managed-by": naming.MANAGED_BY}
    for kind_name in WATCHED_CHILDREN:
        kind = KINDS[kind_name]

        async def child_changed(labels: dict[str, str], meta, body, type: str, **_: Any) -> None:
            key = (body.get("kind"), meta.get("namespace") or "", meta.get("name"))
            if type != "DELETED" and rt.controller.own_versions.get(key) == meta.get("resourceVersion"):
                return  # the echo of our own write
            rt.wakeup(labels.get(naming.PIPELINE_NS_LABEL), labels.get(naming.PIPELINE_LABEL))

        kopf.on.event(
            kind.group or "",
            kind.version,
            kind.plural,
            labels=managed,
            registry=registry,
            id=f"wake-{kind_name}",
        )(child_changed)

    return registry


def _register_webhook(rt: Runtime, registry: kopf.OperatorRegistry) -> None:
    """Serve the conversion webhook while the operator runs, and keep the CRD pointed at it."""
    from streamotion_operator import webhook

    server = webhook.WebhookServer("0.0.0.0", rt.cfg.webhook_port, rt.cfg.webhook_cert_dir)
    wanted: dict[str, Any] | None = None
    if rt.cfg.webhook_service or rt.cfg.webhook_url:
        ca = (Path(rt.cfg.webhook_cert_dir) / "ca.crt").read_bytes()
        wanted = webhook.client_config(
            rt.cfg.webhook_service, rt.cfg.webhook_service_port, ca, url=rt.cfg.webhook_url
        )

    @kopf.on.startup(registry=registry)
    async def start_webhook(**_: Any) -> None:
        await server.start()
        if wanted is not None:  # before the watches start: they read pipelines stored as v1alpha1
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(rt.pool, webhook.ensure_crd_conversion, rt.kube, wanted)

    @kopf.on.cleanup(registry=registry)
    async def stop_webhook(**_: Any) -> None:
        await server.stop()

    if wanted is not None:
        # On every event of the CRD (the CRD index's watch: the first listing, and after
        # `kubectl apply -f crds/` reset it): re-point its conversion at this operator.
        @kopf.on.event(
            "apiextensions.k8s.io",
            "v1",
            "customresourcedefinitions",
            registry=registry,
            id="crd-conversion",
            when=lambda name, **_: name == webhook.CRD_NAME,
        )
        async def crd_conversion(type: str, **_: Any) -> None:
            if type == "DELETED":
                return
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(rt.pool, webhook.ensure_crd_conversion, rt.kube, wanted)


async def delete_children(
    rt: Runtime,
    body: dict[str, Any],
    name: str,
    namespace: str,
    uid,
    logger,
    indices: dict[str, Any] | None = None,
) -> None:
    """Delete the pipeline's topics and dashboards and wait until they are gone, for at most
    ``cleanup_timeout_seconds`` from the pipeline's deletionTimestamp (so an operator restart does
    not start the clock again). API errors are retried until then. A KafkaTopic is gone once
    Strimzi's topic operator has deleted the topic in Kafka and removed its finalizer; while
    anything is left the pipeline's Ready condition says what (reason WaitingForCleanup, with an
    event); at the deadline a Warning event CleanupTimedOut names what is left and the finalizer is
    released (the leftovers carry the old pipeline's uid: a later pipeline of the same name never
    adopts them).

    With the kopf ``indices`` (the handler's kwargs), each pass works from the children the watches
    delivered: it lists and reads nothing (the watches report each deletion, and a KafkaTopic event
    wakes the wait); its requests are the deletions themselves and a status write and an event when
    what is left changes."""
    loop = asyncio.get_running_loop()
    deadline = _deletion_time(body) + rt.cfg.cleanup_timeout_seconds
    key = (namespace, name)
    reported = None
    deleted: list[str] = []
    while True:
        wake = rt.wakeups.setdefault(key, asyncio.Event())
        wake.clear()
        try:
            held = view(indices, namespace, name).children if indices and CRD_INDEX in indices else None
            done = await loop.run_in_executor(rt.pool, rt.controller.cleanup, namespace, name, uid, held)
            deleted += done.deleted
            left, why = done.remaining, "not deleted yet"
        except Exception as exc:
            left, why = ["topics and dashboards (unknown)"], f"cleanup failed: {exc}"[:600]
            # not through kopf's logger, which would post an event per attempt: one per change below
            rt.log.warning("cleanup of %s/%s failed, retrying until the deadline: %s", namespace, name, exc)
        if not left:
            if deleted:
                logger.info(f"deleted {', '.join(deleted)}")
            break
        remaining_s = deadline - time.time()
        what = "; ".join(left)
        if remaining_s <= 0:
            msg = (
                f"gave up after {rt.cfg.cleanup_timeout_seconds:.0f}s waiting for {what} ({why}); "
                "the pipeline's finalizer is released. A KafkaTopic that stays is waiting for Strimzi's "
                "topic operator (is it running, can it reach Kafka?); see Troubleshooting, CleanupTimedOut"
            )
            rt.log.error("%s/%s: %s", namespace, name, msg)
            rt.post_event(body, "Warning", "CleanupTimedOut", msg)
            break
        if (what, why) != reported:
            msg = f"waiting for {what} to be gone ({why}); giving up in {remaining_s:.0f}s"
            rt.post_event(body, "Normal", "WaitingForCleanup", msg)
            await loop.run_in_executor(rt.pool, _report_waiting, rt, body, msg)
            reported = (what, why)
        await _wait_any(wake, asyncio.Event(), min(rt.cfg.cleanup_poll_seconds, max(0.1, remaining_s)))
    if rt.wakeups.get(key) is wake:
        rt.wakeups.pop(key, None)


def _deletion_time(body: dict[str, Any]) -> float:
    stamp = (body.get("metadata") or {}).get("deletionTimestamp")
    try:
        return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp()
    except (TypeError, ValueError):
        return time.time()


def _report_waiting(rt: Runtime, body: dict[str, Any], message: str) -> None:
    """Ready False, reason WaitingForCleanup, on the pipeline being deleted (best effort)."""
    m = body["metadata"]
    conds = [c for c in (body.get("status") or {}).get("conditions") or [] if c.get("type") != "Ready"]
    ready = {
        "type": "Ready",
        "status": "False",
        "observedGeneration": m.get("generation"),
        "lastTransitionTime": _now(),
        "reason": "WaitingForCleanup",
        "message": message,
    }
    try:
        rt.kube.patch_status(PIPELINE_KIND, m["namespace"], m["name"], {"conditions": [ready, *conds]})
    except Exception as exc:
        rt.log.warning("reporting cleanup on %s/%s failed: %s", m["namespace"], m["name"], exc)


async def _wait_any(event: asyncio.Event, stopped, timeout: float) -> None:
    tasks = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            t.cancel()


class QuietEventHandlers(logging.Filter):
    """Drops kopf's "Handler ... succeeded" lines of the wake-up handlers (one per watch event)."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        return not msg.startswith("Handler 'wake-")


def quiet_logs() -> None:
    logging.getLogger("kopf.objects").addFilter(QuietEventHandlers())


class OperatorThread:
    """The operator in a background thread with its own event loop (tests, benchmarks)."""

    def __init__(
        self,
        kubeconfig: str | Path,
        cfg: OperatorConfig | None = None,
        *,
        fast: bool = True,
        liveness_endpoint: str | None = None,
    ):
        self.cfg = cfg or OperatorConfig()
        self.runtime = Runtime(self.cfg, kubeconfig)
        self.settings = make_settings(self.cfg, fast=fast)
        self.registry = make_registry(self.runtime)
        self.liveness_endpoint = liveness_endpoint
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None

    @property
    def controller(self) -> Controller:
        return self.runtime.controller

    def start(self, timeout: float = 60) -> OperatorThread:
        self._thread = threading.Thread(target=self._run, name="streamotion-operator", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError(f"operator not ready after {timeout}s: {self.error}")
        return self

    def _run(self) -> None:
        try:
            asyncio.run(
                kopf.operator(
                    registry=self.registry,
                    settings=self.settings,
                    clusterwide=True,
                    standalone=True,
                    stop_flag=self._stop,
                    ready_flag=self._ready,
                    liveness_endpoint=self.liveness_endpoint,
                )
            )
        except BaseException as exc:
            self.error = exc
            self._ready.set()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout)
        self.runtime.close()

    def __enter__(self) -> OperatorThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

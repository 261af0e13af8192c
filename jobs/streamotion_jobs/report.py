"""The job's own report of its sinks, for the operator's SinksReady condition.

The driver writes one JSON list under ``sinks.json`` of the ConfigMap ``<pipeline>-job-report``
(created empty by the operator): per sink its index in ``spec.sinks``, type, whether its last
open or commit worked, since when, and the error. It is written only when that changes (a sink
starts or stops failing), so a healthy job writes it once. Least privilege: the driver's
ServiceAccount already may patch ConfigMaps in its namespace (Spark's executors need it: the
chart's ``streamotion-spark-driver`` ClusterRole); no new right is granted.

Outside a pod (local runs, tests without a cluster) there is nowhere to report: a no-op.
"""

from __future__ import annotations

import json
import logging
import os
import re
import ssl
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamotion import naming

log = logging.getLogger("streamotion.job")
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
# Spark's Kafka source when a partition's end is below the checkpoint's offset (the topic was
# deleted and created again, or truncated), failOnDataLoss on: error class
# KAFKA_DATA_LOSS.PARTITION_OFFSET_CHANGED, "Partition <topicPartition> offset was changed from
# <prevOffset> to <newOffset>." (spark-sql-kafka-0-10_2.13 4.0.0 error/kafka-error-conditions.json,
# thrown by KafkaExceptions.partitionOffsetChanged from KafkaOffsetReaderAdmin); the log line of
# the same check reads "Partition <tp>'s offset was changed from ...".
OFFSET_CHANGED = re.compile(r"Partition (\S+?)(?:'s)? offset was changed from (\d+) to (\d+)")


class ApiWriter:
    """Merge-patches one ConfigMap's data through the Kubernetes API (a bearer token, the CA)."""

    def __init__(self, server: str, namespace: str, name: str, token: Callable[[], str], ca_file: str | None):
        self.url = f"{server.rstrip('/')}/api/v1/namespaces/{namespace}/configmaps/{name}"
        self.token = token
        self.context = ssl.create_default_context(cafile=ca_file) if ca_file else None

    @classmethod
    def in_cluster(cls, name: str) -> ApiWriter | None:
        host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
        if not host or not port or not (SA_DIR / "token").exists():
            return None
        namespace = (SA_DIR / "namespace").read_text().strip()
        # the projected token is rotated: read it for every write
        return cls(f"https://{host}:{port}", namespace, name, lambda: (SA_DIR / "token").read_text().strip(),
                   str(SA_DIR / "ca.crt"))  # fmt: skip

    def __call__(self, data: dict[str, str]) -> None:
        req = urllib.request.Request(
            self.url,
            data=json.dumps({"data": data}).encode(),
            method="PATCH",
            headers={
                "Content-Type": "application/merge-patch+json",
                "Authorization": f"Bearer {self.token()}",
            },
        )
        with urllib.request.urlopen(req, timeout=10, context=self.context) as resp:
            resp.read()


class SinkReport:
    """What the job knows about its sinks, written where the operator reads it."""

    def __init__(self, sink_types: list[str], write: Callable[[dict[str, str]], None] | None):
        self.write = write
        self.entries: list[dict[str, Any]] = [
            {"index": i, "type": t, "ok": None, "since": None, "message": ""}
            for i, t in enumerate(sink_types)
        ]
        self.query: dict[str, Any] = {}
        self._written: tuple[str, str] | None = None

    @classmethod
    def for_pipeline(cls, p, sink_types: list[str] | None = None) -> SinkReport:
        """The report of pipeline ``p`` (its ``spec.sinks`` order), written in-cluster, else a no-op."""
        types = sink_types or [s.type for s in p.spec.sinks]
        return cls(types, ApiWriter.in_cluster(naming.job_report_name(p)))

    def ok(self, index: int) -> None:
        self._set(index, True, "")

    def failing(self, index: int, error: BaseException | str) -> None:
        text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self._set(index, False, text.strip().splitlines()[0][:500] if text.strip() else "error")

    def query_failed(self, error: BaseException | str) -> bool:
        """Report a failed streaming query; True when Spark says the topic is behind the checkpoint
        (the topic was created again: the operator reports TopicRecreated from this)."""
        text = str(error)
        m = OFFSET_CHANGED.search(text)
        if m:
            since = self.query.get("since") if self.query.get("topicRecreated") else None
            self.query = {
                "topicRecreated": True,
                "since": since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                "message": m.group(0)[:500],
            }
            self.flush()
        return bool(m)

    def topic_recreated(self, message: str) -> None:
        """Report that the job itself found the topic behind what it had read (the sinks' ledger
        offsets past the topic's end): the operator reports TopicRecreated from this too."""
        since = self.query.get("since") if self.query.get("topicRecreated") else None
        self.query = {
            "topicRecreated": True,
            "since": since or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "message": message[:500],
        }
        self.flush()

    def query_progressing(self) -> None:
        """The query processes batches again: clears a reported topic problem."""
        if self.query:
            self.query = {}
            self.flush()

    def _set(self, index: int, ok: bool, message: str) -> None:
        e = self.entries[index]
        if e["ok"] != ok:
            e["since"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        e["ok"], e["message"] = ok, message
        self.flush()

    def flush(self) -> None:
        """Write the report if it changed; a failed write is logged and tried again on the next change
        (the job never stops for its report)."""
        if self.write is None:
            return
        doc = json.dumps([e for e in self.entries if e["ok"] is not None], sort_keys=True)
        query = json.dumps(self.query, sort_keys=True)
        if (doc, query) == self._written:
            return
        try:
            self.write({naming.JOB_REPORT_KEY: doc, naming.JOB_QUERY_KEY: query})
            self._written = (doc, query)
        except Exception as exc:
            log.warning("writing the sinks report failed: %s", exc)

"""Deterministic names, labels and entry points of everything derived from a StreamPipeline.

The operator, ``streamotion render``, the local runner and the streaming job all use these, so a
pipeline's topics and children have the same names wherever it runs.
"""

from __future__ import annotations

import hashlib

from streamotion.api.models import StreamPipeline

PART_OF = "streamotion"
MANAGED_BY = "streamotion-operator"
PIPELINE_LABEL = "streamotion.io/pipeline"
PIPELINE_NS_LABEL = "streamotion.io/pipeline-namespace"
FIELD_MANAGER = "streamotion-operator"
FINALIZER = "streamotion.io/cleanup"

# Entry points the children run (same code on one machine).
PRODUCER_COMMAND = ["streamotion", "produce"]  # --source NAME --pipeline FILE
JOB_MAIN = "jobs/streamotion_jobs/main.py"  # spark-submit main file, inside the job image
SERVE_IMPORT_PATH = "streamotion_serving.app:build_app"  # Ray Serve application builder
PIPELINE_FILE = "/etc/streamotion/pipeline.yaml"  # where children find the pipeline spec
METRICS_PORT = 9108


def _short_hash(*parts: str, n: int = 6) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:n]


def topic_names(p: StreamPipeline) -> dict[str, str]:
    """Kafka topic names: unique per pipeline namespace and name."""
    base = f"streamotion.{p.namespace}.{p.name}"
    return {"raw": f"{base}.raw", "deadLetter": f"{base}.dlq"}


def topic_resource_name(p: StreamPipeline, role: str) -> str:
    """KafkaTopic metadata.name (DNS-1123, unique across pipeline namespaces)."""
    suffix = {"raw": "raw", "deadLetter": "dlq"}[role]
    return f"{p.name}-{suffix}-{_short_hash(p.namespace, p.name)}"


def producer_name(p: StreamPipeline, source: str) -> str:
    return f"{p.name}-src-{source}"


def spark_app_name(p: StreamPipeline) -> str:
    return f"{p.name}-job"


def ray_service_name(p: StreamPipeline) -> str:
    return f"{p.name}-model"


def job_report_name(p: StreamPipeline) -> str:
    """ConfigMap the job's driver writes its sinks' state into (key JOB_REPORT_KEY); the operator
    creates it and reads it for the SinksReady condition."""
    return f"{p.name}-job-report"


JOB_REPORT_KEY = "sinks.json"
JOB_QUERY_KEY = "query.json"  # the streaming query: {"topicRecreated": true, "since", "message"} or {}


def checkpoint_pvc_name(p: StreamPipeline) -> str:
    return f"{p.name}-checkpoint"


def config_map_name(p: StreamPipeline) -> str:
    return f"{p.name}-pipeline"


def dashboard_config_map_name(p: StreamPipeline) -> str:
    """ConfigMap name in the dashboards namespace, shared by every pipeline namespace: injective,
    as "." appears in neither a namespace (DNS-1123 label) nor a pipeline name (DNS-1035 label)
    (``streamotion-<ns>-<name>-dashboards`` was not: team-a/x and team/a-x shared one)."""
    return f"streamotion.{p.namespace}.{p.name}.dashboards"


def dashboard_file_prefix(p: StreamPipeline) -> str:
    """Prefix of the pipeline's dashboard files (ConfigMap keys): Grafana's sidecar writes every
    pipeline's files into one folder, so the prefix is injective too (see above)."""
    return f"{p.namespace}.{p.name}."


def consumer_group(p: StreamPipeline) -> str:
    return f"streamotion.{p.namespace}.{p.name}.job"


def labels(p: StreamPipeline, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": f"streamotion-{component}",
        "app.kubernetes.io/instance": p.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": PART_OF,
        PIPELINE_LABEL: p.name,
    }

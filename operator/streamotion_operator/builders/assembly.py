"""The assembly: every child of a pipeline, from the per-system builders, in apply order; and the
keys the controller tracks children by."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streamotion.api.models import StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import pipeline_config_map
from .connect import kafka_connector
from .grafana import dashboards
from .kafka import kafka_topics
from .monitoring import pod_monitors, prometheus_rule
from .producers import producer
from .ray import ray_service
from .security import credential_secrets, kafka_users, network_policies
from .spark import checkpoint_claim, job_report, spark_application, spark_service_account


def build(
    p: StreamPipeline,
    cfg: OperatorConfig,
    kafka_secrets: Mapping[tuple[str, str], dict[str, Any] | None] | None = None,
) -> list[dict[str, Any]]:
    """Every child of ``p``, in apply order (configuration first). ``kafka_secrets``: the Kafka
    credentials to copy, by (namespace, name) (None: the copies without their data, as rendered)."""
    out: list[dict[str, Any]] = [pipeline_config_map(p)]
    out += kafka_topics(p, cfg)
    out += kafka_users(p, cfg)
    out += credential_secrets(p, cfg, kafka_secrets)
    out += network_policies(p, cfg)
    for s in p.spec.sources:
        if s.cdc is not None:
            out += kafka_connector(p, s, cfg)
        out += producer(p, s, cfg)
    out += spark_service_account(p, cfg)
    out += checkpoint_claim(p)
    out += job_report(p)
    out.append(spark_application(p, cfg))
    out.append(ray_service(p, cfg))
    if p.spec.dashboards.enabled:
        out += pod_monitors(p)
        out.append(prometheus_rule(p))
        out.append(dashboards(p, cfg))
    return out


def component_of(obj: dict[str, Any]) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def key(obj: dict[str, Any]) -> tuple[str, str, str]:
    m = obj["metadata"]
    return (obj["kind"], m.get("namespace") or "", m["name"])

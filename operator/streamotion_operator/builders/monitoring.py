"""Monitoring, as the prometheus-operator models it: PodMonitors for producers, job and model, and
the PrometheusRule with the pipeline's alerts."""

from __future__ import annotations

from typing import Any

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion.model_api import ray_metric_relabelings

from .common import _meta, selector
from .producers import SOURCE_LABEL
from .spark import SPARK_UI_PORT_NAME


def _pipeline_relabel(extra: dict[str, str] | None = None) -> list[dict[str, Any]]:
    pairs = {"pipeline": naming.PIPELINE_LABEL, **(extra or {})}
    out = []
    for target, label in pairs.items():
        meta = "__meta_kubernetes_pod_label_" + "".join(c if c.isalnum() else "_" for c in label)
        out.append({"action": "replace", "sourceLabels": [meta], "targetLabel": target})
    return out


def pod_monitors(p: StreamPipeline) -> list[dict[str, Any]]:
    def monitor(component: str, endpoints: list[dict[str, Any]], match: dict[str, str] | None = None):
        return {
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": _meta(p, f"{p.name}-{component}", "monitoring"),
            "spec": {
                "selector": {"matchLabels": match or selector(p, component)},
                "podMetricsEndpoints": endpoints,
            },
        }

    return [
        monitor(
            "producer",
            [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "honorLabels": True,
                    "relabelings": _pipeline_relabel({"source": SOURCE_LABEL}),
                }
            ],
        ),
        monitor(
            "job",
            [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "honorLabels": True,
                    "relabelings": _pipeline_relabel(),
                },
                # Spark's own UI port on the driver (see SPARK_UI_PORT_NAME)
                {
                    "port": SPARK_UI_PORT_NAME,
                    "path": "/metrics/prometheus/",
                    "relabelings": _pipeline_relabel(),
                },
            ],
            match={**selector(p, "job"), "spark-role": "driver"},
        ),
        monitor(
            "model",
            [
                # Ray's metrics agent on every Ray pod: each replica's streamotion_model_* (exported
                # as ray_streamotion_model_*, renamed back here) and Ray Serve's own ray_serve_*
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "relabelings": _pipeline_relabel(),
                    "metricRelabelings": ray_metric_relabelings("operator"),
                },
            ],
        ),
    ]


SOURCE_SILENT_MINUTES = 10
DEAD_LETTER_SHARE = 0.05
MODEL_ERROR_SHARE = 0.05


def prometheus_rule(p: StreamPipeline) -> dict[str, Any]:
    sel = f'namespace="{p.namespace}",pipeline="{p.name}"'
    ann = {"pipeline": f"{p.namespace}/{p.name}"}

    def alert(name: str, expr: str, for_: str, severity: str, summary: str) -> dict[str, Any]:
        return {
            "alert": name,
            "expr": expr,
            "for": for_,
            "labels": {"severity": severity, "pipeline": p.name, "pipeline_namespace": p.namespace},
            "annotations": {**ann, "summary": summary},
        }

    rules = [
        alert(
            "StreamotionConsumerLagGrowing",
            f"sum(streamotion_job_consumer_lag{{{sel}}}) > 1000 and "
            f"deriv(sum(streamotion_job_consumer_lag{{{sel}}})[10m:1m]) > 0",
            "15m",
            "warning",
            "The streaming job falls behind: its Kafka consumer lag keeps growing.",
        ),
        alert(
            "StreamotionDeadLettersHigh",
            f"sum(rate(streamotion_job_dead_letters_total{{{sel}}}[10m])) / "
            f"clamp_min(sum(rate(streamotion_job_events_total{{{sel}}}[10m])), 1e-9) > {DEAD_LETTER_SHARE}",
            "10m",
            "warning",
            f"More than {DEAD_LETTER_SHARE:.0%} of events go to the dead-letter topic.",
        ),
        alert(
            "StreamotionModelErrors",
            f"sum(rate(streamotion_model_errors_total{{{sel}}}[5m])) / "
            f"clamp_min(sum(rate(streamotion_model_requests_total{{{sel}}}[5m])), 1e-9) > {MODEL_ERROR_SHARE}",
            "10m",
            "critical",
            f"More than {MODEL_ERROR_SHARE:.0%} of model requests fail.",
        ),
        alert(
            "StreamotionPipelineNotReady",
            f'streamotion_operator_pipeline_ready{{pipeline_namespace="{p.namespace}",pipeline="{p.name}"}} == 0',
            "15m",
            "critical",
            "The StreamPipeline has not been Ready for 15 minutes (kubectl describe sp).",
        ),
    ]
    if not p.spec.suspend:
        for s in p.spec.sources:
            if s.replicas == 0:
                continue
            rules.append(
                alert(
                    "StreamotionSourceSilent",
                    f'sum(rate(streamotion_producer_payloads_received_total{{{sel},source="{s.name}"}}'
                    f"[{SOURCE_SILENT_MINUTES}m])) == 0",
                    f"{SOURCE_SILENT_MINUTES}m",
                    "warning",
                    f"Source {s.name} published no event for {SOURCE_SILENT_MINUTES} minutes.",
                )
            )
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": _meta(p, f"{p.name}-alerts", "monitoring"),
        "spec": {"groups": [{"name": f"streamotion.{p.namespace}.{p.name}", "rules": rules}]},
    }

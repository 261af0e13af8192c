"""Prometheus metrics of the operator (its own registry, served by ``streamotion operator``)."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from streamotion.api.models import Phase

PHASES: tuple[str, ...] = Phase.__args__  # type: ignore[attr-defined]


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.reconciles = Counter(
            "streamotion_operator_reconciles",
            "Reconciles of StreamPipelines, by result.",
            ["result"],
            registry=r,
        )
        self.errors = Counter(
            "streamotion_operator_reconcile_errors", "Reconciles that raised an error.", ["kind"], registry=r
        )
        self.duration = Histogram(
            "streamotion_operator_reconcile_duration_seconds",
            "Time one reconcile of one pipeline takes.",
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=r,
        )
        self.applied = Counter(
            "streamotion_operator_children_applied",
            "Children written with server-side apply, by kind and action.",
            ["kind", "action"],
            registry=r,
        )
        self.phase = Gauge(
            "streamotion_operator_pipelines", "StreamPipelines by phase.", ["phase"], registry=r
        )
        self.ready = Gauge(
            "streamotion_operator_pipeline_ready",
            "1 when the pipeline's Ready condition is True.",
            ["pipeline_namespace", "pipeline"],
            registry=r,
        )
        self._phases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()
        for ph in PHASES:
            self.phase.labels(ph).set(0)

    def observe(self, namespace: str, name: str, phase: str | None, ready: bool) -> None:
        with self._lock:
            if phase is None:
                self._phases.pop((namespace, name), None)
                try:
                    self.ready.remove(namespace, name)
                except KeyError:
                    pass
            else:
                self._phases[(namespace, name)] = phase
                self.ready.labels(namespace, name).set(1 if ready else 0)
            counts = dict.fromkeys(PHASES, 0)
            for ph in self._phases.values():
                counts[ph] = counts.get(ph, 0) + 1
            for ph, n in counts.items():
                self.phase.labels(ph).set(n)

"""What ``streamotion bench chaos`` watches besides the sink: the memory of every process of the
topology (the soak mode's leak check), end-to-end p99 drift, and the pipeline's alert rules evaluated
by a real Prometheus while faults run.

Memory: every ``interval`` seconds the RSS of each process of the run (found by the run's
environment variable, with psutil) is summed per role (:func:`role_of`):
each broker, the Spark driver (the job's Python process and its JVM), the executors, the Python
workers, each model replica, the rest of Ray, PostgreSQL (postmaster and backends), the HTTP ingest
service; Prometheus and the load generator (this process: it records every acknowledged id by
design) are reported but not judged.

Verdict (:func:`score_soak`, pure): the first ``warmup_fraction`` of the samples (at least one) is
warm-up and ignored; a role's ``rss_mb_start`` is the median of the first three samples after it,
``rss_mb_end`` the median of the last three; it leaks when ``growth_pct`` > 20. Latency drifts when
the p99 of event time to commit of the events created in the last third of the post-warm-up load is
above 1.2 x the first third's *and* more than one trigger interval above it (both: a relative test
alone flags a 2 s -> 2.5 s jitter, an absolute one alone misses a slow climb of a long p99).

Alerts: :class:`AlertWatcher` polls Prometheus' ``/api/v1/alerts`` every second; :func:`alerts_in`
says which alerts were pending or firing during a fault's window.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

GROWTH_LIMIT_PCT = 20.0
DRIFT_RATIO = 1.2
WARMUP_FRACTION = 0.1
EDGE_SAMPLES = 3  # medians of this many samples at the start and the end (one noisy sample is no leak)
NOT_JUDGED = ("load_generator", "prometheus", "other")


# ------------------------------------------------------------------------------------------- memory
def role_of(cmdline: str, broker_dirs: dict[str, str]) -> str:
    """The topology role of a process of the run, from its command line."""
    for role, needle in broker_dirs.items():
        if needle in cmdline:
            return role
    rules = (
        ("spark_executors", ("CoarseGrainedExecutorBackend",)),
        ("spark_python_workers", ("pyspark.daemon", "pyspark.worker", "pyspark/daemon", "pyspark/worker")),
        ("spark_driver", ("streamotion_jobs.main", "org.apache.spark.deploy.SparkSubmit")),
        ("model_replica", ("ServeReplica",)),
        ("model_ray", ("ray::", "raylet", "gcs_server", "ray/", "streamotion_serving", "model serve")),
        ("postgresql", ("postgres",)),
        ("ingest", ("produce --source",)),
        ("prometheus", ("prometheus",)),
    )
    for role, needles in rules:
        if any(n in cmdline for n in needles):
            return role
    return "other"


def _processes(env_key: str, env_value: str) -> Iterator[tuple[int, str, int]]:
    """(pid, command line, RSS bytes) of every process whose environment has ``env_key=env_value``
    (psutil, a dependency of the project: Linux and macOS alike)."""
    import psutil

    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(env_key) != env_value or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            yield proc.pid, " ".join(proc.cmdline()), proc.memory_info().rss
        except (psutil.Error, OSError):
            continue


def self_rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def memory_by_role(env_key: str, env_value: str, broker_dirs: dict[str, str]) -> dict[str, float]:
    """MB of RSS per role now; model replicas one by one (``model_replica_1``... by pid order)."""
    out: dict[str, float] = {"load_generator": self_rss() / 2**20}
    replicas: list[tuple[int, int]] = []
    for pid, cmdline, rss in _processes(env_key, env_value):
        role = role_of(cmdline, broker_dirs)
        if role == "model_replica":
            replicas.append((pid, rss))
            continue
        out[role] = out.get(role, 0.0) + rss / 2**20
    for i, (_, rss) in enumerate(sorted(replicas), start=1):
        out[f"model_replica_{i}"] = rss / 2**20
    return out


class MemorySampler(threading.Thread):
    """``sample()`` every ``interval`` seconds into ``samples`` as (time, {role: MB}) until stopped."""

    def __init__(
        self, sample: Callable[[], dict[str, float]], interval: float, stop: threading.Event
    ) -> None:
        super().__init__(name="chaos-memory", daemon=True)
        self.sample, self.interval, self.stop_event = sample, interval, stop
        self.samples: list[tuple[float, dict[str, float]]] = []

    def run(self) -> None:
        while True:
            try:
                self.samples.append((time.time(), self.sample()))
            except Exception:  # a process gone between listing and reading: the next sample counts
                pass
            if self.stop_event.wait(self.interval):
                return


# -------------------------------------------------------------------------------------------- verdict
def post_warmup_span(start: float, end: float, warmup_fraction: float = WARMUP_FRACTION) -> list[float]:
    """The four boundaries of the thirds of [start, end] after its first ``warmup_fraction``."""
    begin = start + (end - start) * warmup_fraction
    third = (end - begin) / 3
    return [begin, begin + third, end - third, end]


def score_soak(
    samples: list[tuple[float, dict[str, float]]],
    p99_first_s: float | None,
    p99_last_s: float | None,
    trigger_s: float,
    warmup_fraction: float = WARMUP_FRACTION,
    growth_limit_pct: float = GROWTH_LIMIT_PCT,
    drift_ratio: float = DRIFT_RATIO,
) -> dict[str, Any]:
    """The soak verdict of the module docstring. Pure: tested alone on synthetic samples."""
    samples = sorted(samples, key=lambda s: s[0])
    warmup = max(1, int(len(samples) * warmup_fraction + 0.999999)) if samples else 0
    judged = samples[warmup:]
    failed: list[str] = []
    roles: dict[str, dict[str, Any]] = {}
    names = sorted({r for _, by_role in judged for r in by_role})
    for role in names:
        series = [by_role[role] for _, by_role in judged if role in by_role]
        if len(series) < 2:
            continue
        start = statistics.median(series[:EDGE_SAMPLES])
        end = statistics.median(series[-EDGE_SAMPLES:])
        growth = (end - start) / start * 100 if start > 0 else 0.0
        judged_role = role not in NOT_JUDGED
        roles[role] = {
            "rss_mb_start": round(start, 1),
            "rss_mb_end": round(end, 1),
            "growth_pct": round(growth, 1),
            "judged": judged_role,
        }
        if judged_role and growth > growth_limit_pct:
            failed.append(
                f"memory: {role} grew {growth:.1f}% after warm-up ({start:.0f} -> {end:.0f} MB; limit {growth_limit_pct:g}%)"
            )
    if len(judged) < 2:
        failed.append(f"memory: {len(samples)} samples, too few to judge (warm-up {warmup})")
    drift = None
    if p99_first_s is None or p99_last_s is None:
        failed.append("latency: no events committed in the first or the last third of the soak")
    else:
        drift = p99_last_s > drift_ratio * p99_first_s and p99_last_s - p99_first_s > trigger_s
        if drift:
            failed.append(
                f"latency: p99 drifted from {p99_first_s:.2f} s (first third) to {p99_last_s:.2f} s (last third): "
                f"above {drift_ratio:g} x and more than one trigger ({trigger_s:g} s) higher"
            )
    return {
        "roles": roles,
        "p99_first_s": None if p99_first_s is None else round(p99_first_s, 3),
        "p99_last_s": None if p99_last_s is None else round(p99_last_s, 3),
        "p99_drift": drift,
        "samples": len(samples),
        "warmup_samples": warmup,
        "growth_limit_pct": growth_limit_pct,
        "drift_ratio": drift_ratio,
        "failed": failed,
    }


# --------------------------------------------------------------------------------------------- alerts
class AlertWatcher(threading.Thread):
    """Prometheus' active alerts every ``interval`` seconds: (time, {alertname: state}) in ``observations``."""

    def __init__(self, prometheus: Any, stop: threading.Event, interval: float = 1.0) -> None:
        super().__init__(name="chaos-alerts", daemon=True)
        self.prometheus, self.stop_event, self.interval = prometheus, stop, interval
        self.observations: list[tuple[float, dict[str, str]]] = []
        self.errors = 0

    def run(self) -> None:
        while not self.stop_event.is_set():
            try:
                alerts = self.prometheus.api("alerts")["alerts"]
                now: dict[str, str] = {}
                for a in alerts:
                    name = a["labels"].get("alertname", "?")
                    if now.get(name) != "firing":
                        now[name] = a["state"]
                self.observations.append((time.time(), now))
            except Exception:  # Prometheus busy on a loaded machine: the next poll counts
                self.errors += 1
            self.stop_event.wait(self.interval)


def alerts_in(observations: list[tuple[float, dict[str, str]]], start: float, end: float) -> dict[str, str]:
    """Every alert pending or firing at some poll in [start, end): ``firing`` if it fired at all."""
    out: dict[str, str] = {}
    for at, alerts in observations:
        if start <= at < end:
            for name, state in alerts.items():
                if out.get(name) != "firing":
                    out[name] = state
    return dict(sorted(out.items()))


# What the reliability page says moves, per fault window of ``w`` seconds ending now ({sel}: the pipeline).
# Counter increases look back ``wl`` = ``w`` + COUNTER_LOOKBACK_S: increase() needs a sample from before
# the step inside its range, and a fault's first error often comes before the window's first scrape
# (a PostgreSQL shutdown in a commit fails it at once).
COUNTER_LOOKBACK_S = 3  # three scrapes (1 s) before the window
METRIC_QUERIES = {
    "job_consumer_lag_max": "max_over_time(sum(streamotion_job_consumer_lag{{{sel}}})[{w}s:1s])",
    "job_sink_errors": "sum(increase(streamotion_job_sink_errors_total{{{sel}}}[{wl}s]))",
    "model_requests": "sum(increase(streamotion_model_requests_total{{{sel}}}[{wl}s]))",
    "model_errors": "sum(increase(streamotion_model_errors_total{{{sel}}}[{wl}s]))",
    # Ray Serve's own (ray 2.60.0 python/ray/serve/_private/replica.py serve_deployment_replica_starts,
    # request_ingress_metrics.py serve_num_http_error_requests), exported with Ray's ray_ prefix
    # (one series per replica: a replaced replica shows as one more series in the window)
    "serve_replicas_seen": 'count(count_over_time({{__name__=~"ray_serve_deployment_replica_starts(_total)?",{sel}}}[{w}s]))',
    "serve_http_errors": 'sum(increase({{__name__=~"ray_serve_num_http_error_requests(_total)?",{sel}}}[{wl}s]))',
    # 0: some scrape of the model service's metrics agent failed in the window (the service stalled)
    "model_scrape_up_min": 'min(min_over_time(up{{job="model",{sel}}}[{w}s]))',
    "producer_delivery_p99_s": "histogram_quantile(0.99, sum by (le) "
    "(rate(streamotion_producer_delivery_latency_seconds_bucket{{{sel}}}[{w}s])))",
}


def window_metrics(prometheus: Any, sel: str, seconds: float) -> dict[str, float | None]:
    """The :data:`METRIC_QUERIES` over the last ``seconds`` (None: no series, or Prometheus failed)."""
    out: dict[str, float | None] = {}
    w = max(int(seconds), 2)
    for name, template in METRIC_QUERIES.items():
        try:
            result = prometheus.query(template.format(sel=sel, w=w, wl=w + COUNTER_LOOKBACK_S))
            value = float(result[0]["value"][1]) if result else None
            out[name] = None if value is None or value != value else round(value, 3)  # NaN: no rate
        except Exception:
            out[name] = None
    return out

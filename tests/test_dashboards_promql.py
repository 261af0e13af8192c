"""Every PromQL panel query and the operator's alert rules, through a real Prometheus.

Real components expose their metrics: a producer (``streamotion produce``, replay source, on the
test Kafka), the model service (Ray Serve, the session's ``model_server``) and the operator
(``streamotion operator`` on the test control plane, reconciling the same pipeline). Prometheus
(Debian package) scrapes them with the labels the operator's PodMonitors add; each query goes
through /api/v1/query: all must parse, and those whose metrics the running components expose
must return series. The streaming job (``streamotion_jobs.main``, Spark ``local[1]``) consumes the
producer's topic into its own PostgreSQL schema and serves ``streamotion_job_*`` from its driver.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import httpx
import pytest
import yaml

from streamotion.dashboards import interpolate
from streamotion.dashboards.queries import HEALTH_PANELS, HEALTH_VARIABLES, OPERATOR_PANELS
from streamotion.dev.procs import Process, free_port, wait_for_port
from tests.ingest_helpers import make_pipeline

pytestmark = pytest.mark.timeout(300)
NAMESPACE = "test"  # ingest_helpers' pipelines live there
_SELECTOR = re.compile(r"\b(streamotion_[a-z_]+)(\{[^}]*\})?")
HEALTH_PANELS_BY_KEY = {p.key: p for p in HEALTH_PANELS}
JOB_PORTS: dict[str, int] = {}  # the stack's streaming job: its Spark UI port


@pytest.fixture(scope="module")
def stack(kafka, model_server, control_plane, prometheus, postgres, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("promql")
    p, path, _ = make_pipeline(
        kafka, tmp, [{"name": "replay", "type": "replay", "replay": {"ratePerSecond": 50, "loop": True}}]
    )
    procs: list[Process] = []
    try:
        # a real producer
        producer_port = free_port()
        env = {**os.environ, "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap}
        producer = Process.start(
            "producer",
            [
                sys.executable,
                "-m",
                "streamotion",
                "produce",
                "--source",
                "replay",
                "--pipeline",
                str(path),
                "--metrics-port",
                str(producer_port),
            ],
            log_path=tmp / "producer.log",
            env=env,
        )
        procs.append(producer)
        # the real streaming job on the producer's topic, writing to a schema of its own
        job_doc = yaml.safe_load(path.read_text())
        job_doc["spec"]["sinks"][0]["postgres"]["schema"] = f"promql_{p.name}"
        job_file = tmp / "job-pipeline.yaml"
        job_file.write_text(yaml.safe_dump(job_doc))
        job_port, ui = free_port(), free_port()
        JOB_PORTS["ui"] = ui
        conf = {  # the operator's sparkConf (PrometheusServlet on the UI port), the UI on
            **_spark_conf(p),
            "spark.ui.enabled": "true",
            "spark.ui.port": str(ui),
        }
        job_proc = Process.start(
            "job",
            [
                sys.executable,
                "-m",
                "streamotion_jobs.main",
                "--pipeline",
                str(job_file),
                "--master",
                "local[1]",
                "--checkpoint",
                str(tmp / "checkpoint"),
                "--metrics-port",
                str(job_port),
                "--metrics-host",
                "127.0.0.1",
                *(f"--conf={k}={v}" for k, v in conf.items()),
            ],
            log_path=tmp / "job.log",
            env={**env, "STREAMOTION_MODEL_URL": model_server.url, "STREAMOTION_PG_DSN": postgres.dsn},
        )
        procs.append(job_proc)
        # the real operator, reconciling the same pipeline on the test control plane
        for ns in (NAMESPACE, "kafka", "monitoring"):
            control_plane.kubectl("create", "namespace", ns, check=False)
        operator_port = free_port()
        operator = Process.start(
            "operator",
            [
                sys.executable,
                "-m",
                "streamotion",
                "operator",
                "--kubeconfig",
                str(control_plane.kubeconfig_path),
                "--metrics-port",
                str(operator_port),
                "--health-port",
                "0",
                "--resync-seconds",
                "2",
                "--log-format",
                "plain",
            ],
            log_path=tmp / "operator.log",
        )
        procs.append(operator)
        control_plane.kubectl("apply", "-f", str(path))
        # the real model service: some classifications and one invalid request (an error)
        for texts in (["I love this!", "This is awful."], ["What a surprise"] * 5):
            httpx.post(
                f"{model_server.url}/v1/classify", json={"texts": texts}, timeout=60
            ).raise_for_status()
        assert (
            httpx.post(f"{model_server.url}/v1/classify", json={"texts": "x"}, timeout=60).status_code == 422
        )
        for proc, port in ((producer, producer_port), (operator, operator_port), (job_proc, job_port)):
            wait_for_port(port, timeout=60, proc=proc)
        prometheus.add_targets("producer", [f"127.0.0.1:{producer_port}"], {"namespace": NAMESPACE})
        # the model service's metrics: Ray's metrics agent, every replica, renamed on scrape
        prometheus.add_targets(
            "model", [f"127.0.0.1:{model_server.metrics_port}"], {"namespace": NAMESPACE, "pipeline": p.name}
        )
        prometheus.add_targets(
            "operator", [f"127.0.0.1:{operator_port}"], {"namespace": "streamotion-system"}
        )
        prometheus.add_targets("job", [f"127.0.0.1:{job_port}"], {"namespace": NAMESPACE, "pipeline": p.name})
        for job in ("producer", "model", "operator", "job"):
            prometheus.wait_for_targets(job, timeout=60)
        # two scrapes with progress: rate() has something to say
        for expr in (
            f'rate(streamotion_producer_events_produced_total{{pipeline="{p.name}"}}[1m]) > 0',
            f'streamotion_operator_pipeline_ready{{pipeline="{p.name}"}}',
            "rate(streamotion_operator_reconciles_total[1m]) > 0",
            # the job's first micro-batches follow its Spark start-up
            f'rate(streamotion_job_end_to_end_latency_seconds_count{{pipeline="{p.name}"}}[1m]) > 0',
            f'streamotion_job_consumer_lag{{pipeline="{p.name}"}}',
            # the model service's replicas, through Ray's metrics agent and the rename
            f'streamotion_model_errors_total{{pipeline="{p.name}"}} > 0',
        ):
            assert prometheus.wait_for(expr, timeout=180), (
                f"{expr} returned nothing:\n{producer.tail()}\n{operator.tail()}\n{job_proc.tail()}"
            )
        yield p
    finally:
        for job in ("producer", "model", "operator", "job"):
            prometheus.remove_targets(job)
        for proc in procs:
            proc.stop()


def _values(p) -> dict:
    return {"namespace": NAMESPACE, "pipeline": p.name, "source": ["replay"]}


def _exposed(prometheus) -> set[str]:
    return set(prometheus.api("label/__name__/values"))


def _metrics_of(expr: str) -> set[str]:
    return {m.group(1) for m in _SELECTOR.finditer(expr)}


def test_every_promql_panel_query_is_valid_and_returns_series_when_its_metrics_exist(stack, prometheus):
    exposed = _exposed(prometheus)
    answered: set[str] = set()
    for panel in (*HEALTH_PANELS, *OPERATOR_PANELS):
        for t in panel.targets:
            expr = interpolate.promql(t.expr, _values(stack))
            result = prometheus.query(expr)  # raises on an invalid expression
            names = _metrics_of(expr)
            if names and names <= exposed:
                # waits through a scrape missed on a loaded machine (its series are stale until the next)
                assert result or prometheus.wait_for(expr, timeout=30), f"{panel.key}: no series for {expr}"
                answered.add(panel.key)
    # what the started components must have answered
    assert {
        "consumer_lag",
        "input_rate",
        "dead_letters",
        "sink_latency",
        "end_to_end",
        "ingest_rate",
        "producer_latency",
        "model_latency",
        "model_batch",
        "model_errors",
        "phases",
        "not_ready",
        "ready",
        "reconcile_rate",
        "reconcile_duration",
        "children_applied",
    } <= answered


def test_dashboard_variables_find_the_pipeline(stack, prometheus):
    """label_values(...) variable queries, as Grafana's Prometheus data source runs them (series API)."""
    for name, query in HEALTH_VARIABLES.items():
        m = re.fullmatch(r"label_values\((.*), (\w+)\)", query)
        assert m, query
        selector = interpolate.promql(m.group(1), _values(stack))
        series = prometheus.api("series", **{"match[]": selector})
        found = {s.get(m.group(2)) for s in series}
        want = {"namespace": NAMESPACE, "pipeline": stack.name, "source": "replay"}[name]
        assert want in found, f"{name}: {query} -> {found}"


def test_operator_alert_rules_load_into_prometheus_and_evaluate(stack, prometheus):
    pytest.importorskip("kopf")
    from streamotion_operator.builders import prometheus_rule

    rule = prometheus_rule(stack)
    groups = rule["spec"]["groups"]
    prometheus.add_rules("operator-alerts", groups)  # Prometheus refuses an invalid expression
    names = {g["name"] for g in groups}

    def evaluated():
        loaded = [g for g in prometheus.rule_groups() if g["name"] in names]
        rules = [r for g in loaded for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("20") for r in rules) else None

    import time

    deadline = time.monotonic() + 30
    while not (rules := evaluated()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert rules, "the operator's rules were not evaluated"
    for r in rules:
        assert r["health"] == "ok", f"{r['name']}: {r.get('lastError')}"
    alerts = {r["alert"] for g in groups for r in g["rules"]}
    assert {
        "StreamotionConsumerLagGrowing",
        "StreamotionDeadLettersHigh",
        "StreamotionModelErrors",
        "StreamotionSourceSilent",
        "StreamotionPipelineNotReady",
    } <= alerts
    # every selector of an alert on a component running here matches real series
    exposed = _exposed(prometheus)
    for g in groups:
        for r in g["rules"]:
            for m in _SELECTOR.finditer(r["expr"]):
                if m.group(1) in exposed:  # (over a minute: a scrape missed on a loaded machine is no matter)
                    found = prometheus.wait_for(f"last_over_time({m.group(0)}[1m])", timeout=30)
                    assert found, f"{r['alert']}: {m.group(0)} matches no series"


def _component_metric_names() -> set[str]:
    """Every sample name the producers, the model service, the operator and the job can expose."""
    import streamotion_ingest.metrics as ingest
    import streamotion_serving.metrics as serving
    from prometheus_client import CollectorRegistry
    from streamotion_jobs.metrics import JobMetrics
    from streamotion_operator.metrics import Metrics

    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    families = [v for v in vars(ingest).values() if hasattr(v, "_type") and hasattr(v, "_name")]
    op = Metrics(CollectorRegistry())
    families += [v for v in vars(op).values() if hasattr(v, "_type") and hasattr(v, "_name")]
    job = JobMetrics("namespace", "pipeline")
    families += [v for v in vars(job).values() if hasattr(v, "_type") and hasattr(v, "_name")]
    names = {sample for f in serving.FAMILIES for sample in f.samples()}  # Ray metrics, renamed
    for f in families:
        for suffix in suffixes.get(f._type, ("",)):
            names.add(f._name.removesuffix("_total") + suffix if f._type == "counter" else f._name + suffix)
    return names


def test_every_dashboard_metric_is_one_a_component_exposes():
    known = _component_metric_names()
    assert "streamotion_producer_events_produced_total" in known and "streamotion_model_texts_total" in known
    for panel in (*HEALTH_PANELS, *OPERATOR_PANELS):
        for name in panel.metrics:
            assert name in known, f"{panel.key}: no component exposes {name}"


def test_every_alert_metric_is_one_a_component_exposes():
    pytest.importorskip("kopf")
    from streamotion_operator.builders import prometheus_rule

    from streamotion.api.validate import parse

    doc = yaml.safe_load((Path(__file__).resolve().parents[1] / "examples" / "demo.yaml").read_text())
    doc["metadata"]["namespace"] = "default"
    known = _component_metric_names()
    for g in prometheus_rule(parse(doc))["spec"]["groups"]:
        for r in g["rules"]:
            for name in _metrics_of(r["expr"]):
                assert name in known, f"{r['alert']}: no component exposes {name}"


def _spark_conf(p) -> dict[str, str]:
    from streamotion_operator.builders import spark_application
    from streamotion_operator.config import OperatorConfig

    return dict(spark_application(p, OperatorConfig())["spec"]["sparkConf"])


def test_spark_streaming_panels_read_sparks_own_metrics(stack, prometheus):
    """The stack's job runs with the operator's sparkConf (PrometheusServlet on the UI port) and
    streaming metrics on: the micro-batch panels find Spark's gauges through Prometheus."""
    try:
        prometheus.add_targets(
            "spark",
            [f"127.0.0.1:{JOB_PORTS['ui']}"],
            {"namespace": NAMESPACE, "pipeline": stack.name},
            path="/metrics/prometheus/",
        )
        prometheus.wait_for_targets("spark", timeout=60)
        panels = [p for p in HEALTH_PANELS if p.key in ("batch_duration", "input_rate")]
        for panel in panels:
            for t in panel.targets:
                if "__name__" not in t.expr:
                    continue
                expr = interpolate.promql(t.expr, _values(stack))
                assert prometheus.wait_for(expr, timeout=60), f"{panel.key}: {expr}"
        assert prometheus.wait_for(
            interpolate.promql(f"{HEALTH_PANELS_BY_KEY['input_rate'].targets[0].expr} > 0", _values(stack)),
            timeout=60,
        )
    finally:
        prometheus.remove_targets("spark")


def test_streaming_metrics_are_enabled(stack):
    from streamotion_jobs.spark import base_conf

    conf = {**base_conf(), **_spark_conf(stack)}
    assert conf.get("spark.sql.streaming.metricsEnabled") == "true"

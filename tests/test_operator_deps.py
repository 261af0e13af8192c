"""A cluster without Strimzi's and spark-operator's CRDs: honest conditions, no crash loop, and
recovery without intervention once the CRDs are installed (a second, smaller control plane)."""

from __future__ import annotations

import pytest
from streamotion_operator.config import OperatorConfig
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    make_ready,
    pipeline,
    wait_for,
)

from streamotion.dev.controlplane import ControlPlane

pytestmark = pytest.mark.timeout(240)
MISSING = ("strimzi-1.2.0", "spark-operator-2.5.2")


@pytest.fixture(scope="module")
def partial_control_plane(tmp_path_factory):
    from tests.conftest import UPSTREAM_CRDS

    present = [d for d in sorted(UPSTREAM_CRDS.iterdir()) if d.is_dir() and d.name not in MISSING]
    cp = ControlPlane(workdir=tmp_path_factory.mktemp("k8s-partial"), crd_dirs=present, log=lambda *a: None)
    cp.start()
    yield cp
    cp.stop()


def test_missing_crds_are_reported_and_recovered_from(partial_control_plane, tmp_path):
    from tests.conftest import UPSTREAM_CRDS

    cp = partial_control_plane
    for ns in ("kafka", "monitoring", "team"):
        cp.kubectl("create", "namespace", ns)
    kube = Kube.from_kubeconfig(cp.kubeconfig_path)
    cfg = OperatorConfig(resync_seconds=2, kafka_namespace="kafka", dashboards_dir=str(tmp_path))
    op = OperatorThread(cp.kubeconfig_path, cfg).start()
    try:
        create_secrets(kube, "team")
        apply_pipeline(kube, pipeline("deps", "team"))

        def reported():
            body = get_pipeline(kube, "team", "deps")
            topics, proc = condition(body, "TopicsReady"), condition(body, "ProcessingReady")
            return (
                topics.get("reason") == "DependencyMissing"
                and proc.get("reason") == "DependencyMissing"
                and body
            )

        body = wait_for(reported, 60, what="DependencyMissing conditions")
        topics = condition(body, "TopicsReady")
        assert topics["status"] == "False"
        assert "KafkaTopic (kafka.strimzi.io/v1)" in topics["message"] and "Strimzi" in topics["message"]
        assert (
            "SparkApplication (sparkoperator.k8s.io/v1beta2)" in condition(body, "ProcessingReady")["message"]
        )
        assert body["status"]["phase"] == "Degraded"
        # what does not depend on them is there, and the operator keeps going without errors
        kinds = {k[0] for k in children(kube, "team", "deps")}
        assert {"Deployment", "RayService", "ConfigMap", "PodMonitor"} <= kinds
        assert not kinds & {"KafkaTopic", "SparkApplication"}
        errors = op.runtime.metrics.errors
        assert sum(s.value for m in errors.collect() for s in m.samples if s.name.endswith("_total")) == 0

        cp.install_crds(sorted(p for d in MISSING for p in (UPSTREAM_CRDS / d).glob("*.yaml")))
        wait_for(
            lambda: (
                {"KafkaTopic", "SparkApplication", "KafkaUser"}
                <= {k[0] for k in children(kube, "team", "deps")}
            ),
            60,
            what="topics, users and the SparkApplication once their CRDs exist",
        )

        def running():
            # Strimzi, spark-operator and the kubelet report what exists now; children that
            # the operator creates in a later pass (CI load) are reported on the next poll.
            make_ready(kube, "team", "deps")
            return get_pipeline(kube, "team", "deps")["status"]["phase"] == "Running"

        wait_for(running, 90, interval=2, what="Running")
        assert condition(get_pipeline(kube, "team", "deps"), "TopicsReady")["status"] == "True"
    finally:
        op.stop()
        kube.close()


def test_operator_command_serves_health_metrics_and_json_logs(partial_control_plane, tmp_path):
    """`streamotion operator` as the image runs it: liveness, Prometheus metrics, structured logs."""
    import json
    import sys
    import urllib.request

    from streamotion.dev.procs import Process, free_port

    cp = partial_control_plane
    cp.kubectl("create", "namespace", "cmd")
    kube = Kube.from_kubeconfig(cp.kubeconfig_path)
    metrics_port, health_port = free_port(), free_port()
    log = tmp_path / "operator.log"
    env = {
        **__import__("os").environ,
        "STREAMOTION_KAFKA_NAMESPACE": "kafka",
        "STREAMOTION_RESYNC_SECONDS": "2",
        "STREAMOTION_DASHBOARDS_DIR": str(tmp_path),
    }
    argv = [sys.executable, "-m", "streamotion", "operator", "--kubeconfig", str(cp.kubeconfig_path)]
    argv += ["--metrics-port", str(metrics_port), "--health-port", str(health_port)]
    proc = Process.start("operator", argv, log, env=env)
    try:
        create_secrets(kube, "cmd")
        apply_pipeline(kube, pipeline("cmd", "cmd"))
        wait_for(
            lambda: (get_pipeline(kube, "cmd", "cmd").get("status") or {}).get("phase"), 90, what="a phase"
        )

        def get(port, path):
            proc.check_alive()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
                    return r.status, r.read().decode()
            except OSError:
                return None

        status, _ = wait_for(lambda: get(health_port, "/healthz"), 30, what="/healthz")
        assert status == 200
        expected = (
            'streamotion_operator_reconciles_total{result="changed"}',
            'streamotion_operator_pipeline_ready{pipeline="cmd",pipeline_namespace="cmd"}',
            'streamotion_operator_pipelines{phase="Degraded"}',
            "streamotion_operator_reconcile_duration_seconds_bucket",
        )

        def scraped():
            r = get(metrics_port, "/metrics")
            return r and [e for e in expected if e not in r[1]] == [] and r[1]

        wait_for(scraped, 60, what=f"{expected} in /metrics")

        def logged():
            lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
            applied = [
                x for x in lines if "applied: created" in x["message"] and x["object"]["name"] == "cmd"
            ]
            return applied and lines

        lines = wait_for(logged, 30, what="a structured 'applied' log line")
        assert all("message" in x and "severity" in x for x in lines)
        applied = [x for x in lines if "applied: created" in x["message"]]
        assert all(x["object"]["kind"] == "StreamPipeline" for x in applied)
        # the pipeline of the test above, unchanged since, is left alone by this new operator
        assert [x["object"]["name"] for x in applied] == ["cmd"], [x["message"] for x in applied]
        assert not any(x["message"].startswith("Handler 'wake-") for x in lines)
    finally:
        proc.stop()
        kube.close()

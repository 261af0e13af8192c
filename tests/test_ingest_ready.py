"""A producer's readiness follows Kafka: ``/readyz`` on the metrics port (the pod's readiness probe)
answers 503 while the broker is down and 200 once it is back, without restarting the producer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from streamotion_operator.builders.producers import producer
from streamotion_operator.config import OperatorConfig

from streamotion.api.models import StreamPipeline
from tests.ingest_helpers import make_pipeline, read_all

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ready(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except OSError:
        return None


def _wait(port: int, want: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = _ready(port)
        if last == want:
            return
        time.sleep(0.5)
    raise AssertionError(f"/readyz never answered {want} (last {last})")


def test_producer_readiness_turns_false_while_kafka_is_down(kafka, tmp_path):
    _, path, topics = make_pipeline(
        kafka, tmp_path, [{"name": "rd", "type": "replay", "replay": {"ratePerSecond": 20, "loop": True}}]
    )
    port = _free_port()
    env = {**os.environ, "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap}
    cmd = [sys.executable, "-m", "streamotion", "produce", "--source", "rd", "--pipeline", str(path)]
    proc = subprocess.Popen([*cmd, "--metrics-port", str(port)], env=env, stderr=subprocess.DEVNULL)
    try:
        _wait(port, 200, 60)
        assert read_all(kafka.bootstrap, topics["raw"], expect=5, settle=0)
        kafka._stop_process()
        try:
            _wait(port, 503, 30)
            assert proc.poll() is None  # not ready, still running (liveness is /metrics)
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                assert r.status == 200
        finally:
            kafka.start()
        _wait(port, 200, 60)
    finally:
        proc.terminate()
        proc.wait(60)


def test_producer_pods_probe_readiness_on_kafka_and_liveness_on_the_process():
    from streamotion_operator.testing import pipeline

    spec = pipeline("probe", "ns")["spec"]
    spec["sources"].append({"name": "web", "type": "http", "http": {"tokenSecret": "web-token"}})
    p = StreamPipeline.model_validate(pipeline("probe", "ns", spec))
    objs = [o for s in p.spec.sources for o in producer(p, s, OperatorConfig())]
    deployments = [o for o in objs if o["kind"] == "Deployment"]
    assert len(deployments) == 3
    for d in deployments:
        c = d["spec"]["template"]["spec"]["containers"][0]
        if any(port["name"] == "http" for port in c["ports"]):
            assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        else:
            assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert c["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": "metrics"}

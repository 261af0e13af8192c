"""The streaming job's model client (``streamotion_jobs.classify``) and the serving settings that keep
a GPU busy: chunks in flight, texts cut to what the model reads, back-pressure (``max_queued_requests``),
autoscaling by texts in flight, GPU buckets and half-precision weights."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from streamotion.model_api import truncate_chars, truncate_text


class _SlowService:
    """A real HTTP server that answers /v1/classify after ``delay_s`` and counts requests in flight."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.in_flight = 0
        self.max_in_flight = 0
        self.sizes: list[int] = []
        self.lock = threading.Lock()
        svc = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with svc.lock:
                    svc.in_flight += 1
                    svc.max_in_flight = max(svc.max_in_flight, svc.in_flight)
                    svc.sizes.extend(len(t) for t in body["texts"])
                time.sleep(svc.delay_s)
                with svc.lock:
                    svc.in_flight -= 1
                out = json.dumps(
                    {
                        "results": [
                            {"label": t, "score": 1.0, "scores": {}, "model_version": "v"}
                            for t in body["texts"]
                        ]
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_several_chunks_in_flight_results_in_order():
    from streamotion_jobs.classify import ModelClient

    svc = _SlowService(delay_s=0.3)
    try:
        texts = [f"t{i}" for i in range(40)]
        client = ModelClient(svc.url, batch_size=5, concurrency=4)
        start = time.monotonic()
        pending = client.submit(texts)
        submitted_in = time.monotonic() - start
        results = pending.result()
        elapsed = time.monotonic() - start
        client.close()
        assert [r["label"] for r in results] == texts  # in input order, whichever chunk came back first
        assert submitted_in < 0.25  # submit returns while the chunks are in flight
        assert svc.max_in_flight == 4
        assert elapsed < 8 * 0.3  # 8 chunks, 4 at a time: about 2 rounds, not 8
    finally:
        svc.close()


def test_texts_are_cut_to_what_the_model_reads():
    from streamotion_jobs.classify import ModelClient

    svc = _SlowService(delay_s=0)
    try:
        long = "word " * 30_000
        client = ModelClient(svc.url, max_length=128)
        client.classify(["short", long, "x" * 99_000])
        client.close()
        assert svc.sizes[0] == 5
        assert svc.sizes[1] == svc.sizes[2] == truncate_chars(128) < 2500
    finally:
        svc.close()


def test_truncation_keeps_what_the_tokenizer_reads(tiny_models):
    """Cutting to ``truncate_chars(max_length)`` after collapsing whitespace leaves the first
    ``max_length`` tokens unchanged for texts of ordinary words."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_models["ekman"]))
    text = ("I am   so happy\n\tand a little scared about tomorrow, " * 2000) + " sad"
    cut = truncate_text(text, 128)
    assert len(cut) == truncate_chars(128)
    ids = lambda t: tok(t, truncation=True, max_length=128)["input_ids"]  # noqa: E731
    assert ids(cut) == ids(text)
    assert truncate_text("short  text", 128) == "short  text"  # untouched under the bound


def test_back_pressure_answers_503_and_the_client_retries(tiny_models, tmp_path):
    """``max_queued_requests``: past that many requests queued at a caller (the HTTP proxy), Ray
    Serve answers 503 at once instead of queueing without bound (ray-project/ray@ray-2.60.0:
    python/ray/serve/api.py, ``deployment(max_queued_requests=...)``: "Once this limit is reached,
    subsequent requests will raise a BackPressureError (for handles) or return an HTTP 503 status
    code by default ... for HTTP requests. Defaults to -1 (no limit)"). The job's client backs off
    and retries a 503, so no text is lost."""
    from streamotion_jobs.classify import ModelClient
    from streamotion_serving.server import ServeProcess

    server = ServeProcess(
        {
            "model": str(tiny_models["ekman"]),
            "max_batch_size": 16,
            "batch_wait_ms": 0,
            "num_replicas": 1,
            "max_ongoing_requests": 1,
            "max_queued_requests": 1,
        },
        num_cpus=1,
        log_path=tmp_path / "serve.log",
    )
    server.start()
    try:
        texts = [f"so happy and sad and angry number {i} " * 8 for i in range(512)]

        def post(_):
            return httpx.post(f"{server.url}/v1/classify", json={"texts": texts}, timeout=120).status_code

        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(post, range(12)))
        assert 503 in codes and 200 in codes, codes
        assert set(codes) <= {200, 503}
        client = ModelClient(server.url, batch_size=128, concurrency=8, backoff_initial_s=0.1)
        results = client.classify(texts * 4)
        client.close()
        assert len(results) == 4 * len(texts) and all(r["label"] for r in results)
    finally:
        server.stop()


def test_autoscaling_follows_texts_in_flight():
    """Ray Serve 2.60 runs a custom policy (``autoscaling_config.policy.policy_function``, a class
    instantiated once with ``policy_kwargs``: ray-project/ray@ray-2.60.0:
    python/ray/serve/_private/autoscaling_state.py ``_resolve_policy_callable``) on the replicas'
    ``record_autoscaling_stats`` metrics (``AutoscalingContext.aggregated_metrics``:
    python/ray/serve/config.py), wrapped with the config's scaling factors and delays
    (python/ray/serve/autoscaling_policy.py ``_apply_autoscaling_config``); min/max replicas bound
    the decision after (python/ray/serve/_private/autoscaling_state.py ``apply_bounds``)."""
    from ray.serve._private.common import DeploymentID, ReplicaID
    from ray.serve.autoscaling_policy import _apply_autoscaling_config
    from ray.serve.config import AutoscalingConfig, AutoscalingContext
    from streamotion_serving.app import build_app
    from streamotion_serving.autoscaling import POLICY_PATH, TEXTS_METRIC, TextsInFlight

    dep = DeploymentID(name="EmotionClassifier", app_name="streamotion-model")
    replicas = [ReplicaID(unique_id=f"r{i}", deployment_id=dep) for i in range(2)]
    config = AutoscalingConfig(min_replicas=1, max_replicas=8, upscale_delay_s=0, downscale_delay_s=0)

    def ctx(texts: list[float], requests: float) -> AutoscalingContext:
        return AutoscalingContext(
            deployment_id=dep,
            deployment_name=dep.name,
            app_name=dep.app_name,
            current_num_replicas=2,
            target_num_replicas=2,
            running_replicas=replicas,
            total_num_requests=requests,
            total_queued_requests=0,
            aggregated_metrics={TEXTS_METRIC: dict(zip(replicas, texts, strict=True))},
            raw_metrics=None,
            capacity_adjusted_min_replicas=1,
            capacity_adjusted_max_replicas=8,
            policy_state={},
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=time.time(),
            config=config,
        )

    policy = _apply_autoscaling_config(TextsInFlight(target_texts_per_replica=256))
    # 4 requests of 256 texts each are 4 replicas' worth, whatever the request count says
    assert policy(ctx([512, 512], requests=4))[0] == 4
    # 40 one-text requests (a dashboard) are not
    assert policy(ctx([20, 20], requests=40))[0] == 1

    app = build_app(
        {"model": "m", "max_batch_size": 64, "autoscaling": {"min_replicas": 1, "max_replicas": 3}}
    )
    auto = app._bound_deployment._deployment_config.autoscaling_config
    assert auto.policy.policy_function == POLICY_PATH
    assert auto.policy.policy_kwargs == {"target_texts_per_replica": 256.0}  # 4 x max_batch_size
    assert app._bound_deployment._deployment_config.max_queued_requests == 64


def test_gpu_settings_and_cpu_defaults(tiny_models):
    from streamotion_serving.model import EmotionModel, ModelConfig, torch_dtype

    assert torch_dtype("auto", "cpu") == "float32"
    assert torch_dtype("float16", "cuda") == "float16"
    with pytest.raises(ValueError, match="dtype must be"):
        torch_dtype("int3", "cpu")
    m = EmotionModel(ModelConfig(model=str(tiny_models["ekman"]), device="cpu"))
    assert m.bucket() == 8 and m.info()["dtype"] == "float32"
    texts = ["happy", "so sad and angry today", "wow"] * 7
    # tokenized apart from the model run, in buckets: the same scores as one padded batch each
    import numpy as np

    np.testing.assert_allclose(
        m.infer(len(texts), m.encode(texts)),
        np.vstack([m._fold(m.logits([t])) for t in texts]),
        atol=1e-5,
    )
    half = EmotionModel(ModelConfig(model=str(tiny_models["ekman"]), device="cpu", dtype="bfloat16"))
    import torch

    assert half.info()["dtype"] == "bfloat16" and next(half.model.parameters()).dtype == torch.bfloat16
    np.testing.assert_allclose(half.scores(texts), m.scores(texts), atol=0.05)


def test_a_replica_is_added_for_texts_in_flight_not_requests(tiny_models, tmp_path):
    """One request at a time (Ray's request-based policy, target_ongoing_requests 2, would keep one
    replica) carrying 512 texts each: the texts-in-flight policy, loaded by Ray Serve's controller and
    fed by each replica's ``record_autoscaling_stats`` (ray-project/ray@ray-2.60.0:
    python/ray/serve/_private/replica.py ``_fetch_custom_autoscaling_metrics``), adds the second."""
    import re

    from streamotion_serving.server import ServeProcess

    server = ServeProcess(
        {
            "model": str(tiny_models["ekman"]),
            "max_batch_size": 16,
            "autoscaling": {
                "min_replicas": 1,
                "max_replicas": 2,
                "target_texts_per_replica": 16,
                "upscale_delay_s": 0,
                "look_back_period_s": 2,
            },
        },
        num_cpus=2,
        log_path=tmp_path / "serve.log",
    )
    server.start()
    try:
        texts = [f"so happy and sad number {i}" for i in range(512)]
        replicas: set[str] = set()
        deadline = time.monotonic() + 150
        while len(replicas) < 2 and time.monotonic() < deadline:
            r = httpx.post(f"{server.url}/v1/classify", json={"texts": texts}, timeout=120)
            assert r.status_code == 200, r.text
            metrics = httpx.get(server.metrics_url, timeout=30).text
            replicas = {
                m.group(1)
                for line in metrics.splitlines()
                if line.startswith("ray_streamotion_model_texts_total")
                and (m := re.search(r'replica="([^"]+)"', line))
            }
        assert len(replicas) == 2, f"still one replica after 150 s of one request at a time: {replicas}"
    finally:
        server.stop()

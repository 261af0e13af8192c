"""The Ray Serve model service, run locally with a tiny model (tests/fixtures/model.py)."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from streamotion.labels import EKMAN
from streamotion.model_api import MAX_TEXTS, ClassifyResponse, ModelInfo
from tests.fixtures.model import MODEL_MAX_TEXT_CHARS


def _samples(text: str, name: str) -> list[tuple[str, float]]:
    """``(labels, value)`` of every sample of ``name`` as Ray's metrics agent exports it (ray_ prefix)."""
    found = []
    for line in text.splitlines():
        m = re.match(rf"ray_{name}(\{{[^}}]*\}})? (\S+)$", line)
        if m:
            found.append((m.group(1) or "", float(m.group(2))))
    return found


def _metric(text: str, name: str) -> float:
    return sum(v for _, v in _samples(text, name))


def _scrape(server) -> str:
    r = httpx.get(server.metrics_url, timeout=30)
    assert r.status_code == 200
    return r.text


def _settled(server, name: str) -> str:
    """A scrape once earlier requests have all been exported (replicas report every 5 s)."""
    text = _scrape(server)
    for _ in range(20):
        time.sleep(11)
        again = _scrape(server)
        if _metric(again, name) == _metric(text, name):
            return again
        text = again
    raise AssertionError(f"{name} kept changing")


def _scrape_until(server, done, timeout: float = 60) -> str:
    """Replicas report their metrics to Ray's agent every 5 s: scrape until ``done(text)``."""
    deadline = time.monotonic() + timeout
    text = _scrape(server)
    while not done(text) and time.monotonic() < deadline:
        time.sleep(1)
        text = _scrape(server)
    return text


def test_classify_contract(model_server):
    texts = ["I am so happy today!", "this is terrible and sad", "wow", "i hate it " * 190]
    r = httpx.post(f"{model_server.url}/v1/classify", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    results = ClassifyResponse.model_validate(r.json()).results
    assert len(results) == len(texts)
    info = ModelInfo.model_validate(httpx.get(f"{model_server.url}/v1/model", timeout=30).json())
    assert info.labels == list(EKMAN) and info.taxonomy == "ekman" and info.backend == "torch"
    for res in results:
        assert set(res.scores) == set(EKMAN)
        assert res.label == max(res.scores, key=res.scores.get)
        assert res.score == pytest.approx(res.scores[res.label])
        assert sum(res.scores.values()) == pytest.approx(1.0, abs=1e-4)
        assert res.model_version == info.version
    assert httpx.get(f"{model_server.url}/healthz", timeout=30).status_code == 200


def test_concurrent_clients_form_batches_and_keep_order(model_server):
    url = model_server.url
    metrics_before = _settled(model_server, "streamotion_model_texts_total")
    # the reference: each text alone
    singles = [f"text number {i} is {'happy' if i % 2 else 'sad'}" for i in range(12)]
    alone = {}
    for t in singles:
        alone[t] = httpx.post(f"{url}/v1/classify", json={"texts": [t]}, timeout=60).json()["results"][0]

    requests = [[singles[(i + k) % len(singles)] for k in range(1 + i % 4)] for i in range(120)]

    def call(texts):
        r = httpx.post(f"{url}/v1/classify", json={"texts": texts}, timeout=120)
        assert r.status_code == 200, r.text
        return texts, r.json()["results"]

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(call, requests))
    for texts, results in answers:
        assert len(results) == len(texts)
        for t, res in zip(texts, results, strict=True):
            # the right result for each text, in the request's order, whatever batch it ran in
            assert res["label"] == alone[t]["label"]
            for label, score in res["scores"].items():
                assert score == pytest.approx(alone[t]["scores"][label], abs=1e-4)

    sent = len(singles) + sum(len(r) for r in requests)
    before = _metric(metrics_before, "streamotion_model_texts_total")
    after = _scrape_until(
        model_server, lambda t: _metric(t, "streamotion_model_texts_total") - before >= sent
    )
    # every text counted once, whichever of the two replicas classified it
    assert _metric(after, "streamotion_model_texts_total") - before == sent
    replicas = {
        re.search(r'replica="([^"]+)"', labels).group(1)
        for labels, _ in _samples(after, "streamotion_model_texts_total")
    }
    assert len(replicas) == 2, replicas
    batches = _metric(after, "streamotion_model_batch_size_count") - _metric(
        metrics_before, "streamotion_model_batch_size_count"
    )
    # dynamic batching: far fewer model calls than texts
    assert batches < sent * 0.75, (batches, sent)
    assert _samples(after, "streamotion_model_request_latency_seconds_bucket")
    inference = _metric(after, "streamotion_model_inference_latency_seconds_count") - _metric(
        metrics_before, "streamotion_model_inference_latency_seconds_count"
    )
    assert inference == batches
    # a gauge is exported while its replica keeps reporting it (dropped after two missed reports)
    info = _scrape_until(model_server, lambda t: bool(_samples(t, "streamotion_model_info")))
    assert (
        len(
            {
                re.search(r'replica="([^"]+)"', labels).group(1)
                for labels, _ in _samples(info, "streamotion_model_info")
            }
        )
        >= 1
    )


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"texts": []}, "at least 1"),
        ({"texts": ["ok", 5]}, "texts.1"),
        ({"texts": ["ok"] * (MAX_TEXTS + 1)}, f"at most {MAX_TEXTS}"),
        ({"text": "ok"}, "texts"),
        ({"texts": "not a list"}, "texts"),
        (
            {"texts": ["ok", "x" * (MODEL_MAX_TEXT_CHARS + 1)]},
            f"body.texts.1: text of {MODEL_MAX_TEXT_CHARS + 1} characters, over this service's limit",
        ),
    ],
)
def test_bad_inputs_are_4xx_with_a_clear_message(model_server, body, fragment):
    r = httpx.post(f"{model_server.url}/v1/classify", json=body, timeout=30)
    assert r.status_code == 422
    assert fragment in r.json()["message"]


def test_not_json_is_4xx(model_server):
    r = httpx.post(
        f"{model_server.url}/v1/classify",
        content=b"not json",
        headers={"content-type": "application/json"},
        timeout=30,
    )
    assert 400 <= r.status_code < 500

    def refused(text: str) -> bool:
        return any(
            'endpoint="/v1/classify"' in labels and 'status="422"' in labels
            for labels, _ in _samples(text, "streamotion_model_requests_total")
        )

    metrics = _scrape_until(model_server, refused)
    assert refused(metrics)
    assert _metric(metrics, "streamotion_model_errors_total") >= 1


def test_openapi_schema(model_server):
    schema = httpx.get(f"{model_server.url}/openapi.json", timeout=30).json()
    assert {"/v1/classify", "/v1/model", "/healthz"} <= set(schema["paths"])
    body = schema["paths"]["/v1/classify"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body["$ref"].endswith("ClassifyRequest")


def test_stop_and_start_again(model_server):
    with model_server.down(), pytest.raises(httpx.ConnectError):
        httpx.post(f"{model_server.url}/v1/classify", json={"texts": ["hi"]}, timeout=10)
    r = httpx.post(f"{model_server.url}/v1/classify", json={"texts": ["hi"]}, timeout=60)
    assert r.status_code == 200

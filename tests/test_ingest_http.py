"""The HTTP ingest service against the real broker: auth, validation, limits, Kafka outages."""

from __future__ import annotations

import json
import threading
import time
import uuid

import httpx
import pytest
import uvicorn

from streamotion.dev.procs import free_port, wait_for_port
from streamotion.events import Event
from tests.ingest_helpers import make_pipeline, read_all, values

TOKEN = "test-token-" + uuid.uuid4().hex


class _Server:
    def __init__(self, app) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_config=None, access_log=False)
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        wait_for_port(self.port, timeout=30)
        return f"http://127.0.0.1:{self.port}"

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture(scope="module")
def ingest(kafka, tmp_path_factory):
    from streamotion_ingest.http import build

    p, _, topics = make_pipeline(
        kafka,
        tmp_path_factory.mktemp("http"),
        [
            {
                "name": "api",
                "type": "http",
                "redactPII": True,
                "http": {"tokenSecret": "t", "maxBatchSize": 50},
            }
        ],
    )
    app, publisher = build(p, "api", kafka.bootstrap, token=TOKEN, ack_timeout=3, max_bytes=64 * 1024, rate=0)
    with (
        _Server(app) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}) as client,
    ):
        yield client, topics, publisher


def _ev(i: int | str, **kw):
    return {"id": f"e-{i}", "text": f"hello number {i}", **kw}


def test_auth(ingest):
    client, _, _ = ingest
    r = client.post("/v1/events", json=_ev(1), headers={"Authorization": ""})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/events", json=_ev(1), headers={"Authorization": "Bearer nope"}).status_code == 401


def test_validation(ingest):
    client, _, _ = ingest
    r = client.post("/v1/events", content=b"{nope", headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["detail"]
    r = client.post("/v1/events", json={"id": "x"})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "text"]
    r = client.post("/v1/events", json={"events": [_ev(1), {"id": "y", "text": "t", "colour": "red"}]})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "events", 1, "colour"]
    r = client.post("/v1/events", json=[_ev(1), {"id": "", "text": "t"}])
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", 1, "id"]
    assert client.post("/v1/events", json=[]).status_code == 422
    assert client.post("/v1/events", json=42).status_code == 422
    r = client.post("/v1/events", json=_ev(1, created_at="not a date"))
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "created_at"]


def test_limits(ingest):
    client, _, _ = ingest
    r = client.post("/v1/events", json=_ev(1, text="x" * 70_000))
    assert r.status_code == 413 and "bytes" in r.json()["detail"]
    r = client.post("/v1/events", json=[_ev(i) for i in range(51)])
    assert r.status_code == 413 and "at most 50" in r.json()["detail"]


def test_accepts_single_and_batches_after_kafka_ack(ingest, kafka):
    client, topics, _ = ingest
    tag = uuid.uuid4().hex[:6]
    received = _payloads_received(client)
    r = client.post(
        "/v1/events", json=_ev(f"{tag}-single", author="Alice", text="mail bob@example.com please")
    )
    assert r.status_code == 202 and r.json() == {"accepted": 1, "filtered": 0}
    r = client.post("/v1/events", json=[_ev(f"{tag}-{i}") for i in range(50)])
    assert r.status_code == 202 and r.json()["accepted"] == 50
    r = client.post("/v1/events", json={"events": [_ev(f"{tag}-obj-{i}") for i in range(3)]})
    assert r.status_code == 202 and r.json()["accepted"] == 3
    evs = {e["id"]: e for e in values(read_all(kafka.bootstrap, topics["raw"])) if tag in e["id"]}
    assert len(evs) == 54
    single = evs[f"e-{tag}-single"]
    Event.model_validate(single)
    assert single["platform"] == "http" and single["source"] == "api"
    assert single["text"] == "mail [EMAIL] please"  # redactPII
    assert single["author"] and single["author"] != "Alice"
    # counted as received: StreamotionSourceSilent (rate of this counter == 0 for 10 minutes) must
    # not fire for a busy HTTP source (it went pending in every `bench chaos` run before)
    assert _payloads_received(client) - received == 54


def _payloads_received(client) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(client.get("/metrics/").text):
        if fam.name == "streamotion_producer_payloads_received":
            return sum(
                s.value for s in fam.samples if s.name.endswith("_total") and s.labels["source"] == "api"
            )
    return 0.0


def test_openapi_health_and_metrics(ingest):
    client, _, _ = ingest
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/events"]["post"]
    assert {"202", "401", "413", "422", "429", "503"} <= set(post["responses"])
    assert "IngestEvent" in json.dumps(post["requestBody"])
    schemas = spec["components"]["schemas"]
    assert set(schemas["IngestEvent"]["required"]) == {"id", "text"}
    assert schemas["Batch"]["properties"]["events"]["items"] == {"$ref": "#/components/schemas/IngestEvent"}
    assert client.get("/healthz").json() == {"status": "ok", "kafka": "up"}
    text = client.get("/metrics/").text
    assert 'streamotion_producer_events_produced_total{pipeline="' in text
    assert "streamotion_producer_http_requests_total{" in text and 'code="401"' in text


def test_kafka_down_answers_503_and_loses_nothing_acknowledged(ingest, kafka):
    client, topics, _ = ingest
    tag = uuid.uuid4().hex[:6]
    acked: list[str] = []
    codes: list[int] = []
    stop = threading.Event()

    def sender():
        i = 0
        with httpx.Client(base_url=str(client.base_url), headers=dict(client.headers), timeout=30) as c:
            while not stop.is_set():
                batch = [_ev(f"{tag}-{i}-{j}") for j in range(5)]
                i += 1
                r = c.post("/v1/events", json=batch)
                codes.append(r.status_code)
                if r.status_code == 202:
                    acked.extend(e["id"] for e in batch)
                else:
                    assert r.status_code in (429, 503), r.text
                    time.sleep(0.05)

    t = threading.Thread(target=sender)
    t.start()
    try:
        while len(acked) < 50:
            time.sleep(0.05)
        kafka.kill()  # abrupt: the broker vanishes mid-stream
        # while it is down, nothing is acknowledged
        r = client.post("/v1/events", json=_ev(f"{tag}-while-down"))
        assert r.status_code == 503 and r.headers["retry-after"]
        while 503 not in codes:
            time.sleep(0.05)
        assert client.get("/healthz").status_code in (200, 503)
        kafka.start()
        n = len(codes)
        while len(codes) < n + 5 or codes[-1] != 202:  # service recovers by itself
            time.sleep(0.1)
    finally:
        stop.set()
        t.join(60)
    got = {e["id"] for e in values(read_all(kafka.bootstrap, topics["raw"])) if tag in e["id"]}
    assert set(acked) <= got
    assert 503 in codes


@pytest.fixture(scope="module")
def limited(kafka, tmp_path_factory):
    """An ingest service with two tokens (two client applications) limited to 10 events/s each,
    bursts of a full batch (50)."""
    from streamotion_ingest.http import build

    p, _, topics = make_pipeline(
        kafka,
        tmp_path_factory.mktemp("limited"),
        [{"name": "api", "type": "http", "http": {"tokenSecret": "t", "maxBatchSize": 50}}],
    )
    tokens = ["app-one-" + uuid.uuid4().hex, "app-two-" + uuid.uuid4().hex]
    now = [0.0]  # the rate limiter's clock: the test moves it (Kafka's acks take their own time)
    token = f"{tokens[0]},\n{tokens[1]}\n"
    app, _ = build(p, "api", kafka.bootstrap, token=token, rate=10, ack_timeout=5, clock=lambda: now[0])
    with _Server(app) as url, httpx.Client(base_url=url) as client:
        yield client, topics, tokens, now


def test_each_token_has_its_own_rate_limit_with_retry_after(limited, kafka):
    client, topics, (one, two), now = limited
    tag = uuid.uuid4().hex[:6]

    def post(token: str, batch: list) -> httpx.Response:
        return client.post("/v1/events", json=batch, headers={"Authorization": f"Bearer {token}"})

    assert post(one, [_ev(f"{tag}-a-{i}") for i in range(50)]).status_code == 202  # the whole burst
    r = post(one, [_ev(f"{tag}-c")])  # an empty bucket: refused before the body is even read
    assert r.status_code == 429 and "rate limit" in r.json()["detail"] and r.headers["retry-after"] == "1"
    now[0] += 1.0  # 10 events fit again; 40 need 3 s more
    r = post(one, [_ev(f"{tag}-b-{i}") for i in range(40)])
    assert r.status_code == 429 and r.headers["retry-after"] == "3"
    # the other application's token is not slowed down by the first one
    assert post(two, [_ev(f"{tag}-d-{i}") for i in range(50)]).status_code == 202
    assert post(two, [_ev(f"{tag}-e")]).status_code == 429
    assert post(one, [_ev(f"{tag}-f-{i}") for i in range(10)]).status_code == 202
    got = {e["id"] for e in values(read_all(kafka.bootstrap, topics["raw"])) if tag in e["id"]}
    assert len(got) == 110 and not any(
        f"{tag}-{x}" in i for i in got for x in "bce"
    )  # refused: nothing published
    assert post("nope", [_ev(f"{tag}-g")]).status_code == 401


def test_every_token_is_compared_in_constant_time(limited, monkeypatch):
    """hmac.compare_digest against every configured token on every request, the matching one
    included, so the response time does not tell how many leading characters or which token matched."""
    import hmac

    client, _, (one, two), _ = limited
    seen: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a, b):
        seen.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    for auth in (f"Bearer {one}", f"Bearer {two}", "Bearer wrong", ""):
        seen.clear()
        client.post("/v1/events", json=_ev("ct"), headers={"Authorization": auth})
        assert [b for _, b in seen] == [f"Bearer {one}".encode(), f"Bearer {two}".encode()]
        assert all(a == auth.encode() for a, _ in seen)


def test_token_bucket_refills_at_its_rate():
    from streamotion_ingest.http import TokenBucket

    now = [0.0]
    bucket = TokenBucket(rate=100, burst=200, clock=lambda: now[0])
    assert bucket.take(150) == 0 and bucket.level == 50
    assert bucket.take(100) == pytest.approx(0.5)  # refused: nothing taken
    now[0] = 0.5
    assert bucket.take(100) == 0 and bucket.level == pytest.approx(0)
    now[0] = 100.0
    assert bucket.wait(200) == 0 and bucket.level == 200  # never above the burst

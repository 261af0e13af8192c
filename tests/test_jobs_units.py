"""The job's pieces without Spark: text preparation, parsing, sentiment, the watermark policy, the
model client's retries (against a real local HTTP server) and the sinks' idempotence on a real
PostgreSQL and bqemulator."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from streamotion_jobs.classify import ModelClient, ModelUnavailable
from streamotion_jobs.config import JobConfig, checkpoint_location, parse_duration
from streamotion_jobs.sinks import US, Batch, next_watermark, with_windows
from streamotion_jobs.text import clean_text, hashtags, terms
from streamotion_jobs.transform import enrich, parse_frame, parse_one, sentiment_index

from streamotion.events import Event
from streamotion.labels import EKMAN

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------- text
def test_clean_text_strips_markup_urls_mentions_and_whitespace_keeping_hashtag_words():
    raw = "<p>I &amp; you</p>  love it!! @bob @alice@mastodon.social see https://x.co/a?b=1 www.y.org #Happy\n\nok"
    assert clean_text(raw) == "I & you love it!! see Happy ok"


def test_hashtags_are_distinct_lowercase_in_order():
    assert hashtags("#Happy day #sad #happy &#39; C#sharp a#b #été") == ["happy", "sad", "été"]


def test_terms_drop_stopwords_of_the_language_and_short_words():
    assert terms("I really love the new phone, it is great", "en") == ["love", "new", "phone", "great"]
    assert terms("Das ist wirklich sehr schön", "de") == ["wirklich", "schön"]
    assert terms("le chat est très content", "fr") == ["chat", "content"]
    assert terms("unknown language the words", None) == ["unknown", "language", "words"]


# ------------------------------------------------------------------------------------- parsing
def _event(**kw) -> Event:
    base = dict(id="1", source="s", platform="http", text="hello #x", created_at=BASE)
    return Event(**{**base, **kw})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty message"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'"a string"', "not a JSON object"),
        (b'{"id": "1"}', "source: Field required"),
        (
            json.dumps(
                {"id": "1", "source": "s", "platform": "http", "text": "x", "created_at": "nope"}
            ).encode(),
            "created_at:",
        ),
    ],
)
def test_parse_one_names_the_reason(payload, reason):
    event, error, _ = parse_one(payload)
    assert event is None and reason in error


def test_parse_frame_keeps_position_payload_and_derived_fields():
    good = _event(text="<b>Great</b> news @x #Win https://a.b", lang="en").to_json()
    raw = pd.DataFrame({"value": [good, b"oops"], "topic": ["t", "t"], "partition": [1, 1], "offset": [7, 8]})
    out = parse_frame(raw)
    ok, bad = out.iloc[0], out.iloc[1]
    assert ok["event_id"] == "s:http:1" and ok["error"] is None
    assert ok["clean_text"] == "Great news Win" and list(ok["hashtags"]) == ["win"]
    assert ok["created_at_us"] == int(BASE.timestamp() * US)
    assert bad["error"].startswith("not JSON") and bad["payload"] == "oops" and bad["kafka_offset"] == 8


def test_sentiment_follows_the_labels_module_and_threshold():
    scores = dict.fromkeys(EKMAN, 0.0) | {"joy": 0.6, "anger": 0.2}
    assert sentiment_index(scores) == pytest.approx(0.4)
    pdf = parse_frame(
        pd.DataFrame({"value": [_event().to_json()], "topic": ["t"], "partition": [0], "offset": [0]})
    )
    result = {"label": "joy", "score": 0.6, "scores": scores, "model_version": "m1"}
    assert enrich(pdf, [result], threshold=0.15)["sentiment"].tolist() == ["positive"]
    assert enrich(pdf, [result], threshold=0.5)["sentiment"].tolist() == ["neutral"]


# ------------------------------------------------------------------------------------ watermark
def test_windows_and_late_flags_follow_the_watermark():
    ev = pd.DataFrame(
        {"created_at_us": [int((BASE + timedelta(seconds=s)).timestamp() * US) for s in (30, 90, 200)]}
    )
    wm = int((BASE + timedelta(minutes=2)).timestamp() * US)  # windows ending at or before 12:02 are final
    out = with_windows(ev, 60, wm)
    assert out["late"].tolist() == [True, True, False]
    assert (out["window_end_us"] - out["window_start_us"]).eq(60 * US).all()
    assert with_windows(ev, 60, None)["late"].tolist() == [False, False, False]
    assert next_watermark(None, ev, 120) == int((BASE + timedelta(seconds=80)).timestamp() * US)
    assert next_watermark(wm, ev, 120) == wm  # never moves back


def test_durations_and_checkpoint_location(tmp_path, monkeypatch):
    from streamotion.api.validate import parse

    assert parse_duration("500ms") == 0.5 and parse_duration("1h30m") == 5400
    with pytest.raises(ValueError):
        parse_duration("5 s")
    body = {
        "apiVersion": "streamotion.io/v1alpha1",
        "kind": "StreamPipeline",
        "metadata": {"name": "demo"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}}],
        },
    }
    p = parse(body)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="--checkpoint"):
        checkpoint_location(p)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert checkpoint_location(p) == "/checkpoint"
    body["spec"]["processing"] = {"checkpoint": {"uri": "gs://b/ckpt"}}
    assert checkpoint_location(parse(body), str(tmp_path)) == "gs://b/ckpt"
    monkeypatch.delenv("STREAMOTION_MODEL_URL", raising=False)
    monkeypatch.delenv("STREAMOTION_KAFKA_BOOTSTRAP", raising=False)
    cfg = JobConfig.from_pipeline(p)
    assert cfg.model_url == "http://demo-model-serve-svc.default.svc:8000"
    assert cfg.bootstrap == "streamotion-kafka-bootstrap.kafka.svc:9092"
    assert cfg.topics["raw"] == "streamotion.default.demo.raw" and cfg.trigger_s == 5


# --------------------------------------------------------------------------------- model client
class _Flaky(BaseHTTPRequestHandler):
    failures = 0
    calls = 0

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        results = [
            {"label": "joy", "score": 0.9, "scores": {"joy": 0.9, "neutral": 0.1}, "model_version": "v"}
            for _ in body["texts"]
        ]
        data = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.failures, _Flaky.calls = 0, 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_model_client_batches_and_retries_with_backoff(flaky_server):
    _Flaky.failures = 2
    client = ModelClient(flaky_server, batch_size=4, backoff_initial_s=0.05)
    out = client.classify([f"t{i}" for i in range(10)])
    assert len(out) == 10 and all(r["label"] == "joy" for r in out)
    assert _Flaky.calls == 2 + 3  # two failures, then three batches of at most 4


def test_model_client_gives_up_after_its_deadline(flaky_server):
    _Flaky.failures = 10_000
    client = ModelClient(flaky_server, deadline_s=0.5, backoff_initial_s=0.05)
    with pytest.raises(ModelUnavailable, match="unavailable"):
        client.classify(["x"])
    refused = ModelClient("http://127.0.0.1:9", deadline_s=0.3, backoff_initial_s=0.05)
    with pytest.raises(ModelUnavailable):
        refused.classify(["x"])


# ------------------------------------------------------------------------------------- sinks
def _batch(batch_id: int, ids: range, minutes: float = 0, dead: int = 0, query: str = "q1") -> Batch:
    events = [
        _event(
            id=f"u{i}",
            text=f"so happy #tag{i % 2} wonderful day",
            author=f"a{i % 3}",
            lang="en",
            created_at=BASE + timedelta(minutes=minutes, seconds=i),
        ).to_json()
        for i in ids
    ]
    values = events + [b"broken"] * dead
    raw = pd.DataFrame(
        {
            "value": values,
            "topic": "t",
            "partition": 0,
            "offset": [batch_id * 1000 + k for k in range(len(values))],
        }
    )
    parsed = parse_frame(raw)
    ok = parsed[parsed["error"].isna()].reset_index(drop=True)
    bad = parsed[parsed["error"].notna()].reset_index(drop=True)
    scores = dict.fromkeys(EKMAN, 0.0) | {"joy": 0.8, "neutral": 0.2}
    results = [{"label": "joy", "score": 0.8, "scores": scores, "model_version": "m"}] * len(ok)
    return Batch(query, batch_id, enrich(ok, results, 0.15), bad, window_s=60, watermark_s=60)


def test_postgres_sink_is_idempotent_per_batch_and_per_event(postgres, pg_schema):
    from streamotion_jobs.sinks.postgres import PostgresSink

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    sink.open()  # migrations apply once
    assert sink.write(_batch(0, range(0, 20), dead=2)) is True
    assert sink.write(_batch(0, range(0, 20), dead=2)) is False  # the ledger skips a replay
    # a replay whose ledger row is gone (or a new query over old offsets) still adds nothing
    assert sink.write(_batch(0, range(0, 20), dead=2, query="q2")) is True
    assert sink.write(_batch(1, range(10, 30), minutes=1)) is True  # overlapping ids
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
        assert (n, distinct) == (30, 30)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 2
        stored = conn.execute("SELECT sum(events) FROM emotion_window").fetchone()[0]
        assert stored == conn.execute("SELECT count(*) FROM events WHERE NOT late").fetchone()[0]
        tags = conn.execute(
            "SELECT hashtag, sum(events) FROM hashtag_window GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert tags == [("tag0", 15), ("tag1", 15)]
    sink.close()


def test_bigquery_sink_is_idempotent_per_batch_and_per_event(bigquery_emulator):
    import uuid

    from streamotion_jobs.sinks.bigquery import BigQuerySink

    dataset = "u_" + uuid.uuid4().hex[:8]
    sink = BigQuerySink(
        bigquery_emulator.project, dataset, client=bigquery_emulator.client(), log=lambda *_: None
    )
    sink.open()
    assert sink.write(_batch(0, range(0, 20), dead=2)) is True
    assert sink.write(_batch(0, range(0, 20), dead=2)) is False
    assert sink.write(_batch(0, range(0, 20), dead=2, query="q2")) is True
    assert sink.write(_batch(1, range(10, 30), minutes=1)) is True
    client = bigquery_emulator.client()
    ds = f"{bigquery_emulator.project}.{dataset}"

    def one(sql):
        return next(iter(client.query(sql.format(ds=ds)).result()))[0]

    assert one("SELECT COUNT(*) FROM `{ds}.events`") == 30
    assert one("SELECT COUNT(DISTINCT event_id) FROM `{ds}.events`") == 30
    assert one("SELECT COUNT(*) FROM `{ds}.dead_letters`") == 2
    assert one("SELECT SUM(events) FROM `{ds}.emotion_window`") == one(
        "SELECT COUNT(*) FROM `{ds}.events` WHERE NOT late"
    )
    assert one("SELECT SUM(events) FROM `{ds}.hashtag_window`") == 30
    tables = {t.table_id for t in client.list_tables(ds)}
    assert not any(t.startswith("_staging") for t in tables)
    sink.close()


# ------------------------------------------------------------------------------------- metrics
def _job_cfg(tmp_path):
    from streamotion.api.validate import parse

    body = {
        "apiVersion": "streamotion.io/v1alpha1",
        "kind": "StreamPipeline",
        "metadata": {"name": "metrics", "namespace": "ns1"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}}],
        },
    }
    return JobConfig.from_pipeline(parse(body), checkpoint=str(tmp_path / "ckpt"))


def test_job_metrics_time_each_sink_write_and_count_failures(postgres, pg_schema, tmp_path):
    from streamotion_jobs.job import StreamingJob
    from streamotion_jobs.sinks.postgres import PostgresSink

    from streamotion.dev.procs import free_port

    good = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    good.open()
    job = StreamingJob(_job_cfg(tmp_path), None, sinks=[good], log=lambda *_: None, lag_interval_s=None)
    reg, labels = job.metrics.registry, {"namespace": "ns1", "pipeline": "metrics", "sink": "postgres"}
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 0  # present before a write
    assert job._write(good, _batch(0, range(0, 5))) is True
    assert job._write(good, _batch(0, range(0, 5))) is False  # a replay: skipped, still one timed write
    assert reg.get_sample_value("streamotion_job_sink_write_seconds_count", labels) == 2
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 0
    good.close()
    # a sink that cannot be reached: the write raises (the batch fails and is retried) and is counted
    bad = PostgresSink(f"host=127.0.0.1 port={free_port()} dbname=x user=x", connect_timeout=2)
    import psycopg

    with pytest.raises(psycopg.OperationalError):
        job._write(bad, _batch(1, range(5, 10)))
    assert reg.get_sample_value("streamotion_job_sink_errors_total", labels) == 1
    assert reg.get_sample_value("streamotion_job_sink_write_seconds_count", labels) == 3


def test_job_metrics_latency_per_event_and_never_raising():
    from streamotion_jobs.metrics import JobMetrics

    logged: list[str] = []
    m = JobMetrics("ns1", "p1", log=logged.append)
    labels = {"namespace": "ns1", "pipeline": "p1"}
    events = _batch(0, range(0, 4)).events
    now = events["ingested_at_us"].max() / US + 3.0
    m.batch_written(events, 2, now=now)
    reg = m.registry
    assert reg.get_sample_value("streamotion_job_events_total", labels) == 4
    assert reg.get_sample_value("streamotion_job_dead_letters_total", labels) == 2
    assert reg.get_sample_value("streamotion_job_end_to_end_latency_seconds_count", labels) == 4
    # from ingestion (not the platform's created_at, hours earlier here) to the write
    total = sum(now - us / US for us in events["ingested_at_us"])
    assert reg.get_sample_value("streamotion_job_end_to_end_latency_seconds_sum", labels) == pytest.approx(
        total
    )
    # a metrics problem is logged, never raised into the micro-batch
    m.batch_written(pd.DataFrame({"unexpected": [1]}), 0)
    assert logged and "not recorded" in logged[-1]
    # a busy port: the job runs without /metrics
    first = m.serve(0)
    try:
        assert first is not None
        other = JobMetrics("ns1", "p2", log=logged.append)
        assert other.serve(first) is None
        assert "not served" in logged[-1]
    finally:
        m.close()


def test_consumer_lag_from_progress_end_offsets_and_watermarks():
    from streamotion_jobs.metrics import lag, progress_offsets

    progress = {"sources": [{"endOffset": {"raw": {"0": 10, "1": 7}}}]}
    assert progress_offsets(progress, "raw") == {0: 10, 1: 7}
    as_text = {"sources": [{"endOffset": json.dumps({"raw": {"0": 3}})}]}
    assert progress_offsets(as_text, "raw") == {0: 3}
    assert progress_offsets(progress, "other") is None and progress_offsets(None, "raw") is None
    # partition 2 is new (not in the position yet): everything from its low watermark is behind
    assert lag({0: (0, 15), 1: (0, 7), 2: (4, 9)}, {0: 10, 1: 7}) == 5 + 0 + 5


def test_job_metrics_port_and_host_defaults(monkeypatch):
    from streamotion_jobs.main import parse_args

    monkeypatch.delenv("STREAMOTION_METRICS_PORT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = parse_args([])
    assert (args.metrics_port, args.metrics_host) == (9108, "127.0.0.1")
    monkeypatch.setenv("STREAMOTION_METRICS_PORT", "9200")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod: Prometheus scrapes the pod IP
    args = parse_args([])
    assert (args.metrics_port, args.metrics_host) == (9200, "0.0.0.0")
    assert parse_args(["--metrics-port", "0"]).metrics_port == 0

"""The streaming job end to end: real Kafka, Spark local with the Kafka connector from Maven
Central, real PostgreSQL, the model service (Ray Serve, tiny model), bqemulator.

One SparkSession for the module; each test runs the job in a background thread (or, for the kill
test, as a child process) and stops it when the expected rows have arrived.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from streamotion.api.validate import parse
from streamotion.dev.procs import free_port
from streamotion.events import Event
from streamotion.naming import topic_names

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SOURCES = ("reddit-a", "masto-b", "reviews-c")
TEXTS = [
    "I love this so much, what a wonderful day #happy #sunday",
    "This is awful and I hate it &gt;:( so much @someone https://t.co/abc #angry",
    "I am so scared and worried about tomorrow :( #fear",
    "Wow I am really surprised by the news today",
    "So sad and lonely today, I want to cry",
    "Das ist wirklich sehr schön heute #berlin",
    "Thanks everyone, I am grateful and proud of the team #team #happy",
    "Gross, that was disgusting and wrong",
]


# ------------------------------------------------------------------------------------- helpers
def pipeline(name: str, sinks: list[dict], **processing) -> object:
    body = {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": name, "namespace": "test"},
        "spec": {
            "kafka": {"partitions": 2},
            "sources": [{"name": s, "type": "http", "http": {"tokenSecret": "t"}} for s in SOURCES],
            "processing": {
                "trigger": "500ms",
                "window": "1m",
                "watermark": "2m",
                "maxEventsPerTrigger": 200,
                **processing,
            },
            "sinks": sinks,
        },
    }
    return parse(body)


def pg_sink(schema: str) -> dict:
    return {
        "type": "postgres",
        "postgres": {"host": "127.0.0.1", "schema": schema, "credentialsSecret": "pg"},
    }


def make_events(n: int, start: int = 0, base: datetime = BASE, step_s: float = 1.0) -> list[Event]:
    out = []
    for i in range(start, start + n):
        out.append(
            Event(
                id=f"e{i}",
                source=SOURCES[i % len(SOURCES)],
                platform="http",
                channel=None if i % 5 == 0 else f"chan{i % 2}",
                author=None if i % 7 == 0 else f"author{i % 4}",
                text=TEXTS[i % len(TEXTS)],
                lang="de" if i % len(TEXTS) == 5 else ("en" if i % 3 else None),
                created_at=base + timedelta(seconds=(i - start) * step_s),
            )
        )
    return out


MALFORMED: list[bytes] = [
    b"not json at all",
    b'{"id": "x1"}',  # missing fields
    b"[1, 2, 3]",
    b"\xff\xfe\x00 bad utf-8",
    json.dumps(
        {"id": "x2", "source": "s", "platform": "myspace", "text": "hi", "created_at": "2026-03-01T12:00:00Z"}
    ).encode(),
    json.dumps(
        {"id": "x3", "source": "s", "platform": "http", "text": "", "created_at": "2026-03-01T12:00:00Z"}
    ).encode(),
    json.dumps(
        {"id": "x4", "source": "s", "platform": "http", "text": "hi", "created_at": "yesterday"}
    ).encode(),
    json.dumps(
        {
            "id": "x5",
            "source": "s",
            "platform": "http",
            "text": "hi",
            "created_at": "2026-03-01T12:00:00Z",
            "schema_version": 10,  # a contract version beyond the family this job reads
        }
    ).encode(),
]


def produce(kafka, topic: str, events: list[Event], malformed: list[bytes] = ()) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": kafka.bootstrap, "linger.ms": 5, "enable.idempotence": True})
    for e in events:
        producer.produce(topic, key=e.key.encode(), value=e.to_json())
    for payload in malformed:
        producer.produce(topic, key=b"bad", value=payload)
    assert producer.flush(30) == 0


def wait_for(predicate, timeout: float = 180, what: str = "condition", job=None):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last is True:
            return
        if job is not None and job.error is not None:
            raise job.error
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}; last: {last}")


def pg_count(postgres, schema: str, sql: str, *params):
    import psycopg

    try:
        with psycopg.connect(postgres.dsn, options=f"-c search_path={schema}", connect_timeout=3) as conn:
            return conn.execute(sql, params).fetchone()[0]
    except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
        return None


def pg_rows(postgres, schema: str, sql: str, *params) -> list[tuple]:
    import psycopg

    with psycopg.connect(postgres.dsn, options=f"-c search_path={schema}") as conn:
        return conn.execute(sql, params).fetchall()


class JobThread:
    """The job's run loop (restart from the checkpoint on failure) in a background thread."""

    def __init__(self, job):
        self.job = job
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.restarts = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.restarts = self.job.run(stop=self.stop_event, backoff_max_s=2)
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self):
        self.stop_event.set()
        self.thread.join(120)
        assert not self.thread.is_alive(), "the job did not stop"


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    s = session("streamotion-tests", master="local[2]")
    yield s
    s.stop()


@pytest.fixture
def topics(kafka, request):
    """Fresh raw and dead-letter topics for a pipeline named after the test."""
    name = "t" + uuid.uuid4().hex[:8]

    def create(p):
        names = topic_names(p)
        kafka.create_topic(names["raw"], partitions=2)
        kafka.create_topic(names["deadLetter"], partitions=1)
        return names

    create.name = name
    return create


def new_job(p, spark, kafka, model_url: str, checkpoint: Path, **overrides):
    from streamotion_jobs.config import JobConfig
    from streamotion_jobs.job import StreamingJob

    os.environ["STREAMOTION_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    os.environ["STREAMOTION_MODEL_URL"] = model_url
    cfg = JobConfig.from_pipeline(p, checkpoint=str(checkpoint), model_deadline_s=8.0, **overrides)
    return StreamingJob(cfg, spark, log=lambda m: print(f"[job] {m}", flush=True))


def read_topic(kafka, topic: str, expect: int, timeout: float = 60) -> list:
    from confluent_kafka import Consumer

    consumer = Consumer(
        {
            "bootstrap.servers": kafka.bootstrap,
            "group.id": "t-" + uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expect:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                out.append(msg)
        # anything beyond the expected number (a duplicate) shows up within a short extra poll
        end = time.monotonic() + 2
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


def committed(checkpoint: Path) -> bool:
    """The checkpoint has committed every batch it planned (offsets and commits logs agree)."""

    def ids(folder: str) -> set[int]:
        path = checkpoint / folder
        return {int(f.name) for f in path.iterdir() if f.name.isdigit()} if path.exists() else set()

    planned = ids("offsets")
    return bool(planned) and max(planned) in ids("commits")


AGG_CHECKS = {
    "emotion_window": (
        "SELECT window_start, source, channel, lang, emotion, events, round(mean_score::numeric, 9) "
        "FROM emotion_window ORDER BY 1, 2, 3, 4, 5",
        "SELECT window_start, source, coalesce(channel, ''), coalesce(lang, ''), emotion, count(*), "
        "round(avg(score)::numeric, 9) FROM events WHERE NOT late GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5",
    ),
    "hashtag_window": (
        "SELECT window_start, hashtag, events FROM hashtag_window ORDER BY 1, 2",
        "SELECT window_start, h, count(*) FROM events, unnest(hashtags) h WHERE NOT late GROUP BY 1, 2 ORDER BY 1, 2",
    ),
    "term_window": (
        "SELECT window_start, lang, term, events FROM term_window ORDER BY 1, 2, 3",
        "SELECT window_start, coalesce(lang, ''), t, count(*) FROM events, unnest(terms) t WHERE NOT late "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
    ),
    "author_activity": (
        "SELECT window_start, author, events, round(mean_text_length::numeric, 6) FROM author_activity ORDER BY 1, 2",
        "SELECT window_start, author, count(*), round(avg(text_length)::numeric, 6) FROM events "
        "WHERE NOT late AND author IS NOT NULL GROUP BY 1, 2 ORDER BY 1, 2",
    ),
}


def assert_aggregates_match(postgres, schema: str) -> None:
    for table, (stored, expected) in AGG_CHECKS.items():
        got = pg_rows(postgres, schema, stored)
        want = pg_rows(postgres, schema, expected)
        assert got == want, f"{table} differs from a GROUP BY over the event rows"
        assert got, f"{table} is empty"


def assert_events_exact(postgres, schema: str, expected_ids: set[str]) -> None:
    rows = pg_rows(postgres, schema, "SELECT event_id FROM events")
    ids = [r[0] for r in rows]
    assert len(ids) == len(set(ids))
    missing = expected_ids - set(ids)
    extra = set(ids) - expected_ids
    assert not missing, f"{len(missing)} events missing, e.g. {sorted(missing)[:5]}"
    assert not extra, f"unexpected events {sorted(extra)[:5]}"
    nulls = pg_count(
        postgres, schema, "SELECT count(*) FROM events WHERE emotion IS NULL OR sentiment IS NULL"
    )
    assert nulls == 0


# ------------------------------------------------------------------------------------- tests
def test_valid_and_malformed_events_give_rows_dead_letters_and_exact_aggregates(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(240)
    produce(kafka, names["raw"], events, MALFORMED)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: (
                (
                    pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(events)
                    and pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters") == len(MALFORMED)
                )
                or (
                    pg_count(postgres, pg_schema, "SELECT count(*) FROM events"),
                    pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters"),
                )
            ),
            what="all events and dead letters",
            job=jt,
        )
    assert_events_exact(postgres, pg_schema, {e.key for e in events})
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters") == len(MALFORMED)
    assert_aggregates_match(postgres, pg_schema)

    # the enriched row keeps the original text and has the cleaned one beside it
    text, clean, tags, terms, emotion, scores, sentiment = pg_rows(
        postgres,
        pg_schema,
        "SELECT text, clean_text, hashtags, terms, emotion, scores, sentiment FROM events WHERE id = 'e1'",
    )[0]
    assert text == TEXTS[1]
    assert ">:(" in clean and "&gt;" not in clean  # entities unescaped, emoticons kept
    assert "https://" not in clean and "@someone" not in clean and "  " not in clean
    assert tags == ["angry"]
    assert "awful" in terms and "this" not in terms
    assert emotion in scores and sentiment in ("positive", "negative", "neutral")
    german_terms = pg_rows(postgres, pg_schema, "SELECT terms FROM events WHERE id = 'e5'")[0][0]
    assert "schön" in german_terms and "ist" not in german_terms

    # dead letters: reason, original payload and topic/partition/offset, in the table and on the topic
    reasons = dict(pg_rows(postgres, pg_schema, "SELECT payload, reason FROM dead_letters"))
    assert reasons["not json at all"].startswith("not JSON")
    assert "created_at" in reasons[MALFORMED[6].decode()]
    assert "platform" in reasons[MALFORMED[4].decode()]
    assert "schema_version 10 is not readable" in reasons[MALFORMED[7].decode()]
    letters = read_topic(kafka, names["deadLetter"], len(MALFORMED))
    keys = {m.key() for m in letters}
    assert len(keys) == len(MALFORMED)
    doc = json.loads(letters[0].value())
    assert doc["stage"] == "job" and doc["topic"] == names["raw"] and doc["offset"] >= 0 and doc["reason"]

    # the daily views count every event row
    assert pg_count(postgres, pg_schema, "SELECT sum(events) FROM v_emotion_daily") == len(events)
    shares = pg_rows(
        postgres, pg_schema, "SELECT day, source, sum(share) FROM v_sentiment_daily GROUP BY 1, 2"
    )
    assert shares and all(abs(float(s) - 1.0) < 1e-9 for _, _, s in shares)
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM batches") >= 1


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """/metrics as {(sample name, labels): value}."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url, timeout=10).text
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_driver_metrics_count_rows_dead_letters_latency_sink_writes_and_lag(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    from streamotion_jobs.config import JobConfig
    from streamotion_jobs.job import StreamingJob
    from streamotion_jobs.metrics import JobMetrics

    p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=50)
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    os.environ["STREAMOTION_KAFKA_BOOTSTRAP"] = kafka.bootstrap
    os.environ["STREAMOTION_MODEL_URL"] = model_server.url
    events = make_events(90)
    produce(kafka, names["raw"], events, MALFORMED[:5])
    metrics = JobMetrics(p.namespace, p.name)
    port = metrics.serve(free_port(), "127.0.0.1")
    assert port is not None
    url = f"http://127.0.0.1:{port}/metrics"
    cfg = JobConfig.from_pipeline(p, checkpoint=str(tmp_path / "ckpt"), model_deadline_s=8.0)
    job = StreamingJob(
        cfg, spark, log=lambda m: print(f"[job] {m}", flush=True), metrics=metrics, lag_interval_s=0.5
    )
    ours = {"namespace": "test", "pipeline": p.name}

    def value(name: str, **labels) -> float | None:
        return scrape(url).get((name, frozenset({**ours, **labels}.items())))

    try:
        with JobThread(job) as jt:
            wait_for(
                lambda: (
                    (
                        pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(events)
                        and pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters") == 5
                    )
                    or "rows not written yet"
                ),
                what="all events and dead letters",
                job=jt,
            )
            # the lag thread sees the last batch's end offsets equal to the topic's end offsets
            wait_for(lambda: value("streamotion_job_consumer_lag") == 0 or scrape(url), what="lag 0", job=jt)
            got = scrape(url)
        rows = pg_count(postgres, pg_schema, "SELECT count(*) FROM events")
        dead = pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters")
        batches = pg_count(postgres, pg_schema, "SELECT count(*) FROM batches")

        def at(name: str, **labels) -> float | None:
            return got.get((name, frozenset({**ours, **labels}.items())))

        assert at("streamotion_job_events_total") == rows == len(events)
        assert at("streamotion_job_dead_letters_total") == dead == 5
        assert at("streamotion_job_end_to_end_latency_seconds_count") == rows
        assert at("streamotion_job_end_to_end_latency_seconds_sum") > 0
        assert at("streamotion_job_end_to_end_latency_seconds_bucket", le="+Inf") == rows
        # every micro-batch is one timed write to the sink (batches > 1: maxEventsPerTrigger=50)
        assert batches > 1
        assert at("streamotion_job_sink_write_seconds_count", sink="postgres") == job.batches_written
        assert job.batches_written >= batches
        assert at("streamotion_job_sink_errors_total", sink="postgres") == 0
        assert at("streamotion_job_consumer_lag") == 0
        # every series of the job carries the labels the dashboards select on
        job_samples = [k for k in got if k[0].startswith("streamotion_job_")]
        assert job_samples and all(ours.items() <= dict(labels).items() for _, labels in job_samples)
    finally:
        metrics.close()


def test_late_events_beyond_the_watermark_are_stored_but_do_not_change_final_windows(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """Documented policy: window 1m, watermark 2m. After events up to 12:05 the watermark is 12:03;
    an event for window [12:01, 12:02) is late (stored, late = true, not aggregated); one for
    [12:03, 12:04) is still on time and counts."""
    p = pipeline(topics.name, [pg_sink(pg_schema)], window="1m", watermark="2m")
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    on_time = make_events(31, step_s=10)  # 12:00:00 .. 12:05:00
    produce(kafka, names["raw"], on_time)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(on_time),
            what="the on-time events",
            job=jt,
        )
        late = make_events(1, start=1000, base=BASE + timedelta(minutes=1, seconds=30))
        still_on_time = make_events(1, start=2000, base=BASE + timedelta(minutes=3, seconds=30))
        produce(kafka, names["raw"], late + still_on_time)
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(on_time) + 2,
            what="the late events",
            job=jt,
        )
    watermark = pg_rows(postgres, pg_schema, "SELECT max(watermark) FROM batches")[0][0]
    assert watermark >= BASE + timedelta(minutes=3)
    flags = dict(
        pg_rows(postgres, pg_schema, "SELECT event_id, late FROM events WHERE id IN ('e1000', 'e2000')")
    )
    assert flags == {late[0].key: True, still_on_time[0].key: False}
    window_12_01 = BASE + timedelta(minutes=1)
    counted = pg_count(
        postgres, pg_schema, "SELECT sum(events) FROM emotion_window WHERE window_start = %s", window_12_01
    )
    assert counted == pg_count(
        postgres, pg_schema, "SELECT count(*) FROM events WHERE window_start = %s AND NOT late", window_12_01
    )
    assert counted == 6  # the on-time events of 12:01, not the late one
    assert_aggregates_match(postgres, pg_schema)
    # the daily views count every row, late ones included
    assert pg_count(postgres, pg_schema, "SELECT sum(events) FROM v_emotion_daily") == len(on_time) + 2


def test_postgres_outage_neither_loses_nor_duplicates(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    first, second = make_events(100), make_events(100, start=100)
    produce(kafka, names["raw"], first)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first),
            what="the first events",
            job=jt,
        )
        postgres.stop()
        try:
            produce(kafka, names["raw"], second)
            restarts_before = job.batches_written
            time.sleep(6)  # the job fails its micro-batch(es) and retries from the checkpoint meanwhile
            assert job.batches_written == restarts_before  # nothing could be written
        finally:
            postgres.start()
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first) + len(second),
            what="every event after the outage",
            job=jt,
        )
    assert_events_exact(postgres, pg_schema, {e.key for e in first + second})
    assert_aggregates_match(postgres, pg_schema)


@pytest.fixture
def restartable_model(tiny_models, tmp_path):
    """Our own model service for the outage test, on a port a restart can always bind again."""
    from streamotion_serving.server import ServeProcess

    server = ServeProcess(
        {"model": str(tiny_models["ekman"]), "taxonomy": "ekman", "max_batch_size": 32, "batch_wait_ms": 10},
        port=free_port(),  # outside the ephemeral range: a restart can bind it again
        num_cpus=1,
        log_path=tmp_path / "serve.log",
    )
    server.start()
    yield server
    server.stop()


def test_model_outage_fails_the_batch_and_retries_never_a_row_without_emotion(
    spark, kafka, restartable_model, postgres, pg_schema, topics, tmp_path
):
    model_server = restartable_model
    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    first, second = make_events(60), make_events(60, start=60)
    produce(kafka, names["raw"], first)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first),
            what="the first events",
            job=jt,
        )
        with model_server.down():
            produce(kafka, names["raw"], second)
            time.sleep(10)  # past the client's retry deadline: the micro-batch fails, then retries
            assert pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first)
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first) + len(second),
            what="every event after the model came back",
            job=jt,
        )
    assert jt.restarts >= 1
    assert_events_exact(postgres, pg_schema, {e.key for e in first + second})
    assert_aggregates_match(postgres, pg_schema)


def test_killed_job_restarts_from_checkpoint_without_duplicates_or_gaps(
    kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    import yaml

    from streamotion.dev.procs import Process

    p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=40)
    names = topics(p)
    spec_file = tmp_path / "pipeline.yaml"
    spec_file.write_text(yaml.safe_dump(p.model_dump(mode="json", by_alias=True, exclude_none=True)))
    env = {
        **os.environ,
        "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "STREAMOTION_MODEL_URL": model_server.url,
        "STREAMOTION_PG_DSN": postgres.dsn,
    }
    argv = [
        sys.executable,
        "-m",
        "streamotion_jobs.main",
        "--pipeline",
        str(spec_file),
        "--master",
        "local[1]",
        "--checkpoint",
        str(tmp_path / "ckpt"),
    ]
    first, second = make_events(300), make_events(60, start=300)
    produce(kafka, names["raw"], first)
    proc = Process.start("job", argv, log_path=tmp_path / "job1.log", env=env)
    try:
        wait_for(
            lambda: (
                (pg_count(postgres, pg_schema, "SELECT count(*) FROM events") or 0) >= 40
                or (proc.check_alive(), "no rows yet")
            ),
            timeout=300,
            what="the first micro-batches",
        )
    finally:
        proc.kill()  # SIGKILL, mid-stream
    written = pg_count(postgres, pg_schema, "SELECT count(*) FROM events")
    assert written < len(first), "the job finished before it could be killed mid-stream"
    produce(kafka, names["raw"], second)
    proc = Process.start("job", argv, log_path=tmp_path / "job2.log", env=env)
    try:
        wait_for(
            lambda: (
                pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(first) + len(second)
                or (proc.check_alive(), pg_count(postgres, pg_schema, "SELECT count(*) FROM events"))
            ),
            timeout=400,
            what="every event after the restart",
        )
    finally:
        proc.stop(timeout=30)
    assert_events_exact(postgres, pg_schema, {e.key for e in first + second})
    assert_aggregates_match(postgres, pg_schema)
    assert pg_count(postgres, pg_schema, "SELECT count(DISTINCT query_id) FROM batches") == 1
    assert pg_count(postgres, pg_schema, "SELECT sum(events) FROM batches") == len(first) + len(second)


def test_bigquery_sink_same_counts_and_no_duplicates_after_restart_and_replay(
    spark, kafka, model_server, bigquery_emulator, topics, tmp_path, monkeypatch
):
    dataset = "sp_" + uuid.uuid4().hex[:8]
    sink = {"type": "bigquery", "bigquery": {"project": bigquery_emulator.project, "dataset": dataset}}
    p = pipeline(topics.name, [sink])
    names = topics(p)
    monkeypatch.setenv("BIGQUERY_EMULATOR_HOST", bigquery_emulator.host)
    client = bigquery_emulator.client()
    ds = f"{bigquery_emulator.project}.{dataset}"

    def bq(sql: str):
        try:
            return list(client.query(sql.format(ds=ds)).result())
        except Exception as exc:  # tables not created yet
            return [("error", str(exc)[:100])]

    def counts():
        rows = bq("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{ds}.events`")
        dead = bq("SELECT COUNT(*) AS n FROM `{ds}.dead_letters`")
        return (tuple(rows[0]), tuple(dead[0]))

    first, second = make_events(120), make_events(60, start=120)
    produce(kafka, names["raw"], first, MALFORMED[:3])
    checkpoint = tmp_path / "ckpt"
    job = new_job(p, spark, kafka, model_server.url, checkpoint)
    with JobThread(job) as jt:
        wait_for(lambda: counts() == ((120, 120), (3,)) or counts(), what="BigQuery rows", job=jt)
    # restart from the checkpoint with more events; then force a replay of the last batch with its
    # ledger row removed: the MERGE on event id must keep every event exactly once
    produce(kafka, names["raw"], second)
    job = new_job(p, spark, kafka, model_server.url, checkpoint)
    with JobThread(job) as jt:
        wait_for(
            lambda: counts() == ((180, 180), (3,)) or counts(), what="BigQuery rows after restart", job=jt
        )
        wait_for(lambda: committed(checkpoint), what="the checkpoint's commit of the last batch", job=jt)
    last = max(int(f.name) for f in (checkpoint / "commits").iterdir() if f.name.isdigit())
    (checkpoint / "commits" / str(last)).unlink()
    (checkpoint / "commits" / f".{last}.crc").unlink(missing_ok=True)  # Hadoop's checksum beside it
    client.query(f"DELETE FROM `{ds}.batches` WHERE batch_id = {last}").result()
    job = new_job(p, spark, kafka, model_server.url, checkpoint)
    with JobThread(job) as jt:
        wait_for(
            lambda: bq("SELECT COUNT(*) FROM `{ds}.batches` WHERE batch_id = " + str(last))[0][0] == 1,
            what="the replayed batch",
            job=jt,
        )
    assert counts() == ((180, 180), (3,))
    nulls = bq("SELECT COUNT(*) FROM `{ds}.events` WHERE emotion IS NULL")[0][0]
    assert nulls == 0
    stored = bq("SELECT SUM(events) FROM `{ds}.emotion_window`")[0][0]
    assert stored == bq("SELECT COUNT(*) FROM `{ds}.events` WHERE NOT late")[0][0]
    per_dim = bq(
        "SELECT window_start, source, channel, lang, emotion, events FROM `{ds}.emotion_window` "
        "ORDER BY 1, 2, 3, 4, 5"
    )
    group_by = bq(
        "SELECT window_start, source, IFNULL(channel, ''), IFNULL(lang, ''), emotion, COUNT(*) "
        "FROM `{ds}.events` WHERE NOT late GROUP BY 1, 2, 3, 4, 5 ORDER BY 1, 2, 3, 4, 5"
    )
    assert [tuple(r) for r in per_dim] == [tuple(r) for r in group_by]
    table = client.get_table(f"{ds}.events")
    assert table.time_partitioning.field == "created_at"
    assert table.clustering_fields == ["source", "emotion"]


def test_backfill_rescores_a_time_range_tagged_with_the_model_version(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    from streamotion_jobs.backfill import run_backfill

    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(90, step_s=60)  # 12:00 .. 13:29
    produce(kafka, names["raw"], events)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == len(events),
            what="the events",
            job=jt,
        )
    start, end = BASE + timedelta(minutes=30), BASE + timedelta(minutes=60)
    result = run_backfill(p, start, end, model=model_server.url, spark=spark)
    assert result.events == 30 and result.written == 30
    rows = pg_rows(
        postgres,
        pg_schema,
        "SELECT count(*), min(created_at), max(created_at), count(DISTINCT model_version) FROM event_scores",
    )[0]
    assert rows[0] == 30 and rows[1] >= start and rows[2] < end and rows[3] == 1
    side_by_side = pg_count(postgres, pg_schema, "SELECT count(*) FROM v_model_comparison")
    assert side_by_side == 30
    # the same model on the same texts gives the same emotion
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM v_model_comparison WHERE same_emotion") == 30
    # from Kafka (events no sink has) too, and running again replaces rather than duplicates
    # published now, months after they were created: the Kafka read must reach that far past --to
    lag = (datetime.now(UTC) - end).total_seconds() + 3600
    again = run_backfill(
        p, start, end, model=model_server.url, source="kafka", spark=spark, kafka_after_s=lag
    )
    assert again.events == 30
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM event_scores") == 30


# ------------------------------------------------------------------------------ messy and hostile input
def _rows(postgres, schema: str) -> int:
    events = pg_count(postgres, schema, "SELECT count(*) FROM events") or 0
    return events + (pg_count(postgres, schema, "SELECT count(*) FROM dead_letters") or 0)


def test_future_dated_event_is_a_dead_letter_and_aggregates_keep_moving_across_restarts(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """One post dated 2099 (Bluesky and HTTP senders set created_at) used to move the watermark to
    2099: every later event late, every window aggregate frozen, across restarts."""
    p = pipeline(topics.name, [pg_sink(pg_schema)], window="1m", watermark="2m")
    assert p.spec.processing.max_future_skew == "10m"  # the default bound
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    first = make_events(30, step_s=10)  # 12:00:00 .. 12:04:50
    future = make_events(1, start=5000, base=datetime(2099, 1, 1, tzinfo=UTC))
    second = make_events(30, start=100, base=BASE + timedelta(minutes=10), step_s=10)
    third = make_events(30, start=200, base=BASE + timedelta(minutes=20), step_s=10)
    produce(kafka, names["raw"], first)
    checkpoint = tmp_path / "ckpt"
    with JobThread(new_job(p, spark, kafka, model_server.url, checkpoint)) as jt:
        wait_for(lambda: _rows(postgres, pg_schema) == 30 or _rows(postgres, pg_schema), what="first", job=jt)
        produce(kafka, names["raw"], future)
        wait_for(lambda: _rows(postgres, pg_schema) == 31 or _rows(postgres, pg_schema), what="2099", job=jt)
        produce(kafka, names["raw"], second)
        wait_for(
            lambda: _rows(postgres, pg_schema) == 61 or _rows(postgres, pg_schema), what="second", job=jt
        )
    produce(kafka, names["raw"], third)
    with JobThread(new_job(p, spark, kafka, model_server.url, checkpoint)) as jt:  # a restart
        wait_for(lambda: _rows(postgres, pg_schema) == 91 or _rows(postgres, pg_schema), what="third", job=jt)
    (reason,) = [r for (r,) in pg_rows(postgres, pg_schema, "SELECT reason FROM dead_letters")]
    assert "created_at 2099-01-01" in reason and "processing.maxFutureSkew (600s)" in reason
    assert_events_exact(postgres, pg_schema, {e.key for e in first + second + third})
    assert pg_count(postgres, pg_schema, "SELECT count(*) FROM events WHERE late") == 0
    for minutes in (10, 20):  # the windows after the 2099 post keep being aggregated
        start, end = BASE + timedelta(minutes=minutes), BASE + timedelta(minutes=minutes + 5)
        counted = pg_count(
            postgres,
            pg_schema,
            "SELECT sum(events) FROM emotion_window WHERE window_start >= %s AND window_start < %s",
            start,
            end,
        )
        assert counted == 30
    assert_aggregates_match(postgres, pg_schema)
    watermark = pg_rows(postgres, pg_schema, "SELECT max(watermark) FROM batches")[0][0]
    assert BASE + timedelta(minutes=20) < watermark < BASE + timedelta(minutes=30)


def test_a_text_the_model_refuses_is_a_dead_letter_and_the_rest_of_its_batch_lands(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """The session's model service refuses texts over MODEL_MAX_TEXT_CHARS with a 422 (serving's
    max_text_chars): that used to fail the micro-batch, replayed from the same offsets forever."""
    from tests.fixtures.model import MODEL_MAX_TEXT_CHARS

    p = pipeline(topics.name, [pg_sink(pg_schema)], maxEventsPerTrigger=1000)
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(1000)
    poison = events[417].model_copy(update={"text": "so sad and long " * (MODEL_MAX_TEXT_CHARS // 16 + 10)})
    events[417] = poison
    produce(kafka, names["raw"], events)
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: (
                (
                    pg_count(postgres, pg_schema, "SELECT count(*) FROM events") == 999
                    and pg_count(postgres, pg_schema, "SELECT count(*) FROM dead_letters") == 1
                )
                or _rows(postgres, pg_schema)
            ),
            timeout=240,
            what="999 rows and 1 dead letter",
            job=jt,
        )
        later = make_events(10, start=2000)
        produce(kafka, names["raw"], later)  # the job keeps running
        wait_for(
            lambda: _rows(postgres, pg_schema) == 1010 or _rows(postgres, pg_schema), what="later", job=jt
        )
    assert jt.restarts == 0 and jt.error is None
    assert_events_exact(postgres, pg_schema, {e.key for e in events + later} - {poison.key})
    ((reason, payload),) = pg_rows(postgres, pg_schema, "SELECT reason, payload FROM dead_letters")
    assert reason.startswith("model service refused the text (422):")
    assert f"over this service's limit of {MODEL_MAX_TEXT_CHARS}" in reason
    assert json.loads(payload)["id"] == poison.id  # the original payload, to re-publish once fixed
    (letter,) = read_topic(kafka, names["deadLetter"], 1)
    assert json.loads(letter.value())["reason"] == reason
    assert pg_count(postgres, pg_schema, "SELECT sum(dead_letters) FROM batches") == 1


def test_newer_producers_events_land_and_empty_or_unreadable_ones_say_why(
    spark, kafka, model_server, postgres, pg_schema, topics, tmp_path
):
    """A producer one contract version ahead (new fields) used to send 100% of its events to the
    dead letters; a text with nothing left after cleaning went to the model."""
    from streamotion_jobs.transform import EMPTY_TEXT_REASON

    from streamotion.events import MAX_READ_VERSION

    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    current = make_events(20)
    newer = [
        {**json.loads(e.to_json()), "schema_version": 2, "reply_to": "http:e1", "media": [{"kind": "image"}]}
        for e in make_events(20, start=100)
    ]
    emoticons = Event(
        id="emo", source=SOURCES[0], platform="http", text="I <3 you so much >.< really 😂", created_at=BASE
    )
    empty = [
        Event(id=f"empty{i}", source=SOURCES[0], platform="http", text=t, created_at=BASE)
        for i, t in enumerate([" \n\t ", "https://t.co/abc @someone"])
    ]
    beyond = {**newer[0], "id": "beyond", "schema_version": MAX_READ_VERSION + 1}
    produce(
        kafka,
        names["raw"],
        [*current, emoticons, *empty],
        [json.dumps(d).encode() for d in [*newer, beyond]],
    )
    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(lambda: _rows(postgres, pg_schema) == 44 or _rows(postgres, pg_schema), what="all", job=jt)
    assert_events_exact(
        postgres,
        pg_schema,
        {e.key for e in [*current, emoticons]} | {f"{d['source']}:http:{d['id']}" for d in newer},
    )
    reasons = dict(pg_rows(postgres, pg_schema, "SELECT reason, count(*) FROM dead_letters GROUP BY 1"))
    assert reasons.pop(EMPTY_TEXT_REASON) == 2
    ((version_reason, n),) = reasons.items()
    assert n == 1 and f"schema_version {MAX_READ_VERSION + 1} is not readable by this job" in version_reason
    # the fields the job does not know were dropped and counted (2 per newer event)
    labels = {"namespace": p.namespace, "pipeline": p.name}
    assert job.metrics.registry.get_sample_value("streamotion_job_unknown_fields_total", labels) == 40
    (clean,) = pg_rows(postgres, pg_schema, "SELECT clean_text FROM events WHERE id = 'emo'")[0]
    assert clean == "I <3 you so much >.< really 😂"  # emoticons and emoji reach the model


@pytest.fixture
def multi_label_model(tiny_models, tmp_path):
    """The tiny 28-label multi-label model served as Ekman, with Ekman thresholds under which only
    joy is ever chosen (its scores sit near 0.5 for every label; anger is the arg-max)."""
    import shutil

    from streamotion_serving.model import META_FILE
    from streamotion_serving.server import ServeProcess

    from streamotion.labels import EKMAN

    model = tmp_path / "multi"
    shutil.copytree(tiny_models["original-multi"], model)
    meta_file = model / META_FILE
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    meta["thresholds_by_taxonomy"] = {"ekman": {label: 0.3 if label == "joy" else 0.99 for label in EKMAN}}
    meta_file.write_text(json.dumps(meta))
    server = ServeProcess(
        {"model": str(model), "taxonomy": "ekman", "num_replicas": 1, "max_batch_size": 32},
        num_cpus=1,
        log_path=tmp_path / "serve.log",
    )
    server.start()
    yield server
    server.stop()


def test_multi_label_results_store_the_served_label_set_and_sentiment_from_it(
    spark, kafka, multi_label_model, postgres, pg_schema, topics, tmp_path
):
    """The stored emotion used to be the arg-max (anger here) and the thresholded labels were
    dropped; summing four negative sigmoid scores against one positive made every text negative."""
    import httpx

    from streamotion.labels import sentiment, sentiment_index

    p = pipeline(topics.name, [pg_sink(pg_schema)])
    names = topics(p)
    os.environ["STREAMOTION_PG_DSN"] = postgres.dsn
    events = make_events(24)
    produce(kafka, names["raw"], events)
    job = new_job(p, spark, kafka, multi_label_model.url, tmp_path / "ckpt")
    with JobThread(job) as jt:
        wait_for(
            lambda: _rows(postgres, pg_schema) == 24 or _rows(postgres, pg_schema), what="events", job=jt
        )
    rows = pg_rows(
        postgres,
        pg_schema,
        "SELECT clean_text, emotion, score, labels, sentiment, sentiment_index, scores FROM events",
    )
    texts = sorted({r[0] for r in rows})
    answer = httpx.post(f"{multi_label_model.url}/v1/classify", json={"texts": texts}, timeout=60).json()
    served = dict(zip(texts, answer["results"], strict=True))
    for clean, emotion, score, labels, sent, index, scores in rows:
        result = served[clean]
        assert labels == result["labels"] == ["joy"] and emotion == "joy"
        assert max(scores, key=scores.get) != "joy"  # not the arg-max
        assert score == pytest.approx(scores["joy"])
        assert index == pytest.approx(sentiment_index(scores, multi_label=True))
        assert sent == sentiment(labels, index, p.spec.processing.sentiment_threshold) == "positive"
    assert_aggregates_match(postgres, pg_schema)

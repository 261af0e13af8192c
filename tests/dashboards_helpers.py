"""Realistic sink contents for the dashboard and report tests, written by the job's own code.

GoEmotions comments (../shared/data/goemotions) become events of three sources (Reddit
subreddits, Mastodon hashtags in several languages, an HTTP app-review source without channel or
language), spread over the last three hours; they go through the job's parser
(``transform.parse_frame``: cleaning, hashtags, terms), get model results shaped like the model
service's answers (the comment's gold Ekman label scored highest) through ``transform.enrich``, and
are written micro-batch by micro-batch by the job's ``PostgresSink`` (migrations included), with a
few invalid payloads that become dead letters.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd

from streamotion.events import Event
from streamotion.labels import EKMAN

GOEMOTIONS = Path(__file__).resolve().parents[2] / "shared" / "data" / "goemotions" / "ekman" / "dev.tsv"

SOURCES = (
    # name, platform, channels, languages
    ("reddit", "reddit", ("worldnews", "AskReddit", "movies"), ("en",)),
    ("masto", "mastodon", ("#climate", "#football"), ("en", "fr", "de")),
    ("reviews", "http", (None,), (None,)),
)
HASHTAGS = ("#climate", "#football", "#news", "#monday", "#music")
WINDOW_S = 60.0
WATERMARK_S = 600.0


def comments(n: int) -> list[tuple[str, str]]:
    """(text, Ekman label) of the first ``n`` dev comments."""
    labels = (
        EKMAN
        if not (GOEMOTIONS.parent / "labels.txt").exists()
        else tuple((GOEMOTIONS.parent / "labels.txt").read_text().split())
    )
    out = []
    with GOEMOTIONS.open(encoding="utf-8") as f:
        for line in f:
            text, idx, _ = line.rstrip("\n").split("\t")
            out.append((text, labels[int(idx.split(",")[0])]))
            if len(out) == n:
                break
    return out


def events(n: int = 600, hours: float = 3.0, now: datetime | None = None) -> list[Event]:
    rng = random.Random(7)
    now = now or datetime.now(UTC)
    start = now - timedelta(hours=hours)
    out = []
    for i, (text, _label) in enumerate(comments(n)):
        name, platform, channels, langs = SOURCES[i % len(SOURCES)]
        channel = channels[(i // len(SOURCES)) % len(channels)]
        if rng.random() < 0.4:
            text = f"{text} {rng.choice(HASHTAGS)}"
        out.append(
            Event(
                id=f"c{i}",
                source=name,
                platform=platform,
                channel=channel,
                author=f"{i % 37:032x}",
                text=text,
                lang=langs[(i // len(SOURCES)) % len(langs)],
                created_at=start + timedelta(seconds=i * hours * 3600 / n),
                url=f"https://example.org/{name}/{i}" if platform != "http" else None,
                ingested_at=start + timedelta(seconds=i * hours * 3600 / n + 2),
            )
        )
    return out


def model_results(labels: list[str]) -> list[dict]:
    """Answers shaped like the model service's: the label, its score, every Ekman score."""
    out = []
    for i, label in enumerate(labels):
        top = 0.45 + (i * 37 % 50) / 100  # 0.45 .. 0.94
        rest = (1 - top) / (len(EKMAN) - 1)
        scores = {e: (top if e == label else rest) for e in EKMAN}
        out.append({"label": label, "score": top, "scores": scores, "model_version": "test-ekman-1"})
    return out


def write_sink(dsn: str, schema: str, n: int = 600, batches: int = 6, now: datetime | None = None) -> dict:
    """Write ``n`` events (+ dead letters) with the job's PostgresSink; returns counts for assertions."""
    from streamotion_jobs.sinks.postgres import PostgresSink

    return write_batches(PostgresSink(dsn, schema=schema, log=lambda *_: None), n, batches, now)


def write_batches(sink, n: int = 600, batches: int = 6, now: datetime | None = None) -> dict:
    """Write ``n`` events (+ dead letters) micro-batch by micro-batch with one of the job's sinks."""
    from streamotion_jobs.sinks import Batch
    from streamotion_jobs.transform import enrich, parse_frame

    evs = events(n, now=now)
    gold = dict(zip((e.id for e in evs), (label for _, label in comments(n)), strict=True))
    topic = "streamotion.test.demo.raw"
    values = [e.to_json() for e in evs]
    values[5:5] = [b"not json", b'{"id": "x"}', b"\xff\xfe"]  # dead letters, in offset order
    raw = pd.DataFrame(
        {
            "key": [None] * len(values),
            "value": values,
            "topic": topic,
            "partition": 0,
            "offset": range(len(values)),
        }
    )
    sink.open()
    per = len(raw) // batches + 1
    written = dead = 0
    try:
        for b in range(batches):
            parsed = parse_frame(raw.iloc[b * per : (b + 1) * per].reset_index(drop=True))
            bad = parsed[parsed["error"].notna()]
            ok = parsed[parsed["error"].isna()].reset_index(drop=True)
            classified = enrich(ok, model_results([gold[i] for i in ok["id"]]), threshold=0.15)
            sink.write(
                Batch(
                    query_id="dashboards-test",
                    batch_id=b,
                    events=classified,
                    dead_letters=bad[["kafka_topic", "kafka_partition", "kafka_offset", "error", "payload"]],
                    window_s=WINDOW_S,
                    watermark_s=WATERMARK_S,
                )
            )
            written += len(classified)
            dead += len(bad)
    finally:
        sink.close()
    return {"events": written, "dead_letters": dead, "sources": sorted({s[0] for s in SOURCES})}


MALFORMED = (b"not json", b'{"id": "x"}', b"\xff\xfe")


def run_pipeline(
    kafka,
    model_url: str,
    sink: dict,
    landed: Callable[[], tuple[int, int]],
    workdir: Path,
    n: int = 600,
    now: datetime | None = None,
    env: dict[str, str] | None = None,
) -> dict:
    """The same events end to end: produced to a real Kafka topic (with malformed records), read,
    parsed and classified by the streaming job on Spark through the model service, and written by
    its ``sink`` (a StreamPipeline sink). Returns counts for assertions once ``landed()`` (events,
    dead letters in the sink) says every row is there."""
    import os
    import threading
    import time
    import uuid

    from confluent_kafka import Producer
    from streamotion_jobs.config import JobConfig
    from streamotion_jobs.job import StreamingJob
    from streamotion_jobs.spark import session

    from streamotion.api.validate import parse
    from streamotion.naming import topic_names

    p = parse(
        {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": f"dash{uuid.uuid4().hex[:6]}", "namespace": "test"},
            "spec": {
                "sources": [{"name": s[0], "type": "http", "http": {"tokenSecret": "t"}} for s in SOURCES],
                # one micro-batch for everything, so that no event of this three-hour spread is late
                "processing": {
                    "trigger": "1s",
                    "window": "1m",
                    "watermark": "10m",
                    "maxEventsPerTrigger": 5000,
                },
                "sinks": [sink],
            },
        }
    )
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    kafka.create_topic(names["deadLetter"], partitions=1)
    evs = events(n, now=now)
    producer = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True})
    for e in evs:
        producer.produce(names["raw"], key=e.key.encode(), value=e.to_json())
    for payload in MALFORMED:
        producer.produce(names["raw"], key=b"bad", value=payload)
    assert producer.flush(30) == 0

    os.environ.update(
        STREAMOTION_KAFKA_BOOTSTRAP=kafka.bootstrap, STREAMOTION_MODEL_URL=model_url, **(env or {})
    )
    cfg = JobConfig.from_pipeline(p, checkpoint=str(workdir / "checkpoint"))
    spark = session("streamotion-dashboards-test", master="local[2]")
    job = StreamingJob(cfg, spark, log=lambda m: print(f"[job] {m}", flush=True))
    stop, errors = threading.Event(), []

    def run() -> None:
        try:
            job.run(stop=stop, backoff_max_s=2)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 300
        while (got := landed()) != (n, len(MALFORMED)):
            assert not errors, errors
            assert time.monotonic() < deadline, f"only {got} of {(n, len(MALFORMED))} rows landed"
            time.sleep(0.5)
    finally:
        stop.set()
        thread.join(120)
        spark.stop()
    return {"events": n, "dead_letters": len(MALFORMED), "sources": sorted({s[0] for s in SOURCES})}


def run_pipeline_postgres(kafka, postgres, model_url: str, schema: str, workdir: Path, **kw) -> dict:
    """:func:`run_pipeline` into a PostgreSQL sink (``schema``)."""
    import psycopg

    def landed() -> tuple[int, int]:
        try:
            with psycopg.connect(postgres.dsn, options=f"-c search_path={schema}") as conn:
                return conn.execute(
                    "SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM dead_letters)"
                ).fetchone()
        except psycopg.errors.UndefinedTable:
            return (0, 0)

    sink = {
        "type": "postgres",
        "postgres": {"host": "127.0.0.1", "schema": schema, "credentialsSecret": "pg"},
    }
    return run_pipeline(
        kafka, model_url, sink, landed, workdir, env={"STREAMOTION_PG_DSN": postgres.dsn}, **kw
    )


def run_pipeline_bigquery(kafka, emulator, model_url: str, dataset: str, workdir: Path, **kw) -> dict:
    """:func:`run_pipeline` into a BigQuery sink (``dataset`` on the bqemulator)."""
    client = emulator.client()
    ds = f"{emulator.project}.{dataset}"

    def landed() -> tuple[int, int]:
        try:
            rows = client.query(
                f"SELECT (SELECT count(*) FROM `{ds}.events`), (SELECT count(*) FROM `{ds}.dead_letters`)"
            ).result()
            return tuple(next(iter(rows)).values())
        except Exception:  # the dataset or its tables are not created yet
            return (0, 0)

    sink = {"type": "bigquery", "bigquery": {"project": emulator.project, "dataset": dataset}}
    return run_pipeline(
        kafka, model_url, sink, landed, workdir, env={"BIGQUERY_EMULATOR_HOST": emulator.host}, **kw
    )

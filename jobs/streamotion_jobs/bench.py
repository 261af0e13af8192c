"""``streamotion bench pipeline``: the streaming job end to end on this machine.

One run, same model for every figure: a real Kafka broker, PostgreSQL and the model service
(Ray Serve with the spec's default serving settings), the job on ``local[*]``. The model is the
one a pipeline would serve here: the latest fine-tuned model in the cache (``--model`` names
another; ``--tiny-model``, or no trained model, uses a tiny random one, where Spark's own cost
rather than the model dominates).

* raw_model_texts_per_s: the limit, the same model in-process, batched, at its best thread count
  (like ``bench model``'s raw figure); model_service_texts_per_s: the model service alone under as
  many concurrent clients as the job has partitions;
* e2e_events_per_s: events already in Kafka (saturation), rows landing in PostgreSQL per second,
  with the spec's default trigger; maxEventsPerTrigger is the spec's default (5,000 a 5 s trigger,
  1,000 events/s) raised to twice what the raw model classifies in a trigger, so that the figure
  measures the pipeline, not the rate limit (a tiny model classifies thousands of texts a second);
* per_row_http_events_per_s: the same with the ancestors' pattern, one HTTP call per row;
* p50/p99_latency_s: event time (set at produce time) to the row's commit in PostgreSQL while a
  producer sends at half the measured e2e throughput; p99_latency_over_trigger relates it to the
  trigger interval.

The platform's own capacity, with a model that is not the limit: the linear model (TF-IDF + logistic
regression, ``streamotion model train --arch linear``; the latest in the cache, else one trained on
GoEmotions here in about 20 s), served by the same app:

* linear_model_service_texts_per_s: the linear model service alone, called as the job calls it
  (as many clients as partitions, each with its chunks in flight, 1,024 texts a request:
  ``config.model_chunk_size``); it must be at least 5 x
  platform_events_per_s for that figure to measure the platform, not the model
  (linear_service_over_platform);
* platform_events_per_s: the job end to end with the linear model and a ``maxEventsPerTrigger``
  (``--platform-max-events-per-trigger``) large enough not to cap it, PostgreSQL sink;
  platform_p50/p99_latency_s at half that load (platform_p99_latency_over_trigger);
* raw_linear_model_texts_per_s: the linear model in-process at its best batch size.
* lake_events_per_s: the platform run again with the lake sink (Delta tables on local disk) instead
  of PostgreSQL, same model service and micro-batch size, the aggregates merged every minute (the
  spec's default ``aggregateInterval``), over about two minutes (``--lake-events``) and until every
  event's aggregates are stored (the last aggregate table's commit: the merges every minute and the
  last one at the stop are in the figure); lake_vs_postgres relates the two (``--no-lake`` skips both
  lake runs); lake_every_batch_aggregates_events_per_s: the six micro-batches of the platform run
  with the aggregates merged every micro-batch (``aggregateInterval: 0s``), timed the same way.

The job's parse alone (``--parse-events``, in memory, no Kafka, no model, no sink):

* parse_events_per_s: records to validated, cleaned events with hashtags and terms in the JVM
  (``streamotion_jobs.parse.native_parse``: ``from_json`` and column expressions, then
  ``transform.finish_frame`` in the Python worker for what Spark leaves);
  parse_python_events_per_s: the same records on the job's current path (pydantic, per row in the
  Python worker); parse_spark_vs_python their ratio (the JVM path is switched on in the job once
  it is above 1).

"Raw" is the best in-process configuration of the same model: every thread count (1, all cores),
batch size, length-bucket size, and tokenizing the next batch on a second thread while the model
runs this one (as the service does) or not, tried; the fastest kept (raw_model_config says which).
The README's figures use a MiniLM fine-tuned on GoEmotions (``streamotion model train``), where the
model, not Spark, is the cost, as in production.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import typer


def _log(msg: str) -> None:
    typer.echo(f"[bench pipeline] {msg}", err=True)


def _pipeline(
    name: str,
    schema: str,
    trigger: str,
    max_events: int,
    bigquery: dict | None = None,
    lake: dict | None = None,
    arch: str = "transformer",
):
    from streamotion.api.validate import parse

    sink = (
        {"type": "bigquery", "bigquery": bigquery}
        if bigquery
        else {"type": "lake", "lake": lake}
        if lake
        else {
            "type": "postgres",
            "postgres": {"host": "127.0.0.1", "schema": schema, "credentialsSecret": "pg"},
        }
    )
    return parse(
        {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {
                "sources": [{"name": "bench", "type": "http", "http": {"tokenSecret": "t"}}],
                "processing": {
                    "trigger": trigger,
                    "window": "1m",
                    "watermark": "10m",
                    "maxEventsPerTrigger": max_events,
                },
                "sinks": [sink],
                "model": {"arch": arch},
            },
        }
    )


TEXTS = [
    "I love this so much, what a wonderful day #happy",
    "This is awful and I hate it @someone https://example.com/x",
    "I am so scared and worried about tomorrow",
    "Wow I am really surprised by the news today",
    "So sad and lonely today, I want to cry #sad",
    "Thanks everyone, I am grateful and proud of the team",
    "Gross, that was disgusting and wrong",
]


_COMMENTS: list[str] = []


def bench_texts() -> list[str]:
    """Event texts: GoEmotions dev comments (Reddit), as users' streams look; templates without it."""
    if not _COMMENTS:
        from streamotion_serving.data import default_data_dir

        dev = default_data_dir() / "ekman" / "dev.tsv"
        if dev.is_file():
            _COMMENTS.extend(
                line.split("\t", 1)[0]
                for line in dev.read_text(encoding="utf-8").splitlines()
                if line.strip()
            )
        else:
            _COMMENTS.extend(TEXTS)
    return _COMMENTS


def _text(i: int) -> str:
    texts = bench_texts()
    return texts[i % len(texts)]


def _event(i: int, created_at: datetime | None = None) -> bytes:
    from streamotion.events import Event

    return Event(
        id=f"b{i}",
        source="bench",
        platform="http",
        channel=f"c{i % 3}",
        author=f"a{i % 50}",
        text=_text(i),
        lang="en",
        created_at=created_at or datetime.now(UTC),
    ).to_json()


def parse_throughput(spark, n: int, max_future_skew_s: float = 600.0, runs: int = 2) -> dict[str, float]:
    """The job's parse alone, in events/s (best of ``runs``, after one warm-up run of each):
    ``spark`` (:func:`streamotion_jobs.parse.native_parse`, then ``transform.finish_frame`` in the
    Python worker for what Spark leaves) and ``python`` (the pydantic path, ``transform.parse_frame``,
    per row in the Python worker: the job's path today). ``n`` producer events (:func:`_event`, one in 50
    replaced by a hostile record), cached in memory, to Spark's ``noop`` sink."""
    from streamotion_jobs.parse import native_parse
    from streamotion_jobs.transform import PARSED_SCHEMA, finish_frame, now_us, parse_frame

    hostile = [b"{not json", b'{"id": 1}', None, b'{"id":"x","source":"s","platform":"http","text":"  "}']
    values = [hostile[i % len(hostile)] if i % 50 == 49 else _event(i) for i in range(n)]
    parts = max(1, spark.sparkContext.defaultParallelism)
    raw = spark.createDataFrame(
        [(v, "bench", i % parts, i) for i, v in enumerate(values)],
        "value binary, topic string, partition int, offset long",
    )
    raw = raw.repartition(parts).cache()
    raw.count()
    now = now_us()

    def finish(batches):
        for pdf in batches:
            yield finish_frame(pdf, max_future_skew_s, now).drop(columns=["raw_payload"])

    def python(batches):
        for pdf in batches:
            yield parse_frame(pdf, max_future_skew_s, now)

    paths = {
        "spark": lambda: native_parse(raw, max_future_skew_s, now).mapInPandas(finish, PARSED_SCHEMA),
        "python": lambda: raw.mapInPandas(python, PARSED_SCHEMA),
    }
    best: dict[str, float] = {}
    for name, frame in paths.items():
        times = []
        for _ in range(runs + 1):
            started = time.perf_counter()
            frame().write.format("noop").mode("overwrite").save()
            times.append(time.perf_counter() - started)
        best[name] = n / min(times[1:])
        _log(f"parse ({name} path): {best[name]:.0f} events/s")
    raw.unpersist()
    return best


def _produce(bootstrap: str, topic: str, start: int, n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    for i in range(start, start + n):
        producer.produce(topic, key=f"http:b{i}".encode(), value=_event(i))
        if i % 1000 == 0:
            producer.poll(0)
    producer.flush(60)


def _count(dsn: str, schema: str) -> int:
    import psycopg

    try:
        with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
            return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    except psycopg.errors.UndefinedTable:
        return 0


def _throughput(dsn: str, schema: str) -> float:
    """Rows per second after the first micro-batch (its start-up is not throughput)."""
    import psycopg

    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        first_batch_end, last, n = conn.execute(
            """SELECT (SELECT max(written_at) FROM events WHERE batch_id = (SELECT min(batch_id) FROM events)),
                      max(written_at),
                      count(*) FILTER (WHERE batch_id > (SELECT min(batch_id) FROM events))
               FROM events"""
        ).fetchone()
    seconds = (last - first_batch_end).total_seconds()
    return n / seconds if seconds > 0 else float("nan")


def serve_args(model: str) -> dict:
    """``build_app`` arguments: the model with a StreamPipeline's default model settings."""
    from streamotion.api.models import ModelSpec

    spec = ModelSpec()
    return {
        "model": model,
        "taxonomy": spec.taxonomy,
        "max_batch_size": spec.max_batch_size,
        "batch_wait_ms": spec.batch_wait_ms,
        "max_length": spec.max_length,
        "backend": spec.backend,
    }


def _run_job(cfg, spark, stop: threading.Event, per_row: bool = False) -> threading.Thread:
    from streamotion_jobs.job import StreamingJob

    job = StreamingJob(cfg, spark, log=_log, dead_letter_topic=False, per_row_model_calls=per_row)
    thread = threading.Thread(target=job.run, kwargs={"stop": stop, "backoff_max_s": 5}, daemon=True)
    thread.start()
    return thread


def _wait(dsn: str, schema: str, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _count(dsn, schema) >= n:
            return
        time.sleep(0.5)
    raise TimeoutError(f"only {_count(dsn, schema)} of {n} rows after {timeout:.0f}s")


def _raw_model(model: str, n: int) -> tuple[float, int, dict]:
    """The limit: the model in-process (no HTTP, no Spark), at its best configuration: every
    thread count (1, all cores) x batch size x length-bucket size x tokenizing the next batch while
    the model runs this one or not (transformer; the service overlaps them), every batch size
    (linear). Returns (texts/s, threads, the configuration)."""
    import gc

    import torch
    from streamotion_serving.model import ModelConfig, cpu_budget, load_model, model_arch

    args = serve_args(model)
    linear = model_arch(model) == "linear"
    texts = [_text(i) for i in range(n)]
    if linear:
        grid = [(1, batch, 0, False) for batch in (256, 1024, 4096)]
    else:
        grid = [
            (threads, batch, bucket, overlap)
            for threads in sorted({1, cpu_budget()})
            for batch in (args["max_batch_size"], 256)
            for bucket in (8, 32)
            for overlap in (False, True)
        ]
    best = (0.0, 1, {})
    for threads, batch, bucket, overlap in grid:
        local = load_model(
            ModelConfig(
                model=model,
                taxonomy=args["taxonomy"],
                max_length=args["max_length"],
                backend=args["backend"],
                num_threads=threads,
                bucket_size=bucket,
            )
        )
        torch.set_num_threads(threads)
        local.classify(texts[:batch])  # warm-up
        start = time.perf_counter()
        if overlap:
            _overlapped(local, texts, batch)
        else:
            for i in range(0, n, batch):
                local.classify(texts[i : i + batch])
        rate = n / (time.perf_counter() - start)
        if rate > best[0]:
            config = {"threads": threads, "batch": batch, "bucket": bucket or None}
            best = (rate, threads, {**config, "overlap_tokenizing": overlap} if not linear else config)
        del local
        gc.collect()
    return best


def _overlapped(local, texts: list[str], batch: int) -> list[dict]:
    """Classify ``texts`` in batches, tokenizing the next batch on a second thread while the model
    runs this one (what the service's two batches in flight do)."""
    from concurrent.futures import ThreadPoolExecutor

    chunks = [texts[i : i + batch] for i in range(0, len(texts), batch)]
    out: list[dict] = []
    with ThreadPoolExecutor(1, thread_name_prefix="tokenize") as prep:
        encoded = prep.submit(local.encode, chunks[0])
        for k, chunk in enumerate(chunks):
            ready = encoded.result()
            if k + 1 < len(chunks):
                encoded = prep.submit(local.encode, chunks[k + 1])
            out += local.results(local.infer(len(chunk), ready))
    return out


def _linear_model(work: Path, path: str | None) -> str:
    """The linear model: ``path``, else the latest in the cache, else one trained here on GoEmotions."""
    if path:
        return path
    from streamotion_serving.model import latest_model

    found = latest_model("ekman", arch="linear")
    if found:
        return str(found)
    from streamotion_serving.data import default_data_dir
    from streamotion_serving.linear import LinearTrainConfig, train_linear

    _log("no linear model in the cache: training one on GoEmotions (about 20 s)...")
    out = work / "linear-model"
    train_linear(
        LinearTrainConfig(data_dir=default_data_dir() / "ekman", multi_label=True, out=out), progress=False
    )
    return str(out)


def _model_service(url: str, n: int, clients: int, batch: int) -> float:
    """The model service alone: ``clients`` concurrent callers (the job's partitions), ``batch`` texts a call."""
    from concurrent.futures import ThreadPoolExecutor

    from streamotion_jobs.classify import ModelClient

    texts = [_text(i) for i in range(n)]
    ModelClient(url, batch_size=batch).classify(texts[:batch])  # warm-up
    share = -(-n // clients)

    def call(k: int) -> None:
        client = ModelClient(url, batch_size=batch)  # the job's client: its chunks in flight
        try:
            client.classify(texts[k * share : (k + 1) * share])
        finally:
            client.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(call, range(clients)))
    return n / (time.perf_counter() - start)


def _latency(dsn: str, schema: str, skip: int) -> tuple[float, float]:
    """p50 and p99 of event time to commit, of the rows after the first ``skip`` (the saturation run).
    NOT EXISTS, not NOT IN: PostgreSQL plans it as a hash anti join, while NOT IN over a subquery
    larger than work_mem falls back to a scan of the list per row (the platform run has 10^5 ids)."""
    import psycopg

    with psycopg.connect(dsn, options=f"-c search_path={schema}") as conn:
        p50, p99 = conn.execute(
            """SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY s),
                      percentile_cont(0.99) WITHIN GROUP (ORDER BY s)
               FROM (SELECT extract(epoch FROM e.written_at - e.created_at) AS s FROM events e
                     WHERE NOT EXISTS (SELECT 1 FROM generate_series(0, %s - 1) g WHERE e.id = 'b' || g)) x""",
            (skip,),
        ).fetchone()
    return float(p50), float(p99)


def _produce_at(bootstrap: str, topic: str, start: int, rate: float, seconds: float) -> int:
    """Send events at ``rate`` per second for ``seconds`` (event time = send time); returns how many."""
    from confluent_kafka import Producer

    n = int(rate * seconds)
    sent_from = time.monotonic()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for k in range(n):
        delay = sent_from + k / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        i = start + k
        producer.produce(topic, key=f"http:b{i}".encode(), value=_event(i))
        producer.poll(0)
    producer.flush(60)
    return n


def _saturation_and_latency(kafka, pg, spark, setup, events: int, latency_s: float, label: str, url: str):
    """Events already in Kafka (saturation): rows/s into PostgreSQL; then the same job at half that
    rate for ``latency_s``: p50/p99 event-to-commit. Returns (events/s, p50, p99, rate)."""
    import dataclasses

    cfg, schema, topic = setup(label, events)
    cfg = dataclasses.replace(cfg, model_url=url)
    _produce(kafka.bootstrap, topic, 0, events)
    stop = threading.Event()
    thread = _run_job(cfg, spark, stop)
    _log(f"{label}: {events} events queued, job running...")
    _wait(pg.dsn, schema, events, timeout=1800)
    throughput = _throughput(pg.dsn, schema)
    _log(f"{label}: {throughput:.1f} events/s")
    rate = max(1.0, throughput / 2)
    _log(f"{label} latency: producing at {rate:.1f}/s for {latency_s:.0f}s...")
    n = _produce_at(kafka.bootstrap, topic, events, rate, latency_s)
    _wait(pg.dsn, schema, events + n, timeout=600)
    stop.set()
    thread.join(120)
    p50, p99 = _latency(pg.dsn, schema, events)
    return throughput, p50, p99, rate


def _bigquery_platform(kafka, spark, work: Path, trigger: str, max_events: int, events: int, url: str):
    """The platform run with the BigQuery sink on bqemulator (local, DuckDB-backed: its speed is not
    BigQuery's): rows/s after the first micro-batch, from polling the events table's count."""
    import dataclasses
    import os

    from streamotion.dev.bigquery import EMULATOR_HOST_ENV, BigQueryEmulator
    from streamotion.naming import topic_names
    from streamotion_jobs.config import JobConfig

    with BigQueryEmulator(project="streamotion-bench") as bq:
        os.environ[EMULATOR_HOST_ENV] = bq.host
        dataset = f"bench_{uuid.uuid4().hex[:6]}"
        p = _pipeline(
            f"bbq{uuid.uuid4().hex[:4]}",
            "unused",
            trigger,
            max_events,
            {"project": bq.project, "dataset": dataset},
            arch="linear",
        )
        names = topic_names(p)
        kafka.create_topic(names["raw"], partitions=2)
        kafka.create_topic(names["deadLetter"])
        cfg = JobConfig.from_pipeline(p, checkpoint=str(work / f"ckpt-{dataset}"))
        cfg = dataclasses.replace(cfg, model_url=url)
        client = bq.client()

        def count() -> int:
            sql = f"SELECT COUNT(*) FROM `{bq.project}.{dataset}.events`"
            try:
                return next(iter(client.query(sql).result()))[0]
            except Exception:  # the table is not there before the first batch
                return 0

        _produce(kafka.bootstrap, names["raw"], 0, events)
        stop = threading.Event()
        thread = _run_job(cfg, spark, stop)
        _log(f"platform (BigQuery emulator): {events} events queued, job running...")
        deadline = time.monotonic() + 1800
        first_n, first_t, n = 0, 0.0, 0
        while n < events and time.monotonic() < deadline:
            time.sleep(0.5)
            n = count()
            if n and not first_n:
                first_n, first_t = n, time.monotonic()
        end_t = time.monotonic()
        stop.set()
        thread.join(120)
        if n < events:
            raise TimeoutError(f"BigQuery: only {n} of {events} rows after 1800 s")
        rate = (n - first_n) / (end_t - first_t) if end_t > first_t and n > first_n else float("nan")
        _log(f"platform (BigQuery emulator): {rate:.1f} events/s")
        return rate


def _lake_throughput(location: str, end=None) -> tuple[int, float]:
    """(events, rows/s after the first micro-batch that wrote rows) from the lake's ledger, read with
    deltalake: the same definition as PostgreSQL's figure (its batches' commit times), up to ``end``
    (a UTC datetime: when the aggregates were complete too) or the last batch's commit."""
    from deltalake import DeltaTable

    try:
        ledger = DeltaTable(f"{location}/_ledger").to_pandas(columns=["events", "committed_at"])
    except Exception:  # not created yet
        return 0, float("nan")
    ledger = ledger[ledger["events"] > 0].sort_values("committed_at")
    total = int(ledger["events"].sum())
    if len(ledger) < 2:
        return total, float("nan")
    last = ledger["committed_at"].iloc[-1] if end is None else max(end, ledger["committed_at"].iloc[-1])
    seconds = (last - ledger["committed_at"].iloc[0]).total_seconds()
    return total, (total - int(ledger["events"].iloc[0])) / seconds if seconds > 0 else float("nan")


def _aggregates_done_at(location: str):
    """When the last aggregate table's last commit was made (its Delta commit time, read with deltalake):
    with the ledger's last row, when every event's aggregates were stored."""
    from deltalake import DeltaTable

    from streamotion_jobs.sinks.lake import AGGREGATES

    latest = max(DeltaTable(f"{location}/{t}").history(1)[0]["timestamp"] for t in AGGREGATES)
    return datetime.fromtimestamp(latest / 1000, UTC)


def _lake_platform(
    kafka,
    spark,
    work: Path,
    trigger: str,
    max_events: int,
    events: int,
    url: str,
    aggregate_interval: str = "1m",
):
    """The platform run with the lake sink (Delta tables in a local folder), same model service and
    micro-batch size as PostgreSQL's, the aggregates merged every ``aggregate_interval`` (the spec's
    default, or 0s: every batch): rows/s after the first micro-batch, from the lake's ledger, until
    every event's aggregates are stored (the last commit of an aggregate table, after the job's stop
    merged what the last batches lacked)."""
    import dataclasses

    from streamotion.naming import topic_names
    from streamotion_jobs.config import JobConfig

    location = str(work / f"lake-{uuid.uuid4().hex[:6]}")
    p = _pipeline(
        f"blake{uuid.uuid4().hex[:4]}",
        "unused",
        trigger,
        max_events,
        lake={"location": location, "aggregateInterval": aggregate_interval},
        arch="linear",
    )
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    kafka.create_topic(names["deadLetter"])
    cfg = JobConfig.from_pipeline(p, checkpoint=str(work / f"ckpt-{Path(location).name}"))
    cfg = dataclasses.replace(cfg, model_url=url)
    _produce(kafka.bootstrap, names["raw"], 0, events)
    stop = threading.Event()
    thread = _run_job(cfg, spark, stop)
    _log(
        f"platform (lake, Delta on local disk, aggregates every {aggregate_interval}): {events} events "
        "queued, job running..."
    )
    deadline = time.monotonic() + 1800
    n = 0
    while n < events and time.monotonic() < deadline:
        time.sleep(1)
        n, _ = _lake_throughput(location)
    stop.set()
    thread.join(120)  # the job's stop merges the aggregates the last batches lack
    if n < events:
        raise TimeoutError(f"lake: only {n} of {events} rows after 1800 s")
    _, rate = _lake_throughput(location, _aggregates_done_at(location))
    _log(f"platform (lake, aggregates every {aggregate_interval}): {rate:.1f} events/s")
    return rate


def bench_pipeline(
    events: int = typer.Option(
        0, help="Events for the saturation run (0: four micro-batches of maxEventsPerTrigger)."
    ),
    per_row_events: int = typer.Option(400, help="Events for the one-HTTP-call-per-row run."),
    latency_s: float = typer.Option(60, help="Seconds of producing at half load for the latency run."),
    trigger: str = typer.Option(None, help="Trigger interval of the job (default: the spec's)."),
    max_events_per_trigger: int = typer.Option(
        0,
        help="maxEventsPerTrigger of the job (0: the spec's, raised to twice what the raw model can "
        "classify in a trigger so that it does not cap the figure).",
    ),
    raw_texts: int = typer.Option(2000, help="Texts for the raw model and model service figures."),
    model: str | None = typer.Option(
        None, help="Model directory (default: the latest trained model, else a tiny local one)."
    ),
    tiny_model: bool = typer.Option(False, "--tiny-model", help="Use a tiny random model."),
    model_url: str | None = typer.Option(None, help="Use this running model service instead."),
    master: str = typer.Option("local[*]", help="Spark master."),
    platform: bool = typer.Option(
        True, "--platform/--no-platform", help="Also measure the platform's capacity with the linear model."
    ),
    linear_model: str | None = typer.Option(
        None, help="Linear model directory (default: the latest in the cache, else trained here)."
    ),
    platform_events: int = typer.Option(
        0, help="Events for the platform saturation run (0: six micro-batches of the next option)."
    ),
    platform_max_events_per_trigger: int = typer.Option(
        50_000, help="maxEventsPerTrigger of the platform run: large, so that it does not cap throughput."
    ),
    linear_texts: int = typer.Option(50_000, help="Texts for the linear model's raw and service figures."),
    parse_events: int = typer.Option(
        50_000, help="Events for the parse-only figures (parse_events_per_s); 0 skips them."
    ),
    bigquery: bool = typer.Option(
        True, "--bigquery/--no-bigquery", help="Also the platform run with the BigQuery sink (bqemulator)."
    ),
    bigquery_events: int = typer.Option(
        0, help="Events for the BigQuery platform run (0: three micro-batches of 10,000)."
    ),
    lake_events: int = typer.Option(
        0,
        help="Events for the lake run with the default aggregateInterval (0: twelve micro-batches of "
        "--platform-max-events-per-trigger, about two minutes, so that its aggregate merges are in it).",
    ),
    lake: bool = typer.Option(
        True,
        "--lake/--no-lake",
        help="Also the platform run with the lake sink (Delta tables on local disk).",
    ),
) -> None:
    """End-to-end events/s and latency of the streaming job, against raw model throughput and the
    ancestors' one-HTTP-call-per-row pattern, in the same run; then the platform's own capacity with
    the linear model."""
    import os

    from streamotion.api.models import ModelSpec, ProcessingSpec
    from streamotion.bench import Result, emit
    from streamotion.dev.kafka import KafkaBroker
    from streamotion.dev.postgres import PostgresServer
    from streamotion.naming import topic_names
    from streamotion_jobs.config import JobConfig, model_chunk_size, parse_duration
    from streamotion_jobs.spark import session

    defaults = ProcessingSpec()
    trigger = trigger or defaults.trigger
    fixed_max_events = max_events_per_trigger
    platform_events = platform_events or 6 * platform_max_events_per_trigger
    work = Path(tempfile.mkdtemp(prefix="streamotion-bench-pipeline-"))
    results: list[Result] = []
    raw_config: dict = {}
    platform_config: dict = {}
    with KafkaBroker() as kafka, PostgresServer() as pg:
        server = linear_server = None
        if not model_url:
            from streamotion_serving.server import ServeProcess

            if not model and not tiny_model:
                from streamotion_serving.model import latest_model

                found = latest_model("ekman")
                model = str(found) if found else None
            if not model:
                from streamotion_serving.tiny import build_tiny_model

                _log("no trained model in the cache (or --tiny-model): a tiny random model")
                model = str(build_tiny_model(work / "tiny-model"))
            server = ServeProcess(serve_args(model), log_path=work / "serve.log")
            _log(f"starting the model service ({model})...")
            server.start()
            model_url = server.url
        try:
            os.environ["STREAMOTION_KAFKA_BOOTSTRAP"] = kafka.bootstrap
            os.environ["STREAMOTION_MODEL_URL"] = model_url
            os.environ["STREAMOTION_PG_DSN"] = pg.dsn
            from streamotion_jobs.spark import pipeline_conf

            # Delta's extension and catalog (static: set when the session starts) for the lake run
            lake_conf = pipeline_conf(_pipeline("blake", "unused", trigger, 1, lake={"location": "/x"}))
            spark = session("streamotion-bench", master=master, extra=lake_conf if lake else None)
            partitions = max(1, spark.sparkContext.defaultParallelism)
            parse = parse_throughput(spark, parse_events) if parse_events else None
            if model:
                _log("raw model throughput (in-process, best configuration)...")
                raw, raw_threads, raw_config = _raw_model(model, raw_texts)
                _log(f"raw model: {raw:.1f} texts/s ({raw_config})")
            _log(f"model service alone ({partitions} concurrent callers)...")
            # texts per call as the job sends them
            bench_cfg = JobConfig.from_pipeline(
                _pipeline("bservice", "unused", trigger, defaults.max_events_per_trigger),
                need_checkpoint=False,
            )
            batch = bench_cfg.model_batch_size
            service = _model_service(model_url, raw_texts, partitions, batch)
            _log(f"model service: {service:.1f} texts/s")
            if not model:  # an external service: its own throughput is the limit we can see
                raw, raw_threads = service, 0
            # the spec's default caps a job at maxEventsPerTrigger / trigger events/s (1,000/s): above
            # what a transformer classifies on CPUs, below what a tiny or linear model does
            max_events_per_trigger = fixed_max_events or max(
                defaults.max_events_per_trigger, math.ceil(2 * raw * parse_duration(trigger))
            )
            events = events or 4 * max_events_per_trigger

            def setup(kind: str, n: int, max_events: int = max_events_per_trigger, arch: str = "transformer"):
                schema = f"bench_{kind}_{uuid.uuid4().hex[:6]}"
                p = _pipeline(f"b{kind}{uuid.uuid4().hex[:4]}", schema, trigger, max_events, arch=arch)
                names = topic_names(p)
                kafka.create_topic(names["raw"], partitions=2)
                kafka.create_topic(names["deadLetter"])
                cfg = JobConfig.from_pipeline(p, checkpoint=str(work / f"ckpt-{schema}"))
                return cfg, schema, names["raw"]

            e2e, p50, p99, rate = _saturation_and_latency(
                kafka, pg, spark, setup, events, latency_s, "e2e", model_url
            )

            # the ancestors' pattern: one HTTP call per row
            # several micro-batches, so that throughput is measured after the first one
            cfg_row, schema_row, topic_row = setup("row", per_row_events, max(20, per_row_events // 5))
            _produce(kafka.bootstrap, topic_row, 0, per_row_events)
            stop_row = threading.Event()
            thread_row = _run_job(cfg_row, spark, stop_row, per_row=True)
            _wait(pg.dsn, schema_row, per_row_events, timeout=1800)
            stop_row.set()
            thread_row.join(120)
            per_row = _throughput(pg.dsn, schema_row)
            _log(f"per-row HTTP: {per_row:.1f} events/s")

            if platform:
                from streamotion_serving.server import ServeProcess

                if server is not None:  # the platform runs use the linear service only: no idle Ray
                    server.stop()  # session of the transformer's beside them on the machine's cores
                linear = _linear_model(work, linear_model)
                _log(f"raw linear model (in-process, best batch size): {linear}...")
                raw_linear, _, raw_linear_config = _raw_model(linear, linear_texts)
                _log(f"raw linear model: {raw_linear:.0f} texts/s ({raw_linear_config})")
                linear_server = ServeProcess(
                    {**serve_args(linear), "arch": "linear"}, log_path=work / "serve-linear.log"
                )
                _log("starting the linear model service...")
                linear_server.start()
                # texts per call as the job sends them to a linear model (config.model_chunk_size)
                linear_batch = model_chunk_size(ModelSpec(arch="linear"))
                linear_service = _model_service(linear_server.url, linear_texts, partitions, linear_batch)
                _log(f"linear model service: {linear_service:.0f} texts/s")

                def setup_platform(kind: str, n: int):
                    return setup(kind, n, platform_max_events_per_trigger, arch="linear")

                plat, plat_p50, plat_p99, plat_rate = _saturation_and_latency(
                    kafka,
                    pg,
                    spark,
                    setup_platform,
                    platform_events,
                    latency_s,
                    "platform",
                    linear_server.url,
                )
                plat_bq = None
                if bigquery:
                    bq_batch = 10_000 if not bigquery_events else max(1, bigquery_events // 3)
                    plat_bq = _bigquery_platform(
                        kafka,
                        spark,
                        work,
                        trigger,
                        bq_batch,
                        bigquery_events or 3 * bq_batch,
                        linear_server.url,
                    )
                plat_lake = plat_lake_every = None
                if lake:
                    # the default interval over about two minutes (twelve micro-batches): its merges
                    # every minute and the last one at the stop are in the figure
                    lake_events = lake_events or 12 * platform_max_events_per_trigger
                    plat_lake, plat_lake_every = (
                        _lake_platform(
                            kafka,
                            spark,
                            work,
                            trigger,
                            platform_max_events_per_trigger,
                            n,
                            linear_server.url,
                            interval,
                        )
                        for interval, n in (("1m", lake_events), ("0s", platform_events))
                    )
                platform_config = {
                    "linear_model": linear,
                    "platform_events": platform_events,
                    "platform_max_events_per_trigger": platform_max_events_per_trigger,
                    "platform_latency_rate_per_s": plat_rate,
                    "raw_linear_model_config": raw_linear_config,
                    "linear_texts": linear_texts,
                }
            spark.stop()
        finally:
            for s in (server, linear_server):
                if s is not None:
                    s.stop()
            shutil.rmtree(work, ignore_errors=True)
    trigger_s = parse_duration(trigger)
    results = [
        Result("e2e_events_per_s", e2e, "events/s"),
        Result("raw_model_texts_per_s", raw, "texts/s"),
        Result("model_service_texts_per_s", service, "texts/s"),
        Result("e2e_vs_model_service", e2e / service, "ratio"),
        Result("per_row_http_events_per_s", per_row, "events/s"),
        Result("e2e_vs_raw_model", e2e / raw, "ratio"),
        Result("e2e_vs_per_row", e2e / per_row, "ratio"),
        Result("p50_latency_s", p50, "s"),
        Result("p99_latency_s", p99, "s"),
        Result("p99_latency_over_trigger", p99 / trigger_s, "ratio"),
    ]
    if parse is not None:
        results += [
            Result("parse_events_per_s", parse["spark"], "events/s"),
            Result("parse_python_events_per_s", parse["python"], "events/s"),
            Result("parse_spark_vs_python", parse["spark"] / parse["python"], "ratio"),
        ]
    targets = {"e2e_vs_raw_model": ">= 0.7", "e2e_vs_per_row": ">= 3", "p99_latency_over_trigger": "<= 3"}
    if platform:
        results += [
            Result("platform_events_per_s", plat, "events/s"),
            Result("linear_model_service_texts_per_s", linear_service, "texts/s"),
            Result("raw_linear_model_texts_per_s", raw_linear, "texts/s"),
            Result("linear_service_over_platform", linear_service / plat, "ratio"),
            Result("platform_vs_per_row", plat / per_row, "ratio"),
            Result("platform_p50_latency_s", plat_p50, "s"),
            Result("platform_p99_latency_s", plat_p99, "s"),
            Result("platform_p99_latency_over_trigger", plat_p99 / trigger_s, "ratio"),
        ]
        if plat_bq is not None:
            results.append(Result("platform_bigquery_emulator_events_per_s", plat_bq, "events/s"))
        if plat_lake is not None:
            results += [
                Result("lake_events_per_s", plat_lake, "events/s"),
                Result("lake_vs_postgres", plat_lake / plat, "ratio"),
                Result("lake_every_batch_aggregates_events_per_s", plat_lake_every, "events/s"),
                Result("lake_every_batch_aggregates_vs_postgres", plat_lake_every / plat, "ratio"),
            ]
            targets["lake_vs_postgres"] = ">= 0.8"
        targets.update(
            {
                "platform_events_per_s": ">= 5000",
                "linear_service_over_platform": ">= 5",
                "platform_p99_latency_over_trigger": "<= 3",
            }
        )
    emit(
        "pipeline",
        results,
        config=json.loads(
            json.dumps(
                {
                    "events": events,
                    "per_row_events": per_row_events,
                    "parse_events": parse_events,
                    "latency_rate_per_s": rate,
                    "trigger": trigger,
                    "max_events_per_trigger": max_events_per_trigger,
                    "raw_model": "in-process" if raw_threads else "the given model service",
                    "raw_threads": raw_threads,
                    "raw_model_config": raw_config,
                    "partitions": partitions,
                    "texts": "GoEmotions dev comments",
                    "load_average_at_end": os.getloadavg(),
                    "model": model or model_url,
                    "master": master,
                    "serving": serve_args(model or model_url),
                    "sink": "postgres",
                    **platform_config,
                }
            )
        ),
        targets=targets,
        ancestor={"e2e_vs_per_row": "one HTTP call to the model per row from the Spark job"},
    )

"""``streamotion bench ingest``: events/s into a real Kafka broker, measured in one run.

- replay: the bundled GoEmotions sample, looped, as fast as the producer goes (rate 1e6/s);
- http batches of 100 and single-event requests: the ingest service (``streamotion produce``
  in its own process) under a keep-alive load generator on loopback; 202 means Kafka acked;
- replay and http batches again on a secure broker (mTLS, the pipeline's ACLs, each producer under
  its own certificate): ``*_secure`` figures and their ratio to plaintext (``*_secure_vs_plaintext``).
Every scenario checks that the topic holds exactly what was acknowledged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import yaml

from streamotion.bench import Result, emit


def _pipeline_doc(name: str, bootstrap: str, events: int) -> dict:
    return {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": name, "namespace": "bench"},
        "spec": {
            "kafka": {"bootstrapServers": bootstrap},
            "sources": [
                {
                    "name": "replay",
                    "type": "replay",
                    "replay": {
                        "dataset": "goemotions",
                        "ratePerSecond": 1_000_000,
                        "loop": True,
                        "limit": events,
                    },
                },
                {"name": "api", "type": "http", "http": {"tokenSecret": "bench", "maxBatchSize": 1000}},
            ],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "pg"}}],
        },
    }


def _topic_count(client: dict, topic: str) -> int:
    """Records in ``topic`` (``client``: confluent-kafka settings, the broker's administrator)."""
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**client, "group.id": "bench-count"})
    try:
        md = c.list_topics(topic, timeout=10).topics[topic]
        total = 0
        for p in md.partitions:
            lo, hi = c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            total += hi - lo
        return total
    finally:
        c.close()


def _replay(p, bootstrap: str, events: int, log) -> tuple[float, int]:
    from streamotion_ingest.context import Context, find_source
    from streamotion_ingest.run import make_publisher, pump

    publisher = make_publisher(p, "replay", bootstrap)
    ctx = Context(pipeline=p.name, source=find_source(p, "replay"), metrics=publisher.metrics)
    start, cpu0 = time.perf_counter(), time.process_time()
    pump(ctx, publisher)
    left = publisher.close(120)
    elapsed = time.perf_counter() - start
    log(f"replay: {(time.process_time() - cpu0) * 1e6 / events:.1f} us CPU per event")
    if left:
        raise RuntimeError(f"{left} replay events not acknowledged")
    log(f"replay: {events} events in {elapsed:.2f}s")
    return events / elapsed, events


async def _load(port: int, token: str, bodies: list[bytes], seconds: float, concurrency: int):
    """Keep-alive HTTP/1.1 clients posting bodies round-robin; returns (latencies of 202s, other codes)."""
    latencies: list[float] = []
    codes: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    heads = [
        (
            f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(b)}\r\n\r\n"
        ).encode()
        + b
        for b in bodies
    ]

    async def client(k: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        try:
            while time.perf_counter() < deadline:
                req = heads[i % len(heads)]
                i += concurrency
                t0 = time.perf_counter()
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                status = int(head[9:12])
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                await reader.readexactly(length)
                if status == 202:
                    latencies.append(time.perf_counter() - t0)
                else:
                    codes[status] = codes.get(status, 0) + 1
        finally:
            writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(client(k) for k in range(concurrency)))
    return latencies, codes, time.perf_counter() - start


def _arun(coro):
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _bodies(n_bodies: int, per: int, tag: str) -> list[bytes]:
    out = []
    for b in range(n_bodies):
        evs = [
            {
                "id": f"{tag}-{b}-{i}",
                "text": f"Loving the new release, great job team! #{i}",
                "channel": "bench",
            }
            for i in range(per)
        ]
        out.append(json.dumps(evs[0] if per == 1 else evs).encode())
    return out


def run(events: int = 200_000, http_seconds: float = 10.0, concurrency: int = 32, log=None) -> dict:
    """Each scenario on a plaintext broker, then replay and HTTP batches again on a secure one (mTLS,
    ACLs: the producer under its own identity), so both sets of figures come from the same run."""
    from streamotion.dev.kafka import KafkaBroker

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    results: list[Result] = []
    extra: dict = {"load_average_1m_before": _load_average()}
    with tempfile.TemporaryDirectory(prefix="streamotion-bench-ingest-") as tmp:
        with KafkaBroker() as kafka:
            _scenarios(kafka, Path(tmp) / "plain", events, http_seconds, concurrency, log, results, extra, "")
        with KafkaBroker(secure=True) as kafka:
            _scenarios(
                kafka, Path(tmp) / "secure", events, http_seconds, concurrency, log, results, extra, "_secure"
            )
        extra["load_average_1m_after"] = _load_average()
    values = {r.name: r.value for r in results}
    for name in ("replay_events_per_s", "http_batch_events_per_s"):
        ratio = values[f"{name}_secure"] / values[name] if values[name] else float("nan")
        results.append(Result(f"{name.removesuffix('_events_per_s')}_secure_vs_plaintext", ratio, "ratio"))
    return emit(
        "ingest",
        results,
        targets={
            "replay_events_per_s": ">= 20000",
            "http_batch_events_per_s": ">= 5000",
            "http_single_requests_per_s": ">= 1000",
            "replay_secure_vs_plaintext": ">= 0.8",
            "http_batch_secure_vs_plaintext": ">= 0.8",
        },
        settings={"replay_events": events, "http_seconds": http_seconds, "concurrency": concurrency},
        **extra,
    )


@contextlib.contextmanager
def _environment(env: dict[str, str]):
    """This process's STREAMOTION_KAFKA_* set to ``env`` (restored after)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("STREAMOTION_KAFKA_")}
    for k in saved:
        del os.environ[k]
    os.environ.update(env)
    try:
        yield
    finally:
        for k in [k for k in os.environ if k.startswith("STREAMOTION_KAFKA_")]:
            del os.environ[k]
        os.environ.update(saved)


def _scenarios(kafka, tmp: Path, events, http_seconds, concurrency, log, results, extra, suffix: str) -> None:
    """Replay and HTTP batches (and, on the plaintext broker, single-event requests) on ``kafka``;
    on a secure broker the producers run under their own identities with the pipeline's ACLs."""
    from streamotion.api.validate import parse
    from streamotion.dev.procs import Process, free_port, wait_for_port
    from streamotion.naming import topic_names
    from streamotion.security.acls import identity_of

    secure = bool(suffix)
    tmp.mkdir(parents=True)
    log(f"Kafka at {kafka.bootstrap}{' (secure)' if secure else ''}")
    doc = _pipeline_doc("bench", kafka.bootstrap, events)
    p = parse(doc)
    topics = topic_names(p)
    kafka.create_topic(topics["raw"], partitions=3)
    kafka.create_topic(topics["deadLetter"])
    path = tmp / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    admin = kafka.admin_config()
    if secure:
        kafka.apply_acls(p, "tls")
        env = {
            s: kafka.client_env(kafka.issue(identity_of(p, "producer", s).user)) for s in ("replay", "api")
        }
    else:
        env = {s: kafka.client_env() for s in ("replay", "api")}

    with _environment(env["replay"]):
        rate, n = _replay(p, kafka.bootstrap, events, log)
    counted = _topic_count(admin, topics["raw"])
    if counted != n:
        raise RuntimeError(f"replay{suffix}: {n} events produced but the topic holds {counted}")
    results.append(Result(f"replay_events_per_s{suffix}", rate, "events/s"))

    token = uuid.uuid4().hex
    port = free_port()
    child = {k: v for k, v in os.environ.items() if not k.startswith("STREAMOTION_KAFKA_")}
    # the bench measures throughput: no per-token rate limit
    child |= {"INGEST_TOKEN": token, "STREAMOTION_INGEST_RATE": "0", **env["api"]}
    server = Process.start(
        f"ingest-http{suffix}",
        [
            sys.executable,
            "-m",
            "streamotion",
            "produce",
            "--source",
            "api",
            "--pipeline",
            str(path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--metrics-port",
            "0",
            "--log-level",
            "WARNING",
        ],
        log_path=tmp / "http.log",
        env=child,
    )
    try:
        wait_for_port(port, timeout=60, proc=server)
        before = counted
        # warm-up
        _arun(_load(port, token, _bodies(10, 1, "warm"), 1.0, 4))
        warm = _topic_count(admin, topics["raw"]) - before
        before += warm

        cpu0 = _cpu_seconds(server.pid)
        lat, codes, secs = _arun(_load(port, token, _bodies(200, 100, "b"), http_seconds, concurrency))
        cpu1 = _cpu_seconds(server.pid)
        accepted = len(lat) * 100
        results.append(Result(f"http_batch_events_per_s{suffix}", accepted / secs, "events/s"))
        results.append(Result(f"http_batch_ack_p99_ms{suffix}", _p99(lat) * 1000, "ms"))
        log(
            f"http batches{suffix}: {len(lat)} requests ({accepted} events) in {secs:.1f}s, "
            f"other answers {codes}"
        )
        extra[f"http_batch_other_answers{suffix}"] = codes
        extra[f"http_batch_server_cpu_ms_per_event{suffix}"] = round(
            (cpu1 - cpu0) * 1000 / max(accepted, 1), 4
        )
        acked = accepted
        if not secure:
            cpu0 = _cpu_seconds(server.pid)
            lat, codes, secs = _arun(_load(port, token, _bodies(5000, 1, "s"), http_seconds, concurrency))
            cpu1 = _cpu_seconds(server.pid)
            results.append(Result("http_single_requests_per_s", len(lat) / secs, "requests/s"))
            results.append(Result("http_ack_p99_ms", _p99(lat) * 1000, "ms"))
            log(f"http single: {len(lat)} requests in {secs:.1f}s, other answers {codes}")
            extra["http_single_other_answers"] = codes
            extra["http_single_server_cpu_ms_per_request"] = round((cpu1 - cpu0) * 1000 / max(len(lat), 1), 4)
            acked += len(lat)
    finally:
        server.stop()
    counted = _topic_count(admin, topics["raw"]) - before
    if counted < acked:
        raise RuntimeError(f"http{suffix}: {acked} events acknowledged but only {counted} in the topic")
    extra[f"http_events_acknowledged{suffix}"] = acked
    extra[f"http_events_in_topic{suffix}"] = counted


def _cpu_seconds(pid: int) -> float:
    """User+system CPU seconds of a process (load-independent cost, next to the throughput)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _load_average() -> float:
    return round(os.getloadavg()[0], 2)


def _p99(values: list[float]) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * 0.99))]

"""``streamotion bench chaos``: faults injected while events flow, and what the sink kept.

A cluster-shaped topology on this machine, every part real, on loopback:

* Kafka: three KRaft brokers; the pipeline's topics created from the ``KafkaTopic`` objects the
  operator renders for a three-broker cluster (replication factor 3, ``min.insync.replicas`` 2);
* the streaming job as its own process on ``local-cluster[2,1,1024]`` (two executor JVMs), restarted
  when it exits, as spark-operator's ``restartPolicy: OnFailure`` does;
* the model service (Ray Serve) with two replicas; PostgreSQL; the HTTP ingest service.

Two load generators record every id they saw acknowledged: a Kafka producer configured as our
producers are (idempotent, ``acks=all``) and an HTTP client of the ingest service (202 = Kafka
acknowledged every event of the request). While they run, one fault after another, with time to
recover in between:

* ``broker_leader_kill``: SIGKILL of the broker leading partition 0 of the raw topic (back after 10 s);
* ``executor_kill``: SIGKILL of one executor JVM (the standalone worker starts another);
* ``model_replica_kill``: SIGKILL of one Ray Serve replica process (Serve's controller starts another);
* ``postgres_restart_in_commit``: PostgreSQL's immediate shutdown (a crash: WAL recovery on start)
  while the job's commit transaction is open, back after 5 s;
* ``model_stall``: every model service process stopped (SIGSTOP, a network stall rather than a kill)
  for 20 s, then continued;
* ``http_retrying_client``: the HTTP client sends every request, closes the connection without
  reading the response, and sends the same request again.

Then the load stops, the sink catches up, and each fault's window (from its injection to the next
one) is scored over the ids acknowledged in it: ``acked_events``, ``rows_in_sink``, ``lost``
(acknowledged, not in the sink), ``duplicated`` (rows beyond one per event identity, and window
aggregate counts beyond a ``GROUP BY`` over the stored events), ``dead_lettered``, ``recovery_s``
(from the fault until every event acknowledged before it is in the sink and the sink's rate over
5 s is back within 20% of the load), ``max_lag`` (acknowledged minus stored, sampled every second).
Targets: ``lost`` = 0 and ``duplicated`` = 0 for every fault, ``recovery_s`` <= 60.

Besides the sink, each window records what users would see (:mod:`streamotion_jobs.chaos_watch`):
the alerts of the pipeline's ``PrometheusRule`` (as the operator renders it) that a real Prometheus,
scraping the job, the ingest service and the model service every second, had pending or firing, and
the metrics the reliability page names. ``--lake`` adds a Delta lake sink, scored the same way
(read back with ``deltalake``). ``--duration`` makes it a soak: the load (and the faults given, over
and over) for that long, the memory of every process sampled per role, failing on a leak or a p99
drift (:func:`streamotion_jobs.chaos_watch.score_soak`); saved as ``chaos_soak``.
"""

from __future__ import annotations

import bisect
import http.client
import json
import os
import signal
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

FAULTS = (
    "broker_leader_kill",
    "executor_kill",
    "model_replica_kill",
    "postgres_restart_in_commit",
    "model_stall",
    "http_retrying_client",
)
RUN_ENV = "STREAMOTION_CHAOS_RUN"
TOKEN = "chaos-token"  # the local ingest service's bearer token (a throwaway, per run)
PROBE_EVENTS = 20
APP_NAME = "streamotion-chaos"  # our own PostgreSQL sessions, told apart from the job's
TARGETS = {"lost": "== 0", "duplicated": "== 0", "recovery_s": "<= 60"}


def _log(msg: str) -> None:
    print(f"{datetime.now(UTC).strftime('%H:%M:%S')} chaos: {msg}", file=sys.stderr, flush=True)


def pipeline_doc(
    name: str, schema: str, bootstrap: str, trigger: str, lake: str | None = None
) -> dict[str, Any]:
    """The pipeline under test: one HTTP source, PostgreSQL (and a Delta lake under ``lake``), a
    three-broker Kafka."""
    sinks: list[dict[str, Any]] = [
        {"type": "postgres", "postgres": {"host": "127.0.0.1", "schema": schema, "credentialsSecret": "pg"}}
    ]
    if lake:
        sinks.append({"type": "lake", "lake": {"location": lake}})
    return {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": name, "namespace": "chaos"},
        "spec": {
            "kafka": {"bootstrapServers": bootstrap, "partitions": 3, "replicas": 3},
            "sources": [{"name": "ingest", "type": "http", "http": {"tokenSecret": "t"}}],
            "processing": {"trigger": trigger, "window": "1m", "watermark": "10m"},
            "sinks": sinks,
        },
    }


def lake_rows(location: Path) -> list[tuple[str, float]]:
    """The lake's events table as (event_id, 0.0) rows, read with ``deltalake`` (a second reader,
    not Spark); [] while the table does not exist."""
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        table = DeltaTable(str(location / "events"))
    except TableNotFoundError:
        return []
    return [(i, 0.0) for i in table.to_pyarrow_table(columns=["event_id"]).column("event_id").to_pylist()]


def run_pids(run_id: str, needle: str) -> list[int]:
    """Live processes of this run (they carry ``STREAMOTION_CHAOS_RUN``) whose command line holds
    ``needle`` (psutil: Linux and macOS alike)."""
    import psutil

    from streamotion.dev.procs import pids_with_env

    out = []
    for pid in pids_with_env(RUN_ENV, run_id):
        try:
            proc = psutil.Process(pid)
            if proc.status() != psutil.STATUS_ZOMBIE and needle in " ".join(proc.cmdline()):
                out.append(pid)
        except (psutil.Error, OSError):
            continue
    return sorted(out)


@dataclass
class Acks:
    """Ids acknowledged to a load generator, with the time of each acknowledgement."""

    times: dict[str, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, ids: list[str], t: float | None = None) -> None:
        t = time.time() if t is None else t
        with self.lock:
            for i in ids:
                self.times.setdefault(i, t)

    def count(self) -> int:
        with self.lock:
            return len(self.times)

    def snapshot(self) -> dict[str, float]:
        with self.lock:
            return dict(self.times)


class KafkaLoad(threading.Thread):
    """Contract events at ``rate``/s straight into the raw topic, as our producers send them
    (idempotent, acks=all, the event key as message key); an id counts once its delivery report is OK."""

    def __init__(self, bootstrap: str, topic: str, rate: float, acks: Acks, stop: threading.Event) -> None:
        super().__init__(name="chaos-kafka-load", daemon=True)
        self.bootstrap, self.topic, self.rate, self.acks, self.stop_event = bootstrap, topic, rate, acks, stop
        self.failed = 0

    def run(self) -> None:
        from confluent_kafka import Producer

        from streamotion.events import Event

        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 10,
                "message.timeout.ms": 120000,
            }
        )

        def report(err, msg) -> None:
            if err is None:
                self.acks.add([msg.key().decode()])
            else:
                self.failed += 1

        start, i = time.monotonic(), 0
        while not self.stop_event.is_set():
            delay = start + i / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.2))
                continue
            e = Event(
                id=f"k{i}",
                source="ingest",
                platform="http",
                channel=f"c{i % 3}",
                author=f"a{i % 50}",
                text=_text(i),
                lang="en",
                created_at=datetime.now(UTC),
            )
            try:
                producer.produce(self.topic, key=e.key.encode(), value=e.to_json(), on_delivery=report)
            except BufferError:
                producer.poll(0.5)
                continue
            producer.poll(0)
            i += 1
        producer.flush(180)


class HttpLoad(threading.Thread):
    """Batches of ``batch`` events at ``rate`` events/s to the ingest service; a request is sent again
    (same ids) until it gets its 202. While ``retrying`` is set, every request is first sent and its
    connection closed unread: the client a flaky network makes."""

    def __init__(self, port: int, rate: float, acks: Acks, stop: threading.Event, batch: int = 20) -> None:
        super().__init__(name="chaos-http-load", daemon=True)
        self.port, self.rate, self.acks, self.stop_event, self.batch = port, rate, acks, stop, batch
        self.retrying = threading.Event()
        self.unread = 0
        self.refused = 0

    def _send(self, body: bytes, read: bool = True) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(
                "POST",
                "/v1/events",
                body=body,
                headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            )
            if not read:
                return 0
            resp = conn.getresponse()
            resp.read()
            return resp.status
        finally:
            conn.close()

    def run(self) -> None:
        start, sent = time.monotonic(), 0
        while not self.stop_event.is_set():
            delay = start + sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(min(delay, 0.2))
                continue
            ids = [f"h{sent + j}" for j in range(self.batch)]
            body = json.dumps(
                {"events": [{"id": i, "text": _text(sent + j), "lang": "en"} for j, i in enumerate(ids)]}
            ).encode()
            if self.retrying.is_set():
                try:
                    self._send(body, read=False)
                    self.unread += 1
                except OSError:
                    pass
            while not self.stop_event.is_set():
                try:
                    status = self._send(body)
                except OSError:
                    status = 0
                if status == 202:
                    self.acks.add([f"ingest:http:{i}" for i in ids])
                    break
                self.refused += 1
                time.sleep(0.5)
            sent += self.batch


def _text(i: int) -> str:
    from streamotion_jobs.bench import bench_texts

    texts = bench_texts()
    return texts[i % len(texts)][:1000]


class JobSupervisor(threading.Thread):
    """The streaming job as a child process, started again whenever it exits (spark-operator's
    ``restartPolicy: OnFailure``), until stopped."""

    def __init__(self, argv: list[str], env: dict[str, str], log_path: Path, stop: threading.Event) -> None:
        super().__init__(name="chaos-job", daemon=True)
        self.argv, self.env, self.log_path, self.stop_event = argv, env, log_path, stop
        self.proc = None
        self.restarts = 0

    def run(self) -> None:
        from streamotion.dev.procs import Process

        while not self.stop_event.is_set():
            self.proc = Process.start("job", self.argv, self.log_path, env=self.env)
            while self.proc.alive() and not self.stop_event.is_set():
                time.sleep(0.5)
            if not self.stop_event.is_set():
                self.restarts += 1
                _log(f"job exited (code {self.proc.popen.returncode}); restarting it")
                time.sleep(2)
        if self.proc is not None:
            self.proc.stop(timeout=60)


class Sink:
    """What the job stored: event ids with their commit time, dead letters, aggregate consistency."""

    def __init__(self, dsn: str, schema: str) -> None:
        self.dsn, self.schema = dsn, schema

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        import psycopg

        try:
            with psycopg.connect(
                self.dsn,
                options=f"-c search_path={self.schema}",
                connect_timeout=5,
                application_name=APP_NAME,
            ) as c:
                return c.execute(sql, args).fetchall()
        except (psycopg.errors.UndefinedTable, psycopg.OperationalError):
            return []

    def count(self) -> int | None:
        rows = self._query("SELECT count(*) FROM events")
        return rows[0][0] if rows else None

    def rows(self) -> list[tuple[str, float]]:
        return [(r[0], r[1].timestamp()) for r in self._query("SELECT event_id, written_at FROM events")]

    def p99_latency(self, start: float, end: float) -> float | None:
        """p99 of event time to commit (``written_at - created_at``, as ``bench pipeline`` measures it)
        of the events created in [start, end); None when there are none."""
        rows = self._query(
            """SELECT percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - created_at))
               FROM events WHERE created_at >= to_timestamp(%s) AND created_at < to_timestamp(%s)""",
            (start, end),
        )
        return float(rows[0][0]) if rows and rows[0][0] is not None else None

    def dead_letters(self) -> list[float]:
        return [r[0].timestamp() for r in self._query("SELECT failed_at FROM dead_letters")]

    def aggregate_excess(self) -> int:
        """Counts in the stored window aggregates beyond a GROUP BY over the stored, non-late events."""
        rows = self._query(
            """SELECT coalesce(sum(greatest(a.events - coalesce(g.n, 0), 0)), 0) FROM emotion_window a
               LEFT JOIN (SELECT window_start, source, coalesce(channel, '') AS channel,
                                 coalesce(lang, '') AS lang, emotion, count(*) AS n
                          FROM events WHERE NOT late GROUP BY 1, 2, 3, 4, 5) g
               USING (window_start, source, channel, lang, emotion)"""
        )
        return int(rows[0][0]) if rows else -1

    def commit_in_flight(self, conn) -> bool:
        """A transaction of the job is open now, other than the executors' COPY into staging: the
        driver's commit (advisory lock, insert from staging, aggregates, ledger)."""
        row = conn.execute(
            """SELECT count(*) FROM pg_stat_activity WHERE pid <> pg_backend_pid()
               AND backend_type = 'client backend' AND application_name <> %s
               AND xact_start IS NOT NULL AND state IN ('active', 'idle in transaction')
               AND query NOT ILIKE 'copy%%'""",
            (APP_NAME,),
        ).fetchone()
        return bool(row and row[0])

    def watcher(self):
        """One connection to poll :meth:`commit_in_flight` with (a new connection per poll is too slow)."""
        import psycopg

        return psycopg.connect(self.dsn, autocommit=True, connect_timeout=5, application_name=APP_NAME)


@dataclass
class Topology:
    run_id: str
    work: Path
    kafka: Any
    pg: Any
    model: Any
    job: JobSupervisor
    ingest: Any
    http: HttpLoad
    sink: Sink
    raw_topic: str
    later: Later

    def model_pids(self) -> list[int]:
        return run_pids(self.run_id, "ServeReplica")

    def leader_of_partition_0(self) -> int:
        md = self.kafka.admin().list_topics(self.raw_topic, timeout=10).topics[self.raw_topic]
        return md.partitions[0].leader


def inject(name: str, t: Topology) -> str:
    """Start fault ``name``; returns what was done. Recovery actions run in background threads."""
    if name == "broker_leader_kill":
        leader = t.leader_of_partition_0()
        t.kafka.kill_broker(leader - 1)
        t.later(10, lambda: t.kafka.start_broker(leader - 1))
        return f"SIGKILL broker {leader} (leader of partition 0), started again after 10 s"
    if name == "executor_kill":
        pids = run_pids(t.run_id, "CoarseGrainedExecutorBackend")
        if not pids:
            raise RuntimeError("no executor JVM found to kill")
        os.kill(pids[0], signal.SIGKILL)
        return f"SIGKILL executor JVM pid {pids[0]} (of {len(pids)})"
    if name == "model_replica_kill":
        pids = t.model_pids()
        if not pids:
            raise RuntimeError("no Ray Serve replica process found to kill")
        os.kill(pids[0], signal.SIGKILL)
        return f"SIGKILL model replica pid {pids[0]} (of {len(pids)})"
    if name == "postgres_restart_in_commit":
        deadline, in_commit = time.monotonic() + 90, False
        with t.sink.watcher() as conn:
            while not in_commit and time.monotonic() < deadline:
                in_commit = t.sink.commit_in_flight(conn)
                if not in_commit:
                    time.sleep(0.005)
        t.pg._stop_process(sig=signal.SIGQUIT)  # immediate shutdown: recovery from WAL on start
        t.later(5, t.pg.start)
        return f"PostgreSQL immediate shutdown ({'during' if in_commit else 'not caught in'} a commit), back after 5 s"
    if name == "model_stall":
        from streamotion.dev.procs import session_pids

        pids = sorted(set(session_pids(t.model.proc.pid)) | set(run_pids(t.run_id, "ray::")))
        for pid in pids:
            _signal(pid, signal.SIGSTOP)
        t.later(20, lambda: [_signal(pid, signal.SIGCONT) for pid in pids])
        return f"SIGSTOP of {len(pids)} model service processes for 20 s"
    if name == "http_retrying_client":
        t.http.retrying.set()
        t.later(20, t.http.retrying.clear)
        return "HTTP client: every request sent, dropped unread, and sent again, for 20 s"
    raise ValueError(f"unknown fault {name!r}; known: {', '.join(FAULTS)}")


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


class Later(threading.Thread):
    """Recovery actions due later, run by one thread that lives as long as the run: a child process
    dies with the thread that started it (``PR_SET_PDEATHSIG``), so a broker or PostgreSQL started
    again from a short-lived thread would die with it."""

    def __init__(self, stop: threading.Event) -> None:
        super().__init__(name="chaos-recovery", daemon=True)
        self.stop_event = stop
        self.due: list[tuple[float, Callable[[], Any]]] = []
        self.lock = threading.Lock()

    def __call__(self, seconds: float, fn: Callable[[], Any]) -> None:
        with self.lock:
            self.due.append((time.monotonic() + seconds, fn))

    def pending(self) -> int:
        with self.lock:
            return len(self.due)

    def run(self) -> None:
        while not self.stop_event.is_set():
            now = time.monotonic()
            with self.lock:
                ready = [fn for at, fn in self.due if at <= now]
                self.due = [(at, fn) for at, fn in self.due if at > now]
            for fn in ready:
                try:
                    fn()
                except Exception as exc:  # reported; the run's scores show the consequence
                    _log(f"recovery action failed: {exc!r}")
            self.stop_event.wait(0.2)


def score(
    windows: list[tuple[str, float, float]],
    acks: dict[str, float],
    stored: list[tuple[str, float]],
    dead: list[float],
    samples: list[tuple[float, int, int]],
    rate: float,
    aggregate_excess: int,
) -> list[dict[str, Any]]:
    """Per fault window (name, start, end): the figures of the module docstring. Pure: tested alone."""
    count: dict[str, int] = {}
    written: dict[str, float] = {}
    for event_id, at in stored:
        count[event_id] = count.get(event_id, 0) + 1
        written[event_id] = min(at, written.get(event_id, at))
    commit_times = sorted(written.values())
    # acknowledgements in time order, with the latest commit among the first k (a soak's hours of
    # acknowledgements are sliced per window, not scanned once per window)
    by_time = sorted(acks.items(), key=lambda kv: kv[1])
    ack_times = [t for _, t in by_time]
    latest_commit = [float("-inf")]
    for i, _ in by_time:
        latest_commit.append(max(latest_commit[-1], written.get(i, float("inf"))))
    out = []
    for name, start, end in windows:
        lo, hi = bisect.bisect_left(ack_times, start), bisect.bisect_left(ack_times, end)
        ids = [i for i, _ in by_time[lo:hi]]
        in_sink = [i for i in ids if i in count]
        caught_up = latest_commit[lo] if lo else start
        recovery: float | None = None  # not back within the window (and two minutes after it)
        if caught_up != float("inf"):
            t = max(caught_up, start)
            while t < end + 120:
                n = bisect.bisect_left(commit_times, t) - bisect.bisect_left(commit_times, t - 5)
                if n / 5 >= 0.8 * rate:
                    recovery = t - start
                    break
                t += 0.5
        lags = [lag for (at, _, lag) in samples if start <= at < end]
        out.append(
            {
                "fault": name,
                "acked_events": len(ids),
                "rows_in_sink": sum(count[i] for i in in_sink),
                "lost": len(ids) - len(in_sink),
                "duplicated": sum(count[i] - 1 for i in in_sink),
                "dead_lettered": sum(1 for t in dead if start <= t < end),
                "recovery_s": None if recovery is None else round(recovery, 1),
                "max_lag": max(lags, default=0),
                "acked_before": lo,
            }
        )
    total_dup = sum(c - 1 for c in count.values()) + max(aggregate_excess, 0)
    out.append(
        {
            "fault": "total",
            "acked_events": len(acks),
            "rows_in_sink": sum(count.get(i, 0) for i in acks),
            "lost": sum(1 for i in acks if i not in count),
            "duplicated": total_dup,
            "aggregate_excess": aggregate_excess,
            "dead_lettered": len(dead),
            "max_lag": max((lag for _, _, lag in samples), default=0),
        }
    )
    return out


def run_chaos(
    faults: list[str],
    rate: float,
    recover_s: float,
    warmup_s: float,
    trigger: str,
    drain_timeout_s: float,
    workdir: Path | None = None,
    duration_s: float | None = None,
    sample_interval_s: float = 60.0,
    lake: bool = False,
    alerts: bool = True,
) -> dict[str, Any]:
    """One run. ``duration_s`` (soak): the load runs that long, ``faults`` (may be empty) injected
    over and over, ``recover_s`` apart; memory sampled every ``sample_interval_s`` and judged."""
    import yaml
    from streamotion_serving.server import ServeProcess
    from streamotion_serving.tiny import build_tiny_model

    from streamotion.api.models import duration_seconds
    from streamotion.dev.kafka import KafkaCluster
    from streamotion.dev.postgres import PostgresServer
    from streamotion.dev.procs import Process, free_port, wait_for_http
    from streamotion_jobs.bench import serve_args
    from streamotion_jobs.chaos_watch import (
        MemorySampler,
        alerts_in,
        memory_by_role,
        post_warmup_span,
        score_soak,
        window_metrics,
    )

    run_id = uuid.uuid4().hex[:8]
    os.environ[RUN_ENV] = run_id  # every child (and its children) carries it: found by its environment
    work = workdir or Path(tempfile.mkdtemp(prefix="streamotion-chaos-"))
    work.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    acks = Acks()
    samples: list[tuple[float, int, int]] = []
    windows: list[tuple[str, float, float]] = []
    actions: dict[str, str] = {}
    lake_dir = (work / "lake") if lake else None
    prom, alert_watch, window_obs = None, None, {}
    memory: MemorySampler | None = None
    soak: dict[str, Any] | None = None
    with (
        KafkaCluster(brokers=3, workdir=work / "kafka", heap="256m") as kafka,
        PostgresServer(workdir=work / "pg", durable=True) as pg,
    ):
        name, schema = f"chaos{run_id}", f"chaos_{run_id}"
        doc = pipeline_doc(name, schema, kafka.bootstrap, trigger, str(lake_dir) if lake_dir else None)
        topics = _create_topics(kafka, doc)
        raw = topic_names_of(doc)["raw"]
        (work / "pipeline.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
        _log(f"kafka: 3 brokers, topics {', '.join(topics)}")

        model_dir = build_tiny_model(work / "tiny-model")
        model = ServeProcess({**serve_args(str(model_dir)), "num_replicas": 2}, log_path=work / "model.log")
        _log("model service: 2 replicas of a tiny model...")
        model.start()
        job_metrics_port, ingest_metrics_port = free_port(), free_port()
        if alerts:
            prom, alert_watch = _start_prometheus(work, doc, stop)
        env = {
            **os.environ,
            "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "STREAMOTION_MODEL_URL": model.url,
            "STREAMOTION_PG_DSN": pg.dsn,
            "INGEST_TOKEN": TOKEN,
        }
        job = JobSupervisor(
            [
                sys.executable,
                "-m",
                "streamotion_jobs.main",
                "--pipeline",
                str(work / "pipeline.yaml"),
                "--master",
                "local-cluster[2,1,1024]",
                "--checkpoint",
                str(work / "checkpoint"),
                "--metrics-port",
                str(job_metrics_port),
            ],
            env,
            work / "job.log",
            stop,
        )
        ingest_port = free_port()
        ingest = Process.start(
            "ingest",
            [
                sys.executable,
                "-m",
                "streamotion",
                "produce",
                "--source",
                "ingest",
                "--pipeline",
                str(work / "pipeline.yaml"),
                "--bootstrap",
                kafka.bootstrap,
                "--host",
                "127.0.0.1",
                "--port",
                str(ingest_port),
                "--metrics-port",
                str(ingest_metrics_port),
            ],
            work / "ingest.log",
            env=env,
        )
        load_stop = threading.Event()
        http = HttpLoad(ingest_port, rate / 2, acks, load_stop)
        sink = Sink(pg.dsn, schema)
        later = Later(stop)
        later.start()
        t = Topology(run_id, work, kafka, pg, model, job, ingest, http, sink, raw, later)
        try:
            if prom is not None:
                labels = {"namespace": doc["metadata"]["namespace"], "pipeline": name}
                prom.add_targets("job", [f"127.0.0.1:{job_metrics_port}"], labels)
                prom.add_targets("producer", [f"127.0.0.1:{ingest_metrics_port}"], labels)
                prom.add_targets("model", [f"127.0.0.1:{model.metrics_port}"], labels)
            wait_for_http(f"http://127.0.0.1:{ingest_port}/healthz", timeout=120, proc=ingest, what="ingest")
            job.start()
            _log("job: local-cluster[2,1,1024]; waiting until it commits a first probe batch...")
            _probe(kafka.bootstrap, raw, PROBE_EVENTS)
            _wait(lambda: (sink.count() or 0) >= PROBE_EVENTS, 600, "the job's first commit")
            kload = KafkaLoad(kafka.bootstrap, raw, rate / 2, acks, load_stop)
            kload.start()
            http.start()
            sampler = threading.Thread(target=_sample, args=(sink, acks, samples, stop), daemon=True)
            sampler.start()
            _log(f"load: {rate:g} events/s (half Kafka, half HTTP); warm-up {warmup_s:g} s")
            brokers = {f"broker_{n.node_id}": str(n.config_path) for n in kafka.nodes}
            memory = MemorySampler(
                lambda: memory_by_role(RUN_ENV, run_id, brokers), sample_interval_s, load_stop
            )
            memory.start()
            load_start = time.time()
            time.sleep(warmup_s)
            if duration_s is None:
                schedule = [(f, f) for f in faults]
            else:  # the faults over and over (none: load alone) until the duration is over
                soak_end = load_start + duration_s
                schedule = _soak_schedule(faults, recover_s, soak_end - time.time())
                if not schedule:
                    time.sleep(max(soak_end - time.time(), 0))
                    windows.append(("soak", load_start, time.time()))
                    if prom is not None:
                        window_obs["soak"] = window_metrics(prom, _selector(doc), time.time() - load_start)
            for label, fault in schedule:
                start = time.time()
                actions[label] = inject(fault, t)
                _log(f"{label}: {actions[label]}")
                time.sleep(recover_s)
                windows.append((label, start, time.time()))
                if prom is not None:
                    window_obs[label] = window_metrics(prom, _selector(doc), time.time() - start)
            if duration_s is not None and schedule:
                time.sleep(max(load_start + duration_s - time.time(), 0))
            load_end = time.time()
            load_stop.set()
            kload.join(200)
            http.join(120)
            total = acks.count()
            _log(f"load stopped: {total} events acknowledged; draining the sink...")
            stored_ids = _wait_drain(sink, acks, drain_timeout_s)
            _log(f"sink: {stored_ids} of {total} acknowledged events stored")
            acked = acks.snapshot()
            results = score(
                windows, acked, sink.rows(), sink.dead_letters(), samples, rate, sink.aggregate_excess()
            )
            if lake_dir is not None:
                _wait_lake(lake_dir, acked, drain_timeout_s)
                in_lake = score(windows, acked, lake_rows(lake_dir), [], [], rate, 0)
                for row, lake_row in zip(results, in_lake, strict=True):
                    for key in ("rows_in_sink", "lost", "duplicated"):
                        row[f"lake_{key}"] = lake_row[key]
            for row in results:
                if row["fault"] == "total":
                    continue
                window = next(w for w in windows if w[0] == row["fault"])
                if alert_watch is not None:
                    states = alerts_in(alert_watch.observations, window[1], window[2])
                    row["alerts"] = sorted(states)
                    row["alert_states"] = states
                if row["fault"] in window_obs:
                    row["metrics"] = window_obs[row["fault"]]
            if memory is not None:  # judged in a soak; in a fault run only reported
                memory.join(sample_interval_s + 30)
                bounds = post_warmup_span(load_start, load_end)
                soak = score_soak(
                    memory.samples,
                    sink.p99_latency(bounds[0], bounds[1]),
                    sink.p99_latency(bounds[2], bounds[3]),
                    duration_seconds(trigger),
                )
                soak["interval_s"] = sample_interval_s
                soak["duration_s"] = round(load_end - load_start, 1)
        finally:
            stop.set()
            load_stop.set()
            if job.is_alive():
                job.join(90)
            ingest.stop(timeout=30)
            model.stop()
            if prom is not None:
                prom.stop()
        return {
            "results": results,
            "actions": actions,
            "job_restarts": job.restarts,
            "http_unread_requests": http.unread,
            "kafka_load_failed": kload.failed,
            "rate": rate,
            "soak": soak,
            "lake": str(lake_dir) if lake_dir else None,
            "alerts_evaluated": alert_watch is not None,
        }


def _soak_schedule(faults: list[str], recover_s: float, seconds: float) -> list[tuple[str, str]]:
    """(label, fault) for the faults repeated as often as whole windows fit in ``seconds``; a
    repeat's label carries its round (``executor_kill#2``)."""
    if not faults:
        return []
    n = max(int(seconds // recover_s), 0)
    return [
        (fault if i < len(faults) else f"{fault}#{i // len(faults) + 1}", fault)
        for i, fault in ((i, faults[i % len(faults)]) for i in range(n))
    ]


def _selector(doc: dict[str, Any]) -> str:
    return f'namespace="{doc["metadata"]["namespace"]}",pipeline="{doc["metadata"]["name"]}"'


def _start_prometheus(work: Path, doc: dict[str, Any], stop: threading.Event):
    """A real Prometheus with the pipeline's alert rules as the operator ships them (the rules'
    ``for:`` untouched), scraping every second, evaluating every second; None, None when Prometheus
    is not installed (the run goes on without alerts)."""
    from streamotion_operator.builders import prometheus_rule

    from streamotion.api.validate import parse
    from streamotion.dev.prometheus import PrometheusServer, binary
    from streamotion_jobs.chaos_watch import AlertWatcher

    try:
        binary()
    except RuntimeError as exc:
        _log(f"alerts: not evaluated ({exc})")
        return None, None
    groups = prometheus_rule(parse(doc))["spec"]["groups"]
    prom = PrometheusServer(
        scrape_interval="1s", evaluation_interval="1s", rules=groups, workdir=work / "prometheus"
    )
    prom.start()
    watch = AlertWatcher(prom, stop)
    watch.start()
    _log(f"prometheus: {prom.url}, the pipeline's {sum(len(g['rules']) for g in groups)} alert rules loaded")
    return prom, watch


def _wait_lake(location: Path, acked: dict[str, float], timeout: float) -> None:
    """Until every acknowledged id is in the lake's events table (or ``timeout``)."""
    wanted, deadline = set(acked), time.monotonic() + timeout
    while time.monotonic() < deadline:
        if wanted <= {i for i, _ in lake_rows(location)}:
            return
        time.sleep(3)


def topic_names_of(doc: dict[str, Any]) -> dict[str, str]:
    from streamotion.api.validate import parse
    from streamotion.naming import topic_names

    return topic_names(parse(doc))


def _create_topics(kafka, doc: dict[str, Any]) -> list[str]:
    """The pipeline's topics from the KafkaTopic objects the operator renders for this cluster."""
    from streamotion_operator.builders import kafka_topics
    from streamotion_operator.config import OperatorConfig

    from streamotion.api.validate import parse

    return [kafka.create_kafka_topic(kt) for kt in kafka_topics(parse(doc), OperatorConfig())]


def _probe(bootstrap: str, topic: str, n: int) -> None:
    """``n`` events before the load: the job's start-up (Spark, the first batch) is not a fault's recovery."""
    from confluent_kafka import Producer

    from streamotion.events import Event

    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    for i in range(n):
        e = Event(
            id=f"p{i}",
            source="ingest",
            platform="http",
            text=_text(i),
            lang="en",
            created_at=datetime.now(UTC),
        )
        producer.produce(topic, key=e.key.encode(), value=e.to_json())
    if producer.flush(120):
        raise RuntimeError("probe events not acknowledged by Kafka within 120 s")


def _wait(fn: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:g} s")
        time.sleep(1)


def _sample(sink: Sink, acks: Acks, samples: list, stop: threading.Event) -> None:
    while not stop.is_set():
        n = sink.count()
        a = acks.count()
        if n is not None:
            samples.append((time.time(), n, max(a - n, 0)))
        stop.wait(1)


def _wait_drain(sink: Sink, acks: Acks, timeout: float) -> int:
    wanted = set(acks.snapshot())
    deadline = time.monotonic() + timeout
    stored = 0
    while time.monotonic() < deadline:
        ids = {i for i, _ in sink.rows()}
        stored = len(wanted & ids)
        if stored >= len(wanted):
            break
        time.sleep(2)
    return stored


def bench_chaos(
    short: bool = typer.Option(False, "--short", help="A few minutes: short windows (the test suite's run)."),
    fault: list[str] | None = typer.Option(
        None,
        "--fault",
        help=f"Faults to inject, in order (default all: {', '.join(FAULTS)}; with --duration none).",
    ),
    rate: float = typer.Option(200.0, help="Events per second of load (half Kafka, half HTTP)."),
    recover_s: float = typer.Option(0.0, help="Seconds after each fault (default 60, --short 20)."),
    trigger: str = typer.Option("2s", help="The job's trigger interval."),
    workdir: Path | None = typer.Option(None, help="Keep the run's files (logs) here."),
    duration: str | None = typer.Option(
        None,
        "--duration",
        help="Soak: run the load this long (90s, 10m, 2h), memory of every process sampled; faults "
        "only those given with --fault, repeated. Saved as chaos_soak; fails on a leak or p99 drift.",
    ),
    sample_interval: str | None = typer.Option(
        None, "--sample-interval", help="Memory sampled this often (default 1m with --duration, else 5s)."
    ),
    lake: bool = typer.Option(
        False,
        "--lake",
        help="A Delta lake sink beside PostgreSQL, lost/duplicated counted in it too (slow on 2 cores: "
        "use --rate 50 or less).",
    ),
    alerts: bool = typer.Option(
        True, "--alerts/--no-alerts", help="Evaluate the pipeline's alert rules in a real Prometheus."
    ),
) -> None:
    """Faults under load: broker, executor, model replica, database, stall, retrying client; lost/duplicated
    per fault. With --duration: a soak (memory and p99 over time)."""
    from streamotion.bench import Result, emit
    from streamotion.local.cli import parse_duration

    faults = list(FAULTS) if fault is None and duration is None else list(fault or [])
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise typer.BadParameter(f"unknown fault {unknown[0]!r}; known: {', '.join(FAULTS)}")
    duration_s = parse_duration(duration) if duration else None
    interval_s = parse_duration(sample_interval or ("1m" if duration_s is not None else "5s"))
    if interval_s <= 0:
        raise typer.BadParameter("--sample-interval must be longer than 0")
    recover = recover_s or (20.0 if short else 60.0)
    with_lake = lake
    out = run_chaos(
        faults,
        rate,
        recover,
        warmup_s=5.0 if short else 30.0,
        trigger=trigger,
        drain_timeout_s=180.0 if short else 600.0,
        workdir=workdir,
        duration_s=duration_s,
        sample_interval_s=interval_s,
        lake=with_lake,
        alerts=alerts,
    )
    results: list[Result] = []
    for row in out["results"]:
        for key in ("acked_events", "lost", "duplicated", "dead_lettered", "recovery_s", "max_lag"):
            if row.get(key) is not None:
                unit = "s" if key == "recovery_s" else "events"
                results.append(Result(f"{row['fault']}.{key}", row[key], unit))
        for key in ("lake_lost", "lake_duplicated"):
            if key in row:
                results.append(Result(f"{row['fault']}.{key}", row[key], "events"))
        if row["fault"] == "postgres_restart_in_commit":  # 1: the shutdown hit an open commit transaction
            caught = int(
                out["actions"].get(row["fault"], "").startswith("PostgreSQL immediate shutdown (during")
            )
            results.append(Result(f"{row['fault']}.caught_in_commit", caught, "bool"))
        if row["fault"] not in ("total", "soak"):  # 0: the sink was not back to the load's rate in time
            results.append(Result(f"{row['fault']}.recovered", int(row["recovery_s"] is not None), "bool"))
    data_keys = ("lost", "duplicated", "lake_lost", "lake_duplicated")
    ok = all(r.get(k, 0) == 0 for r in out["results"] for k in data_keys)
    targets = {
        f"{row['fault']}.{key}": limit
        for row in out["results"]
        for key, limit in {**TARGETS, "lake_lost": "== 0", "lake_duplicated": "== 0"}.items()
        if row.get(key) is not None and not (key == "recovery_s" and row["fault"] == "soak")
    } | {
        f"{row['fault']}.recovered": "== 1" for row in out["results"] if row["fault"] not in ("total", "soak")
    }
    extra: dict[str, Any] = {}
    soak = out["soak"]
    if duration_s is not None:
        failed = [
            f"data: {row['fault']}: {k} = {row[k]}" for row in out["results"] for k in data_keys if row.get(k)
        ]
        if soak is None:
            failed.append("memory: not sampled")
        else:
            failed += soak["failed"]
            for role, m in soak["roles"].items():
                results.append(Result(f"soak.{role}.rss_mb_start", m["rss_mb_start"], "MB"))
                results.append(Result(f"soak.{role}.rss_mb_end", m["rss_mb_end"], "MB"))
                results.append(Result(f"soak.{role}.growth_pct", m["growth_pct"], "%"))
                if m["judged"]:
                    targets[f"soak.{role}.growth_pct"] = f"<= {soak['growth_limit_pct']:g}"
            for key in ("p99_first_s", "p99_last_s"):
                if soak[key] is not None:
                    results.append(Result(f"soak.{key}", soak[key], "s"))
        ok = ok and not failed
        extra = {"soak": soak, "failed": failed}
    elif soak is not None:  # a fault run: memory and p99 reported, not judged (faults restart processes)
        extra = {"memory": {**{k: v for k, v in soak.items() if k != "failed"}, "findings": soak["failed"]}}
    doc = emit(
        "chaos" if duration_s is None else "chaos_soak",
        results,
        targets=targets,
        ok=ok,
        faults=out["results"],
        actions=out["actions"],
        config={
            "short": short,
            "rate": rate,
            "recover_s": recover,
            "trigger": trigger,
            "duration_s": duration_s,
            "sample_interval_s": interval_s,
            "lake": with_lake,
            "alerts": out["alerts_evaluated"],
        },
        job_restarts=out["job_restarts"],
        http_unread_requests=out["http_unread_requests"],
        **extra,
    )
    if doc.get("failed"):
        _log("soak FAILED: " + "; ".join(doc["failed"]))
        raise typer.Exit(1)

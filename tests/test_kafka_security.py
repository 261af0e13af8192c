"""Least privilege on a real secure Kafka broker (``KafkaBroker(secure=True)``: mTLS and SCRAM-SHA-512
listeners, KRaft's StandardAuthorizer) with the ACLs of streamotion.security.acls applied: every
component works under its own identity and is refused everything else; clients are configured only
through streamotion.security.clients (the STREAMOTION_KAFKA_* contract)."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streamotion.api.validate import parse
from streamotion.dev.kafka import KafkaBroker
from streamotion.dev.pki import CertificateAuthority
from streamotion.naming import topic_names
from streamotion.security.acls import identity_of, job_group_prefix
from streamotion.security.clients import KafkaSecurityError, confluent_config, spark_kafka_options
from tests.ingest_helpers import pipeline_doc

EVENTS = 40


@pytest.fixture(scope="module")
def broker():
    with KafkaBroker(secure=True) as kafka:
        yield kafka


class Pipe:
    """A pipeline on the secure broker: its topics, its identities' certificates and SCRAM users."""

    def __init__(self, broker: KafkaBroker, name: str):
        doc = pipeline_doc(
            [
                {
                    "name": "replay",
                    "type": "replay",
                    "replay": {"ratePerSecond": 100000, "loop": True, "limit": EVENTS},
                }
            ],
            name=name,
            bootstrap=broker.bootstrap,
        )
        self.p = parse(doc)
        self.topics = topic_names(self.p)
        broker.create_topic(self.topics["raw"], partitions=2)
        broker.create_topic(self.topics["deadLetter"])
        broker.apply_acls(self.p, "tls")
        broker.apply_acls(self.p, "scram-sha-512")
        self.producer_user = identity_of(self.p, "producer", "replay").user
        self.job_user = identity_of(self.p, "job").user
        self.env = {
            "producer": broker.client_env(broker.issue(self.producer_user)),
            "job": broker.client_env(broker.issue(self.job_user)),
        }
        self.passwords = {u: uuid.uuid4().hex for u in (self.producer_user, self.job_user)}
        for user, password in self.passwords.items():
            broker.add_scram_user(user, password)


@pytest.fixture(scope="module")
def pipes(broker):
    return Pipe(broker, "secure-a"), Pipe(broker, "secure-b")


def use(monkeypatch, env: dict[str, str]) -> str:
    """Make ``env`` this process's Kafka client environment; returns its bootstrap."""
    for key in list(__import__("os").environ):
        if key.startswith("STREAMOTION_KAFKA_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env["STREAMOTION_KAFKA_BOOTSTRAP"]


def produce_one(conf: dict, topic: str, timeout: float = 15) -> KafkaError | None:
    """Produce one record; the delivery error (None: written)."""
    result: list = []
    p = Producer({**conf, "message.timeout.ms": int(timeout * 1000) - 1000, "enable.idempotence": False})
    p.produce(topic, b"x", on_delivery=lambda err, _m: result.append(err))
    p.flush(timeout)
    return result[0] if result else KafkaError(KafkaError._MSG_TIMED_OUT)


def read(
    conf: dict, topic: str, group: str | None, expect: int, timeout: float = 20
) -> tuple[int, KafkaError | None]:
    """(records read, the first error) of ``topic`` from the start: subscribed in consumer group
    ``group``, or (None) assigned every partition without a group coordinator (as kafka_range does)."""
    c = Consumer(
        {
            **conf,
            "group.id": group or f"assign-only-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    if group is None:
        c.assign([TopicPartition(topic, p, 0) for p in range(2)])
    else:
        c.subscribe([topic])
    n, error = 0, None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and n < expect:
            m = c.poll(0.5)
            if m is None:
                continue
            if m.error():
                # librdkafka also looks up the group's coordinator when only assigning (a group
                # authorization error first): keep polling for the topic's own answer
                error = m.error()
                if error.code() != KafkaError.GROUP_AUTHORIZATION_FAILED or group is not None:
                    break
            else:
                n += 1
    finally:
        c.close()
    return n, error


def test_each_component_works_under_its_own_identity(broker, pipes, monkeypatch):
    from tests.ingest_helpers import run_source

    a, _ = pipes
    # the producer (replay) publishes the whole run; it reads its raw topic's tail first (resume)
    use(monkeypatch, a.env["producer"])
    assert run_source(a.p, "replay", broker.bootstrap) == EVENTS
    # the job reads the raw topic in its consumer group prefix and writes dead letters idempotently,
    # as its Spark source and dead-letter producer (streamotion_jobs.job._producer) do
    bootstrap = use(monkeypatch, a.env["job"])
    job = confluent_config(bootstrap)
    assert read(job, a.topics["raw"], job_group_prefix(a.p) + "-test", EVENTS) == (EVENTS, None)
    from streamotion_jobs.job import _producer, topic_end_offsets

    dead: list = []
    producer = _producer(bootstrap)
    producer.produce(a.topics["deadLetter"], b"{}", on_delivery=lambda err, _m: dead.append(err))
    producer.flush(15)
    assert dead == [None]
    assert sum(topic_end_offsets(bootstrap, a.topics["raw"]).values()) == EVENTS


def test_a_producer_cannot_touch_another_pipeline_nor_read_dead_letters(broker, pipes, monkeypatch):
    a, b = pipes
    conf = confluent_config(use(monkeypatch, a.env["producer"]))
    assert produce_one(conf, a.topics["raw"]) is None
    assert produce_one(conf, b.topics["raw"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(conf, b.topics["deadLetter"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    # another pipeline's topics are not even described to it; its own dead letters cannot be read
    c = Consumer({**conf, "group.id": "unused"})
    for topic in b.topics.values():
        assert (
            c.list_topics(topic, timeout=10).topics[topic].error.code()
            == KafkaError.TOPIC_AUTHORIZATION_FAILED
        )
    c.close()
    n, err = read(conf, a.topics["deadLetter"], None, 1)
    assert n == 0 and err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    # nor can the other pipeline's job read this pipeline's raw topic
    c = Consumer({**confluent_config(use(monkeypatch, b.env["job"])), "group.id": "unused"})
    raw = a.topics["raw"]
    assert c.list_topics(raw, timeout=10).topics[raw].error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    c.close()


def test_a_restarted_producer_resumes_from_its_raw_topic(broker, pipes, monkeypatch):
    """streamotion_ingest.resume reads the tail of the raw topic under the producer's identity: the
    replay source's pass cursor of the events published by the first test's run comes back."""
    from streamotion_ingest.resume import last_cursors

    a, _ = pipes
    bootstrap = use(monkeypatch, a.env["producer"])
    if not last_cursors(bootstrap, a.topics["raw"], "replay", timeout=20):  # run alone: publish first
        from tests.ingest_helpers import run_source

        assert run_source(a.p, "replay", bootstrap) == EVENTS
    start = time.monotonic()
    assert last_cursors(bootstrap, a.topics["raw"], "replay", timeout=20) != []
    assert time.monotonic() - start < 10


def test_the_job_cannot_write_the_raw_topic_nor_use_other_groups(broker, pipes, monkeypatch):
    a, _ = pipes
    conf = confluent_config(use(monkeypatch, a.env["job"]))
    assert produce_one(conf, a.topics["raw"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    n, err = read(conf, a.topics["raw"], "some-other-group", 1)
    assert n == 0 and err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err


def test_unauthenticated_and_foreign_clients_are_refused(broker, pipes, tmp_path):
    a, _ = pipes
    raw = a.topics["raw"]
    fast = {"socket.timeout.ms": 3000, "reconnect.backoff.max.ms": 500}
    # no TLS at all, TLS without a client certificate, a certificate from another CA
    plain = {"bootstrap.servers": broker.bootstrap, **fast}
    no_cert = {**plain, "security.protocol": "SSL", "ssl.ca.location": str(broker.ca.cert_path)}
    other = CertificateAuthority(tmp_path / "other-ca").issue(a.producer_user)  # same name, wrong CA
    foreign = {**no_cert, "ssl.certificate.location": str(other.cert), "ssl.key.location": str(other.key)}
    wrong_password = confluent_config(
        None,
        broker.client_env(scram=(a.producer_user, "not-the-password")),
    ) | {"bootstrap.servers": broker.scram_bootstrap, **fast}
    refused = [produce_one(conf, raw, timeout=6) for conf in (plain, no_cert, foreign, wrong_password)]
    # `is`, never `in`/`==`: confluent-kafka's KafkaError compared with None leaves a TypeError pending
    # ("'NoneType' object cannot be interpreted as an integer") that surfaces at a later, unrelated line
    assert len(refused) == 4 and all(r is not None for r in refused), refused
    # the same producer with its real credentials gets in, over mTLS and over SCRAM
    assert produce_one(broker.client_config(broker.issue(a.producer_user)), raw) is None
    assert (
        produce_one(broker.client_config(scram=(a.producer_user, a.passwords[a.producer_user])), raw) is None
    )


def test_scram_identities_have_the_same_rights(broker, pipes):
    a, b = pipes
    conf = broker.client_config(scram=(a.producer_user, a.passwords[a.producer_user]))
    assert produce_one(conf, a.topics["raw"]) is None
    assert produce_one(conf, b.topics["raw"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    job = broker.client_config(scram=(a.job_user, a.passwords[a.job_user]))
    assert produce_one(job, a.topics["raw"]).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    n, err = read(job, a.topics["raw"], job_group_prefix(a.p) + "-scram", 1)
    assert n == 1 and err is None


def _publish_while(publisher, stop: threading.Event, sent: list, prefix: str) -> None:
    from streamotion_ingest.publisher import make_event, now

    i = 0
    while not stop.is_set():
        event = make_event(
            None, id=f"{prefix}{i}", text=f"event {i}", created_at=now(), platform="replay", source="replay"
        )
        publisher.publish(event, apply_filters=False)
        sent.append(f"{prefix}{i}")
        i += 1
        time.sleep(0.005)


def _count_ids(broker: KafkaBroker, topic: str, prefix: str) -> set[str]:
    import json

    c = Consumer(
        {**broker.admin_config(), "group.id": f"count-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    md = c.list_topics(topic, timeout=10).topics[topic]
    ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    ids: list[str] = []
    left = dict(ends)
    deadline = time.monotonic() + 30
    while any(v > 0 for v in left.values()) and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        left[m.partition()] = ends[m.partition()] - m.offset() - 1
        if m.value().startswith(b"{"):  # other tests' records are b"x"
            doc = json.loads(m.value())
            if doc["id"].startswith(prefix):
                ids.append(doc["id"])
    c.close()
    assert len(ids) == len(set(ids)), "duplicates"
    return set(ids)


@pytest.mark.parametrize("mode", ["tls", "scram-sha-512"])
def test_credentials_rotated_under_a_running_producer_are_picked_up_without_loss(
    broker, pipes, monkeypatch, tmp_path, mode
):
    """The producer watches its mounted credential files and, when they change, delivers what its
    client holds, then goes on with a new client (librdkafka reads the files only when created)."""
    from streamotion_ingest.run import make_publisher

    a, _ = pipes
    user = a.producer_user
    if mode == "tls":
        identity = broker.issue(user)
        env = broker.client_env(identity)
    else:
        secret = tmp_path / "password"
        secret.write_text(a.passwords[user])
        env = broker.client_env(scram=(user, "")) | {"STREAMOTION_KAFKA_PASSWORD_FILE": str(secret)}
        env.pop("STREAMOTION_KAFKA_PASSWORD")
    bootstrap = use(monkeypatch, env)
    publisher = make_publisher(a.p, "replay", bootstrap)
    publisher._watch.interval = 0.2
    stop, sent = threading.Event(), []
    writer = threading.Thread(target=_publish_while, args=(publisher, stop, sent, f"rot-{mode}-"))
    writer.start()
    try:
        time.sleep(1.0)
        before = len(sent)
        if mode == "tls":
            broker.issue(user)  # new key and certificate, files replaced in place
        else:  # a new password on the broker (the old one stops working), then in the mounted file
            new = uuid.uuid4().hex
            broker.add_scram_user(user, new)
            secret.write_text(new)
            a.passwords[user] = new
        deadline = time.monotonic() + 30
        while publisher.rotations == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.rotations == 1
        while len(sent) < before + 200 and time.monotonic() < deadline:  # published after the swap
            time.sleep(0.05)
    finally:
        stop.set()
        writer.join(10)
        assert publisher.close(60) == 0
    assert publisher.metrics.failed._value.get() == 0
    assert _count_ids(broker, a.topics["raw"], f"rot-{mode}-") >= set(sent) and len(sent) > before + 100


def test_the_client_environment_is_checked(tmp_path):
    with pytest.raises(KafkaSecurityError, match="STREAMOTION_KAFKA_CERT, STREAMOTION_KAFKA_KEY"):
        confluent_config("h:1", {"STREAMOTION_KAFKA_SECURITY": "tls", "STREAMOTION_KAFKA_CA": "x"})
    with pytest.raises(KafkaSecurityError, match="expected one of plaintext, tls, scram-sha-512"):
        confluent_config("h:1", {"STREAMOTION_KAFKA_SECURITY": "ssl"})
    with pytest.raises(KafkaSecurityError, match="STREAMOTION_KAFKA_CA=/nowhere: not a readable file"):
        confluent_config(
            "h:1",
            {"STREAMOTION_KAFKA_SECURITY": "scram-sha-512", "STREAMOTION_KAFKA_CA": "/nowhere"}
            | {"STREAMOTION_KAFKA_USERNAME": "u", "STREAMOTION_KAFKA_PASSWORD": "p"},
        )
    assert confluent_config("h:1", {}) == {"bootstrap.servers": "h:1"} and spark_kafka_options({}) == {}
    ca = tmp_path / "ca.crt"
    ca.write_text("x")
    scram = {"STREAMOTION_KAFKA_SECURITY": "scram-sha-512", "STREAMOTION_KAFKA_CA": str(ca)}
    scram |= {"STREAMOTION_KAFKA_USERNAME": "u", "STREAMOTION_KAFKA_PASSWORD": 'p"\\q'}
    assert spark_kafka_options(scram)["kafka.sasl.jaas.config"] == (
        'org.apache.kafka.common.security.scram.ScramLoginModule required username="u" password="p\\"\\\\q";'
    )


@pytest.mark.parametrize("mode", ["tls", "scram-sha-512"])
def test_sparks_kafka_source_reads_with_the_jobs_identity(broker, pipes, spark_session, mode):
    """The job's Spark Kafka source (Kafka's Java client) with spark_kafka_options: PEM truststore by
    location, PEM keystore inline (apache/kafka SslConfigs ssl.keystore.key / certificate.chain), SCRAM
    by sasl.jaas.config (apache/spark v4.0.0 docs/streaming/structured-streaming-kafka-integration.md)."""
    a, _ = pipes
    if mode == "tls":
        env, bootstrap = a.env["job"], broker.bootstrap
    else:
        env = broker.client_env(scram=(a.job_user, a.passwords[a.job_user]))
        bootstrap = broker.scram_bootstrap
    df = (
        spark_session.read.format("kafka")
        .option("kafka.bootstrap.servers", bootstrap)
        .options(**spark_kafka_options(env))
        .option("subscribe", a.topics["raw"])
        .option("groupIdPrefix", job_group_prefix(a.p))
        .load()
    )
    assert df.count() >= EVENTS


@pytest.fixture(scope="module")
def spark_session():
    from streamotion_jobs.spark import session

    s = session("streamotion-security-tests", master="local[1]")
    yield s
    s.stop()


def test_dev_kafka_secure_command_gives_each_component_an_identity(tmp_path, root):
    """``streamotion dev kafka --secure --pipeline examples/demo.yaml``: the pipeline's topics, ACLs and
    an env file per component; a component's env file is all a client needs."""
    import signal
    import subprocess
    import sys

    import yaml

    demo = root / "examples" / "demo.yaml"
    argv = [sys.executable, "-m", "streamotion", "dev", "kafka", "--secure", "--workdir", str(tmp_path)]
    proc = subprocess.Popen(
        [*argv, "--pipeline", str(demo)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        bootstrap = proc.stdout.readline().strip()
        assert bootstrap.startswith("127.0.0.1:"), bootstrap
        p = parse(yaml.safe_load(demo.read_text()))
        source = p.spec.sources[0].name
        env_file = tmp_path / "env" / f"{identity_of(p, 'producer', source).user}.env"
        env = dict(line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines())
        assert env["STREAMOTION_KAFKA_BOOTSTRAP"] == bootstrap and env["STREAMOTION_KAFKA_SECURITY"] == "tls"
        raw = topic_names(p)["raw"]
        assert produce_one(confluent_config(None, env) | {"bootstrap.servers": bootstrap}, raw) is None
        scram_file = env_file.with_name(env_file.stem + "-scram.env")
        scram = dict(
            line.removeprefix("export ").split("=", 1) for line in scram_file.read_text().splitlines()
        )
        assert scram["STREAMOTION_KAFKA_SECURITY"] == "scram-sha-512"
        assert produce_one(confluent_config(scram["STREAMOTION_KAFKA_BOOTSTRAP"], scram), raw) is None
        refused = produce_one({"bootstrap.servers": bootstrap, "socket.timeout.ms": 2000}, raw, timeout=5)
        assert refused is not None  # plaintext: no such listener
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_the_pinned_librdkafka_has_no_certificate_hot_reload():
    """Why producers recreate their client on rotation: librdkafka 2.16 reads the PEM files once per
    client (confluentinc/librdkafka src/rdkafka_ssl.c rd_kafka_ssl_ctx_init). A newer librdkafka with
    ssl.certificate.refresh.interval.ms (file hot reload) makes this test fail: use it then."""
    with pytest.raises(KafkaException, match="No such configuration property"):
        Producer({"bootstrap.servers": "127.0.0.1:1", "ssl.certificate.refresh.interval.ms": 1000})


def test_credentials_caught_mid_rotation_keep_the_old_client_until_they_fit(
    broker, pipes, monkeypatch, tmp_path
):
    """A key that does not match the certificate (files caught between two writes) is not switched to:
    the producer goes on with its old client and switches once the pair is whole again."""
    import shutil

    from streamotion_ingest.publisher import make_event, now
    from streamotion_ingest.run import make_publisher

    a, _ = pipes
    mine = broker.issue(a.producer_user)
    files = tmp_path / "mounted"
    files.mkdir()
    for f in (mine.ca, mine.cert, mine.key):
        shutil.copy(f, files / f.name)
    env = broker.client_env(mine) | {
        "STREAMOTION_KAFKA_CA": str(files / "ca.crt"),
        "STREAMOTION_KAFKA_CERT": str(files / "user.crt"),
        "STREAMOTION_KAFKA_KEY": str(files / "user.key"),
    }
    publisher = make_publisher(a.p, "replay", use(monkeypatch, env))
    publisher._watch.interval = 0.1
    try:
        other = CertificateAuthority(tmp_path / "x").issue("x")
        shutil.copy(other.key, files / "user.key")  # a key of another certificate
        time.sleep(1.0)
        assert publisher.rotations == 0
        event = make_event(
            None, id="mid-rotation", text="t", created_at=now(), platform="replay", source="replay"
        )
        publisher.publish(event, apply_filters=False)
        assert publisher.flush(15) == 0 and publisher.metrics.failed._value.get() == 0
        renewed = broker.issue(a.producer_user)
        shutil.copy(renewed.key, files / "user.key")
        shutil.copy(renewed.cert, files / "user.crt")
        deadline = time.monotonic() + 15
        while publisher.rotations == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert publisher.rotations == 1
    finally:
        assert publisher.close(30) == 0

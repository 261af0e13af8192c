"""Pipeline topics on a real three-broker KRaft cluster (streamotion.dev.kafka.KafkaCluster), configured
as the chart's Kafka is for kafka.replicas 3 (values-gke.yaml): default.replication.factor 3,
min.insync.replicas 2, every node a broker and a controller.

The topics are created exactly as the operator renders their KafkaTopic and as Strimzi's Topic
Operator turns one into a Kafka topic (KafkaCluster.create_kafka_topic), then written by an
idempotent acks=all producer, as the pipeline's producers write (streamotion_ingest.publisher).
"""

from __future__ import annotations

import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from confluent_kafka import Consumer, KafkaError, Producer
from confluent_kafka.admin import ConfigResource
from streamotion_operator import builders
from streamotion_operator.config import OperatorConfig

from streamotion.api.models import StreamPipeline
from streamotion.dev.kafka import KafkaCluster

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    kafka = KafkaCluster(brokers=3, workdir=tmp_path_factory.mktemp("kafka-cluster"), heap="256m")
    try:
        kafka.start()
        yield kafka
    finally:
        kafka.stop()
        assert _jvms_under(kafka.workdir) == [], "a broker JVM outlived the cluster"


def _jvms_under(workdir: Path) -> list[int]:
    """Pids of live (not zombie) kafka.Kafka JVMs whose config lies under ``workdir``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"kafka.Kafka" in cmdline and str(workdir).encode() in cmdline and state != "Z":
            found.append(int(proc.name))
    return found


def _pipeline(replicas: int | None = None) -> StreamPipeline:
    body = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    body["metadata"] = {"name": f"p{uuid.uuid4().hex[:8]}", "namespace": "team"}
    if replicas is not None:
        body["spec"]["kafka"]["replicas"] = replicas
    return StreamPipeline.model_validate(body)


def _raw_topic(p: StreamPipeline, cfg: OperatorConfig) -> dict:
    return next(
        t
        for t in builders.kafka_topics(p, cfg)
        if t["metadata"]["labels"]["streamotion.io/topic-role"] == "raw"
    )


def _produce(bootstrap: str, topic: str, partitions: int, n: int, **conf) -> dict[int, list]:
    """``n`` messages to each partition; the delivery errors (None: delivered) by partition."""
    p = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 15000, **conf})
    errors: dict[int, list] = {i: [] for i in range(partitions)}
    for part in range(partitions):
        for i in range(n):
            p.produce(
                topic,
                value=f"{part}-{i}".encode(),
                partition=part,
                on_delivery=lambda err, msg, part=part: errors[part].append(err),
            )
    assert p.flush(60) == 0
    return errors


def _consume_all(bootstrap: str, topic: str, n: int, timeout: float = 60) -> list[str]:
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out: list[str] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is not None and m.error() is None:
                out.append(m.value().decode())
    finally:
        c.close()
    return out


def _metadata(admin, name: str, partitions: int, timeout: float = 30):
    """The topic's metadata once it lists every partition with a leader: brokers learn of a new topic
    asynchronously, and a client may ask one that does not know it yet."""
    deadline = time.monotonic() + timeout
    while True:
        md = admin.list_topics(name, timeout=10).topics.get(name)
        complete = md and md.error is None and len(md.partitions) == partitions
        if complete and all(p.leader >= 0 for p in md.partitions.values()):
            return md
        assert time.monotonic() < deadline, f"topic {name}: metadata incomplete after {timeout}s"
        time.sleep(0.2)


@contextmanager
def _broker_down(cluster: KafkaCluster, node_id: int):
    """Node ``node_id`` stopped (controlled shutdown) for the block, started again after it."""
    i = node_id - 1
    cluster.stop_broker(i)
    try:
        deadline = time.monotonic() + 30
        while node_id in cluster.admin().list_topics(timeout=10).brokers:  # fenced and gone
            assert time.monotonic() < deadline, f"broker {node_id} still registered after 30s"
            time.sleep(0.2)
        yield
    finally:
        cluster.start_broker(i)


def test_cluster_is_configured_as_the_charts_three_broker_kafka(cluster):
    """Also Strimzi 1.2.0 topic-operator/src/main/java/io/strimzi/operator/topic/TopicOperatorUtil.java
    (replicas(), partitions(): BROKER_DEFAULT -1 when spec.replicas / spec.partitions is absent) with
    KafkaHandler.buildNewTopic: a KafkaTopic without replicas gets the broker's default.replication.factor,
    as the CRD (043-Crd-kafkatopic.yaml, spec.replicas) says."""
    admin = cluster.admin()
    md = admin.list_topics(timeout=10)
    assert sorted(md.brokers) == [1, 2, 3]
    config = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "1")])
    values = {k: v.value for k, v in next(iter(config.values())).result(timeout=30).items()}
    assert values["default.replication.factor"] == "3" and values["min.insync.replicas"] == "2"
    name = cluster.create_kafka_topic({"metadata": {"name": f"bare-{uuid.uuid4().hex[:6]}"}, "spec": {}})
    partitions = _metadata(admin, name, 1).partitions  # num.partitions 1
    assert [len(p.replicas) for p in partitions.values()] == [3]  # replication 3


def test_gke_topics_keep_taking_acks_all_writes_with_a_broker_down(cluster):
    """The operator's default topic for the chart's GKE Kafka (STREAMOTION_KAFKA_REPLICAS = min(3 brokers, 3),
    see test_chart.py::test_operator_topic_defaults_follow_the_brokers) keeps every idempotent acks=all write
    while the broker leading one of its partitions is down; its min.insync.replicas is 2, so each of
    those writes is on two brokers. Before, the topic had one replica: that partition went offline.
    Also: with replicas 2 (explicit), min.insync.replicas is 2 as well: writes whose partition lost a
    replica are refused (NOT_ENOUGH_REPLICAS), never kept by a single broker.
    (apache/kafka core/src/main/scala/kafka/cluster/Partition.scala appendRecordsToLeader: acks=-1
    writes with an ISR smaller than the effective min ISR throw NotEnoughReplicasException.)"""
    cfg = OperatorConfig.from_env({"STREAMOTION_KAFKA_REPLICAS": str(cluster.replication_factor)})
    topic = _raw_topic(_pipeline(), cfg)
    name, partitions = topic["spec"]["topicName"], topic["spec"]["partitions"]
    cluster.create_kafka_topic(topic)
    pair = _raw_topic(_pipeline(replicas=2), cfg)
    cluster.create_kafka_topic(pair)
    admin = cluster.admin()
    victim = _metadata(admin, name, partitions).partitions[0].leader
    pair_md = _metadata(admin, pair["spec"]["topicName"], pair["spec"]["partitions"])
    n = 20
    with _broker_down(cluster, victim):
        errors = _produce(
            cluster.bootstrap, name, partitions, n, **{"enable.idempotence": True, "acks": "all"}
        )
        assert {part: {str(e) for e in errs} for part, errs in errors.items()} == {
            part: {"None"} for part in range(partitions)
        }, f"deliveries with broker {victim} (leader of partition 0) down"
        got = _consume_all(cluster.bootstrap, name, n * partitions)
        assert sorted(got) == sorted(f"{part}-{i}" for part in range(partitions) for i in range(n))

        # replicas 2 -> min ISR 2: a partition with a replica on the stopped broker refuses acks=all writes
        # (retries 0: the broker's own error, not the client's retry timeout).
        pair_errors = _produce(
            cluster.bootstrap, pair["spec"]["topicName"], len(pair_md.partitions), 1, acks="all", retries=0
        )
        for part, p in pair_md.partitions.items():
            (err,) = pair_errors[part]
            if victim in p.replicas:
                assert err is not None and err.code() == KafkaError.NOT_ENOUGH_REPLICAS, (part, err)
            else:
                assert err is None, (part, err)
    assert pair["spec"]["replicas"] == 2 and pair["spec"]["config"]["min.insync.replicas"] == "2"


def test_kafka_caps_min_insync_replicas_at_the_replication_factor(cluster):
    """apache/kafka 3.7.0 and later (KAFKA-15583, commit edc7e10a745), core/src/main/scala/kafka/cluster/
    Partition.scala: effectiveMinIsr = min(min.insync.replicas, replicas) in appendRecordsToLeader. So a
    one-replica topic under a broker min.insync.replicas of 2 (what the operator rendered for the GKE Kafka
    before) takes acks=all writes on every Kafka that Strimzi 1.2.0 runs (kafka-versions.yaml: 4.2.0 to
    4.3.1; here the 4.3.1 broker): its fault was no redundancy (see the test above), not NOT_ENOUGH_REPLICAS."""
    name = cluster.create_topic(f"rf1-{uuid.uuid4().hex[:6]}", partitions=3, replicas=1)
    errors = _produce(cluster.bootstrap, name, 3, 5, **{"enable.idempotence": True, "acks": "all"})
    assert all(e is None for errs in errors.values() for e in errs), errors


def test_a_cluster_that_fails_to_start_leaves_no_broker_running(tmp_path):
    """Every node's JVM is running when the wait gives up (1 s: before any broker can serve)."""
    kafka = KafkaCluster(brokers=3, workdir=tmp_path, heap="256m")
    with pytest.raises(TimeoutError):
        kafka.start(timeout=1)
    assert _jvms_under(tmp_path) == []
    assert not any(n.alive() for n in kafka.nodes)
    assert len(list(tmp_path.glob("node-*/broker.log"))) == 3  # all three had been started


def test_a_broker_in_a_small_heap_starts_its_log_cleaner(tmp_path):
    """The log cleaner allocates its whole dedupe buffer as one array when the broker starts
    (apache/kafka 4.3.1 storage/.../internals/log/LogCleaner.java ``startup`` -> ``SkimpyOffsetMap``
    ``ByteBuffer.allocate``; ``log.cleaner.dedupe.buffer.size`` 128 MiB by default in CleanerConfig.java).
    The chaos benchmark's 256 MiB brokers died at start with ``OutOfMemoryError: Java heap space``
    there; the dev brokers use 16 MiB, so even a 128 MiB heap starts and takes writes."""
    from streamotion.dev.kafka import DEDUPE_BUFFER_BYTES, KafkaBroker

    with KafkaBroker(tmp_path / "small", heap="128m") as broker:
        props = dict(
            line.split("=", 1) for line in broker.config_path.read_text().splitlines() if "=" in line
        )
        assert int(props["log.cleaner.dedupe.buffer.size"]) == DEDUPE_BUFFER_BYTES <= 32 * 1024 * 1024
        name = broker.create_topic(f"small-{uuid.uuid4().hex[:6]}")
        errors = _produce(broker.bootstrap, name, 1, 3, acks="all")
        assert all(e is None for errs in errors.values() for e in errs), errors

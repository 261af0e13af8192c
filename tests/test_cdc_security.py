"""A cdc source on a real secure Kafka broker (mTLS, KRaft's StandardAuthorizer, the ACLs of
streamotion.security.acls): Kafka Connect (standalone, as ``streamotion run --local --secure`` starts
it) writes the change topics under its own identity, the cdc producer reads them and publishes under
the source's producer identity, and neither may touch what is not theirs."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import KafkaError

from streamotion import cdc
from streamotion.naming import topic_names
from streamotion.security.acls import identity_of
from streamotion.security.clients import confluent_config
from tests.test_cdc import TABLE, cdc_pipeline, logical_pg, shop  # noqa: F401 (fixture)
from tests.test_kafka_security import produce_one, read, use


@pytest.fixture(scope="module")
def secure_kafka():
    from streamotion.dev.kafka import KafkaBroker

    with KafkaBroker(secure=True) as kafka:
        yield kafka


@pytest.fixture(scope="module")
def secured(secure_kafka, logical_pg, tmp_path_factory):  # noqa: F811
    """A cdc pipeline with its ACLs and certificates, and a standalone Connect worker running its
    connector under the Connect identity: what the local runner does with --secure
    (streamotion.local.cdc.connect_security and start)."""
    from streamotion.local import cdc as local_cdc

    kafka = secure_kafka
    host, port = logical_pg.address.split(":")
    p = cdc_pipeline("s" + uuid.uuid4().hex[:8], host=host, port=int(port))
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    kafka.create_topic(names["deadLetter"])
    kafka.apply_acls(p, "tls")
    connect_env = local_cdc.connect_security(kafka)
    producer_env = kafka.client_env(kafka.issue(identity_of(p, "producer", "reviews").user))
    local_cdc.prepare_database(logical_pg.dsn, "shop", p.spec.sources[0].cdc.tables)
    with shop(logical_pg) as conn:
        conn.execute("TRUNCATE reviews")
        conn.execute("INSERT INTO reviews (body, product) VALUES ('Secure and happy', 'mug'), ('Sad', 'cup')")
    worker, _ = local_cdc.start(
        p, logical_pg.dsn, kafka.bootstrap, tmp_path_factory.mktemp("connect-secure"), security=connect_env
    )
    try:
        yield p, producer_env, connect_env, worker
    finally:
        worker.stop()


def test_connect_and_the_cdc_producer_work_under_their_own_identities(secure_kafka, secured, monkeypatch):
    """Connect's worker config carries the client security at the top level and under producer.,
    consumer. and admin. (apache/kafka connect/runtime/src/main/java/org/apache/kafka/connect/runtime/
    Worker.java baseProducerConfigs: a source task's producer takes only ``producer.``-prefixed worker
    settings; adminConfigs: the top level and ``admin.``): without the prefixed copies its producer
    would speak plaintext to the TLS listener and no change would arrive."""
    from streamotion_ingest.cdc import Bridge
    from streamotion_ingest.run import make_publisher

    p, producer_env, _, worker = secured
    use(monkeypatch, producer_env)
    publisher = make_publisher(p, "reviews", secure_kafka.bootstrap)
    bridge = Bridge(p, "reviews", publisher)
    try:
        deadline = time.monotonic() + 90
        while bridge.handled < 2 and time.monotonic() < deadline:
            bridge.run_once(timeout=1.0)
        assert bridge.handled == 2, worker.status(next(iter(worker.connectors)))
    finally:
        bridge.close()
        assert publisher.close(30) == 0
    raw = [json.loads(m.value()) for m in read_as_admin(secure_kafka, topic_names(p)["raw"], 2)]
    assert sorted(e["text"] for e in raw) == ["Sad", "Secure and happy"]
    assert all(e["platform"] == "cdc" for e in raw)


def read_as_admin(kafka, topic: str, expect: int, timeout: float = 30) -> list:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer(
        {**kafka.admin_config(), "group.id": f"t-{uuid.uuid4().hex[:6]}", "enable.auto.commit": False}
    )
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    c.assign([TopicPartition(topic, i, 0) for i in parts])
    out: list = []
    deadline = time.monotonic() + timeout
    while len(out) < expect and time.monotonic() < deadline:
        m = c.poll(0.5)
        if m is not None and not m.error():
            out.append(m)
    c.close()
    return out


def test_the_cdc_producer_reads_only_its_own_change_topics_and_connect_writes_only_change_topics(
    secure_kafka, secured, monkeypatch
):
    p, producer_env, connect_env, _ = secured
    kafka = secure_kafka
    mine = cdc.table_topic(p, "reviews", TABLE)
    other = cdc_pipeline("o" + uuid.uuid4().hex[:8])
    theirs = cdc.table_topic(other, "reviews", TABLE)
    kafka.create_topic(theirs)
    assert produce_one(kafka.admin_config(), theirs) is None
    conf = confluent_config(use(monkeypatch, producer_env))
    group = cdc.bridge_group(p, "reviews")
    assert produce_one(kafka.admin_config(), mine) is None  # past the offsets the bridge committed
    n, err = read(conf, mine, group, 1)
    assert n == 1 and err is None
    n, err = read(conf, theirs, group, 1)
    assert n == 0 and err is not None and err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, err
    n, err = read(conf, mine, "another-group", 1)
    assert n == 0 and err is not None and err.code() == KafkaError.GROUP_AUTHORIZATION_FAILED, err
    # the producer writes no change topic; Connect writes change topics, no pipeline topic
    assert produce_one(conf, mine).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    connect = confluent_config(use(monkeypatch, connect_env))
    assert produce_one(connect, theirs) is None
    for topic in topic_names(p).values():
        assert produce_one(connect, topic).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED

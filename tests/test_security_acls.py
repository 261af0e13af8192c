"""The Kafka identities and ACLs of a pipeline's components (streamotion.security.acls): exactly what
each component needs, nothing of another pipeline's, within Strimzi's and Spark's rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion.security.acls import (
    MAX_USER_NAME,
    AclRule,
    component_identities,
    connect_identity,
    identity_of,
    job_group_prefix,
)

ROOT = Path(__file__).resolve().parents[1]


def pipeline(name: str = "reviews", namespace: str = "team-a", sources=("replay", "hooks")) -> StreamPipeline:
    types = {
        "replay": {"type": "replay", "replay": {}},
        "hooks": {"type": "http", "http": {"tokenSecret": "t"}},
    }
    return StreamPipeline.model_validate(
        {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "sources": [{"name": s, **types.get(s, types["replay"])} for s in sources],
                "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "pg"}}],
            },
        }
    )


def test_each_producer_writes_its_topics_and_the_job_reads_raw_and_writes_dead_letters():
    p = pipeline()
    raw, dlq = naming.topic_names(p)["raw"], naming.topic_names(p)["deadLetter"]
    ids = component_identities(p)
    assert [(i.component, i.source) for i in ids] == [
        ("producer", "replay"),
        ("producer", "hooks"),
        ("job", None),
    ]
    for producer in ids[:2]:
        assert producer.acls == (
            AclRule("topic", raw, "literal", ("Write", "Describe", "Read")),  # Read: resume
            AclRule("topic", dlq, "literal", ("Write", "Describe")),
            AclRule("cluster", None, "literal", ("IdempotentWrite",)),
        )
    assert identity_of(p, "job").acls == (
        AclRule("topic", raw, "literal", ("Read", "Describe")),
        AclRule("group", f"{raw}.job", "prefix", ("Read",)),
        AclRule("topic", dlq, "literal", ("Write", "Describe")),
    )
    # nothing else: no prefix on topics, no wildcard, a producer reads only its raw topic (resume) and
    # joins no group, no Write on raw for the job
    for ident in ids:
        for rule in ident.acls:
            assert rule.name is None or "*" not in rule.name
            assert rule.resource_type != "topic" or rule.pattern_type == "literal"
    assert [r.name for r in ids[0].acls if "Read" in r.operations] == [raw]
    assert not any(r.resource_type == "group" for r in ids[0].acls)
    assert not any(r.name == raw and "Write" in r.operations for r in ids[2].acls)


def test_strimzi_acl_entries_and_admin_api_bindings():
    """strimzi/strimzi-kafka-operator@1.2.0 packaging/install/cluster-operator/044-Crd-kafkauser.yaml:
    acls[].resource {type topic|group|cluster|transactionalId, name, patternType literal|prefix},
    operations [Read, Write, Describe, IdempotentWrite, ...]; the cluster resource has no name."""
    p = pipeline()
    job = identity_of(p, "job")
    assert job.acls[1].strimzi() == {
        "resource": {"type": "group", "name": job_group_prefix(p), "patternType": "prefix"},
        "operations": ["Read"],
    }
    cluster = identity_of(p, "producer", "replay").acls[2]
    assert cluster.strimzi() == {"resource": {"type": "cluster"}, "operations": ["IdempotentWrite"]}
    assert cluster.bindings() == [("CLUSTER", "kafka-cluster", "LITERAL", "IDEMPOTENT_WRITE")]
    assert job.acls[1].bindings() == [("GROUP", job_group_prefix(p), "PREFIXED", "READ")]
    # every operation name is one of the CRD's enum
    crd = yaml.safe_load((ROOT.parent / "shared/crds/strimzi-1.2.0/044-Crd-kafkauser.yaml").read_text())
    acl = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"][
        "authorization"
    ]["properties"]["acls"]["items"]["properties"]
    for ident in component_identities(p):
        for rule in ident.acls:
            assert set(rule.operations) <= set(acl["operations"]["items"]["enum"])
            assert rule.resource_type in acl["resource"]["properties"]["type"]["enum"]


def test_principals_follow_strimzi_user_names():
    """strimzi/strimzi-kafka-operator@1.2.0 user-operator/src/main/java/io/strimzi/operator/user/model/
    KafkaUserModel.java: a TLS user's principal is CN=<KafkaUser name> (getTlsUserName), a SCRAM
    user's is the name itself; a TLS user's name is at most 64 characters (validateTlsUsername)."""
    job = identity_of(pipeline(), "job")
    assert job.principal("tls") == f"User:CN={job.user}"
    assert job.principal("scram-sha-512") == f"User:{job.user}"


@pytest.mark.parametrize("ns", ["a", "n" * 63])
def test_user_names_are_short_unique_and_dns_labels(ns):
    longest = pipeline("p" * 30, ns, sources=("s" * 20, "replay"))
    other_ns = pipeline("p" * 30, ns + "x" if len(ns) < 63 else "m" * 63, sources=("s" * 20, "replay"))
    users = [i.user for i in component_identities(longest)]
    assert all(len(u) <= MAX_USER_NAME for u in users)
    assert len(set(users)) == len(users)
    assert not set(users) & {i.user for i in component_identities(other_ns)}


def test_the_job_uses_the_group_prefix_its_acl_allows():
    """apache/spark v4.0.0 connector/kafka-0-10-sql/src/main/scala/org/apache/spark/sql/kafka010/
    KafkaSourceProvider.scala: streamingUniqueGroupId / batchUniqueGroupId name the groups
    <groupIdPrefix>-<uuid>[-<hash>] (default prefix spark-kafka-source / spark-kafka-relation, which
    the job's ACL would refuse), so the streaming read and the backfill's batch read both set it."""
    for path in ("jobs/streamotion_jobs/job.py", "jobs/streamotion_jobs/backfill.py"):
        assert '.option("groupIdPrefix", job_group_prefix(cfg.pipeline))' in (ROOT / path).read_text()
    p = pipeline()
    assert f"{naming.topic_names(p)['raw']}.job-lag".startswith(job_group_prefix(p))  # LagMonitor's group


def test_a_cdc_producer_also_reads_its_own_change_topics_in_its_group_and_nothing_more():
    """streamotion_ingest.cdc.Bridge subscribes to the tables' topics (Debezium names them
    <topic.prefix>.<schema>.<table>: debezium/debezium@v3.6.1.Final debezium-connector-common/.../schema/
    DefaultTopicNamingStrategy.java) in cdc.bridge_group; the prefix + "." is no other source's
    prefix (no "." in a namespace, pipeline or source name)."""
    from streamotion import cdc
    from tests.test_cdc import cdc_pipeline

    p = cdc_pipeline("shop")
    producer = identity_of(p, "producer", "reviews")
    plain = identity_of(pipeline(), "producer", "replay").acls
    assert len(producer.acls) == len(plain) + 2
    change = AclRule("topic", "streamotion-cdc.test.shop.reviews.", "prefix", ("Read", "Describe"))
    group = AclRule("group", "streamotion.test.shop.reviews.cdc", "literal", ("Read",))
    assert producer.acls[-2:] == (change, group)
    for topic in cdc.source_topics(p, p.spec.sources[0]):
        assert topic.startswith(change.name)
    from streamotion_ingest.cdc import consumer_group

    assert consumer_group(p, "reviews") == group.name
    # another source's, another pipeline's change topics are outside the prefix; no pipeline topic
    # (streamotion.<ns>.<pipeline>.*) is under Connect's streamotion-cdc. prefix
    for other in (cdc_pipeline("shop2"), cdc_pipeline("sho")):
        assert not cdc.table_topic(other, "reviews", "public.reviews").startswith(change.name)
    assert not cdc.table_topic(p, "reviews2", "public.reviews").startswith(change.name)
    assert not any(t.startswith(cdc.TOPIC_ROOT + ".") for t in naming.topic_names(p).values())
    assert not any(r.name and r.name.startswith(cdc.TOPIC_ROOT) for r in identity_of(p, "job").acls)


def test_kafka_connects_identity():
    """strimzi/strimzi-kafka-operator@1.2.0 documentation/modules/configuring/
    proc-config-kafka-connect-user-authorization.adoc: Create, Describe, Read, Write on the offset,
    status and config storage topics and Read on the group; apache/kafka connect/runtime/.../
    Worker.java baseProducerConfigs forces enable.idempotence=false for source tasks' producers (no
    IdempotentWrite); Write, Create and Describe on the change topics (topic.creation.enable)."""
    from streamotion import cdc

    c = connect_identity("my-connect")
    assert c.user == "my-connect" and c.principal("tls") == "User:CN=my-connect"
    storage = ("Create", "Describe", "Read", "Write")
    assert c.acls == (
        AclRule("topic", "my-connect-configs", "literal", storage),
        AclRule("topic", "my-connect-offsets", "literal", storage),
        AclRule("topic", "my-connect-status", "literal", storage),
        AclRule("group", "my-connect", "literal", ("Read",)),
        AclRule("topic", f"{cdc.TOPIC_ROOT}.", "prefix", ("Write", "Create", "Describe")),
    )
    # standalone (run --local): offsets and configuration in files, the change topics only
    assert connect_identity(distributed=False).acls == c.acls[-1:]
    assert c.acls[-1].bindings() == [
        ("TOPIC", "streamotion-cdc.", "PREFIXED", op) for op in ("WRITE", "CREATE", "DESCRIBE")
    ]

"""The Kafka identity of each pipeline component and the ACLs it needs, nothing more.

One pure function of the pipeline (:func:`component_identities`) feeds both the operator (a Strimzi
``KafkaUser`` per identity, ``spec.authorization.acls`` from :meth:`AclRule.strimzi`) and the local
secure broker (the same rules applied through Kafka's Admin API from :meth:`AclRule.bindings`), so
what is tested on one machine is what a cluster enforces.

Per pipeline:

* each producer (one per source): Write and Describe on the raw topic and on the dead-letter topic,
  IdempotentWrite on the cluster (its producer is idempotent); a ``cdc`` source's producer also Read
  and Describe on its change topics (the prefix :func:`streamotion.cdc.topic_prefix` + ``.``: every
  table of that source, no other source's) and Read on its consumer group
  (:func:`streamotion.cdc.bridge_group`, literal);
* the job: Read and Describe on the raw topic, Read on its consumer groups (the prefix
  :func:`job_group_prefix`, set as the Spark Kafka source's ``groupIdPrefix``), Write and Describe on
  the dead-letter topic (its idempotent dead-letter producer is allowed InitProducerId by that Write,
  KIP-679: apache/kafka KafkaApis.handleInitProducerIdRequest accepts IdempotentWrite on the cluster
  OR Write on any topic).

Nothing else: no wildcard, no other pipeline's names, no topic prefix but a cdc source's own.

Kafka Connect (:func:`connect_identity`, one per Connect cluster, shared by every pipeline's cdc
sources): its internal topics and group, and Write, Create and Describe under ``streamotion-cdc.``
(the change topics of every pipeline, which no pipeline topic shares).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Literal

from streamotion import cdc, naming
from streamotion.api.models import StreamPipeline

ResourceType = Literal["topic", "group", "cluster"]
PatternType = Literal["literal", "prefix"]
Operation = Literal["Read", "Write", "Describe", "Create", "IdempotentWrite"]
Component = Literal["producer", "job", "connect"]
Authentication = Literal["tls", "scram-sha-512"]

# Strimzi's user name limit with TLS client authentication: the CN of the user certificate
# (strimzi/strimzi-kafka-operator@1.2.0 user-operator/.../model/KafkaUserModel.java validateTlsUsername)
MAX_USER_NAME = 64


@dataclass(frozen=True)
class AclRule:
    """One allow rule: operations on a resource (the cluster has no name)."""

    resource_type: ResourceType
    name: str | None
    pattern_type: PatternType
    operations: tuple[Operation, ...]

    def strimzi(self) -> dict[str, Any]:
        """The rule as a KafkaUser ``spec.authorization.acls`` entry (kafka.strimzi.io/v1)."""
        resource: dict[str, Any] = {"type": self.resource_type}
        if self.resource_type != "cluster":
            resource["name"] = self.name
            resource["patternType"] = self.pattern_type
        return {"resource": resource, "operations": list(self.operations)}  # type allow, host * (defaults)

    def bindings(self) -> list[tuple[str, str, str, str]]:
        """(resource type, resource name, pattern type, operation) per operation, in Kafka's Admin API
        names (confluent_kafka.admin ResourceType / ResourcePatternType / AclOperation member names);
        the cluster resource is named ``kafka-cluster`` there."""
        name = "kafka-cluster" if self.resource_type == "cluster" else str(self.name)
        pattern = "PREFIXED" if self.pattern_type == "prefix" else "LITERAL"
        return [(self.resource_type.upper(), name, pattern, _ADMIN_OPERATION[op]) for op in self.operations]


_ADMIN_OPERATION = {
    "Read": "READ",
    "Write": "WRITE",
    "Describe": "DESCRIBE",
    "Create": "CREATE",
    "IdempotentWrite": "IDEMPOTENT_WRITE",
}


@dataclass(frozen=True)
class Identity:
    """A pipeline component's Kafka user: the KafkaUser's name (also the Secret Strimzi writes its
    credentials into), which component uses it, and its ACLs."""

    user: str
    component: Component
    source: str | None
    acls: tuple[AclRule, ...]

    def principal(self, authentication: Authentication) -> str:
        """The principal Kafka's authorizer sees: ``User:CN=<user>`` with mutual TLS (the user
        certificate's subject, KafkaUserModel.getTlsUserName), ``User:<user>`` with SCRAM."""
        return f"User:CN={self.user}" if authentication == "tls" else f"User:{self.user}"


def job_group_prefix(p: StreamPipeline) -> str:
    """Prefix of every consumer group the job uses. Spark's Kafka source names its groups
    ``<groupIdPrefix>-<uuid>-<hash>`` (and ``...-driver``, ``...-executor``) with the default prefix
    ``spark-kafka-source`` (``spark-kafka-relation`` for batch reads) unless the ``groupIdPrefix``
    option is set (apache/spark v4.0.0 connector/kafka-0-10-sql/.../KafkaSourceProvider.scala
    streamingUniqueGroupId, batchUniqueGroupId, kafkaParamsForExecutors); the job's lag monitor's
    group (``<raw topic>.job-lag``) shares it."""
    return f"{naming.topic_names(p)['raw']}.job"


def _hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:6]


def producer_user(p: StreamPipeline, source: str) -> str:
    """KafkaUser name of a source's producer: unique across pipeline namespaces (the hash), at most
    30 + 5 + 20 + 7 = 62 characters (pipeline and source name limits), under MAX_USER_NAME."""
    return f"{p.name}-src-{source}-{_hash(p.namespace, p.name, 'producer', source)}"


def job_user(p: StreamPipeline) -> str:
    """KafkaUser name of the streaming job."""
    return f"{p.name}-job-{_hash(p.namespace, p.name, 'job')}"


def _cdc_acls(p: StreamPipeline, source: str, cdc_block) -> tuple[AclRule, ...]:
    """What a cdc source's producer (streamotion_ingest.cdc.Bridge) needs besides a producer's: read
    its change topics (Debezium names them <topic.prefix>.<schema>.<table>) in its consumer group."""
    if cdc_block is None:
        return ()
    return (
        AclRule("topic", cdc.topic_prefix(p, source) + ".", "prefix", ("Read", "Describe")),
        AclRule("group", cdc.bridge_group(p, source), "literal", ("Read",)),
    )


def connect_identity(name: str = "streamotion-connect", *, distributed: bool = True) -> Identity:
    """Kafka Connect's identity (user ``name``, the KafkaConnect's name in the chart).

    Distributed (a Strimzi KafkaConnect): Create, Describe, Read and Write on its internal topics
    ``<name>-configs``, ``<name>-offsets``, ``<name>-status`` and Read on its group ``<name>`` (the
    names the chart's KafkaConnect sets; strimzi/strimzi-kafka-operator@1.2.0 documentation/modules/
    configuring/proc-config-kafka-connect-user-authorization.adoc). Both modes: Write, Create and
    Describe under ``streamotion-cdc.`` (its source tasks' producers write the change topics, its
    admin client creates them: topic.creation.enable; the idempotent producer's InitProducerId is
    allowed by Write on a topic, KIP-679). A standalone worker (``streamotion run --local``) keeps
    its configuration and offsets in files: no internal topic, no group."""
    rules: tuple[AclRule, ...] = ()
    if distributed:
        storage = ("Create", "Describe", "Read", "Write")
        rules = (
            *(AclRule("topic", f"{name}-{t}", "literal", storage) for t in ("configs", "offsets", "status")),
            AclRule("group", name, "literal", ("Read",)),
        )
    rules += (AclRule("topic", cdc.TOPIC_ROOT + ".", "prefix", ("Write", "Create", "Describe")),)
    return Identity(name, "connect", None, rules)


def component_identities(p: StreamPipeline) -> list[Identity]:
    """Every identity of the pipeline: one producer per source (in spec order), then the job."""
    topics = naming.topic_names(p)
    raw, dlq = topics["raw"], topics["deadLetter"]
    producer_acls = (
        # Read: a restarted producer resumes from its source's last cursors on the raw topic
        # (streamotion_ingest.resume: assign() only, no consumer group)
        AclRule("topic", raw, "literal", ("Write", "Describe", "Read")),
        AclRule("topic", dlq, "literal", ("Write", "Describe")),
        AclRule("cluster", None, "literal", ("IdempotentWrite",)),
    )
    out = [
        Identity(producer_user(p, s.name), "producer", s.name, producer_acls + _cdc_acls(p, s.name, s.cdc))
        for s in p.spec.sources
    ]
    out.append(
        Identity(
            job_user(p),
            "job",
            None,
            (
                AclRule("topic", raw, "literal", ("Read", "Describe")),
                AclRule("group", job_group_prefix(p), "prefix", ("Read",)),
                AclRule("topic", dlq, "literal", ("Write", "Describe")),
            ),
        )
    )
    return out


def identity_of(p: StreamPipeline, component: Component, source: str | None = None) -> Identity:
    """The identity of one component (``source`` names the producer's source)."""
    for ident in component_identities(p):
        if ident.component == component and ident.source == source:
            return ident
    raise KeyError(f"pipeline {p.namespace}/{p.name} has no {component} identity for source {source!r}")

"""Least privilege on the data path: a Strimzi KafkaUser per pipeline component (its ACLs from
``streamotion.security.acls``), the copies of their credentials and of the cluster CA in the
pipeline's namespace, the client settings (env and mounts) of producers and the Spark job, and the
pipeline's NetworkPolicies.

Strimzi writes a user's credentials into a Secret named like the KafkaUser in the Kafka namespace
(strimzi 1.2.0 user-operator KafkaUserModel.getSecretName), carrying the KafkaUser's own labels
(Labels.fromResource: all but app.kubernetes.io/*), and the cluster CA certificate into
``<cluster>-cluster-ca-cert`` (api KafkaResources.clusterCaCertificateSecretName) with the labels of
the Kafka's ``spec.kafka.template.clusterCaCert`` (cluster-operator CaProvider.java). Both carry
:data:`CREDENTIALS_LABEL` (the KafkaUser's labels, the chart's Kafka template), as do the copies:
the operator's one watch on Secrets selects that label, so no other Secret reaches it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from streamotion import naming
from streamotion.api.models import Source, StreamPipeline
from streamotion.security.acls import Identity, component_identities, identity_of
from streamotion_operator.config import OperatorConfig

from .common import _meta, selector
from .kafka import LISTENER_PORTS, kafka_namespace

CREDENTIALS_LABEL = "streamotion.io/kafka-credentials"
"""user: a Strimzi user Secret of a pipeline's KafkaUser; cluster-ca: a cluster CA certificate
Secret; copy: the operator's copy of either in a pipeline's namespace."""
COPIED_FROM_ANNOTATION = "streamotion.io/copied-from"
KAFKA_DIR = "/etc/streamotion/kafka"
CA_DIR = f"{KAFKA_DIR}/ca"
USER_DIR = f"{KAFKA_DIR}/user"
# The client contract (ingest, jobs: streamotion.kafka client settings read these)
SECURITY_ENV = "STREAMOTION_KAFKA_SECURITY"
CA_ENV = "STREAMOTION_KAFKA_CA"
CERT_ENV = "STREAMOTION_KAFKA_CERT"
KEY_ENV = "STREAMOTION_KAFKA_KEY"
USERNAME_ENV = "STREAMOTION_KAFKA_USERNAME"
PASSWORD_ENV = "STREAMOTION_KAFKA_PASSWORD"
PASSWORD_FILE_ENV = "STREAMOTION_KAFKA_PASSWORD_FILE"  # re-read by producers when it changes
SECURITY_MODE = {"none": "plaintext", "tls": "tls", "scram-sha-512": "scram-sha-512"}


def secure(p: StreamPipeline) -> bool:
    return p.spec.kafka.authentication != "none"


def ca_secret(p: StreamPipeline) -> str:
    """The copy of the cluster CA certificate in the pipeline's namespace."""
    return f"{p.name}-kafka-ca"


def cluster_ca_source(p: StreamPipeline) -> str:
    return f"{p.spec.kafka.cluster}-cluster-ca-cert"


def _component_labels(ident: Identity) -> tuple[str, dict[str, str]]:
    from .producers import SOURCE_LABEL

    if ident.component == "producer":
        return "producer", {SOURCE_LABEL: str(ident.source)}
    return "job", {}


def kafka_users(p: StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """A KafkaUser per component, in the Kafka cluster's namespace, with exactly its ACLs."""
    if not secure(p):
        return []
    out = []
    for ident in component_identities(p):
        component, extra = _component_labels(ident)
        out.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaUser",
                "metadata": _meta(
                    p,
                    ident.user,
                    component,
                    namespace=kafka_namespace(p, cfg),
                    **extra,
                    **{"strimzi.io/cluster": p.spec.kafka.cluster, CREDENTIALS_LABEL: "user"},
                ),
                "spec": {
                    "authentication": {"type": p.spec.kafka.authentication},
                    "authorization": {"type": "simple", "acls": [rule.strimzi() for rule in ident.acls]},
                },
            }
        )
    return out


@dataclass(frozen=True)
class CredentialCopy:
    """A Secret the pipeline's pods mount: ``source`` (namespace, name) copied to ``name`` in the
    pipeline's namespace, keeping ``keys`` (None: all)."""

    name: str
    source: tuple[str, str]
    component: str
    keys: tuple[str, ...] | None
    extra_labels: tuple[tuple[str, str], ...] = ()


def credential_copies(p: StreamPipeline, cfg: OperatorConfig) -> list[CredentialCopy]:
    if not secure(p):
        return []
    ns = kafka_namespace(p, cfg)
    out = [CredentialCopy(ca_secret(p), (ns, cluster_ca_source(p)), "config", ("ca.crt",))]
    for ident in component_identities(p):
        component, extra = _component_labels(ident)
        out.append(CredentialCopy(ident.user, (ns, ident.user), component, None, tuple(extra.items())))
    return out


def credential_secrets(
    p: StreamPipeline, cfg: OperatorConfig, sources: Mapping[tuple[str, str], dict[str, Any] | None] | None
) -> list[dict[str, Any]]:
    """The copies. ``sources``: the source Secrets by (namespace, name) as the watch delivered them
    (a missing one: its copy is left out, the controller reports CredentialsPending); None (render):
    the copies without their data, which the operator copies when it applies them."""
    out = []
    for c in credential_copies(p, cfg):
        body: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": _meta(p, c.name, c.component, **dict(c.extra_labels), **{CREDENTIALS_LABEL: "copy"}),
            "type": "Opaque",
        }
        body["metadata"]["annotations"] = {COPIED_FROM_ANNOTATION: f"{c.source[0]}/{c.source[1]}"}
        if sources is not None:
            src = sources.get(c.source)
            if src is None:
                continue
            data = src.get("data") or {}
            body["data"] = {k: v for k, v in data.items() if c.keys is None or k in c.keys}
        out.append(body)
    return out


def kafka_client(
    p: StreamPipeline, ident: Identity | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(env, volumes, volumeMounts) of a Kafka client with identity ``ident`` (the env contract the
    ingest and job clients read). Secret volumes without subPath: the kubelet updates the files in
    place when the copies change (rotation)."""
    auth = p.spec.kafka.authentication
    env: list[dict[str, Any]] = [{"name": SECURITY_ENV, "value": SECURITY_MODE[auth]}]
    if not secure(p) or ident is None:
        return env, [], []
    volumes = [
        {
            "name": "kafka-ca",
            "secret": {"secretName": ca_secret(p), "items": [{"key": "ca.crt", "path": "ca.crt"}]},
        }
    ]
    mounts = [{"name": "kafka-ca", "mountPath": CA_DIR, "readOnly": True}]
    env.append({"name": CA_ENV, "value": f"{CA_DIR}/ca.crt"})
    if auth == "tls":
        volumes.append(
            {
                "name": "kafka-user",
                "secret": {
                    "secretName": ident.user,
                    "items": [
                        {"key": "user.crt", "path": "user.crt"},
                        {"key": "user.key", "path": "user.key"},
                    ],
                },
            }
        )
        mounts.append({"name": "kafka-user", "mountPath": USER_DIR, "readOnly": True})
        env += [
            {"name": CERT_ENV, "value": f"{USER_DIR}/user.crt"},
            {"name": KEY_ENV, "value": f"{USER_DIR}/user.key"},
        ]
    else:  # the password as a file, not an env value: the kubelet updates it when Strimzi rotates it
        volumes.append(
            {
                "name": "kafka-user",
                "secret": {"secretName": ident.user, "items": [{"key": "password", "path": "password"}]},
            }
        )
        mounts.append({"name": "kafka-user", "mountPath": USER_DIR, "readOnly": True})
        env += [
            {"name": USERNAME_ENV, "value": ident.user},
            {"name": PASSWORD_FILE_ENV, "value": f"{USER_DIR}/password"},
        ]
    return env, volumes, mounts


def producer_identity(p: StreamPipeline, s: Source) -> Identity | None:
    return identity_of(p, "producer", s.name) if secure(p) else None


def job_identity(p: StreamPipeline) -> Identity | None:
    return identity_of(p, "job") if secure(p) else None


# ---------------------------------------------------------------------------- network policies
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
INTERNET = [{"ipBlock": {"cidr": "0.0.0.0/0"}}, {"ipBlock": {"cidr": "::/0"}}]
# Sources that call public platform APIs (HTTPS; a replay of a URL data set may be plain HTTP)
INTERNET_SOURCES = ("reddit", "mastodon", "bluesky", "x")


def _kafka_egress(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    k = p.spec.kafka
    if k.bootstrap_servers:  # a Kafka elsewhere: its ports, to any address
        given = (h.strip().rsplit(":", 1)[-1] for h in k.bootstrap_servers.split(",") if ":" in h)
        ports = sorted({int(port) for port in given if port.isdigit() and 0 < int(port) < 65536})
        return {"ports": [{"protocol": "TCP", "port": port} for port in ports] or None, "to": INTERNET}
    return {
        "to": [
            {
                "namespaceSelector": {
                    "matchLabels": {"kubernetes.io/metadata.name": kafka_namespace(p, cfg)}
                },
                "podSelector": {
                    "matchLabels": {"strimzi.io/cluster": k.cluster, "strimzi.io/broker-role": "true"}
                },
            }
        ],
        "ports": [{"protocol": "TCP", "port": LISTENER_PORTS[k.authentication]}],
    }


def _dns() -> dict[str, Any]:
    return {"to": [{"namespaceSelector": {}}], "ports": DNS_PORTS}


def _policy(p: StreamPipeline, name: str, component: str, pod_selector: dict[str, str], ingress, egress):
    spec: dict[str, Any] = {"podSelector": {"matchLabels": pod_selector}, "policyTypes": ["Ingress"]}
    spec["ingress"] = ingress
    if egress is not None:
        spec["policyTypes"].append("Egress")
        spec["egress"] = [{k: v for k, v in rule.items() if v is not None} for rule in egress]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": _meta(p, name, component),
        "spec": spec,
    }


def _metrics_ingress(*ports: int | str) -> dict[str, Any]:
    """Scrapes (Prometheus, in any namespace) on the metrics ports only."""
    return {
        "from": [{"namespaceSelector": {}}],
        "ports": [{"protocol": "TCP", "port": port} for port in ports],
    }


def network_policies(p: StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """A NetworkPolicy per producer, one for the job's pods (driver and executors) and one for the
    model's: what each may reach and who may reach it; everything else is refused."""
    from .producers import SOURCE_LABEL
    from .ray import RAY_METRICS_PORT, SERVE_PORT

    kafka = _kafka_egress(p, cfg)
    job_pods = selector(p, "job")
    out = []
    for s in p.spec.sources:
        ingress = [_metrics_ingress(naming.METRICS_PORT)]
        if s.http:
            peers = []
            for a in s.http.allowed_sources:
                if a.cidr:
                    peers.append({"ipBlock": {"cidr": a.cidr}})
                else:
                    peer: dict[str, Any] = {
                        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": a.namespace}}
                    }
                    if a.pod_labels:
                        peer["podSelector"] = {"matchLabels": dict(a.pod_labels)}
                    peers.append(peer)
            ingress.insert(0, {"from": peers, "ports": [{"protocol": "TCP", "port": s.http.port}]})
        egress = [_dns(), kafka]
        if s.type in INTERNET_SOURCES or (s.replay and "://" in s.replay.dataset):
            egress.append(
                {"to": INTERNET, "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 80}]}
            )
        out.append(
            _policy(
                p,
                naming.producer_name(p, s.name),
                "producer",
                {**selector(p, "producer"), SOURCE_LABEL: s.name},
                ingress,
                egress,
            )
        )
    # The job: Kafka, the model service, the sinks, the API server (the driver starts its executors),
    # and its own pods (driver <-> executors).
    sink_ports = sorted({s.postgres.port for s in p.spec.sinks if s.postgres})
    sink_egress = [{"to": INTERNET, "ports": [{"protocol": "TCP", "port": port} for port in sink_ports]}]
    if any(s.bigquery for s in p.spec.sinks) or p.spec.processing.checkpoint.uri:
        sink_egress.append({"to": INTERNET, "ports": [{"protocol": "TCP", "port": 443}]})
    job_egress = [
        _dns(),
        kafka,
        {
            "to": [{"podSelector": {"matchLabels": selector(p, "model")}}],
            "ports": [{"protocol": "TCP", "port": SERVE_PORT}],
        },
        *[rule for rule in sink_egress if rule["ports"]],
        {"to": INTERNET, "ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
        {"to": [{"podSelector": {"matchLabels": job_pods}}]},
    ]
    out.append(
        _policy(
            p,
            f"{p.name}-job",
            "job",
            job_pods,
            [
                {"from": [{"podSelector": {"matchLabels": job_pods}}]},
                _metrics_ingress(naming.METRICS_PORT, 4040),
            ],
            job_egress,
        )
    )
    # The model: its serving port from the job only; Ray's own traffic between its pods; the
    # dashboard (KubeRay's operator reads the Serve status there) and metrics from the cluster.
    model_pods = selector(p, "model")
    out.append(
        _policy(
            p,
            f"{p.name}-model",
            "model",
            model_pods,
            [
                {
                    "from": [{"podSelector": {"matchLabels": job_pods}}],
                    "ports": [{"protocol": "TCP", "port": SERVE_PORT}],
                },
                {"from": [{"podSelector": {"matchLabels": model_pods}}]},
                _metrics_ingress(8265, RAY_METRICS_PORT),
            ],
            None,
        )
    )
    return out

"""Least privilege on the data path, as the operator applies it (issue 17): a Strimzi KafkaUser per
component with exactly its ACLs, the credentials Strimzi writes copied into the pipeline's namespace
(CredentialsPending while they are not there, copied again when Strimzi rotates them), mounted into
producers and the Spark driver and executors, and the pipeline's NetworkPolicies; on the real API
server with the upstream CRDs."""

from __future__ import annotations

import base64
import copy

import pytest
from streamotion_operator import builders
from streamotion_operator.builders import security
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import Controller
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.testing import (
    BASE_SPEC,
    apply_pipeline,
    children,
    condition,
    create_secrets,
    get_pipeline,
    pipeline,
    strimzi_credentials,
    write_secret,
)

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion.security.acls import component_identities, job_group_prefix
from tests.test_chart import CHART, chart_yaml, find, render

KAFKA_NS = "kafka"
SECRET = builders.KINDS["Secret"]


@pytest.fixture(scope="module")
def kube(control_plane):
    for ns in (KAFKA_NS, "monitoring"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


def spec(auth: str = "tls") -> dict:
    s = copy.deepcopy(BASE_SPEC)
    s["kafka"]["authentication"] = auth
    s["sources"].append({"name": "hooks", "type": "http", "http": {"tokenSecret": "hooks-token"}})
    return s


def model(body: dict) -> StreamPipeline:
    return StreamPipeline.model_validate(body)


def decoded(secret: dict) -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in (secret.get("data") or {}).items()}


def test_kafka_users_credentials_and_rotation(kube, namespace):
    """KafkaUsers with exactly the ACLs of streamotion.security.acls; CredentialsPending until
    Strimzi has written the user Secrets and the cluster CA; then copies (owned by the pipeline),
    copied again after the source Secret changes (rotation)."""
    create_secrets(kube, namespace, {"reddit-credentials": {"client_id": "i", "client_secret": "s",
                                                            "user_agent": "u"},
                                     "pg-app": {"username": "u", "password": "p"},
                                     "hooks-token": {"token": "t"}})  # fmt: skip
    kube.delete(SECRET, KAFKA_NS, "streamotion-cluster-ca-cert")  # another test's Strimzi may have written it
    body = pipeline("sec", namespace, spec())
    apply_pipeline(kube, body)
    p = model(body)
    controller = Controller(kube, OperatorConfig(kafka_namespace=KAFKA_NS, secret_check_seconds=0))
    out = controller.reconcile(namespace, "sec")
    kids = children(kube, namespace, "sec")
    users = {k[2]: v for k, v in kids.items() if k[0] == "KafkaUser"}
    ids = component_identities(p)
    assert set(users) == {i.user for i in ids}
    for ident in ids:
        user = users[ident.user]
        assert user["metadata"]["namespace"] == KAFKA_NS
        assert user["metadata"]["labels"]["strimzi.io/cluster"] == "streamotion"
        assert user["spec"]["authentication"] == {"type": "tls"}
        assert user["spec"]["authorization"] == {
            "type": "simple",
            "acls": [rule.strimzi() for rule in ident.acls],
        }
    raw, dlq = naming.topic_names(p)["raw"], naming.topic_names(p)["deadLetter"]
    job = users[next(i.user for i in ids if i.component == "job")]
    assert job["spec"]["authorization"]["acls"] == [
        {"resource": {"type": "topic", "name": raw, "patternType": "literal"}, "operations": ["Read", "Describe"]},
        {"resource": {"type": "group", "name": job_group_prefix(p), "patternType": "prefix"}, "operations": ["Read"]},
        {"resource": {"type": "topic", "name": dlq, "patternType": "literal"}, "operations": ["Write", "Describe"]},
    ]  # fmt: skip
    # nothing to copy yet: the conditions say so, and no copy exists
    pending = [pr for pr in out.problems if pr.reason == "CredentialsPending"]
    assert {pr.condition for pr in pending} == {"SourcesReady", "ProcessingReady"}
    status = get_pipeline(kube, namespace, "sec")
    assert condition(status, "SourcesReady")["reason"] == "CredentialsPending"
    assert "streamotion-cluster-ca-cert" in condition(status, "ProcessingReady")["message"]
    assert not [k for k in kids if k[0] == "Secret"]

    # Strimzi writes the credentials: the next reconcile copies them into the pipeline's namespace
    strimzi_credentials(kube, namespace, "sec")
    out = controller.reconcile(namespace, "sec")
    assert not [pr for pr in out.problems if pr.reason == "CredentialsPending"]
    copies = {k[2]: v for k, v in children(kube, namespace, "sec").items() if k[0] == "Secret"}
    assert set(copies) == {i.user for i in ids} | {security.ca_secret(p)}
    assert decoded(copies[security.ca_secret(p)]) == {"ca.crt": "CLUSTER CA 0"}  # the CA's key only
    producer_user = next(i.user for i in ids if i.source == "demo")
    assert decoded(copies[producer_user])["user.crt"] == f"CERT {producer_user} 0"
    for c in copies.values():
        owner = c["metadata"]["ownerReferences"][0]
        assert (owner["kind"], owner["name"], owner["controller"]) == ("StreamPipeline", "sec", True)
        assert c["metadata"]["labels"][security.CREDENTIALS_LABEL] == "copy"
    assert condition(get_pipeline(kube, namespace, "sec"), "SourcesReady")["reason"] != "CredentialsPending"
    assert not controller.reconcile(namespace, "sec").updated  # unchanged: nothing written

    # rotation: Strimzi renews the user certificate and the cluster CA
    strimzi_credentials(kube, namespace, "sec", generation=1)
    out = controller.reconcile(namespace, "sec")
    assert f"Secret {namespace}/{producer_user}" in out.updated
    assert decoded(kube.get(SECRET, namespace, producer_user))["user.key"] == f"KEY {producer_user} 1"
    assert decoded(kube.get(SECRET, namespace, security.ca_secret(p))) == {"ca.crt": "CLUSTER CA 1"}

    # a copy edited by hand is repaired
    write_secret(kube, namespace, producer_user, {}, {"user.crt": "forged"})
    controller.reconcile(namespace, "sec")
    assert decoded(kube.get(SECRET, namespace, producer_user))["user.crt"] == f"CERT {producer_user} 1"

    # a removed source: its KafkaUser goes (Strimzi then removes its ACLs and Secret)
    body["spec"]["sources"] = [s for s in body["spec"]["sources"] if s["name"] != "demo"]
    apply_pipeline(kube, body)
    out = controller.reconcile(namespace, "sec")
    assert f"KafkaUser {KAFKA_NS}/{producer_user}" in out.deleted
    controller.cleanup(namespace, "sec")
    assert not [k for k in children(kube, namespace, "sec") if k[0] == "KafkaUser"]
    controller.close()


def test_workloads_mount_their_own_identity(kube, namespace):
    """Each producer mounts its own user's certificate, the job (driver and executors) the job's; the
    env contract the clients read; the listener port follows the authentication."""
    p = model(pipeline("mnt", namespace, spec()))
    cfg = OperatorConfig(kafka_namespace=KAFKA_NS)
    docs = builders.build(p, cfg)
    for s in p.spec.sources:
        dep = next(
            d
            for d in docs
            if d["kind"] == "Deployment" and d["metadata"]["name"] == naming.producer_name(p, s.name)
        )
        pod = dep["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["STREAMOTION_KAFKA_SECURITY"] == "tls"
        assert env["STREAMOTION_KAFKA_BOOTSTRAP"].endswith(":9093")
        assert env["STREAMOTION_KAFKA_CERT"] == "/etc/streamotion/kafka/user/user.crt"
        assert env["STREAMOTION_KAFKA_KEY"] == "/etc/streamotion/kafka/user/user.key"
        assert env["STREAMOTION_KAFKA_CA"] == "/etc/streamotion/kafka/ca/ca.crt"
        vols = {v["name"]: v for v in pod["volumes"]}
        assert vols["kafka-user"]["secret"]["secretName"] == security.producer_identity(p, s).user
        assert vols["kafka-ca"]["secret"]["secretName"] == security.ca_secret(p)
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {"/etc/streamotion/kafka/user", "/etc/streamotion/kafka/ca"} <= mounts
    app = next(d for d in docs if d["kind"] == "SparkApplication")["spec"]
    job_user = security.job_identity(p).user
    assert {v["name"]: v["secret"]["secretName"] for v in app["volumes"] if "secret" in v}.items() >= {
        ("kafka-user", job_user),
        ("kafka-ca", security.ca_secret(p)),
    }
    for role in ("driver", "executor"):
        env = {e["name"]: e.get("value") for e in app[role]["env"]}
        assert env["STREAMOTION_KAFKA_SECURITY"] == "tls"
        assert env["STREAMOTION_KAFKA_CERT"] == "/etc/streamotion/kafka/user/user.crt"
        assert {m["name"] for m in app[role]["volumeMounts"]} >= {"kafka-user", "kafka-ca"}
    # SCRAM: a user name and the password by reference, the CA, no certificate
    scram = model(pipeline("mnt", namespace, spec("scram-sha-512")))
    app = builders.spark_application(scram, cfg)["spec"]
    env = {e["name"]: e for e in app["executor"]["env"]}
    assert env["STREAMOTION_KAFKA_SECURITY"]["value"] == "scram-sha-512"
    assert env["STREAMOTION_KAFKA_BOOTSTRAP"]["value"].endswith(":9094")
    assert env["STREAMOTION_KAFKA_USERNAME"]["value"] == security.job_identity(scram).user
    # the password as a mounted file (rotation reaches running producers), never an env value
    assert env["STREAMOTION_KAFKA_PASSWORD_FILE"]["value"] == "/etc/streamotion/kafka/user/password"
    assert "STREAMOTION_KAFKA_PASSWORD" not in env
    assert {(v["name"], v["secret"]["secretName"]) for v in app["volumes"] if "secret" in v} >= {
        ("kafka-user", security.job_identity(scram).user)
    }
    assert "STREAMOTION_KAFKA_CERT" not in env
    # none: the plaintext listener, no identity, no KafkaUser, no copies
    plain = model(pipeline("mnt", namespace, spec("none")))
    docs = builders.build(plain, cfg)
    assert not [d for d in docs if d["kind"] in ("KafkaUser", "Secret")]
    env = {e["name"]: e.get("value") for e in builders.spark_application(plain, cfg)["spec"]["driver"]["env"]}
    assert env["STREAMOTION_KAFKA_SECURITY"] == "plaintext"
    assert env["STREAMOTION_KAFKA_BOOTSTRAP"].endswith(":9092")
    # every new child passes the API server's validation (the upstream KafkaUser CRD, core kinds),
    # the copies with their data too; and the KafkaUser CRD refuses an operation it does not know
    sources = {c.source: {"data": {"ca.crt": "Q0E=", "user.crt": "Qw==", "user.key": "Sw=="}}
               for c in security.credential_copies(p, cfg)}  # fmt: skip
    for obj in builders.build(p, cfg, sources):
        if obj["kind"] in ("KafkaUser", "Secret", "NetworkPolicy"):
            kube.dry_run_apply(obj)
    bad = copy.deepcopy(builders.kafka_users(p, cfg)[0])
    bad["spec"]["authorization"]["acls"][0]["operations"] = ["ReadEverything"]
    with pytest.raises(ApiError) as err:
        kube.dry_run_apply(bad)
    assert err.value.status == 422


def policy(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == name)["spec"]


def test_network_policies():
    """Producers reach DNS, Kafka's brokers on their listener and (platform sources) the internet on
    80/443; the HTTP ingest accepts its allowed sources; the job reaches Kafka, the model service,
    the sinks, the API server and its own pods; the model accepts the job on the Serve port."""
    body = pipeline("net", "team-a", spec())
    body["spec"]["sources"][2]["http"]["allowedSources"] = [
        {"namespace": "ingress", "podLabels": {"app": "nginx"}},
        {"cidr": "10.0.0.0/8"},
    ]
    p = model(body)
    docs = builders.network_policies(p, OperatorConfig(kafka_namespace=KAFKA_NS))
    kafka_peer = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": KAFKA_NS}},
        "podSelector": {
            "matchLabels": {"strimzi.io/cluster": "streamotion", "strimzi.io/broker-role": "true"}
        },
    }
    replay = policy(docs, "net-src-demo")
    assert replay["podSelector"]["matchLabels"]["streamotion.io/source"] == "demo"
    assert replay["policyTypes"] == ["Ingress", "Egress"]
    assert {"to": [kafka_peer], "ports": [{"protocol": "TCP", "port": 9093}]} in replay["egress"]
    assert not [r for r in replay["egress"] if any("ipBlock" in t for t in r.get("to", []))]  # no internet
    assert replay["ingress"] == [
        {"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": naming.METRICS_PORT}]}
    ]
    reddit = policy(docs, "net-src-reddit")
    internet = [r for r in reddit["egress"] if any("ipBlock" in t for t in r.get("to", []))]
    assert internet and {p_["port"] for r in internet for p_ in r["ports"]} == {80, 443}
    hooks = policy(docs, "net-src-hooks")
    assert hooks["ingress"][0] == {
        "from": [
            {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress"}},
                "podSelector": {"matchLabels": {"app": "nginx"}},
            },
            {"ipBlock": {"cidr": "10.0.0.0/8"}},
        ],
        "ports": [{"protocol": "TCP", "port": 8080}],
    }
    job = policy(docs, "net-job")
    model_peer = {"podSelector": {"matchLabels": builders.selector(p, "model")}}
    assert {"to": [model_peer], "ports": [{"protocol": "TCP", "port": builders.SERVE_PORT}]} in job["egress"]
    assert {"to": [kafka_peer], "ports": [{"protocol": "TCP", "port": 9093}]} in job["egress"]
    assert any(p_["port"] == 5432 for r in job["egress"] for p_ in r.get("ports", []))  # the sink
    served = policy(docs, "net-model")
    assert served["policyTypes"] == ["Ingress"]
    assert served["ingress"][0] == {
        "from": [{"podSelector": {"matchLabels": builders.selector(p, "job")}}],
        "ports": [{"protocol": "TCP", "port": builders.SERVE_PORT}],
    }
    # the policies select the pods the builders label
    labelled = builders.build(p, OperatorConfig(kafka_namespace=KAFKA_NS))
    job_pods = next(d for d in labelled if d["kind"] == "SparkApplication")["spec"]["driver"]["labels"]
    assert job["podSelector"]["matchLabels"].items() <= job_pods.items()
    ray = next(d for d in labelled if d["kind"] == "RayService")["spec"]["rayClusterConfig"]
    head = ray["headGroupSpec"]["template"]["metadata"]["labels"]
    assert served["podSelector"]["matchLabels"].items() <= head.items()
    # the default: the HTTP ingest only from the ingress-nginx namespace
    default = policy(
        builders.network_policies(model(pipeline("net", "team-a", spec())), OperatorConfig()), "net-src-hooks"
    )
    assert default["ingress"][0]["from"] == [
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}
    ]


def test_credentials_follow_strimzis_secret_layout():
    """strimzi/strimzi-kafka-operator@1.2.0: user-operator/src/main/java/io/strimzi/operator/user/
    model/KafkaUserModel.java writes a user's Secret named like the KafkaUser (getSecretName, no
    prefix unless the User Operator's secretPrefix is set; the chart sets none) with user.crt,
    user.key, ca.crt (the clients CA), user.p12, user.password for tls and password (KEY_PASSWORD),
    sasl.jaas.config for scram-sha-512, carrying the KafkaUser's labels but app.kubernetes.io/*
    (operator-common Labels.fromResource); api/src/main/java/io/strimzi/api/kafka/model/kafka/
    KafkaResources.java clusterCaCertificateSecretName: the cluster CA certificate is
    <cluster>-cluster-ca-cert (key ca.crt), which verifies the brokers (the clients CA does not)."""
    p = model(pipeline("lay", "team-a", spec()))
    cfg = OperatorConfig(kafka_namespace=KAFKA_NS)
    copies = {c.name: c for c in security.credential_copies(p, cfg)}
    assert copies[security.ca_secret(p)].source == (KAFKA_NS, "streamotion-cluster-ca-cert")
    assert copies[security.ca_secret(p)].keys == ("ca.crt",)
    for ident in component_identities(p):
        assert copies[ident.user].source == (KAFKA_NS, ident.user)  # the KafkaUser's own name
    _, volumes, _ = security.kafka_client(p, security.job_identity(p))
    items = {i["key"] for v in volumes for i in v["secret"]["items"]}
    assert items == {"ca.crt", "user.crt", "user.key"}
    _, scram_volumes, _ = security.kafka_client(
        model(pipeline("lay", "team-a", spec("scram-sha-512"))), security.job_identity(p)
    )
    assert {i["key"] for v in scram_volumes for i in v["secret"]["items"]} == {"ca.crt", "password"}
    # the copy-worthy label travels from the KafkaUser to Strimzi's Secret (not an app.kubernetes.io/ one)
    user = builders.kafka_users(p, cfg)[0]
    assert not any(
        k.startswith("app.kubernetes.io/") for k in (security.CREDENTIALS_LABEL, naming.PIPELINE_LABEL)
    )
    assert user["metadata"]["labels"][naming.PIPELINE_LABEL] == "lay"


@pytest.fixture(scope="module")
def chart(tmp_path_factory):
    """The chart with stand-ins for its dependencies (as tests/test_chart.py renders it)."""
    import shutil

    import yaml

    from streamotion.dev.helm import ensure_helm

    ensure_helm()
    out = tmp_path_factory.mktemp("chart") / "streamotion"
    shutil.copytree(CHART, out, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    for dep in chart_yaml()["dependencies"]:
        (out / "charts" / dep["name"]).mkdir(parents=True)
        (out / "charts" / dep["name"] / "Chart.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v2", "name": dep["name"], "version": dep["version"]})
        )
    return out


def test_chart_kafka_authenticates_and_authorizes(chart):
    """strimzi/strimzi-kafka-operator@1.2.0 packaging/install/cluster-operator/040-Crd-kafka.yaml:
    listener authentication type tls is supported on TLS listeners only (tls: true),
    scram-sha-512 too; spec.kafka.authorization.type simple (the StandardAuthorizer under KRaft:
    cluster-operator KafkaBrokerConfigurationBuilder), superUsers; entityOperator.userOperator runs
    the User Operator that turns KafkaUsers into credentials and ACLs. The plaintext listener is off
    unless kafka.plainListener."""
    kafka = find(render(chart), "Kafka")["spec"]
    listeners = {item["name"]: item for item in kafka["kafka"]["listeners"]}
    assert set(listeners) == {"tls"}
    assert listeners["tls"] == {
        "name": "tls", "port": 9093, "type": "internal", "tls": True, "authentication": {"type": "tls"}
    }  # fmt: skip
    assert kafka["kafka"]["authorization"] == {"type": "simple"}
    assert "userOperator" in kafka["entityOperator"]
    kafka = find(
        render(chart, "--set", "kafka.plainListener=true", "--set", "kafka.scramListener=true",
               "--set", "kafka.superUsers[0]=User:CN=admin"),
        "Kafka",
    )["spec"]  # fmt: skip
    listeners = {item["name"]: item for item in kafka["kafka"]["listeners"]}
    assert listeners["plain"]["port"] == 9092 and listeners["plain"]["tls"] is False
    assert listeners["scram"] == {
        "name": "scram", "port": 9094, "type": "internal", "tls": True,
        "authentication": {"type": "scram-sha-512"},
    }  # fmt: skip
    assert kafka["kafka"]["authorization"] == {"type": "simple", "superUsers": ["User:CN=admin"]}
    # the ports the operator's clients use are the chart's
    from streamotion_operator.builders.kafka import LISTENER_PORTS

    assert LISTENER_PORTS == {"none": 9092, "tls": 9093, "scram-sha-512": 9094}


def test_a_kafka_elsewhere_is_reached_on_its_ports():
    """spec.kafka.bootstrapServers: egress to its ports at any address; a malformed value never
    breaks the build (then any port)."""
    body = pipeline("far", "team-a", spec())
    body["spec"]["kafka"]["bootstrapServers"] = "k1.example:9095, k2.example:9096,oops:x"
    egress = policy(builders.network_policies(model(body), OperatorConfig()), "far-src-demo")["egress"]
    assert egress[1]["ports"] == [{"protocol": "TCP", "port": 9095}, {"protocol": "TCP", "port": 9096}]
    body["spec"]["kafka"]["bootstrapServers"] = "garbage"
    egress = policy(builders.network_policies(model(body), OperatorConfig()), "far-src-demo")["egress"]
    assert "ports" not in egress[1] and egress[1]["to"]

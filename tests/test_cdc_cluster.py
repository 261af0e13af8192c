"""cdc sources in a cluster, on the real API server: the KafkaConnector and Secret-reader RBAC the
operator creates, its state in SourcesReady, and the chart's KafkaConnect, against Strimzi 1.2.0's
CRDs (../shared/crds/strimzi-1.2.0). Strimzi does not run here; the KafkaConnector's status is
patched the way its operator writes it (cited per test).
"""

from __future__ import annotations

import json

import pytest
import yaml
from streamotion_operator import builders
from streamotion_operator.builders.connect import connect_service_account
from streamotion_operator.config import OperatorConfig
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.testing import (
    BASE_SPEC,
    SECRETS,
    apply_pipeline,
    children,
    condition,
    connector_running,
    create_secrets,
    get_pipeline,
    make_ready,
    pipeline,
    set_status,
    wait_for,
)

from streamotion import cdc
from streamotion.api.models import StreamPipeline
from streamotion.security.acls import connect_identity
from tests.test_chart import chart, find, render  # noqa: F401  (chart: the module fixture)

pytestmark = pytest.mark.timeout(240)

CDC_SOURCE = {
    "name": "reviews",
    "type": "cdc",
    "redactPII": True,
    "cdc": {
        "host": "shop-db-rw",
        "database": "shop",
        "credentialsSecret": "shop-db",
        "tables": [{"name": "public.reviews", "idColumn": "id", "textColumn": "body", "timeColumn": "at"}],
    },
}


def cdc_spec() -> dict:
    spec = json.loads(json.dumps(BASE_SPEC))
    spec["dashboards"] = {"enabled": False}
    spec["sources"] = [CDC_SOURCE]
    return spec


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


def test_the_connector_strimzi_reads_and_only_the_secret_it_names(control_plane, kube, namespace):
    """strimzi/strimzi-kafka-operator@1.2.0: the KafkaConnector CRD (047-Crd-kafkaconnector.yaml)
    forbids name, connector.class, tasks.max and connector.plugin.version in spec.config (they are
    spec.class and spec.tasksMax); cluster-operator/.../model/KafkaConnectConfigurationBuilder.java
    (printConfigProviders) enables the ``strimzisecrets`` provider
    (io.strimzi.kafka.KubernetesSecretConfigProvider) in every KafkaConnect, whose workers run as
    ``<connect>-connect`` (documentation/modules/configuring/ref-config-list-of-kafka-connect-resources.adoc)
    and need a Role granting get on the Secret (proc-loading-config-from-config-map.adoc)."""
    control_plane.kubectl("create", "namespace", "kafka", check=False)
    cfg = OperatorConfig()
    p = StreamPipeline.model_validate(pipeline("cdc-render", namespace, cdc_spec()))
    docs = builders.build(p, cfg)
    connector = next(d for d in docs if d["kind"] == "KafkaConnector")
    assert connector["metadata"]["labels"]["strimzi.io/cluster"] == cfg.connect_cluster
    assert connector["spec"]["class"] == cdc.CONNECTOR_CLASS and connector["spec"]["tasksMax"] == 1
    config = connector["spec"]["config"]
    assert not {"name", "connector.class", "tasks.max", "connector.plugin.version"} & set(config)
    assert config["database.password"] == f"${{strimzisecrets:{namespace}/shop-db:password}}"
    assert all("s3cr3t" not in v for v in config.values())  # never the value
    for obj in docs:  # the API server takes every child, the KafkaConnector against Strimzi's CRD
        kube.dry_run_apply(obj)
    bad = json.loads(json.dumps(connector))
    bad["spec"]["state"] = "asleep"
    with pytest.raises(ApiError) as err:
        kube.dry_run_apply(bad)
    assert err.value.status == 422
    # the Connect workers may read exactly the source's Secret once the operator's Role is bound
    create_secrets(kube, namespace, {"shop-db": {"username": "cdc", "password": "s3cr3t"}})
    for obj in docs:
        if obj["kind"] in ("Role", "RoleBinding") and obj["metadata"]["name"].endswith("-secret"):
            kube.request("POST", builders.KINDS[obj["kind"]].path(namespace), body=obj)
    sa = f"system:serviceaccount:kafka:{connect_service_account(cfg)}"

    def allowed(secret: str) -> bool:
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": {
                "user": sa,
                "groups": ["system:serviceaccounts", "system:serviceaccounts:kafka"],
                "resourceAttributes": {
                    "namespace": namespace,
                    "verb": "get",
                    "resource": "secrets",
                    "name": secret,
                },
            },
        }
        out = kube.request("POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body=review)
        return bool(out["status"].get("allowed"))

    assert allowed("shop-db")
    assert not allowed("pg-app")


def test_connector_and_task_states_flow_into_sources_ready(control_plane, kube, namespace, tmp_path):
    """strimzi/strimzi-kafka-operator@1.2.0 cluster-operator/.../assembly/AbstractConnectOperator.java
    copies Kafka Connect's REST status (connector.state, tasks[].state and trace) into
    status.connectorStatus and reports its own errors in the Ready condition; a FAILED task (a
    wrong password, no wal_level=logical) must show in SourcesReady with its trace."""
    control_plane.kubectl("create", "namespace", "kafka", check=False)
    cfg = OperatorConfig(resync_seconds=1, cleanup_poll_seconds=0.5, dashboards_dir=str(tmp_path))
    op = OperatorThread(control_plane.kubeconfig_path, cfg).start()
    try:
        name = "cdcst"
        create_secrets(kube, namespace, {**SECRETS, "shop-db": {"username": "cdc", "password": "pw"}})
        apply_pipeline(kube, pipeline(name, namespace, cdc_spec()))
        p = StreamPipeline.model_validate(pipeline(name, namespace, cdc_spec()))
        cn = cdc.connector_name(p, "reviews")
        wait_for(
            lambda: ("KafkaConnector", "kafka", cn) in children(kube, namespace, name), 60, what="connector"
        )

        def sources(status: str):
            c = condition(get_pipeline(kube, namespace, name), "SourcesReady")
            return c if c.get("status") == status else None

        c = wait_for(lambda: sources("False"), 30, what="SourcesReady False before Strimzi reports")
        assert cn in c["message"], c

        def all_ready():
            make_ready(kube, namespace, name)
            return condition(get_pipeline(kube, namespace, name), "Ready").get("status") == "True"

        wait_for(all_ready, 60, interval=0.5, what="Ready with the connector RUNNING")
        trace = (
            'org.postgresql.util.PSQLException: FATAL: password authentication failed for user "cdc"\n\tat x'
        )
        set_status(
            kube, "KafkaConnector", "kafka", cn, connector_running(cn, task_state="FAILED", trace=trace)
        )
        c = wait_for(lambda: sources("False"), 30, what="SourcesReady False on a FAILED task")
        assert c["reason"] == "ConnectorFailed", c
        assert (
            "task 0 FAILED: org.postgresql.util.PSQLException: FATAL: password authentication failed"
            in c["message"]
        )
        assert "\tat x" not in c["message"]  # the first line of the trace, not the stack
        # Strimzi's own error (Connect unreachable): not Ready, with its message
        strimzi_error = {
            "type": "NotReady",
            "status": "True",
            "reason": "ConnectRestException",
            "message": "GET /connectors/x/status returned 500",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }
        not_ready = {
            **connector_running(cn),
            "conditions": [{**strimzi_error, "type": "Ready", "status": "False"}],
        }
        set_status(kube, "KafkaConnector", "kafka", cn, not_ready)
        c = wait_for(
            lambda: (c := sources("False")) and c["reason"] == "NotReady" and c,
            30,
            what="NotReady from Strimzi",
        )
        assert "returned 500" in c["message"], c
        set_status(kube, "KafkaConnector", "kafka", cn, connector_running(cn))
        wait_for(lambda: sources("True"), 30, what="SourcesReady True again")
        # deleting the pipeline deletes its connector (another namespace: no ownerReference)
        kube.request("DELETE", _pipeline_path(namespace, name))
        wait_for(
            lambda: not any(k[0] == "KafkaConnector" for k in children(kube, namespace, name)),
            60,
            what="the KafkaConnector deleted with its pipeline",
        )
    finally:
        op.stop()


def _pipeline_path(namespace: str, name: str) -> str:
    from streamotion_operator.controller import PIPELINE_KIND

    return PIPELINE_KIND.path(namespace, name)


def test_the_charts_kafka_connect_builds_the_pinned_debezium_and_the_api_server_takes_it(
    chart,  # noqa: F811
    control_plane,
    namespace,
):
    """strimzi/strimzi-kafka-operator@1.2.0 041-Crd-kafkaconnect.yaml: spec.tls.trustedCertificates
    (secretName + certificate), spec.authentication (type tls, certificateAndKey secretName/certificate/
    key); documentation/modules/configuring/proc-config-kafka-connect-user-authorization.adoc: the
    Connect user's ACLs (Create/Describe/Read/Write on the three storage topics, Read on the group);
    spec.build.output (type docker,
    image) and plugins[].artifacts (type tgz, url, sha512sum); KafkaConnectAssemblyOperator.java
    isUseResources: KafkaConnectors are reconciled only with the strimzi.io/use-connector-resources
    annotation "true". The archive is the one `streamotion run --local` unpacks (streamotion.cdc)."""
    from streamotion.dev.helm import helm

    assert not [d for d in render(chart) if d["kind"] == "KafkaConnect"]  # off by default
    failed = helm("template", "x", str(chart), "--set", "connect.enabled=true", check=False)
    assert failed.returncode != 0 and "connect.build.outputImage is required" in failed.stderr
    kafka_ns = f"{namespace}-k"
    docs = render(
        chart,
        "--set",
        f"connect.enabled=true,connect.build.outputImage=registry.example/connect:1,defaults.kafkaNamespace={kafka_ns}",
    )
    connect = find(docs, "KafkaConnect")
    assert connect["metadata"]["annotations"]["strimzi.io/use-connector-resources"] == "true"
    [artifact] = connect["spec"]["build"]["plugins"][0]["artifacts"]
    assert (artifact["type"], artifact["url"], artifact["sha512sum"]) == (
        "tgz",
        cdc.PLUGIN_URL,
        cdc.PLUGIN_SHA512,
    )
    env = {
        e["name"]: e.get("value")
        for e in find(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    cfg = OperatorConfig.from_env(env)
    assert cfg.connect_cluster == connect["metadata"]["name"]
    # secure by default: the TLS listener, the cluster CA, the certificate of Connect's own KafkaUser
    # whose ACLs are streamotion.security.acls.connect_identity's (what --local --secure applies too)
    name = connect["metadata"]["name"]
    spec = connect["spec"]
    assert spec["bootstrapServers"].endswith("-kafka-bootstrap:9093")
    assert spec["tls"]["trustedCertificates"] == [
        {"secretName": "streamotion-cluster-ca-cert", "certificate": "ca.crt"}
    ]
    assert spec["authentication"] == {
        "type": "tls",
        "certificateAndKey": {"secretName": name, "certificate": "user.crt", "key": "user.key"},
    }
    user = find(docs, "KafkaUser", name)
    assert user["metadata"]["name"] == name and user["metadata"]["namespace"] == kafka_ns
    assert user["metadata"]["labels"]["strimzi.io/cluster"] == "streamotion"
    assert user["spec"]["authentication"] == {"type": "tls"}
    assert user["spec"]["authorization"]["acls"] == [r.strimzi() for r in connect_identity(name).acls]
    assert {
        spec["groupId"],
        spec["configStorageTopic"],
        spec["offsetStorageTopic"],
        spec["statusStorageTopic"],
    } == {r.name for r in connect_identity(name).acls if r.pattern_type == "literal"}
    failed = helm("template", "x", str(chart), *_connect_values("connect.authentication=none"), check=False)
    assert failed.returncode != 0 and "needs kafka.plainListener: true" in failed.stderr
    plain = render(chart, *_connect_values("connect.authentication=none,kafka.plainListener=true"))
    assert find(plain, "KafkaConnect")["spec"]["bootstrapServers"].endswith(":9092")
    assert "authentication" not in find(plain, "KafkaConnect")["spec"]
    assert not [d for d in plain if d["kind"] == "KafkaUser" and d["metadata"]["name"] == name]
    control_plane.kubectl("create", "namespace", kafka_ns, check=False)
    try:
        result = control_plane.kubectl(
            "apply",
            "--server-side",
            "--dry-run=server",
            "-o",
            "name",
            "-f",
            "-",
            input=yaml.safe_dump_all([connect, user]),
        )
        assert result.returncode == 0, result.stderr
    finally:
        control_plane.kubectl("delete", "namespace", kafka_ns, "--wait=false", check=False)


def _connect_values(extra: str) -> list[str]:
    return ["--set", f"connect.enabled=true,connect.build.outputImage=registry.example/connect:1,{extra}"]


def test_the_operators_generated_rbac_creates_the_connector_and_its_secret_reader(
    control_plane, kube, namespace
):
    """The operator's ClusterRole (charts/streamotion/files/operator-rbac-rules.yaml) is enough to
    create a cdc source's KafkaConnector, Role and RoleBinding: Kubernetes lets a subject create a
    Role, or bind one, only with every permission the Role grants (RBAC escalation prevention), and
    the operator holds `get` on Secrets (it checks referenced Secrets)."""
    from streamotion_operator.controller import Controller

    from tests.test_render import _service_account_kube

    control_plane.kubectl("create", "namespace", "kafka", check=False)
    # the Spark driver's ClusterRole the chart installs, unless a chart test applied it already
    # (then it stays theirs: created here, it is deleted again)
    created = (
        control_plane.kubectl(
            "create", "clusterrole", "streamotion-spark-driver", "--verb=get", "--resource=pods", check=False
        ).returncode
        == 0
    )
    sa_kube = _service_account_kube(control_plane, kube, namespace)
    try:
        create_secrets(kube, namespace, {**SECRETS, "shop-db": {"username": "cdc", "password": "pw"}})
        apply_pipeline(kube, pipeline("cdcrbac", namespace, cdc_spec()))
        controller = Controller(sa_kube, OperatorConfig(kafka_namespace="kafka"))
        out = controller.reconcile(namespace, "cdcrbac")
        assert not [p for p in out.problems if p.reason == "ApplyFailed"], out.problems
        kinds = {k[0] for k in children(kube, namespace, "cdcrbac")}
        assert {"KafkaConnector", "Role", "RoleBinding"} <= kinds, kinds
        controller.cleanup(namespace, "cdcrbac")
        assert not any(k[0] == "KafkaConnector" for k in children(kube, namespace, "cdcrbac"))
    finally:
        sa_kube.close()
        if created:
            control_plane.kubectl("delete", "clusterrole", "streamotion-spark-driver", check=False)

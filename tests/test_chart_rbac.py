"""The chart's RBAC really suffices: the operator runs as the chart's ServiceAccount.

The chart's ServiceAccount, ClusterRole (files/operator-rbac-rules.yaml), ClusterRoleBinding and
the Spark driver ClusterRole are created for real on the test control plane; the operator then
runs with a token of that ServiceAccount (TokenRequest API) through a full reconcile, readiness and
deletion. Taking any one rule away breaks the reconcile.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import Controller
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    apply_pipeline,
    children,
    create_secrets,
    get_pipeline,
    make_ready,
    pipeline,
    wait_for,
)

from streamotion.api.models import API_VERSION
from streamotion.dev.helm import KUBE_VERSION, helm

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "streamotion"
RULES = yaml.safe_load((CHART / "files" / "operator-rbac-rules.yaml").read_text())
KAFKA_NS, MONITORING_NS = "kafka", "monitoring"
# Used by kopf itself (watch streams, CRD discovery, peering, events) or by admission plugins this
# control plane does not enable (ownerReferences' blockOwnerDeletion): a direct reconcile cannot
# show them missing; the full operator run below exercises them.
NOT_REACHED_BY_A_RECONCILE = {
    "customresourcedefinitions",
    "namespaces",
    "clusterkopfpeerings",
    "events",
    "streampipelines/finalizers",
}
REMOVABLE = [i for i, r in enumerate(RULES) if not NOT_REACHED_BY_A_RECONCILE & set(r.get("resources", []))]


def rule_id(i: int) -> str:
    r = RULES[i]
    return f"{'/'.join(g or 'core' for g in r.get('apiGroups', []))}:{','.join(r['resources'])}:{','.join(r['verbs'])}"


@pytest.fixture(scope="module")
def chart_rbac(control_plane, tmp_path_factory):
    """The chart's RBAC objects, rendered (stand-in subcharts) and created for real."""
    copy = tmp_path_factory.mktemp("rbac-chart") / "streamotion"
    shutil.copytree(CHART, copy, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    for dep in yaml.safe_load((CHART / "Chart.yaml").read_text())["dependencies"]:
        (copy / "charts" / dep["name"]).mkdir(parents=True)
        (copy / "charts" / dep["name"] / "Chart.yaml").write_text(
            yaml.safe_dump({"apiVersion": "v2", "name": dep["name"], "version": dep["version"]})
        )
    ns = "streamotion-rbac"
    control_plane.kubectl("create", "namespace", ns, check=False)
    for extra in (KAFKA_NS, MONITORING_NS):
        control_plane.kubectl("create", "namespace", extra, check=False)
    out = helm("template", "rbac", str(copy), "-n", ns, "--kube-version", KUBE_VERSION).stdout
    docs = [
        d
        for d in yaml.safe_load_all(out)
        if d and d["kind"] in ("ServiceAccount", "ClusterRole", "ClusterRoleBinding")
    ]
    control_plane.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    yield {"namespace": ns, "serviceAccount": sa, "docs": docs}
    for d in docs:
        if d["kind"] != "ServiceAccount":
            control_plane.kubectl(
                "delete", d["kind"], d["metadata"]["name"], "--ignore-not-found", check=False
            )
    control_plane.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def token_kubeconfig(control_plane, namespace: str, sa: str, path: Path) -> Path:
    token = control_plane.kubectl("create", "token", sa, "-n", namespace, "--duration", "1h").stdout.strip()
    ca = json.loads(control_plane.kubeconfig_path.read_text())["clusters"][0]["cluster"][
        "certificate-authority"
    ]
    path.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "dev", "cluster": {"server": control_plane.server, "certificate-authority": ca}}
                ],
                "users": [{"name": sa, "user": {"token": token}}],
                "contexts": [{"name": sa, "context": {"cluster": "dev", "user": sa}}],
                "current-context": sa,
            }
        )
    )
    return path


def can_i(control_plane, namespace: str, sa: str, verb: str, resource: str, ns: str | None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{namespace}:{sa}"]
    args += ["-n", ns] if ns else ["--all-namespaces"]
    return control_plane.kubectl(*args, check=False).stdout.strip() == "yes"


@pytest.fixture(scope="module")
def admin(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


@pytest.fixture
def op_config(tmp_path):
    (tmp_path / "overview.json").write_text(json.dumps({"uid": "overview", "title": "Overview"}))
    return OperatorConfig(resync_seconds=2, kafka_namespace=KAFKA_NS, dashboards_dir=str(tmp_path))


def test_operator_runs_with_the_chart_service_account(
    control_plane, chart_rbac, admin, namespace, op_config, tmp_path
):
    sa_ns, sa = chart_rbac["namespace"], chart_rbac["serviceAccount"]
    wait_for(lambda: can_i(control_plane, sa_ns, sa, "watch", "streampipelines.streamotion.io", None), 30)
    # Not cluster-admin: the ServiceAccount cannot, for example, read pods or list or watch Secrets
    # (it reads the ones it needs by name and writes only the Kafka credentials' copies).
    assert not can_i(control_plane, sa_ns, sa, "list", "pods", namespace)
    assert not can_i(control_plane, sa_ns, sa, "list", "secrets", namespace)
    assert not can_i(control_plane, sa_ns, sa, "watch", "secrets", KAFKA_NS)
    kubeconfig = token_kubeconfig(control_plane, sa_ns, sa, tmp_path / "sa.kubeconfig")
    create_secrets(admin, namespace)
    op = OperatorThread(kubeconfig, op_config).start()
    try:
        apply_pipeline(admin, pipeline("rbac", namespace))
        kinds = {"ConfigMap", "KafkaTopic", "Deployment", "SparkApplication", "RayService", "ServiceAccount"}
        kinds |= {"RoleBinding", "PersistentVolumeClaim", "PodMonitor", "PrometheusRule"}
        kinds |= {"KafkaUser", "NetworkPolicy"}
        wait_for(
            lambda: kinds <= {k[0] for k in children(admin, namespace, "rbac")},
            90,
            what="every kind of child",
        )
        wait_for(
            lambda: (
                (get_pipeline(admin, namespace, "rbac").get("status") or {}).get("phase") == "Provisioning"
            ),
            60,
            what="status written",
        )

        def running():
            make_ready(admin, namespace, "rbac")
            return (get_pipeline(admin, namespace, "rbac").get("status") or {}).get("phase") == "Running"

        wait_for(running, 90, interval=1, what="phase Running")
        # the Kafka credentials Strimzi wrote (make_ready) were copied under the chart's rules
        assert {k[0] for k in children(admin, namespace, "rbac") if k[1] == namespace} >= {"Secret"}
        # Deletion: the finalizer's cleanup removes the children in other namespaces, then the pipeline goes.
        admin.request("DELETE", f"/apis/{API_VERSION}/namespaces/{namespace}/streampipelines/rbac")
        wait_for(lambda: get_pipeline(admin, namespace, "rbac") is None, 60, what="pipeline deleted")
        assert not [k for k in children(admin, namespace, "rbac") if k[1] != namespace]
        assert op.error is None
    finally:
        op.stop()


@pytest.mark.parametrize("index", REMOVABLE, ids=[rule_id(i) for i in REMOVABLE])
def test_each_rule_is_needed(control_plane, chart_rbac, admin, namespace, op_config, tmp_path, index):
    """With one rule taken away, a reconcile fails or leaves the pipeline incomplete."""
    sa_ns = chart_rbac["namespace"]
    sa = f"minus-{index}"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": f"streamotion-rbac-test-{sa}"},
        "rules": [r for i, r in enumerate(RULES) if i != index],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": role["metadata"]["name"]},
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": role["metadata"]["name"],
        },
        "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": sa_ns}],
    }
    account = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": sa_ns}}
    control_plane.kubectl(
        "apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([account, role, binding])
    )
    try:
        # The binding is in force (a kept rule works) before the reconcile runs.
        kept = next(r for r in role["rules"] if not r.get("resourceNames") and "/" not in r["resources"][0])
        group = kept["apiGroups"][0]
        resource = kept["resources"][0] + (f".{group}" if group else "")
        wait_for(lambda: can_i(control_plane, sa_ns, sa, kept["verbs"][0], resource, namespace), 30)
        create_secrets(admin, namespace)
        apply_pipeline(admin, pipeline("minus", namespace))
        kube = Kube.from_kubeconfig(str(token_kubeconfig(control_plane, sa_ns, sa, tmp_path / "kc")))
        try:
            outcome = Controller(kube, op_config).reconcile(namespace, "minus")
        except Exception as exc:  # denied where the operator cannot go on
            assert "403" in str(exc) or "forbidden" in str(exc).lower(), exc
            return
        finally:
            kube.close()
        body = get_pipeline(admin, namespace, "minus")
        messages = json.dumps(body.get("status") or {})
        assert outcome.problems or "forbidden" in messages.lower(), (
            f"reconcile succeeded without rule {rule_id(index)}: {outcome}"
        )
    finally:
        for obj in (binding, role, account):
            control_plane.kubectl(
                "delete", "-f", "-", "--ignore-not-found", input=yaml.safe_dump(obj), check=False
            )

"""Tenancy limits: the chart's ValidatingAdmissionPolicy on the real API server, and the operator's
re-check of the same settings (passed by the chart as STREAMOTION_ALLOWED_* / STREAMOTION_MAX_*).

Upstream rules relied on (kubernetes v1.35.4):
- ValidatingAdmissionPolicy is a default-on admission plugin (k8s.io/kubernetes v1.35.4
  pkg/kubeapiserver/options/plugins.go, defaultOnPlugins) and the test control plane only disables
  ServiceAccount (src/streamotion/dev/controlplane.py), so the rendered policy is enforced.
- Only the first denied validation's message is returned, prefixed with the policy and binding names,
  with the validation's reason as the Status reason (k8s.io/apiserver v0.35.4
  pkg/admission/plugin/policy/validating/dispatcher.go, deniedDecisions[0]): the chart orders the
  validations namespace, cluster, dashboards, limits and each message starts with the field.
- matchConditions that evaluate to false skip the policy (k8s.io/apiserver v0.35.4
  pkg/admission/plugin/policy/matching + validating/dispatcher.go): updates that leave the spec alone
  (finalizer removal) pass, so a pipeline stored before the policy can still be deleted.
"""

from __future__ import annotations

import copy
import json
import time

import pytest
import yaml
from streamotion_operator import tenancy
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import Controller
from streamotion_operator.kube import Kube
from streamotion_operator.testing import BASE_SPEC, children, condition, get_pipeline, pipeline

from streamotion.api.models import API_VERSION
from streamotion.dev.helm import KUBE_VERSION, helm
from tests.test_chart import chart, find, render  # noqa: F401  (chart: the module fixture)

pytestmark = pytest.mark.timeout(240)


def spec(**kafka):
    s = copy.deepcopy(BASE_SPEC)
    s["kafka"].update(kafka)
    return s


@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


def wait_enforced(control_plane, refused: dict, timeout: float = 60) -> None:
    """Until the API server refuses the pipeline (a policy is compiled and picked up asynchronously)."""
    deadline = time.monotonic() + timeout
    while True:
        r = control_plane.kubectl(
            "create", "--dry-run=server", "-f", "-", input=yaml.safe_dump(refused), check=False
        )
        if r.returncode != 0 and "ValidatingAdmissionPolicy" in r.stderr:
            return
        assert time.monotonic() < deadline, f"policy not enforced: {r.stdout} {r.stderr}"
        time.sleep(0.5)


@pytest.fixture
def policy(chart, control_plane, namespace):  # noqa: F811
    """The chart's rendered policy and binding, installed for real; the binding (only here) limited to
    this test's namespace so that other tests sharing the control plane are not affected."""
    docs = render(chart, release=f"t-{namespace[-5:]}")
    vap = find(docs, "ValidatingAdmissionPolicy")
    binding = find(docs, "ValidatingAdmissionPolicyBinding")
    assert binding["spec"]["policyName"] == vap["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert "matchResources" not in binding["spec"]  # the chart binds every namespace
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([vap, binding]))
    wait_enforced(control_plane, pipeline("probe", namespace, spec(partitions=999)))
    yield vap
    control_plane.kubectl("delete", "-f", "-", input=yaml.safe_dump_all([binding, vap]), check=False)


def apply(control_plane, body):
    return control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump(body), check=False)


REFUSED = [
    (
        {"kafka": {"cluster": "streamotion", "namespace": "team-b-kafka"}},
        "spec.kafka.namespace: Kafka namespace team-b-kafka is not allowed (allowed Kafka clusters: "
        "kafka/streamotion)",
    ),
    (
        {"kafka": {"cluster": "other"}},
        "spec.kafka.cluster: Kafka cluster kafka/other is not allowed (allowed: kafka/streamotion)",
    ),
    ({"kafka": {"partitions": 101}}, "spec.kafka.partitions: 101 is over the limit of 100"),
    ({"kafka": {"replicas": 4}}, "spec.kafka.replicas: 4 is over the limit of 3"),
    ({"kafka": {"retention": "87600h"}}, "spec.kafka.retention: 87600h is over the limit of 2160h"),
    (
        {"dashboards": {"enabled": True, "namespace": "kube-system"}},
        "spec.dashboards.namespace: namespace kube-system is not allowed (allowed: monitoring)",
    ),
]


def test_the_policy_admits_the_charts_own_kafka_and_refuses_the_rest(control_plane, namespace, policy, kube):
    ok = pipeline("allowed", namespace)
    r = apply(control_plane, ok)
    assert r.returncode == 0, r.stderr
    # dashboards switched off: any namespace there is never written to
    off = pipeline("no-boards", namespace, dashboards={"enabled": False, "namespace": "kube-system"})
    assert apply(control_plane, off).returncode == 0
    for i, (change, message) in enumerate(REFUSED):
        s = copy.deepcopy(BASE_SPEC)
        for k, v in change.items():
            s[k] = {**s[k], **v}
        r = apply(control_plane, pipeline(f"refused-{i}", namespace, s))
        assert r.returncode != 0, change
        assert message in r.stderr, r.stderr
        assert policy["metadata"]["name"] in r.stderr
    # the Status: the validation's reason (v1 Validation has no fieldPath: the message names the field)
    with pytest.raises(Exception) as err:
        kube.request(
            "POST",
            f"/apis/{API_VERSION}/namespaces/{namespace}/streampipelines",
            body=pipeline("x", namespace, spec(partitions=500)),
        )
    body = err.value.body
    assert err.value.status == 403 and body["reason"] == "Forbidden"
    assert (
        "denied request: spec.kafka.partitions: 500 is over the limit"
        in body["details"]["causes"][0]["message"]
    )
    # a spec change of an admitted pipeline is checked too
    r = apply(control_plane, pipeline("allowed", namespace, spec(namespace="elsewhere")))
    assert r.returncode != 0 and "spec.kafka.namespace" in r.stderr


def test_a_pipeline_stored_before_the_policy_can_still_be_deleted(chart, control_plane, namespace):  # noqa: F811
    """Metadata-only updates (the operator's finalizer) pass the policy's matchCondition."""
    bad = pipeline("old", namespace, spec(namespace="team-b-kafka"))
    bad["metadata"]["finalizers"] = ["streamotion.io/test"]
    assert apply(control_plane, bad).returncode == 0  # no policy yet
    docs = render(chart, release=f"o-{namespace[-5:]}")
    vap, binding = find(docs, "ValidatingAdmissionPolicy"), find(docs, "ValidatingAdmissionPolicyBinding")
    binding["spec"]["matchResources"] = {
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}
    }
    control_plane.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([vap, binding]))
    try:
        wait_enforced(control_plane, pipeline("probe", namespace, spec(namespace="team-b-kafka")))
        r = apply(control_plane, pipeline("old", namespace, spec(namespace="team-b-kafka", partitions=7)))
        assert r.returncode != 0 and "spec.kafka.namespace" in r.stderr, r.stderr  # spec changes: checked
        control_plane.kubectl("delete", "streampipeline", "old", "-n", namespace, "--wait=false")
        patch = json.dumps({"metadata": {"finalizers": None}})
        r = control_plane.kubectl(
            "patch", "streampipeline", "old", "-n", namespace, "--type=merge", "-p", patch, check=False
        )
        assert r.returncode == 0, r.stderr
        gone = control_plane.kubectl("get", "streampipeline", "old", "-n", namespace, check=False)
        assert "NotFound" in gone.stderr
    finally:
        control_plane.kubectl("delete", "-f", "-", input=yaml.safe_dump_all([binding, vap]), check=False)


def chart_config(chart, *args) -> OperatorConfig:  # noqa: F811
    deploy = find(render(chart, *args), "Deployment")
    env = {e["name"]: e.get("value") for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    return OperatorConfig.from_env(env)


def test_the_operator_reads_the_charts_tenancy_settings(chart):  # noqa: F811
    cfg = chart_config(
        chart,
        "--set",
        "tenancy.kafkaClusters[0].namespace=kb,tenancy.kafkaClusters[0].name=shared,"
        "tenancy.dashboardsNamespaces[0]=team-boards,tenancy.limits.maxPartitions=12",
    )
    assert cfg.allowed_kafka_clusters == ["kafka/streamotion", "kb/shared"]
    assert cfg.allowed_dashboards_namespaces == ["monitoring", "team-boards"]
    assert (cfg.max_partitions, cfg.max_replicas, cfg.max_retention_hours) == (12, 3, 2160)
    off = chart_config(chart, "--set", "tenancy.enabled=false")
    assert off.allowed_kafka_clusters == [] and off.max_partitions is None
    assert "ValidatingAdmissionPolicy" not in {
        d["kind"] for d in render(chart, "--set", "tenancy.enabled=false")
    }


@pytest.mark.parametrize(
    ("setting", "path"),
    [
        ("tenancy.limits.maxPartitions=5000", "/tenancy/limits/maxPartitions"),
        ("tenancy.kafkaClusters[0].namespace=Bad_NS", "/tenancy/kafkaClusters/0"),
        ("tenancy.dashboardsNamespaces[0]=Bad_NS", "/tenancy/dashboardsNamespaces/0"),
    ],
)
def test_schema_refuses_bad_tenancy_values(chart, setting, path):  # noqa: F811
    result = helm("template", "x", str(chart), "--kube-version", KUBE_VERSION, "--set", setting, check=False)
    assert result.returncode != 0
    assert path in result.stderr, result.stderr


def test_the_operator_refuses_a_pipeline_stored_before_the_policy(chart, kube, namespace, control_plane):  # noqa: F811
    """No policy binds this namespace: the operator's own check (chart settings) stops the pipeline,
    with a condition naming the field, and creates nothing (no topic in another Kafka namespace)."""
    cfg = chart_config(chart)
    control_plane.kubectl("create", "namespace", "team-b-kafka", check=False)
    body = pipeline("other-kafka", namespace, spec(namespace="team-b-kafka"))
    assert apply(control_plane, body).returncode == 0
    ctl = Controller(kube, cfg)
    try:
        out = ctl.reconcile(namespace, "other-kafka")
    finally:
        ctl.close()
    assert not out.created and not out.updated
    assert children(kube, namespace, "other-kafka") == {}
    stored = get_pipeline(kube, namespace, "other-kafka")
    ready = condition(stored, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", tenancy.REASON)
    assert (
        "spec.kafka.namespace/spec.kafka.cluster: Kafka cluster team-b-kafka/streamotion is not allowed"
        in (ready["message"])
    )
    assert stored["status"]["phase"] == "Failed"
    assert "observedGeneration" not in stored["status"]
    # the same pipeline on the allowed cluster is reconciled
    assert (
        tenancy.violations(
            __import__("streamotion.api.models", fromlist=["StreamPipeline"]).StreamPipeline.model_validate(
                pipeline("ok", namespace)
            ),
            cfg,
        )
        == []
    )

"""API versions: v1alpha1 -> v1alpha2 conversion (models.CHANGES), the operator's conversion webhook,
storage-version migration, on a kube-apiserver of its own (its CRD is replaced and removed here)."""

from __future__ import annotations

import base64
import copy
import datetime
import ipaddress
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import hypothesis
import pytest
import yaml
from hypothesis import strategies as st
from streamotion_operator import webhook
from streamotion_operator.config import OperatorConfig
from streamotion_operator.handlers import OperatorThread
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.migrate import migrate_storage
from streamotion_operator.testing import wait_for

from streamotion.api import models as m
from streamotion.api.conversion import ConversionError, convert
from streamotion.api.crd import crd, root_schema
from streamotion.api.validate import parse, validate_object
from streamotion.dev.controlplane import ControlPlane
from streamotion.dev.procs import free_port
from tests.test_chart import chart, find, render  # noqa: F401  (chart: the module fixture)

OLD = f"{m.GROUP}/v1alpha1"
NEW = m.API_VERSION

# A value for each pattern of the schema (a pattern without one gets hypothesis' smallest match).
SAMPLES = {
    m.DNS1123_SUBDOMAIN: "team-secret",
    m.DNS1123_LABEL: "team-a",
    m.DNS1035_LABEL: "team-a",
    m.QUANTITY_PATTERN: "3Gi",
    m.JVM_MEMORY_PATTERN: "3g",
    m.DURATION_PATTERN: "90s",
    r"^[1-9][0-9]{0,4}h$": "720h",
    r"^https?://[^\s/]+/?$": "https://mastodon.example",
    r"^wss?://\S+$": "wss://jetstream.example/subscribe",
    r"^[A-Za-z0-9_]+$": "worldnews",
    r"^[^#\s]+$": "joy",
    r"^[a-z]{2,3}$": "fr",
    r"^[a-z][a-z0-9+.-]*://\S+$": "gs://bucket/checkpoints",
    r"^[a-z_][a-z0-9_]*$": "analytics",
}
RULES = m.all_rules()
DROPPED: set[str] = set()
"""Fields :func:`sample` left out of an object because a cross-field rule allows them only alone
(in a list, another item carries them)."""


def _string(schema: dict[str, Any]) -> str:
    pattern = schema.get("pattern")
    lo, hi = schema.get("minLength", 1), schema.get("maxLength", 64)
    if pattern is None:
        return "set-by-test"[:hi]
    if pattern in SAMPLES:
        return SAMPLES[pattern]
    return hypothesis.find(st.from_regex(pattern, fullmatch=True), lambda s: lo <= len(s) <= hi)


def _dotted(path: tuple[str, ...]) -> str:
    return "".join(p if p == "[]" else f".{p}" for p in path)


def _failing(obj: dict[str, Any], rules: list[m.Rule]) -> int:
    def fails(rule: m.Rule) -> bool:
        try:
            return not rule.check(obj)
        except Exception:
            return True

    return sum(fails(r) for r in rules)


def _repair(obj: dict[str, Any], schema: dict[str, Any], path: tuple[str, ...], keep: frozenset[str]) -> None:
    """Make ``obj`` pass its object's cross-field rules (models.Rule): enum fields back to their
    defaults first, then optional fields other than ``keep`` left out, from the last: first those
    whose absence makes fewer rules fail, then any that makes none fail more."""
    rules = [RULES[r["rule"]] for r in schema.get("x-kubernetes-validations", [])]
    if not _failing(obj, rules):
        return
    for key, sub in (schema.get("properties") or {}).items():
        if "enum" in sub and "default" in sub and key in obj and obj[key] != sub["default"]:
            before, old = _failing(obj, rules), obj[key]
            obj[key] = sub["default"]
            if _failing(obj, rules) >= before:
                obj[key] = old
            if not _failing(obj, rules):
                return
    required = set(schema.get("required", [])) | keep
    for strictly in (True, False):
        for key in reversed([k for k in obj if k not in required]):
            before, old = _failing(obj, rules), obj.pop(key)
            after = _failing(obj, rules)
            if after < before or (not strictly and after == before):
                DROPPED.add(_dotted((*path, key)))
            else:
                obj[key] = old
            if not after:
                return
    raise AssertionError(f"no sample of {_dotted(path)} passes its rules: {obj}")


def sample(schema: dict[str, Any], path: tuple[str, ...] = (), keep: frozenset[str] = frozenset()) -> Any:
    """A value for ``schema`` with every property set, each to something other than its default
    where the schema allows and its object's cross-field rules let it (else see :func:`_repair`); a
    list of objects discriminated by ``type`` (sources, sinks) gets one item per type, each with its
    own block only; another list gets a second item when the first had to leave fields out."""
    default = schema.get("default")
    if "enum" in schema:
        return next((v for v in schema["enum"] if v != default), schema["enum"][0])
    kind = schema.get("type")
    if kind == "object":
        props = schema.get("properties")
        if props is None:
            return {"key": sample(schema.get("additionalProperties") or {"type": "string"}, (*path, "*"))}
        obj = {name: sample(sub, (*path, name)) for name, sub in props.items()}
        _repair(obj, schema, path, keep)
        return obj
    if kind == "array":
        item, inner = schema["items"], (*path, "[]")
        types = (item.get("properties") or {}).get("type", {}).get("enum")
        if types and all(t in item["properties"] for t in types):
            out = []
            for t in types:
                obj = {name: sample(sub, (*inner, name)) for name, sub in item["properties"].items()}
                for other in types:
                    if other != t:
                        obj.pop(other)
                obj["type"] = t
                if "name" in obj:
                    obj["name"] = t
                _repair(obj, item, inner, frozenset())
                out.append(obj)
            return out
        first = sample(item, inner)
        out = [first]
        left_out = frozenset(item.get("properties") or {}) - set(first if isinstance(first, dict) else ())
        if left_out:  # a second item with what the first had to leave out
            second = sample(item, inner, keep=left_out)
            keys = schema.get("x-kubernetes-list-map-keys") or []
            if (
                second != first
                and schema.get("maxItems", 2) >= 2
                and [second.get(k) for k in keys] != [first.get(k) for k in keys]
            ):
                out.append(second)
        return out
    if kind == "boolean":
        return not default
    if kind in ("integer", "number"):
        lo = schema.get("minimum", 0)
        if schema.get("exclusiveMinimum"):
            lo = lo + 1 if kind == "integer" else lo + 0.5
        value = lo if lo != default else lo + 1
        return min(value, schema.get("maximum", value))
    if kind == "string":
        return _string(schema)
    raise AssertionError(f"no sample for {_dotted(path)}: {schema}")


def leaves(obj: Any, path: str = "") -> set[str]:
    if isinstance(obj, dict):
        return {p for k, v in obj.items() for p in leaves(v, f"{path}.{k}")} if obj else {path}
    if isinstance(obj, list):
        return {p for v in obj for p in leaves(v, f"{path}[]")} if obj else {path}
    return {path}


def schema_leaves(schema: dict[str, Any], path: str = "") -> set[str]:
    if schema.get("type") == "object" and "properties" in schema:
        return {p for k, s in schema["properties"].items() for p in schema_leaves(s, f"{path}.{k}")}
    if schema.get("type") == "array":
        return schema_leaves(schema["items"], f"{path}[]")
    return {path}


def maximal(name: str, namespace: str) -> dict[str, Any]:
    """A v1alpha1 StreamPipeline with every spec field of that version's schema set."""
    spec = sample(root_schema("v1alpha1")["properties"]["spec"], ("spec",))
    body = {
        "apiVersion": OLD,
        "kind": m.KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }
    assert validate_object(body) == [], validate_object(body)
    return body


def test_the_maximal_pipeline_sets_every_field_of_both_versions():
    body = maximal("max", "ns")
    for version in ("v1alpha1", m.VERSION):
        schema = root_schema(version)["properties"]["spec"]
        obj = body["spec"] if version == "v1alpha1" else convert(body, NEW)["spec"]
        have = leaves(obj, ".spec")
        missing = {
            x
            for x in schema_leaves(schema, ".spec")
            if not any(h == x or h.startswith(x + ".") for h in have)
        }
        # a field a cross-field rule allows only without another is in a second list item, or left out
        assert all(any(leaf.startswith(d) for d in DROPPED) for leaf in missing), (missing, DROPPED)


def test_conversion_renames_retention_and_passes_every_other_field_through():
    old = maximal("max", "ns")
    old["spec"]["kafka"]["retentionHours"] = 720
    new = convert(old, NEW)
    assert new["apiVersion"] == NEW
    assert new["spec"]["kafka"]["retention"] == "720h" and "retentionHours" not in new["spec"]["kafka"]
    # everything else unchanged, key order included
    assert list(new["spec"]["kafka"]) == [
        "retention" if k == "retentionHours" else k for k in old["spec"]["kafka"]
    ]
    rest = copy.deepcopy(new)
    rest["spec"]["kafka"]["retentionHours"] = rest["spec"]["kafka"].pop("retention")
    rest["spec"]["kafka"]["retentionHours"] = 720
    rest["apiVersion"] = OLD
    assert json.dumps(rest, sort_keys=True) == json.dumps(old, sort_keys=True)
    # round trips, both ways; a field this code does not know (one added later) passes as it is
    assert convert(new, OLD) == old
    unknown = copy.deepcopy(old)
    unknown["spec"]["kafka"]["futureField"] = {"a": [1]}
    unknown["status"] = {"phase": "Running", "somethingNew": 1}
    assert convert(convert(unknown, NEW), OLD) == unknown
    assert convert(convert(unknown, NEW), NEW) == convert(unknown, NEW)
    # the CLI reads either version as the current one
    assert parse(old).spec.kafka.retention == "720h" and parse(old).spec.kafka.retention_hours == 720


def test_the_webhook_answers_conversion_reviews_and_refuses_what_it_cannot_convert():
    old = maximal("max", "ns")
    out = webhook.review(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "ConversionReview",
            "request": {"uid": "u-1", "desiredAPIVersion": NEW, "objects": [old, old]},
        }
    )
    assert out["apiVersion"] == "apiextensions.k8s.io/v1" and out["kind"] == "ConversionReview"
    assert out["response"]["uid"] == "u-1" and out["response"]["result"] == {"status": "Success"}
    assert out["response"]["convertedObjects"] == [convert(old, NEW)] * 2
    for bad, why in (
        ({"apiVersion": "apiextensions.k8s.io/v1beta1", "request": {"uid": "u"}}, "ConversionReview"),
        (
            {"apiVersion": "apiextensions.k8s.io/v1", "request": {"uid": "u", "desiredAPIVersion": "x/v9"}},
            "x/v9",
        ),
        (
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "request": {"uid": "u", "desiredAPIVersion": NEW, "objects": [{**old, "apiVersion": "a/b"}]},
            },
            "a/b",
        ),
        (
            {
                "apiVersion": "apiextensions.k8s.io/v1",
                "request": {
                    "uid": "u",
                    "desiredAPIVersion": OLD,
                    "objects": [{**convert(old, NEW), "spec": {"kafka": {"retention": "7d"}}}],
                },
            },
            "spec.kafka.retention",
        ),
    ):
        res = webhook.review(bad)["response"]
        assert res["result"]["status"] == "Failure" and why in res["result"]["message"], res
    with pytest.raises(ConversionError):
        convert({"apiVersion": OLD, "kind": "Other"}, NEW)


# ------------------------------------------------------------------------- on a real API server
def _certs(directory: Path) -> bytes:
    """A CA and a serving certificate for 127.0.0.1 (what the chart's Secret holds for its Service)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def build(subject, issuer, key, signer, ca: bool):
        b = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            b = b.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        return b.sign(signer, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = build("test-ca", "test-ca", ca_key, ca_key, True)
    cert = build("127.0.0.1", "test-ca", key, ca_key, False)
    pem = serialization.Encoding.PEM
    (directory / "ca.crt").write_bytes(ca.public_bytes(pem))
    (directory / "tls.crt").write_bytes(cert.public_bytes(pem))
    (directory / "tls.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return ca.public_bytes(pem)


@pytest.fixture(scope="module")
def own_plane(tmp_path_factory):
    """An API server whose StreamPipeline CRD this module installs, upgrades and removes."""
    cp = ControlPlane(
        workdir=tmp_path_factory.mktemp("k8s-conversion"), controller_manager=False, own_crd=False
    )
    cp.start()
    yield cp
    cp.stop()


def _apply_crd(cp: ControlPlane, body: dict[str, Any]) -> None:
    path = cp.workdir / "crd.json"
    path.write_text(json.dumps(body))
    cp.install_crds([path])


def _get(kube: Kube, version: str, namespace: str, name: str) -> dict[str, Any]:
    return kube.request("GET", f"/apis/{m.GROUP}/{version}/namespaces/{namespace}/{m.PLURAL}/{name}")


def _crd(kube: Kube) -> dict[str, Any]:
    return kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{webhook.CRD_NAME}")


def _try(kube: Kube, version: str, namespace: str, name: str) -> dict[str, Any]:
    """The object, or {} while the API server is not serving it yet (a CRD change is asynchronous)."""
    try:
        return _get(kube, version, namespace, name)
    except ApiError:
        return {}


def test_stored_v1alpha1_objects_read_back_unchanged_through_the_operators_webhook_and_migrate(
    own_plane, tmp_path
):
    """Kubernetes' CRD versioning contract: each object stays in etcd in the version it was written
    in; a read in another version goes through the conversion webhook (ConversionReview v1, the
    response in the request's order); a version can leave the CRD only after it left
    status.storedVersions, which the API server never shrinks by itself (kubernetes/website
    content/en/docs/tasks/extend-kubernetes/custom-resources/custom-resource-definition-versioning.md;
    kubernetes/kubernetes staging/src/k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go,
    storedVersions must appear in spec.versions)."""
    cp = own_plane
    kube = Kube.from_kubeconfig(str(cp.kubeconfig_path))
    ns = "conversion"
    cp.kubectl("create", "namespace", ns)
    # 1. the CRD before v1alpha2: v1alpha1 alone, stored as such
    _apply_crd(cp, crd(versions=("v1alpha1",)))
    full = maximal("full", ns)
    full["spec"]["kafka"]["retentionHours"] = 720
    minimal = {
        "apiVersion": OLD,
        "kind": m.KIND,
        "metadata": {"name": "minimal", "namespace": ns},
        "spec": {
            "sources": [{"name": "demo", "type": "replay", "replay": {}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "pg"}}],
        },
    }
    stored = {}
    for body in (full, minimal):
        path = f"/apis/{OLD}/namespaces/{ns}/{m.PLURAL}"
        stored[body["metadata"]["name"]] = kube.request("POST", path, body=body)
    assert stored["full"]["spec"] == full["spec"]  # every field kept: nothing pruned or defaulted away

    with pytest.raises(RuntimeError, match="apply the new CRD first"):
        migrate_storage(kube)  # nothing to migrate to yet

    # 2. what a rename without conversion does: the API server only changes apiVersion and prunes
    #    the field the other version does not know: the 720 hours are gone, and the operator would
    #    apply its default (168h), so Kafka would delete 552 hours of events
    naive = crd()
    naive["spec"]["conversion"] = {"strategy": "None"}
    _apply_crd(cp, naive)
    wait_for(lambda: _try(kube, m.VERSION, ns, "full").get("apiVersion") == NEW, 30, what="v1alpha2 served")
    lost = _get(kube, m.VERSION, ns, "full")["spec"]["kafka"]
    assert "retention" not in lost and "retentionHours" not in lost, lost
    assert m.StreamPipeline.model_validate(_get(kube, m.VERSION, ns, "full")).spec.kafka.retention == "168h"

    # 3. the new CRD with the webhook of the operator's code: objects still stored as v1alpha1
    #    (nothing wrote them since) read back under v1alpha2 and v1alpha1, every field unchanged
    _apply_crd(cp, crd())
    ca = _certs(tmp_path)
    with webhook.WebhookThread(tmp_path) as hook:
        assert webhook.ensure_crd_conversion(kube, webhook.client_config("", 0, ca, url=hook.url))
        wait_for(
            lambda: (
                _try(kube, m.VERSION, ns, "full").get("spec", {}).get("kafka", {}).get("retention") == "720h"
            ),
            30,
            what="conversion through the webhook",
        )
        for name, body in stored.items():
            new = _get(kube, m.VERSION, ns, name)
            assert new["apiVersion"] == NEW and new["spec"] == convert(body, NEW)["spec"], name
            old = _get(kube, "v1alpha1", ns, name)
            assert old["spec"] == body["spec"], name  # and back
        listed = kube.request("GET", f"/apis/{NEW}/{m.PLURAL}")["items"]
        assert sorted(i["spec"]["kafka"]["retention"] for i in listed) == ["168h", "720h"]

    # 4. the operator serves the webhook itself (here on another port) and points the CRD at it
    port = free_port()
    cfg = OperatorConfig(
        webhook_port=port,
        webhook_cert_dir=str(tmp_path),
        webhook_url=f"https://127.0.0.1:{port}/convert",
        resync_seconds=2,
        cleanup_timeout_seconds=5,
    )
    with OperatorThread(cp.kubeconfig_path, cfg):
        wanted = webhook.client_config("", 0, ca, url=cfg.webhook_url)
        wait_for(
            lambda: _crd(kube)["spec"]["conversion"]["webhook"]["clientConfig"] == wanted,
            30,
            what="the operator's clientConfig on the CRD",
        )

        # the operator (built for v1alpha2) works on objects stored as v1alpha1: finalizer, status
        def handled() -> bool:
            old = _try(kube, "v1alpha1", ns, "minimal")
            finalizers = (old.get("metadata") or {}).get("finalizers") or []
            return (
                bool((old.get("status") or {}).get("conditions")) and "streamotion.io/cleanup" in finalizers
            )

        wait_for(handled, 60, what="the operator's finalizer and status, read as v1alpha1")
        old = _get(kube, "v1alpha1", ns, "minimal")
        assert old["spec"] == stored["minimal"]["spec"]
        # a write in either version is read back in the other
        kube.request(
            "PATCH",
            f"/apis/{NEW}/namespaces/{ns}/{m.PLURAL}/full",
            body={"spec": {"kafka": {"retention": "2160h"}}},
            content_type="application/merge-patch+json",
        )
        assert _get(kube, "v1alpha1", ns, "full")["spec"]["kafka"]["retentionHours"] == 2160
        created = kube.request(
            "POST",
            f"/apis/{OLD}/namespaces/{ns}/{m.PLURAL}",
            body={**minimal, "metadata": {"name": "later", "namespace": ns}, "spec": full["spec"]},
        )
        assert created["apiVersion"] == OLD and created["spec"]["kafka"]["retentionHours"] == 720
        assert _get(kube, m.VERSION, ns, "later")["spec"]["kafka"]["retention"] == "720h"
        # printer columns on both versions
        for version in ("v1alpha1", m.VERSION):
            table = cp.kubectl("get", f"{m.PLURAL}.{version}.{m.GROUP}", "-n", ns, "-o", "wide").stdout
            assert table.split()[:7] == ["NAME", "PHASE", "READY", "SOURCES", "SINKS", "AGE", "MESSAGE"]

        # 5. storage migration: every object written again in v1alpha2, storedVersions [v1alpha2]
        def stored_versions() -> list[str]:  # as docs/operations/upgrade.md reads them
            out = cp.kubectl("get", "crd", webhook.CRD_NAME, "-o", "jsonpath={.status.storedVersions}").stdout
            return json.loads(out)

        assert sorted(stored_versions()) == ["v1alpha1", "v1alpha2"]
        run = subprocess.run(
            [sys.executable, "-m", "streamotion", "migrate-storage", "--kubeconfig", str(cp.kubeconfig_path)],
            capture_output=True,
            text=True,
        )
        assert run.returncode == 0, run.stderr
        assert "rewrote 3 StreamPipelines in v1alpha2" in run.stdout, run.stdout
        assert stored_versions() == [m.VERSION] == _crd(kube)["status"]["storedVersions"]

    # 6. v1alpha1 can now leave the CRD (its objects are all stored as v1alpha2): with it gone and
    #    no webhook running, every object still reads, unchanged
    alone = crd(versions=(m.VERSION,))  # replaced whole: the operator's clientConfig goes too
    alone["metadata"]["resourceVersion"] = _crd(kube)["metadata"]["resourceVersion"]
    kube.request(
        "PUT", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{webhook.CRD_NAME}", body=alone
    )
    items = kube.request("GET", f"/apis/{NEW}/namespaces/{ns}/{m.PLURAL}")["items"]
    by_name = {i["metadata"]["name"]: i for i in items}
    assert by_name["full"]["spec"]["kafka"]["retention"] == "2160h"
    assert by_name["minimal"]["spec"] == convert(stored["minimal"], NEW)["spec"]
    # the storedVersions rule itself: a version still listed there cannot be removed
    bad = crd(versions=("v1alpha1",))
    bad["metadata"]["resourceVersion"] = _crd(kube)["metadata"]["resourceVersion"]
    with pytest.raises(ApiError) as err:
        kube.request(
            "PUT", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{webhook.CRD_NAME}", body=bad
        )
    assert "storedVersions" in json.dumps(err.value.body)
    kube.close()


# ------------------------------------------------------------------------------------ the chart
def test_the_chart_serves_the_webhook_with_a_certificate_for_its_service(chart):  # noqa: F811
    """Helm's genCA/genSignedCert (helm/helm v4.3.1 pkg/engine/funcs.go, sprig crypto.go) give a CA
    and a certificate whose DNS names the API server checks against the Service's
    <name>.<namespace>.svc (kubernetes/kubernetes staging/src/k8s.io/apiserver/pkg/util/webhook/
    authentication.go: the service's DNS name is the TLS server name)."""
    from cryptography import x509

    docs = render(chart, release="rel", namespace="ops")
    secret = find(docs, "Secret", "rel-streamotion-operator-webhook-tls")
    assert secret["type"] == "kubernetes.io/tls"
    ca = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["ca.crt"]))
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    cert.verify_directly_issued_by(ca)
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName
    )
    assert "rel-streamotion-operator-webhook.ops.svc" in names
    svc = find(docs, "Service", "rel-streamotion-operator-webhook")
    assert svc["spec"]["ports"] == [
        {"name": "webhook", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    pod = find(docs, "Deployment", "rel-streamotion-operator")["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    cfg = OperatorConfig.from_env(env)
    assert (cfg.webhook_port, cfg.webhook_service, cfg.webhook_service_port) == (
        9443,
        "ops/rel-streamotion-operator-webhook",
        443,
    )
    assert {"name": "webhook", "containerPort": 9443, "protocol": "TCP"} in container["ports"]
    mount = next(v for v in container["volumeMounts"] if v["mountPath"] == cfg.webhook_cert_dir)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["secretName"] == secret["metadata"]["name"]
    # the CRD the chart installs points at the Service of a release named streamotion in namespace
    # streamotion (crds/ is not templated); the operator of another release points it at its own
    crd_file = yaml.safe_load((chart / "crds" / f"{webhook.CRD_NAME}.yaml").read_text())
    assert crd_file == crd()
    default = find(render(chart), "Service", "streamotion-operator-webhook")["metadata"]
    assert crd_file["spec"]["conversion"]["webhook"]["clientConfig"]["service"] == {
        "namespace": default["namespace"],
        "name": default["name"],
        "path": "/convert",
        "port": 443,
    }

"""The StreamPipeline API: generated artefacts are current, the API server and the CLI agree."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from streamotion.api import models as m
from streamotion.api.crd import crd, crd_yaml
from streamotion.api.docs import api_reference
from streamotion.api.validate import load_documents, parse, validate_object

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if "StreamPipeline" in p.read_text())
BASE = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())


def streamotion(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "streamotion", *args], capture_output=True, text=True)


# --------------------------------------------------------------------------------- generated files
def test_committed_crd_is_generated_from_models():
    committed = ROOT / "charts" / "streamotion" / "crds" / "streampipelines.streamotion.io.yaml"
    assert committed.read_text() == crd_yaml(), "run `make generate` to refresh the committed CRD"


def test_committed_api_reference_is_generated_from_models():
    committed = ROOT / "docs" / "api.md"
    assert committed.read_text() == api_reference(), "run `make generate` to refresh docs/api.md"


def test_crd_cli_prints_the_generated_crd():
    result = streamotion("crd")
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout) == crd()


def test_crd_shape():
    spec = crd()["spec"]
    assert spec["names"]["shortNames"] == ["sp"] and spec["scope"] == "Namespaced"
    version = spec["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(columns) == ["Phase", "Ready", "Sources", "Sinks", "Age", "Message"]
    assert columns["Message"]["priority"] == 1
    schema = version["schema"]["openAPIV3Schema"]["properties"]
    sources = schema["spec"]["properties"]["sources"]
    assert sources["x-kubernetes-list-map-keys"] == ["name"] and sources["maxItems"] == 16
    rules = {r["rule"] for r in sources["items"]["x-kubernetes-validations"]}
    assert "has(self.reddit) == (self.type == 'reddit')" in rules
    assert "description" in sources and "description" in sources["items"]["properties"]["reddit"]
    conditions = schema["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    # each duration field is explained by its own docstring, not by the shared type's description
    durations = {path: s for path, s in _walk(schema["spec"]) if s.get("pattern") == m.DURATION_PATTERN}
    assert {"spec.processing.trigger", "spec.sinks[].lake.aggregateInterval"} <= set(durations)
    descriptions = [s.get("description", "") for s in durations.values()]
    assert all(descriptions) and len(set(descriptions)) == len(durations)
    assert "do not wait for it" in durations["spec.sinks[].lake.aggregateInterval"]["description"]
    assert set(conditions["items"]["required"]) >= {
        "type",
        "status",
        "lastTransitionTime",
        "reason",
        "message",
    }


def _walk(schema, path="spec"):
    yield path, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _walk(sub, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")


def test_no_field_accepts_a_credential():
    spec = crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for path, _ in _walk(spec):
        leaf = path.rsplit(".", 1)[-1].lower().rstrip("[]")
        words = ("password", "passwd", "token", "apikey", "privatekey", "credential", "clientsecret")
        assert not any(w in leaf for w in words) or leaf.endswith("secret"), path


# ------------------------------------------------------------------------------ validation (CLI)
def test_examples_validate(tmp_path):
    result = streamotion("validate", *map(str, EXAMPLES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("is valid") == len(EXAMPLES)


def test_defaults_are_applied():
    p = parse(BASE)
    assert p.spec.kafka.partitions == 3 and p.spec.processing.trigger == "5s"
    assert p.spec.sources[0].replicas == 1 and p.spec.sources[0].replay.rate_per_second == 20
    assert p.spec.model.replicas.min == 1 and p.spec.dashboards.namespace == "monitoring"


def test_yaml_syntax_error_names_the_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: streamotion.io/v1alpha1\nkind: StreamPipeline\nspec:\n  sources: [\n  - x: 1\n"
    )
    result = streamotion("validate", str(bad))
    assert result.returncode == 1
    assert "line" in result.stderr and "YAML syntax error" in result.stderr


def test_several_documents_per_file(tmp_path):
    bad = copy.deepcopy(BASE)
    bad["spec"]["kafka"]["partitions"] = 0
    f = tmp_path / "two.yaml"
    f.write_text(yaml.safe_dump_all([BASE, bad]))
    docs = load_documents(f)
    assert len(docs) == 2
    result = streamotion("validate", str(f))
    assert result.returncode == 1
    assert "is valid" in result.stdout and "spec.kafka.partitions" in result.stderr


# ------------------------------------------------------------------------------- invalid specs
def _with(mutate):
    doc = copy.deepcopy(BASE)
    mutate(doc)
    return doc


def _src(doc, i=0):
    return doc["spec"]["sources"][i]


def _replay(name="demo"):
    return {"name": name, "type": "replay", "replay": {"dataset": "goemotions"}}


INVALID = {
    "no-sources": (lambda d: d["spec"].update(sources=[]), "spec.sources"),
    "sources-missing": (lambda d: d["spec"].pop("sources"), "spec.sources"),
    "no-sinks": (lambda d: d["spec"].update(sinks=[]), "spec.sinks"),
    "sinks-missing": (lambda d: d["spec"].pop("sinks"), "spec.sinks"),
    "unknown-source-type": (lambda d: _src(d).update(type="tiktok"), "spec.sources[0].type"),
    "reddit-without-block": (
        lambda d: d["spec"].update(sources=[{"name": "r", "type": "reddit"}]),
        "spec.sources[0].reddit",
    ),
    "block-of-other-type": (
        lambda d: _src(d).update(reddit={"subreddits": ["news"], "credentialsSecret": "r"}),
        "spec.sources[0].reddit",
    ),
    "duplicate-source-names": (
        lambda d: d["spec"].update(sources=[_replay("a"), _replay("a")]),
        "spec.sources[1]",
    ),
    "negative-replicas": (lambda d: _src(d).update(replicas=-1), "spec.sources[0].replicas"),
    "zero-partitions": (lambda d: d["spec"]["kafka"].update(partitions=0), "spec.kafka.partitions"),
    "zero-kafka-replicas": (lambda d: d["spec"]["kafka"].update(replicas=0), "spec.kafka.replicas"),
    "postgres-without-credentials": (
        lambda d: d["spec"]["sinks"][0]["postgres"].pop("credentialsSecret"),
        "spec.sinks[0].postgres.credentialsSecret",
    ),
    "bigquery-without-dataset": (
        lambda d: d["spec"].update(sinks=[{"type": "bigquery", "bigquery": {"project": "p"}}]),
        "spec.sinks[0].bigquery.dataset",
    ),
    "trigger-soon": (lambda d: d["spec"].update(processing={"trigger": "soon"}), "spec.processing.trigger"),
    "watermark-in-words": (
        lambda d: d["spec"].update(processing={"watermark": "2 minutes"}),
        "spec.processing.watermark",
    ),
    "zero-window": (lambda d: d["spec"].update(processing={"window": "0s"}), "spec.processing.window"),
    "zero-watermark": (
        lambda d: d["spec"].update(processing={"watermark": "0m0.0s"}),
        "spec.processing.watermark",
    ),
    "zero-max-future-skew": (
        lambda d: d["spec"].update(processing={"maxFutureSkew": "0ms"}),
        "spec.processing.maxFutureSkew",
    ),
    "name-too-long": (lambda d: d["metadata"].update(name="x" * (m.MAX_PIPELINE_NAME + 1)), "metadata.name"),
    "name-not-dns-1035": (lambda d: d["metadata"].update(name="1demo"), "metadata.name"),
    "seventeen-sources": (
        lambda d: d["spec"].update(sources=[_replay(f"s{i}") for i in range(17)]),
        "spec.sources",
    ),
    "inline-password": (
        lambda d: d["spec"]["sinks"][0]["postgres"].update(password="hunter2"),
        "spec.sinks[0].postgres.password",
    ),
    "inline-reddit-secret": (
        lambda d: d["spec"].update(
            sources=[
                {
                    "name": "r",
                    "type": "reddit",
                    "reddit": {"subreddits": ["news"], "credentialsSecret": "r", "clientSecret": "abc"},
                }
            ]
        ),
        "spec.sources[0].reddit.clientSecret",
    ),
    "secret-name-invalid": (
        lambda d: d["spec"]["sinks"][0]["postgres"].update(credentialsSecret="My Secret"),
        "spec.sinks[0].postgres.credentialsSecret",
    ),
    "source-name-invalid": (lambda d: _src(d).update(name="Reddit_1"), "spec.sources[0].name"),
    "model-min-above-max": (
        lambda d: d["spec"].update(model={"replicas": {"min": 3, "max": 2}}),
        "spec.model.replicas",
    ),
    "unknown-device": (lambda d: d["spec"].update(model={"device": "tpu"}), "spec.model.device"),
    "unknown-arch": (lambda d: d["spec"].update(model={"arch": "rnn"}), "spec.model.arch"),
    "linear-model-on-gpu": (
        lambda d: d["spec"].update(model={"arch": "linear", "name": "/models/linear", "device": "gpu"}),
        "spec.model.arch",
    ),
    "linear-model-on-onnx": (
        lambda d: d["spec"].update(model={"arch": "linear", "name": "/models/linear", "backend": "onnx"}),
        "spec.model.arch",
    ),
    "hashtag-timeline-without-hashtags": (
        lambda d: d["spec"].update(
            sources=[{"name": "m", "type": "mastodon", "mastodon": {"timeline": "hashtag"}}]
        ),
        "spec.sources[0].mastodon.hashtags",
    ),
    "x-without-rules": (
        lambda d: d["spec"].update(sources=[{"name": "t", "type": "x", "x": {"bearerTokenSecret": "x"}}]),
        "spec.sources[0].x.rules",
    ),
    "http-privileged-port": (
        lambda d: d["spec"].update(
            sources=[{"name": "h", "type": "http", "http": {"port": 80, "tokenSecret": "t"}}]
        ),
        "spec.sources[0].http.port",
    ),
    "unknown-sink-type": (lambda d: d["spec"]["sinks"][0].update(type="snowflake"), "spec.sinks[0].type"),
    "executor-memory-unit": (
        lambda d: d["spec"].update(processing={"executors": {"memory": "2GB"}}),
        "spec.processing.executors.memory",
    ),
    "five-sinks": (lambda d: d["spec"].update(sinks=d["spec"]["sinks"] * 5), "spec.sinks"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_validate_refuses_invalid_spec_naming_the_field(case, tmp_path):
    mutate, field = INVALID[case]
    doc = _with(mutate)
    errors = validate_object(doc)
    assert errors, f"{case} was accepted"
    assert any(field in str(e) for e in errors), f"{case}: {field} not in {errors}"
    f = tmp_path / f"{case}.yaml"
    f.write_text(yaml.safe_dump(doc))
    result = streamotion("validate", str(f))
    assert result.returncode == 1
    assert field in result.stderr


# ------------------------------------------------------------------------- against the API server
def test_examples_accepted_by_server_dry_run(control_plane, namespace):
    for example in EXAMPLES:
        result = control_plane.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-f", str(example), "-o", "json", check=False
        )
        assert result.returncode == 0, f"{example.name}: {result.stderr}"
        created = json.loads(result.stdout)
        # the server applied the same defaults as the CLI
        local = parse(load_documents(example)[0].body)
        assert created["spec"]["kafka"]["partitions"] == local.spec.kafka.partitions
        assert created["spec"]["processing"]["trigger"] == local.spec.processing.trigger


def test_server_and_cli_refuse_the_same_invalid_specs(control_plane, namespace, tmp_path):
    assert len(INVALID) >= 20
    failures = []
    for case, (mutate, field) in sorted(INVALID.items()):
        f = tmp_path / f"{case}.yaml"
        f.write_text(yaml.safe_dump(_with(mutate)))
        result = control_plane.kubectl(
            "create", "--dry-run=server", "-n", namespace, "-f", str(f), check=False
        )
        if result.returncode == 0:
            failures.append(f"{case}: accepted by the API server")
        elif field not in result.stderr:
            failures.append(f"{case}: server message does not name {field}: {result.stderr.strip()}")
        cli = [str(e) for e in validate_object(_with(mutate))]
        if not any(field in e for e in cli):
            failures.append(f"{case}: CLI does not name {field}: {cli}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("value", "accepted"),
    [
        ("1h30m", True),
        ("1.5h", True),
        ("500ms", True),
        ("0.5ms", True),
        ("2562047h", True),
        ("0s", False),
        ("0m0.0s", False),
        ("2562048h", False),
    ],
)
def test_positive_duration_rule_agrees_with_cel_duration_on_the_server(
    value, accepted, control_plane, namespace, tmp_path
):
    """kubernetes v1.35.4 (go.mod: github.com/google/cel-go v0.26.0) evaluates the rule
    ``duration(self.window) > duration('0s')`` with cel-go v0.26.0 common/types/string.go:
    String.ConvertToType(DurationType) is Go's time.ParseDuration, which reads every form our
    Duration pattern allows (decimals, concatenated ms|s|m|h) and fails past 2562047h47m16.854775807s;
    ``streamotion validate`` must accept and refuse the same values."""
    doc = _with(lambda d: d["spec"].update(processing={"window": value}))
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(doc))
    result = control_plane.kubectl("create", "--dry-run=server", "-n", namespace, "-f", str(f), check=False)
    cli = validate_object(doc)
    assert (result.returncode == 0) == accepted, result.stderr
    assert (not cli) == accepted, cli
    if not accepted:  # the same message (an evaluation error reports the object, not the field)
        assert "spec.processing" in result.stderr and "window must be longer than 0s" in result.stderr
        assert any(
            "spec.processing.window" in str(e) and "window must be longer than 0s" in str(e) for e in cli
        )


def test_round_trip_create_get_patch_status_delete(k8s_api, namespace):
    from kubernetes import client

    api = client.CustomObjectsApi(k8s_api)
    args = (m.GROUP, m.VERSION, namespace, m.PLURAL)
    body = copy.deepcopy(BASE)
    created = api.create_namespaced_custom_object(*args, body)
    assert created["spec"]["kafka"]["partitions"] == 3  # server-side default
    assert created["metadata"]["generation"] == 1
    got = api.get_namespaced_custom_object(*args, "demo")
    assert got["spec"]["sources"][0]["replay"]["ratePerSecond"] == 20
    patched = api.patch_namespaced_custom_object(*args, "demo", {"spec": {"kafka": {"partitions": 6}}})
    assert patched["spec"]["kafka"]["partitions"] == 6 and patched["metadata"]["generation"] == 2
    status = {
        "status": {
            "phase": "Running",
            "observedGeneration": 2,
            "sourcesReady": "1/1",
            "sinksReady": "1/1",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "AllReady",
                    "message": "ok",
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }
            ],
        }
    }
    api.patch_namespaced_custom_object_status(*args, "demo", status)
    got = api.get_namespaced_custom_object(*args, "demo")
    assert got["status"]["phase"] == "Running" and got["metadata"]["generation"] == 2  # status does not bump
    # the status subresource ignores spec changes and the main resource ignores status changes
    api.patch_namespaced_custom_object(*args, "demo", {"status": {"phase": "Failed"}})
    assert api.get_namespaced_custom_object(*args, "demo")["status"]["phase"] == "Running"
    bad = {"status": {"phase": "Exploded"}}
    with pytest.raises(client.ApiException) as exc:
        api.patch_namespaced_custom_object_status(*args, "demo", bad)
    assert exc.value.status == 422 and "status.phase" in exc.value.body
    api.delete_namespaced_custom_object(*args, "demo")
    with pytest.raises(client.ApiException) as exc:
        api.get_namespaced_custom_object(*args, "demo")
    assert exc.value.status == 404


def test_printer_columns_and_explain(control_plane, namespace):
    control_plane.kubectl("apply", "-n", namespace, "-f", str(ROOT / "examples" / "demo.yaml"))
    table = control_plane.kubectl("get", "sp", "-n", namespace, "-o", "wide").stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "PHASE", "READY", "SOURCES", "SINKS", "AGE", "MESSAGE"]
    explain = control_plane.kubectl("explain", "streampipeline.spec.sources").stdout
    assert "1 to 16" in explain and "redactPII" in explain and "replicas" in explain
    explain = control_plane.kubectl("explain", "streampipeline.spec.sinks.postgres.credentialsSecret").stdout
    assert "Secret" in explain
    explain = control_plane.kubectl("explain", "streampipeline.spec.sinks.lake.aggregateInterval").stdout
    assert "window aggregates are merged" in " ".join(explain.split())

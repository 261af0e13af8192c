"""`streamotion render`, the builders and the generated RBAC, checked by the real API server."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from streamotion_operator import builders, rbac
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import Controller, is_subset
from streamotion_operator.kube import ApiError, Kube
from streamotion_operator.render import render_file
from streamotion_operator.testing import (
    apply_pipeline,
    children,
    create_secrets,
    get_pipeline,
    pipeline,
    strimzi_credentials,
)
from typer.testing import CliRunner

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion.cli import app

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
runner = CliRunner()


def render_cli(*args: str, env: dict[str, str] | None = None) -> list[dict]:
    result = runner.invoke(app, ["render", *args], env=env)
    assert result.exit_code == 0, result.output
    return list(yaml.safe_load_all(result.stdout))


def test_render_prints_exactly_the_builders_objects():
    docs = render_cli(str(ROOT / "examples/full.yaml"), "-n", "team-a")
    p = StreamPipeline.model_validate(yaml.safe_load((ROOT / "examples/full.yaml").read_text()))
    p.metadata.namespace = "team-a"
    assert docs == builders.build(p, OperatorConfig.from_env())
    # deterministic names, no generateName, every label, one Deployment per source, http Service
    assert render_cli(str(ROOT / "examples/full.yaml"), "-n", "team-a") == docs
    kinds = [d["kind"] for d in docs]
    assert kinds.count("Deployment") == len(p.spec.sources)
    assert [d["metadata"]["name"] for d in docs if d["kind"] == "Service"] == ["reddit-emotions-src-reviews"]
    for d in docs:
        assert "generateName" not in d["metadata"]
        labels = d["metadata"]["labels"]
        assert labels[naming.PIPELINE_LABEL] == "reddit-emotions"
        assert labels["app.kubernetes.io/managed-by"] == naming.MANAGED_BY
    topics = [d for d in docs if d["kind"] == "KafkaTopic"]
    assert {t["metadata"]["namespace"] for t in topics} == {"kafka"}
    assert {t["spec"]["topicName"] for t in topics} == set(naming.topic_names(p).values())
    app_ = next(d for d in docs if d["kind"] == "SparkApplication")
    assert app_["spec"]["type"] == "Python" and app_["spec"]["mode"] == "cluster"
    assert app_["spec"]["restartPolicy"]["type"] == "Always"
    assert app_["spec"]["mainApplicationFile"].endswith(naming.JOB_MAIN)
    assert app_["spec"]["arguments"] == ["--pipeline", naming.PIPELINE_FILE]
    env = {e["name"]: e for e in app_["spec"]["driver"]["env"]}
    assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "password"}
    cm = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "reddit-emotions-pipeline"
    )
    assert yaml.safe_load(cm["data"]["pipeline.yaml"])["spec"]["sources"][0]["name"] == "reddit"
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    alerts = {r["alert"] for r in rule["spec"]["groups"][0]["rules"]}
    assert {
        "StreamotionConsumerLagGrowing",
        "StreamotionDeadLettersHigh",
        "StreamotionModelErrors",
        "StreamotionSourceSilent",
        "StreamotionPipelineNotReady",
    } <= alerts


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_render_prints_plain_yaml_without_anchors(example):
    """Children share dicts (security contexts, labels, env): a plain YAML dump turns those into
    ``&id001`` anchors and ``*id001`` aliases, which a person cannot read or diff per object."""
    result = runner.invoke(app, ["render", str(example), "-n", "team-a"])
    assert result.exit_code == 0, result.output
    assert not re.search(r"[&*]id\d{3}", result.stdout), result.stdout
    # still exactly the builders' objects
    docs = list(yaml.safe_load_all(result.stdout))
    assert docs == render_file(example, OperatorConfig.from_env(), namespace="team-a")


def test_render_uses_configured_images_and_gpu():
    env = {
        "STREAMOTION_PRODUCER_IMAGE": "registry.example/p:1",
        "STREAMOTION_MODEL_IMAGE": "registry.example/m:2",
    }
    docs = render_cli(str(ROOT / "examples/demo.yaml"), env=env)
    dep = next(d for d in docs if d["kind"] == "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == "registry.example/p:1"
    body = pipeline("gpu", "ns")
    body["spec"]["model"]["device"] = "gpu"
    p = StreamPipeline.model_validate(body)
    ray = builders.ray_service(p, OperatorConfig())
    worker = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    assert worker["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"][0]["args"]
    assert args["num_gpus"] == 1 and args["device"] == "cuda"
    assert args["bucket_size"] == args["max_batch_size"] == 64 and args["dtype"] == "auto"
    assert args["autoscaling"] == {"min_replicas": 1, "max_replicas": 2, "target_texts_per_replica": 256}
    assert args["max_queued_requests"] == 64 and args["arch"] == "transformer"


def test_render_topic_replicas_default_to_the_operators_with_min_isr_at_most_two(tmp_path):
    def topics(*args: str, env: dict[str, str] | None = None, file: str = "examples/demo.yaml") -> set:
        docs = render_cli(str(ROOT / file), *args, env=env)
        return {
            (d["spec"]["replicas"], d["spec"]["config"]["min.insync.replicas"])
            for d in docs
            if d["kind"] == "KafkaTopic"
        }

    assert topics() == {(1, "1")}  # the operator's default: one broker
    assert topics("--kafka-replicas", "3") == {(3, "2")}
    assert topics(env={"STREAMOTION_KAFKA_REPLICAS": "2"}) == {(2, "2")}
    assert topics("--kafka-replicas", "5") == {(5, "2")}
    explicit = yaml.safe_load((ROOT / "examples/demo.yaml").read_text())
    explicit["spec"]["kafka"]["replicas"] = 1
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(explicit))
    assert topics("--kafka-replicas", "3", file=str(tmp_path / "one.yaml")) == {(1, "1")}  # the spec wins
    result = runner.invoke(app, ["render", str(ROOT / "examples/demo.yaml"), "--kafka-replicas", "0"])
    assert result.exit_code != 0 and "--kafka-replicas" in result.output
    with pytest.raises(ValueError, match="STREAMOTION_KAFKA_REPLICAS=0"):
        OperatorConfig.from_env({"STREAMOTION_KAFKA_REPLICAS": "0"})


def test_gpu_pipelines_run_the_gpu_model_image_on_their_workers(tmp_path):
    """``device: gpu``: the workers (which hold the replicas and the GPUs) run the GPU model image
    (CUDA torch), the head keeps the CPU one (num-cpus 0 and no GPU: it runs no replica, only GCS,
    the dashboard, Serve's controller and proxy, the autoscaler and the application build, none of
    which touches torch). ``device: cpu`` runs the CPU image everywhere.

    kuberay v1.7.0 ray-operator/controllers/ray/common/pod.go: generateRayStartCommand derives
    ``--num-gpus`` from the limits of the Ray container (index 0, utils.RayContainerIndex) through
    addWellKnownAcceleratorResources (a key ending in "gpu", utils/resources.go IsGPUResourceKey)
    unless rayStartParams sets it: the worker limits nvidia.com/gpu and leaves num-gpus alone.
    """
    env = {
        "STREAMOTION_MODEL_IMAGE": "registry.example/m:2",
        "STREAMOTION_MODEL_GPU_IMAGE": "registry.example/g:2",
    }
    cfg = OperatorConfig.from_env(env)
    assert cfg.model_gpu_image == "registry.example/g:2"
    for device, worker_image in (("cpu", "registry.example/m:2"), ("gpu", "registry.example/g:2")):
        body = pipeline("m", "ns")
        body["spec"]["model"]["device"] = device
        cluster = builders.ray_service(StreamPipeline.model_validate(body), cfg)["spec"]["rayClusterConfig"]
        head = cluster["headGroupSpec"]
        (worker,) = cluster["workerGroupSpecs"]
        assert head["template"]["spec"]["containers"][0]["image"] == "registry.example/m:2", device
        assert worker["template"]["spec"]["containers"][0]["image"] == worker_image, device
        assert "num-gpus" not in worker["rayStartParams"] and "num-gpus" not in head["rayStartParams"]
        assert "nvidia.com/gpu" not in json.dumps(head)
        limits = worker["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits.get("nvidia.com/gpu") == ("1" if device == "gpu" else None)
    # `streamotion render` (and the operator, OperatorConfig.from_env) take it from the environment
    body = yaml.safe_load((ROOT / "examples/demo.yaml").read_text())
    body["spec"].setdefault("model", {})["device"] = "gpu"
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(body))
    ray = next(d for d in render_cli(str(tmp_path / "gpu.yaml"), env=env) if d["kind"] == "RayService")
    (worker,) = ray["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert worker["template"]["spec"]["containers"][0]["image"] == "registry.example/g:2"


def test_render_refuses_an_invalid_pipeline(tmp_path):
    bad = yaml.safe_load((ROOT / "examples/demo.yaml").read_text())
    bad["spec"]["kafka"]["partitions"] = 0
    f = tmp_path / "bad.yaml"
    f.write_text(yaml.safe_dump(bad))
    result = runner.invoke(app, ["render", str(f)])
    assert result.exit_code == 1
    assert "spec.kafka.partitions" in result.output


def test_changes_touch_only_their_children():
    cfg = OperatorConfig()
    base = StreamPipeline.model_validate(pipeline("p", "ns"))

    def by_key(p):
        return {builders.key(o): o for o in builders.build(p, cfg)}

    def changed(mutate):
        body = pipeline("p", "ns")
        mutate(body["spec"])
        after = by_key(StreamPipeline.model_validate(body))
        before = by_key(base)
        return {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} - {
            ("ConfigMap", "ns", "p-pipeline")
        }

    assert changed(lambda s: s["model"].update(name="other/model")) == {("RayService", "ns", "p-model")}
    assert changed(lambda s: s["processing"]["executors"].update(instances=4)) == {
        ("SparkApplication", "ns", "p-job")
    }
    assert {k[0] for k in changed(lambda s: s["kafka"].update(partitions=9))} == {"KafkaTopic"}
    assert is_subset({"a": [1, {"b": True}]}, {"a": [1, {"b": True, "c": 2}], "d": 1})
    assert not is_subset({"a": [1]}, {"a": [1, 2]})
    assert is_subset({"data": {}, "b": 1}, {"b": 1}) and not is_subset({"data": {"k": "v"}}, {})
    assert not is_subset({"a": True}, {"a": 1})


def test_rbac_file_is_current():
    assert rbac.CHART_FILE.read_text() == rbac.rules_yaml(), "run: python -m streamotion_operator.rbac"
    rules = yaml.safe_load(rbac.CHART_FILE.read_text())
    assert isinstance(rules, list) and all({"apiGroups", "resources", "verbs"} <= set(r) for r in rules)


# ------------------------------------------------------------------------- real API server
@pytest.fixture(scope="module")
def kube(control_plane):
    k = Kube.from_kubeconfig(control_plane.kubeconfig_path)
    yield k
    k.close()


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_examples_render_to_objects_the_api_server_accepts(example, control_plane, kube, namespace):
    for ns in ("kafka", "monitoring"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    docs = render_file(example, OperatorConfig(), namespace=namespace)
    for obj in docs:  # server-side dry run: validation against the upstream CRD schemas
        kube.dry_run_apply(obj)
    # ... which do refuse what their schema forbids
    topic = json.loads(json.dumps(next(d for d in docs if d["kind"] == "KafkaTopic")))
    topic["spec"]["partitions"] = 0
    with pytest.raises(ApiError) as err:
        kube.dry_run_apply(topic)
    assert err.value.status == 422


def kuberay_pods(ray_service: dict) -> dict[str, dict]:
    """The Pods KubeRay v1.7.0 makes of a RayService's head and worker templates, as far as security
    goes (ray-operator/controllers/ray/common/pod.go):

    - DefaultHeadPodTemplate: with enableInTreeAutoscaling an ``autoscaler`` sidecar
      (BuildAutoscalerContainer: the head's image, no securityContext of its own) that
      mergeAutoscalerOverrides gives autoscalerOptions' env, volumeMounts and securityContext;
    - DefaultWorkerPodTemplate: an init container ``wait-gcs-ready`` with the Ray container's image,
      securityContext, env and volumeMounts;
    - BuildPod: an emptyDir (medium Memory) at /dev/shm on the Ray container, and on the head with the
      autoscaler an emptyDir at /tmp/ray on the Ray and autoscaler containers (addEmptyDir: unless a
      volume is mounted at exactly that path).
    """
    import copy

    cluster = ray_service["spec"]["rayClusterConfig"]

    def add_empty_dir(spec, container, name, path, medium=""):
        if any(m["mountPath"] == path for m in container.get("volumeMounts", [])):
            return
        if not any(v["name"] == name for v in spec["volumes"]):
            spec["volumes"].append({"name": name, "emptyDir": {"medium": medium} if medium else {}})
        container.setdefault("volumeMounts", []).append({"name": name, "mountPath": path})

    def pod(template, name):
        spec = copy.deepcopy(template["spec"])
        spec.setdefault("volumes", [])
        add_empty_dir(spec, spec["containers"][0], "shared-mem", "/dev/shm", "Memory")
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": template["metadata"]["labels"]},
            "spec": spec,
        }

    head = pod(cluster["headGroupSpec"]["template"], "head")
    ray = head["spec"]["containers"][0]
    if cluster.get("enableInTreeAutoscaling"):
        options = cluster.get("autoscalerOptions", {})
        autoscaler = {
            "name": "autoscaler",
            "image": ray["image"],
            "command": ["/bin/bash", "-lc", "--"],
            "args": ["ray kuberay-autoscaler --cluster-name $(RAY_CLUSTER_NAME)"],
            "env": [{"name": "KUBERAY_CRD_VER", "value": "v1"}, *options.get("env", [])],
            "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}},
            "volumeMounts": list(options.get("volumeMounts", [])),
        }
        if "securityContext" in options:
            autoscaler["securityContext"] = options["securityContext"]
        head["spec"]["containers"].append(autoscaler)
        for container in (ray, autoscaler):
            add_empty_dir(head["spec"], container, "ray-logs", "/tmp/ray")
    pods = {"head": head}
    for group in cluster["workerGroupSpecs"]:
        worker = pod(group["template"], f"worker-{group['groupName']}")
        ray = worker["spec"]["containers"][0]
        init = {
            "name": "wait-gcs-ready",
            "image": ray["image"],
            "command": ["/bin/bash", "-lc", "--"],
            "args": ["ray health-check --address head:6379"],
            "env": ray.get("env", []),
            "volumeMounts": ray.get("volumeMounts", []),
            "resources": {"limits": {"cpu": "200m", "memory": "256Mi"}},
        }
        if "securityContext" in ray:
            init["securityContext"] = copy.deepcopy(ray["securityContext"])
        worker["spec"]["initContainers"] = [*worker["spec"].get("initContainers", []), init]
        pods[worker["metadata"]["name"]] = worker
    return pods


@pytest.mark.parametrize("device", ["cpu", "gpu"])
def test_ray_pods_pass_the_restricted_pod_security_standard(device, control_plane, kube, namespace):
    """The Pods KubeRay makes of the RayService (its sidecar and init container included) are admitted
    in a namespace that enforces the ``restricted`` Pod Security Standard (the API server's
    PodSecurity admission, server-side dry run), and run as the Ray image's user with a read-only
    root: Ray writes its session dir /tmp/ray, HOME (/tmp) and HF_HOME under /tmp, an emptyDir."""
    control_plane.kubectl(
        "label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted", "--overwrite"
    )
    body = pipeline("m", namespace)
    body["spec"]["model"]["device"] = device
    ray_service = builders.ray_service(StreamPipeline.model_validate(body), OperatorConfig())
    kube.dry_run_apply(ray_service)  # the RayService CRD (KubeRay v1.7.0) takes it
    pods = kuberay_pods(ray_service)
    assert set(pods) == {"head", f"worker-{device}"}
    for name, pod in pods.items():
        pod["metadata"]["namespace"] = namespace
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=pod, query={"dryRun": "All"})
        for container in [*pod["spec"]["containers"], *pod["spec"].get("initContainers", [])]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True, (name, container["name"])
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("HOME") == "/tmp", (name, container["name"])
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], (name, container["name"])
    # and the same pods without the restricted settings are refused: the check can fail
    bare = kuberay_pods(ray_service)["head"]
    bare["metadata"]["namespace"] = namespace
    del bare["spec"]["containers"][0]["securityContext"]
    with pytest.raises(ApiError) as err:
        kube.request("POST", f"/api/v1/namespaces/{namespace}/pods", body=bare, query={"dryRun": "All"})
    assert err.value.status == 403 and "restricted" in str(err.value)


def _service_account_kube(control_plane, kube, namespace) -> Kube:
    from kubernetes import client

    rules = yaml.safe_load(rbac.CHART_FILE.read_text())
    name = f"streamotion-operator-{namespace}"
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterroles",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": name},
            "rules": rules,
        },
    )
    kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts",
        body={"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "operator"}},
    )
    kube.request(
        "POST",
        "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
        body={
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
            "subjects": [{"kind": "ServiceAccount", "name": "operator", "namespace": namespace}],
        },
    )
    token = kube.request(
        "POST",
        f"/api/v1/namespaces/{namespace}/serviceaccounts/operator/token",
        body={
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600},
        },
    )["status"]["token"]
    cfg = client.Configuration()
    cfg.host = control_plane.server
    cfg.ssl_ca_cert = str(control_plane.workdir / "pki" / "ca.crt")
    cfg.api_key = {"BearerToken": token}
    cfg.api_key_prefix = {"BearerToken": "Bearer"}
    return Kube(client.ApiClient(cfg))


def test_generated_rbac_is_enough_and_no_more(control_plane, kube, namespace):
    for ns in ("kafka", "monitoring"):
        control_plane.kubectl("create", "namespace", ns, check=False)
    # the Spark driver's ClusterRole the chart installs (the operator may only bind it)
    control_plane.kubectl(
        "create", "clusterrole", "streamotion-spark-driver", "--verb=get", "--resource=pods", check=False
    )
    sa_kube = _service_account_kube(control_plane, kube, namespace)
    create_secrets(kube, namespace)
    apply_pipeline(kube, pipeline("rbac", namespace))
    controller = Controller(sa_kube, OperatorConfig(kafka_namespace="kafka"))
    out = controller.reconcile(namespace, "rbac")
    assert not [p for p in out.problems if p.reason == "ApplyFailed"], out.problems
    desired = builders.build(StreamPipeline.model_validate(pipeline("rbac", namespace)), OperatorConfig())
    label = "{kind} {metadata[namespace]}/{metadata[name]}".format_map
    copies = {
        label(d) for d in desired if d["kind"] == "Secret"
    }  # Kafka credentials: once Strimzi wrote them
    assert copies and {label(d) for d in desired} - copies <= set(out.created)
    assert get_pipeline(kube, namespace, "rbac")["status"]["phase"] in ("Provisioning", "Degraded")
    strimzi_credentials(kube, namespace, "rbac")
    out = controller.reconcile(namespace, "rbac")
    assert out.created and set(out.created) <= copies  # (the cluster CA's may be there from another test)
    assert set(children(kube, namespace, "rbac")) == {builders.key(d) for d in desired}
    assert not controller.reconcile(namespace, "rbac").updated  # and a second pass writes nothing
    controller.cleanup(namespace, "rbac")
    # least privilege: no listing Secrets, no touching Pods
    for method, path in (("GET", f"/api/v1/namespaces/{namespace}/secrets"), ("GET", "/api/v1/pods")):
        with pytest.raises(ApiError) as err:
            sa_kube.request(method, path)
        assert err.value.status == 403
    sa_kube.close()


def test_serve_config_matches_the_serving_contract():
    """The RayService's args are ones streamotion_serving.app.build_app accepts (it refuses others)."""
    from dataclasses import fields

    from streamotion_serving.app import APP_NAME, DEPLOYMENT_ARGS, ServeConfig, build_app

    known = {f.name for f in fields(ServeConfig)} | set(DEPLOYMENT_ARGS)
    for model in ({"device": "cpu"}, {"device": "gpu"}, {"arch": "linear", "name": "/models/linear"}):
        body = pipeline("m", "ns")
        body["spec"]["model"].update(model)
        body["spec"]["model"]["replicas"] = {"min": 1, "max": 3, "targetTextsPerReplica": 500}
        app_ = builders.serve_config(StreamPipeline.model_validate(body))["applications"][0]
        assert set(app_["args"]) <= known
        assert app_["name"] == APP_NAME and app_["import_path"] == naming.SERVE_IMPORT_PATH
        # build_app (and Ray Serve's own validation of the deployment options) takes them as they are
        deployment = build_app(app_["args"])._bound_deployment
        config = deployment._deployment_config
        assert config.max_queued_requests == 64
        assert config.autoscaling_config.max_replicas == 3
        assert config.autoscaling_config.policy.policy_kwargs == {"target_texts_per_replica": 500.0}
        assert deployment.init_args[0]["arch"] == model.get("arch", "transformer")
    import streamotion_ingest

    assert builders.env_from_secret() is streamotion_ingest.ENV_FROM_SECRET


def test_model_metrics_are_scraped_from_rays_agent_and_renamed():
    """Every replica's metrics come from Ray's metrics agent (port ``metrics`` on each Ray pod), named
    ``ray_streamotion_model_*`` there; the PodMonitor renames them to what dashboards query."""
    import re

    from streamotion.api.validate import parse

    doc = yaml.safe_load((ROOT / "examples" / "demo.yaml").read_text())
    doc["metadata"]["namespace"] = "default"
    p = parse(doc)
    (model,) = [m for m in builders.pod_monitors(p) if m["metadata"]["name"].endswith("-model")]
    (endpoint,) = model["spec"]["podMetricsEndpoints"]
    assert endpoint["port"] == "metrics"
    (rule,) = endpoint["metricRelabelings"]
    assert rule["sourceLabels"] == ["__name__"] and rule["targetLabel"] == "__name__"
    renamed = re.fullmatch(rule["regex"], "ray_streamotion_model_texts_total")
    assert renamed and rule["replacement"].replace("$1", renamed.group(1)) == "streamotion_model_texts_total"
    assert not re.fullmatch(rule["regex"], "ray_serve_num_http_requests_total")  # Ray's own stay

"""The model service, as KubeRay runs it: the RayService (head and worker groups, restricted pods)
and the Ray Serve application config it deploys."""

from __future__ import annotations

import copy
from typing import Any

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import CONTAINER_SECURITY, POD_SECURITY, _meta, _yaml, labels

RAY_METRICS_PORT = 8080
SERVE_PORT = 8000
APP_NAME = "streamotion-model"  # streamotion_serving.app.APP_NAME


def model_url(p: StreamPipeline) -> str:
    return f"http://{naming.ray_service_name(p)}-serve-svc.{p.namespace}.svc:{SERVE_PORT}"


def serve_config(p: StreamPipeline) -> dict[str, Any]:
    """serveConfigV2 of the RayService: arguments as ``streamotion_serving.app.build_app`` documents them."""
    m = p.spec.model
    args: dict[str, Any] = {
        "model": m.name,
        "arch": m.arch,
        "taxonomy": m.taxonomy,
        "max_batch_size": m.max_batch_size,
        "batch_wait_ms": m.batch_wait_ms,
        "max_length": m.max_length,
        "device": "cuda" if m.device == "gpu" else "cpu",
        "backend": m.backend,
        "max_queued_requests": m.max_queued_requests,
        # autoscaling by texts in flight (streamotion_serving.autoscaling), not requests: a job's
        # request carries hundreds of texts, a dashboard's one
        "autoscaling": {
            "min_replicas": m.replicas.min,
            "max_replicas": m.replicas.max,
            "target_texts_per_replica": m.replicas.target_texts_per_replica or 4 * m.max_batch_size,
        },
    }
    if m.device == "gpu":
        args["num_gpus"] = 1
        # a GPU runs a whole batch in one launch (padding costs little there), half-precision weights
        args["bucket_size"] = m.max_batch_size
        args["dtype"] = "auto"
    return {
        "applications": [
            {"name": APP_NAME, "route_prefix": "/", "import_path": naming.SERVE_IMPORT_PATH, "args": args}
        ]
    }


# The Ray images run Ray as their user ray, uid 1000 gid 100, from its home (/home/ray, Python in
# /home/ray/anaconda3, not readable by other users): ray-project/ray docker/base-deps/Dockerfile
# (RAY_UID=1000, RAY_GID=100), and serving/Dockerfile's USER 1000:100.
RAY_UID, RAY_GID = 1000, 100
RAY_POD_SECURITY = {**POD_SECURITY, "runAsUser": RAY_UID, "runAsGroup": RAY_GID, "fsGroup": RAY_GID}
# Root is read-only: Ray writes its session dir (/tmp/ray), HOME and HF_HOME under /tmp, an emptyDir
# (and its object store to /dev/shm, an emptyDir KubeRay adds).
RAY_ENV = [{"name": "HOME", "value": "/tmp"}, {"name": "HF_HOME", "value": "/tmp/huggingface"}]
RAY_TMP_MOUNT = {"name": "tmp", "mountPath": "/tmp"}


def _ray_pod(
    p: StreamPipeline, cfg: OperatorConfig, role: str, image: str, resources: dict, ports: list
) -> dict:
    return {
        "metadata": {"labels": labels(p, "model", **{"streamotion.io/ray-node": role})},
        "spec": {
            "securityContext": RAY_POD_SECURITY,
            "containers": [
                {
                    "name": f"ray-{role}",
                    "image": image,
                    "imagePullPolicy": cfg.image_pull_policy,
                    "env": [
                        *copy.deepcopy(RAY_ENV),
                        # counters exported once, as counters (not also as Ray's legacy gauge copy)
                        {"name": "RAY_EXPORT_COUNTER_AS_GAUGE", "value": "0"},
                    ],
                    "ports": ports,
                    "resources": resources,
                    "securityContext": CONTAINER_SECURITY,
                    "volumeMounts": [copy.deepcopy(RAY_TMP_MOUNT)],
                }
            ],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        },
    }


def ray_service(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    m = p.spec.model
    worker_resources: dict[str, Any] = {
        "requests": {"cpu": "1", "memory": "3Gi"},
        "limits": {"memory": "3Gi"},
    }
    if m.device == "gpu":
        worker_resources["requests"]["nvidia.com/gpu"] = "1"
        worker_resources["limits"]["nvidia.com/gpu"] = "1"
    metrics = {"name": "metrics", "containerPort": RAY_METRICS_PORT, "protocol": "TCP"}
    head_ports = [
        {"name": "gcs", "containerPort": 6379, "protocol": "TCP"},
        {"name": "dashboard", "containerPort": 8265, "protocol": "TCP"},
        {"name": "client", "containerPort": 10001, "protocol": "TCP"},
        {"name": "serve", "containerPort": SERVE_PORT, "protocol": "TCP"},
        metrics,
    ]
    start = {"metrics-export-port": str(RAY_METRICS_PORT)}
    # GPU workers run the CUDA torch image; the head (num-cpus 0, no GPU) runs no replica and keeps
    # the CPU image (same Ray, same Python: tests/test_images.py).
    worker = _ray_pod(
        p,
        cfg,
        "worker",
        cfg.model_gpu_image if m.device == "gpu" else cfg.model_image,
        worker_resources,
        [{"name": "serve", "containerPort": SERVE_PORT, "protocol": "TCP"}, metrics],
    )
    if m.device == "gpu" and cfg.model_node_selector:
        worker["spec"]["nodeSelector"] = dict(cfg.model_node_selector)
    if m.device == "gpu" and cfg.model_tolerations:
        worker["spec"]["tolerations"] = list(cfg.model_tolerations)
    return {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": _meta(p, naming.ray_service_name(p), "model"),
        "spec": {
            "suspend": p.spec.suspend,
            "serveConfigV2": _yaml(serve_config(p)),
            "rayClusterConfig": {
                "rayVersion": cfg.ray_version,
                "enableInTreeAutoscaling": True,
                # KubeRay's autoscaler sidecar in the head pod: restricted like the Ray container
                "autoscalerOptions": copy.deepcopy(
                    {"env": RAY_ENV, "volumeMounts": [RAY_TMP_MOUNT], "securityContext": CONTAINER_SECURITY}
                ),
                "headGroupSpec": {
                    "rayStartParams": {**start, "dashboard-host": "0.0.0.0", "num-cpus": "0"},
                    "template": _ray_pod(
                        p,
                        cfg,
                        "head",
                        cfg.model_image,
                        {"requests": {"cpu": "500m", "memory": "2Gi"}, "limits": {"memory": "2Gi"}},
                        head_ports,
                    ),
                },
                "workerGroupSpecs": [
                    {
                        "groupName": m.device,
                        "replicas": m.replicas.min,
                        "minReplicas": m.replicas.min,
                        "maxReplicas": m.replicas.max,
                        "rayStartParams": start,
                        "template": worker,
                    }
                ],
            },
        },
    }

"""What every child shares: identity labels and metadata, the spec hash, the restricted security
contexts, and the pipeline ConfigMap (with the volume and mount every pod reads it from)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from streamotion import naming
from streamotion.api.models import API_VERSION, KIND, StreamPipeline

SPEC_HASH_ANNOTATION = "streamotion.io/spec-hash"
CONFIG_HASH_ANNOTATION = "streamotion.io/config-hash"


def spec_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]


def labels(p: StreamPipeline, component: str, **extra: str) -> dict[str, str]:
    out = naming.labels(p, component)
    out[naming.PIPELINE_NS_LABEL] = p.namespace
    out.update(extra)
    return out


def selector(p: StreamPipeline, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/instance": p.name,
        "app.kubernetes.io/component": component,
        naming.PIPELINE_LABEL: p.name,
    }


def _meta(p: StreamPipeline, name: str, component: str, namespace: str | None = None, **extra_labels: str):
    return {
        "name": name,
        "namespace": namespace or p.namespace,
        "labels": labels(p, component, **extra_labels),
    }


def pipeline_document(p: StreamPipeline) -> dict[str, Any]:
    """The pipeline as children read it from PIPELINE_FILE (spec and identity, no status)."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": p.spec.model_dump(mode="json", by_alias=True, exclude_none=True),
    }


POD_SECURITY = {
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "runAsGroup": 10001,
    "fsGroup": 10001,
    "seccompProfile": {"type": "RuntimeDefault"},
}
CONTAINER_SECURITY = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def _pipeline_volume(p: StreamPipeline) -> dict[str, Any]:
    return {
        "name": "pipeline",
        "configMap": {
            "name": naming.config_map_name(p),
            "items": [{"key": Path(naming.PIPELINE_FILE).name, "path": Path(naming.PIPELINE_FILE).name}],
        },
    }


_PIPELINE_MOUNT = {"name": "pipeline", "mountPath": str(Path(naming.PIPELINE_FILE).parent), "readOnly": True}


def pipeline_config_map(p: StreamPipeline) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(p, naming.config_map_name(p), "config"),
        "data": {Path(naming.PIPELINE_FILE).name: _yaml(pipeline_document(p))},
    }


def _yaml(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False)


_Dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

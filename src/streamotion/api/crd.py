"""Derive the StreamPipeline CustomResourceDefinition from the pydantic models."""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

import yaml

from streamotion.api import models as m

# JSON-Schema keywords a structural CRD schema cannot carry.
_DROP = {"title", "$schema", "examples"}


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline $ref, flatten Optional (anyOf with null) into the plain schema."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").split("/")[-1]]
        node = {**_resolve(target, defs), **node}
    for key in ("anyOf", "allOf", "oneOf"):
        if key in node:
            options = [o for o in node.pop(key) if o.get("type") != "null"]
            if len(options) != 1:
                raise ValueError(f"cannot express {key} with {len(options)} options in a structural schema")
            resolved = _resolve(options[0], defs)
            # The outer node's description and default win over the referenced model's.
            node = {**resolved, **node}
    return node


def _convert(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _resolve(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "additionalProperties":
            if isinstance(value, dict):
                out[key] = _convert(value, defs)
            continue  # ``false``: structural schemas prune unknown fields, strict validation refuses them
        if key == "properties":
            out[key] = {name: _convert(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _convert(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("default") is None and "default" in out:
        del out["default"]
    if "required" in out:
        out["required"] = sorted(out["required"])
    return out


def openapi_schema(model: type) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _convert(raw, defs)


@cache
def _crd() -> dict[str, Any]:
    spec = openapi_schema(m.StreamPipelineSpec)
    status = openapi_schema(m.StreamPipelineStatus)
    status.pop("required", None)
    root = {
        "type": "object",
        "description": m.StreamPipeline.__doc__,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {
                "type": "object",
                "properties": {
                    "name": {
                        "type": "string",
                        "maxLength": m.MAX_PIPELINE_NAME,
                        "pattern": m.DNS1035_LABEL,
                    }
                },
            },
            "spec": spec,
            "status": status,
        },
    }
    ready = '.status.conditions[?(@.type=="Ready")]'
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{m.PLURAL}.{m.GROUP}",
            "labels": {"app.kubernetes.io/name": "streamotion", "app.kubernetes.io/part-of": "streamotion"},
        },
        "spec": {
            "group": m.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": m.KIND,
                "listKind": f"{m.KIND}List",
                "plural": m.PLURAL,
                "singular": m.SINGULAR,
                "shortNames": m.SHORT_NAMES,
                "categories": ["streamotion"],
            },
            "versions": [
                {
                    "name": m.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
                        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
                        {"name": "Sources", "type": "string", "jsonPath": ".status.sourcesReady"},
                        {"name": "Sinks", "type": "string", "jsonPath": ".status.sinksReady"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                        {
                            "name": "Message",
                            "type": "string",
                            "priority": 1,
                            "jsonPath": f"{ready}.message",
                        },
                    ],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition as a dict (a fresh copy)."""
    return copy.deepcopy(_crd())


def crd_yaml() -> str:
    header = "# Generated by `streamotion crd` from src/streamotion/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def root_schema() -> dict[str, Any]:
    return crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]

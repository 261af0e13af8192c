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


# Where the API server sends ConversionReviews: the chart's operator webhook Service in a release
# named streamotion in namespace streamotion. The operator sets its own Service and CA bundle here
# when it starts (streamotion_operator.webhook), so another release name or namespace works too.
WEBHOOK_PATH = "/convert"
DEFAULT_CLIENT_CONFIG: dict[str, Any] = {
    "service": {
        "namespace": "streamotion",
        "name": "streamotion-operator-webhook",
        "path": WEBHOOK_PATH,
        "port": 443,
    }
}


def _legacy_field(change: m.Renamed) -> dict[str, Any]:
    """The schema of a renamed field as its older version declared it (``Renamed.legacy``)."""
    return openapi_schema(change.legacy)["properties"][change.old]


def _printer_columns() -> list[dict[str, Any]]:
    ready = '.status.conditions[?(@.type=="Ready")]'
    return [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Ready", "type": "string", "jsonPath": f"{ready}.status"},
        {"name": "Sources", "type": "string", "jsonPath": ".status.sourcesReady"},
        {"name": "Sinks", "type": "string", "jsonPath": ".status.sinksReady"},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
        {"name": "Message", "type": "string", "priority": 1, "jsonPath": f"{ready}.message"},
    ]


def _version(name: str, root: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "served": True, "storage": name == m.VERSION}
    if name != m.VERSION:
        renamed = ", ".join(
            f"{'.'.join((*c.path, c.old))} is {'.'.join((*c.path, c.new))}"
            for c in m.CHANGES
            if c.version == name
        )
        out["deprecated"] = True
        out["deprecationWarning"] = (
            f"{m.GROUP}/{name} {m.KIND} is deprecated; use {m.API_VERSION} ({renamed})"
        )
    out["subresources"] = {"status": {}}
    out["additionalPrinterColumns"] = _printer_columns()
    out["schema"] = {"openAPIV3Schema": root}
    return out


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
    from streamotion.api.conversion import version_schema

    versions = [_version(m.VERSION, root)] + [
        _version(v, version_schema(root, v, _legacy_field)) for v in m.OLD_VERSIONS
    ]
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
            "versions": versions,
            # Versions differ (models.CHANGES): without conversion the API server would only change
            # apiVersion and prune the renamed field, silently resetting it to its default.
            "conversion": {
                "strategy": "Webhook",
                "webhook": {"conversionReviewVersions": ["v1"], "clientConfig": DEFAULT_CLIENT_CONFIG},
            },
        },
    }


def crd(
    client_config: dict[str, Any] | None = None, versions: tuple[str, ...] | None = None
) -> dict[str, Any]:
    """The CustomResourceDefinition as a dict (a fresh copy). ``client_config``: where the API
    server calls the conversion webhook (default: the chart's Service); ``versions``: only these
    (one version alone: no conversion, that version stored; the CRD as it was before v1alpha2)."""
    out = copy.deepcopy(_crd())
    if client_config is not None:
        out["spec"]["conversion"]["webhook"]["clientConfig"] = copy.deepcopy(client_config)
    if versions is not None:
        kept = [v for v in out["spec"]["versions"] if v["name"] in versions]
        if len(kept) == 1:
            kept[0]["storage"] = True
            for key in ("deprecated", "deprecationWarning"):
                kept[0].pop(key, None)
            out["spec"]["conversion"] = {"strategy": "None"}
        out["spec"]["versions"] = kept
    return out


def crd_yaml() -> str:
    header = "# Generated by `streamotion crd` from src/streamotion/api/models.py. Do not edit.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=100)


def root_schema(version: str = m.VERSION) -> dict[str, Any]:
    (found,) = [v for v in crd()["spec"]["versions"] if v["name"] == version]
    return found["schema"]["openAPIV3Schema"]

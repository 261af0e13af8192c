"""The Helm values reference page (docs/reference/helm-values.md).

Every key of ``charts/streamotion/values.schema.json`` with its type and constraints, its default from
``values.yaml`` and its description: the schema's, else the comment beside or above the key in
``values.yaml``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

CHART = Path("charts/streamotion")
HEADER = """# Helm values

Generated from `charts/streamotion/values.schema.json` and `values.yaml` (`streamotion docs generate`).
Helm checks every value against the schema at install and upgrade. `values-kind.yaml` (`make up`)
and `values-gke.yaml` override some of them (see [Deploy on kind](../getting-started/kind.md) and
[GKE](../getting-started/gke.md)); the operator charts' own values go under their names
(`kube-prometheus-stack: ...`), as their charts document them.
"""
_KEY = re.compile(r"^(\s*)(-\s+)?([A-Za-z0-9_.-]+):(.*)$")


def yaml_comments(text: str) -> dict[str, str]:
    """``{dotted.path: comment}`` from the comment beside each key, else the comment lines above it."""
    out: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    above: list[str] = []
    beside_at, beside_path = -1, ""  # column of the last key's beside-comment: lines there continue it
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            body = stripped.lstrip("#").strip()
            if line.index("#") == beside_at:
                out[beside_path] += " " + body
                continue
            above = [] if set(body) <= set("-= ") or body.startswith("---") else [*above, body]
            continue
        m = _KEY.match(line)
        if not m or m.group(2):
            above = [] if not stripped else above
            beside_at = -1
            continue
        indent, key, rest = len(m.group(1)), m.group(3), m.group(4)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        path = ".".join(k for _, k in stack)
        beside = (
            rest.split(" #", 1)[1].strip() if " #" in rest and not rest.strip().startswith(("'", '"')) else ""
        )
        comment = beside or " ".join(above)
        beside_at, beside_path = (
            (line.index(" #", len(m.group(1)) + len(key)) + 1, path) if beside else (-1, "")
        )
        if comment:
            out[path] = comment
        above = []
    return out


def _resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    ref = node.get("$ref")
    if ref and ref.startswith("#/definitions/"):
        return {**schema["definitions"][ref.split("/")[-1]], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _type(node: dict[str, Any]) -> str:
    if "enum" in node:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in node["enum"])
    t = node.get("type", "")
    if t == "array" and isinstance(node.get("items"), dict):
        return f"[]{node['items'].get('type', 'object')}"
    return " or ".join(t) if isinstance(t, list) else str(t)


def _constraints(node: dict[str, Any]) -> str:
    parts = []
    for key, label in (
        ("minimum", "≥"),
        ("exclusiveMinimum", ">"),
        ("maximum", "≤"),
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"pattern `{node['pattern']}`")
    return "; ".join(parts)


def _lookup(values: Any, path: list[str]) -> Any:
    for key in path:
        if not isinstance(values, dict) or key not in values:
            return None
        values = values[key]
    return values


def helm_values_reference(root: Path) -> str:
    chart = root / CHART
    schema = json.loads((chart / "values.schema.json").read_text())
    values_text = (chart / "values.yaml").read_text()
    values = yaml.safe_load(values_text)
    comments = yaml_comments(values_text)
    rows = ["| key | type | default | description | constraints |", "|---|---|---|---|---|"]

    def walk(node: dict[str, Any], path: list[str]) -> None:
        required = set(node.get("required", []))
        for key, sub in node.get("properties", {}).items():
            sub = _resolve(schema, sub)
            p = [*path, key]
            dotted = ".".join(p)
            default = _lookup(values, p)
            nested = isinstance(default, dict) and sub.get("properties")
            shown = "" if default is None or nested else json.dumps(default)
            desc = (sub.get("description") or comments.get(dotted, "")).replace("|", "\\|")
            constraints = "; ".join(
                c for c in ("required" if key in required else "", _constraints(sub)) if c
            )
            rows.append(
                f"| `{dotted}` | {_type(sub)} | {f'`{shown}`' if shown else ''} | {desc} | {constraints} |"
            )
            walk(sub, p)
            items = sub.get("items")
            if isinstance(items, dict) and items.get("properties"):
                walk(_resolve(schema, items), [*p[:-1], f"{key}[]"])

    walk(schema, [])
    return HEADER + "\n" + "\n".join(rows) + "\n"

"""Conversion between the StreamPipeline API versions, derived from ``models.CHANGES`` alone.

The current version (``models.VERSION``) is the hub: an object of an older version is converted by
applying that version's :class:`~streamotion.api.models.Renamed` entries (and back by undoing
them); every other field, known or not, passes through as it is. The older version's CRD schema
is the current one with the same entries applied. So a field added to the models needs no
conversion code, and the operator's conversion webhook, ``streamotion validate`` and the CRD
generator all use this one mapping.
"""

from __future__ import annotations

import copy
from typing import Any

from streamotion.api import models as m

SERVED_VERSIONS: tuple[str, ...] = (m.VERSION, *m.OLD_VERSIONS)


class ConversionError(ValueError):
    """An object that cannot be converted (wrong group or kind, unknown version, bad value)."""


def served_version(api_version: Any) -> str:
    """The version of ``api_version`` (``group/version``) if this group serves it; else ConversionError."""
    group, _, version = str(api_version).rpartition("/")
    if group != m.GROUP or version not in SERVED_VERSIONS:
        raise ConversionError(
            f"unsupported apiVersion {api_version!r}: supported "
            + ", ".join(f"{m.GROUP}/{v}" for v in SERVED_VERSIONS)
        )
    return version


def _holder(obj: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any] | None:
    node: Any = obj
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return node if isinstance(node, dict) else None


def _move(holder: dict[str, Any], old: str, new: str, value: Any) -> None:
    """Replace key ``old`` by ``new`` at the same position (key order is kept for people reading YAML)."""
    items = [(new, value) if k == old else (k, v) for k, v in holder.items()]
    holder.clear()
    holder.update(items)


def _changes(version: str) -> list[m.Renamed]:
    return [c for c in m.CHANGES if c.version == version]


def convert(obj: dict[str, Any], desired_api_version: str) -> dict[str, Any]:
    """``obj`` (any served version) as ``desired_api_version``; a new object, ``obj`` is unchanged."""
    if not isinstance(obj, dict):
        raise ConversionError("expected an object")
    if obj.get("kind") not in (m.KIND, None):
        raise ConversionError(f"unsupported kind {obj.get('kind')!r}: expected {m.KIND}")
    source, target = served_version(obj.get("apiVersion")), served_version(desired_api_version)
    out = copy.deepcopy(obj)
    if source != target:
        # up to the hub, then down to the target
        for change in _changes(source):
            holder = _holder(out, change.path)
            if holder is not None and change.old in holder:
                try:
                    _move(holder, change.old, change.new, change.to_new(holder[change.old]))
                except (TypeError, ValueError) as exc:
                    where = ".".join((*change.path, change.old))
                    raise ConversionError(f"{where}: cannot convert {holder[change.old]!r}: {exc}") from exc
        for change in _changes(target):
            holder = _holder(out, change.path)
            if holder is not None and change.new in holder:
                try:
                    _move(holder, change.new, change.old, change.to_old(holder[change.new]))
                except (TypeError, ValueError) as exc:
                    where = ".".join((*change.path, change.new))
                    raise ConversionError(f"{where}: cannot convert {holder[change.new]!r}: {exc}") from exc
    out["apiVersion"] = f"{m.GROUP}/{target}"
    return out


def to_current(obj: dict[str, Any]) -> dict[str, Any]:
    """An object of any served version as the current version (what the operator and CLI read)."""
    return convert(obj, m.API_VERSION)


def version_schema(hub: dict[str, Any], version: str, field_schema) -> dict[str, Any]:
    """The root schema of ``version``, from the hub version's: each renamed field is replaced by
    its old form (``field_schema(change)`` gives its schema), at the same position, in schema
    defaults too; the hub's CEL rules that read the new field are left out (the old field carries
    its own constraints)."""
    schema = copy.deepcopy(hub)
    for change in _changes(version):
        node = schema
        for depth, key in enumerate(change.path):
            node = node["properties"][key]
            if "default" in node:  # an object's schema default: the object with its own defaults
                holder = _holder(node["default"], change.path[depth + 1 :])
                if holder is not None and change.new in holder:
                    _move(holder, change.new, change.old, change.to_old(holder[change.new]))
        _move(node["properties"], change.new, change.old, field_schema(change))
        rules = [r for r in node.get("x-kubernetes-validations", []) if f"self.{change.new}" not in r["rule"]]
        if rules:
            node["x-kubernetes-validations"] = rules
        else:
            node.pop("x-kubernetes-validations", None)
    return schema

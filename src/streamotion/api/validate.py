"""Validate StreamPipeline documents the way the API server does, from the generated CRD schema.

The API server checks the object against the CRD's OpenAPI schema (after applying its
defaults), refuses unknown fields under ``fieldValidation=Strict``, checks list-map keys for
duplicates and evaluates the CEL rules. This module does the same with the same schema, so
``streamotion validate`` names the same field paths as ``kubectl apply``.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from streamotion.api import models as m
from streamotion.api.conversion import SERVED_VERSIONS, to_current
from streamotion.api.crd import root_schema

SERVED_API_VERSIONS = tuple(f"{m.GROUP}/{v}" for v in SERVED_VERSIONS)


@dataclass(frozen=True)
class FieldError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidPipeline(ValueError):
    def __init__(self, name: str, errors: list[FieldError]):
        self.name = name
        self.errors = errors
        lines = "\n".join(f"  - {e}" for e in errors)
        super().__init__(f"StreamPipeline {name!r} is invalid:\n{lines}")


@dataclass
class Document:
    source: str  # file name and document number, for messages
    line: int
    body: Any


def format_path(parts: list[Any] | tuple[Any, ...]) -> str:
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def load_documents(path: str | Path, text: str | None = None) -> list[Document]:
    """Every YAML document in a file; a syntax error raises ValueError naming the line."""
    name = str(path)
    if text is None:
        text = Path(path).read_text()
    docs: list[Document] = []
    try:
        loader = yaml.SafeLoader(text)
        try:
            index = 0
            while loader.check_node():
                node = loader.get_node()
                index += 1
                body = loader.construct_document(node)
                if body is not None:
                    docs.append(Document(f"{name}#{index}", node.start_mark.line + 1, body))
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "unknown position"
        raise ValueError(f"{name}: YAML syntax error at {where}: {exc.problem or exc}") from None
    return docs


# ----------------------------------------------------------------------------------- defaulting
def apply_defaults(obj: Any, schema: dict[str, Any]) -> Any:
    """Fill in schema defaults the way the API server does (recursively, objects and arrays)."""
    if isinstance(obj, dict) and schema.get("type") == "object":
        for name, sub in schema.get("properties", {}).items():
            if name not in obj and "default" in sub:
                obj[name] = copy.deepcopy(sub["default"])
            if name in obj:
                obj[name] = apply_defaults(obj[name], sub)
    elif isinstance(obj, list) and "items" in schema:
        return [apply_defaults(item, schema["items"]) for item in obj]
    return obj


def _body_version(body: dict[str, Any]) -> str:
    """The served version ``body`` is written in (the current one when it names none we serve)."""
    group, _, version = str(body.get("apiVersion")).rpartition("/")
    return version if group == m.GROUP and version in SERVED_VERSIONS else m.VERSION


def with_defaults(body: dict[str, Any]) -> dict[str, Any]:
    return apply_defaults(copy.deepcopy(body), root_schema(_body_version(body)))


# ------------------------------------------------------------------------------------ validation
def _strict(schema: Any) -> Any:
    """The CRD schema as JSON Schema draft 4, refusing unknown fields (kubectl's Strict mode)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    for key in ("default", "enum"):
        if key in schema:
            out[key] = schema[key]
    if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema:
        out["additionalProperties"] = False
    return out


def _validator(version: str = m.VERSION) -> jsonschema.Draft4Validator:
    schema = _strict(root_schema(version))
    # metadata allows every other ObjectMeta field
    schema["properties"]["metadata"]["additionalProperties"] = True
    return jsonschema.Draft4Validator(schema)


def _go(value: Any) -> str:
    return (
        json.dumps(value) if isinstance(value, str) else ("object" if isinstance(value, dict) else str(value))
    )


def _schema_error(err: jsonschema.ValidationError) -> list[FieldError]:
    path = format_path(list(err.absolute_path))
    v, val = err.validator, err.validator_value
    if v == "required":
        missing = [name for name in val if isinstance(err.instance, dict) and name not in err.instance]
        return [FieldError(format_path([*err.absolute_path, name]), "Required value") for name in missing]
    if v == "additionalProperties":
        allowed = set(err.schema.get("properties", {}))
        extra = [k for k in err.instance if k not in allowed]
        return [FieldError("", f'unknown field "{format_path([*err.absolute_path, k])}"') for k in extra]
    if v == "enum":
        supported = ", ".join(json.dumps(x) for x in val)
        return [FieldError(path, f"Unsupported value: {_go(err.instance)}: supported values: {supported}")]
    if v == "maxItems":
        return [FieldError(path, f"Too many: {len(err.instance)}: must have at most {val} items")]
    if v == "minItems":
        return [
            FieldError(
                path, f"Invalid value: {len(err.instance)}: {path} in body should have at least {val} items"
            )
        ]
    if v == "maxLength":
        return [FieldError(path, f"Too long: may not be more than {val} bytes")]
    if v == "minLength":
        return [
            FieldError(
                path,
                f"Invalid value: {_go(err.instance)}: {path} in body should be at least {val} chars long",
            )
        ]
    if v == "pattern":
        return [FieldError(path, f"Invalid value: {_go(err.instance)}: {path} in body should match '{val}'")]
    if v == "minimum":
        rel = "greater than" if err.schema.get("exclusiveMinimum") else "greater than or equal to"
        return [FieldError(path, f"Invalid value: {err.instance}: {path} in body should be {rel} {val}")]
    if v == "maximum":
        rel = "less than" if err.schema.get("exclusiveMaximum") else "less than or equal to"
        return [FieldError(path, f"Invalid value: {err.instance}: {path} in body should be {rel} {val}")]
    if v == "type":
        return [FieldError(path, f"Invalid value: {_go(err.instance)}: {path} in body must be of type {val}")]
    return [FieldError(path, err.message)]


def _walk_rules(obj: Any, schema: dict[str, Any], path: list[Any], errors: list[FieldError]) -> None:
    rules = m.all_rules()
    if isinstance(obj, dict):
        for name, sub in schema.get("properties", {}).items():
            if name in obj:
                _walk_rules(obj[name], sub, [*path, name], errors)
        for rule_schema in schema.get("x-kubernetes-validations", []):
            rule = rules[rule_schema["rule"]]
            if not rule.check(obj):
                where = [*path, *rule.field_path.lstrip(".").split(".")] if rule.field_path else path
                errors.append(FieldError(format_path(where), f'Invalid value: "object": {rule.message}'))
    elif isinstance(obj, list) and "items" in schema:
        keys = schema.get("x-kubernetes-list-map-keys")
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(obj):
            if keys and isinstance(item, dict):
                key = tuple(item.get(k) for k in keys)
                if key in seen:
                    shown = json.dumps(dict(zip(keys, key, strict=True)))
                    errors.append(FieldError(format_path([*path, i]), f"Duplicate value: {shown}"))
                seen.add(key)
            _walk_rules(item, schema["items"], [*path, i], errors)


def validate_object(body: Any) -> list[FieldError]:
    """All errors for one StreamPipeline object, as the API server would report them."""
    if not isinstance(body, dict):
        return [FieldError("", "expected a mapping (a Kubernetes object)")]
    errors: list[FieldError] = []
    if body.get("apiVersion") not in SERVED_API_VERSIONS:
        supported = ", ".join(f'"{v}"' for v in SERVED_API_VERSIONS)
        errors.append(
            FieldError(
                "apiVersion",
                f"Unsupported value: {_go(body.get('apiVersion'))}: supported values: {supported}",
            )
        )
    if body.get("kind") != m.KIND:
        errors.append(
            FieldError("kind", f'Unsupported value: {_go(body.get("kind"))}: supported values: "{m.KIND}"')
        )
    if errors:
        return errors
    obj = with_defaults(body)
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or not meta.get("name"):
        errors.append(FieldError("metadata.name", "Required value: name is required"))
    version = _body_version(body)
    for err in sorted(_validator(version).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))):
        errors.extend(_schema_error(err))
    if not errors:
        _walk_rules(obj, root_schema(version), [], errors)
    return errors


def parse(body: dict[str, Any]) -> m.StreamPipeline:
    """Validate and return the typed pipeline, with defaults; raises InvalidPipeline."""
    errors = validate_object(body)
    name = (body.get("metadata") or {}).get("name", "?") if isinstance(body, dict) else "?"
    if errors:
        raise InvalidPipeline(name, errors)
    # an older version (v1alpha1) is read as the current one, as the API server would convert it
    return m.StreamPipeline.model_validate(to_current(with_defaults(body)))


def load_pipelines(path: str | Path) -> list[m.StreamPipeline]:
    """Every StreamPipeline in a file (other kinds are ignored); raises on the first invalid one."""
    out = []
    for doc in load_documents(path):
        if isinstance(doc.body, dict) and doc.body.get("kind") == m.KIND:
            out.append(parse(doc.body))
    return out


def load_pipeline(path: str | Path, name: str | None = None) -> m.StreamPipeline:
    pipelines = load_pipelines(path)
    if name:
        pipelines = [p for p in pipelines if p.name == name]
    if len(pipelines) != 1:
        raise ValueError(
            f"{path}: expected exactly one StreamPipeline{f' named {name}' if name else ''}, found {len(pipelines)}"
        )
    return pipelines[0]

"""``streamotion render``: the children of a pipeline file, from the operator's own builders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from streamotion.api import models as m
from streamotion.api.validate import load_documents, validate_object
from streamotion_operator import builders
from streamotion_operator.config import OperatorConfig


def pipelines_from_file(path: Path, namespace: str | None = None) -> list[m.StreamPipeline]:
    out = []
    for doc in load_documents(path):
        if not isinstance(doc.body, dict) or doc.body.get("kind") != m.KIND:
            continue
        errors = validate_object(doc.body)
        name = (doc.body.get("metadata") or {}).get("name", "?")
        if errors:
            raise ValueError(
                f"{path} (line {doc.line}): {m.KIND} {name!r} is invalid: "
                + "; ".join(str(e) for e in errors)
            )
        body = {k: v for k, v in doc.body.items() if k != "status"}
        p = m.StreamPipeline.model_validate(body)
        if not p.metadata.namespace:
            p.metadata.namespace = namespace or "default"
        out.append(p)
    if not out:
        raise ValueError(f"{path}: no {m.KIND} document")
    return out


def render_pipeline(p: m.StreamPipeline, cfg: OperatorConfig) -> list[dict[str, Any]]:
    """Exactly what the operator applies, less the ownerReference (the pipeline's uid is unknown yet)."""
    return builders.build(p, cfg)


def render_file(path: Path, cfg: OperatorConfig, namespace: str | None = None) -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    for p in pipelines_from_file(Path(path), namespace):
        docs += render_pipeline(p, cfg)
    return docs

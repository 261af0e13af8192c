"""The model service's HTTP contract (serving implements it, the streaming job calls it).

``POST /v1/classify`` with ``{"texts": [...]}`` answers one result per text, in order.
``GET /v1/model`` describes the model; ``GET /healthz`` answers 200 when it can classify.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

MAX_TEXTS = 1024  # per request; more is a 422 with a clear message


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class Classification(BaseModel):
    label: str  # the top label (single-label) or the top label above its threshold (multi-label)
    score: float
    scores: dict[str, float]  # every canonical label
    labels: list[str] | None = None  # multi-label heads: every label above its threshold
    model_version: str


class ClassifyResponse(BaseModel):
    results: list[Classification]


class ModelInfo(BaseModel):
    name: str
    version: str
    labels: list[str]
    taxonomy: str  # ekman | original
    multi_label: bool
    backend: str  # torch | onnx
    device: str
    max_length: int

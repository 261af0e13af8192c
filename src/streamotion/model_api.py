"""The model service's HTTP contract (serving implements it, the streaming job calls it).

``POST /v1/classify`` with ``{"texts": [...]}`` answers one result per text, in order.
``GET /v1/model`` describes the model; ``GET /healthz`` answers 200 when it can classify.
Its metrics come from Ray's metrics agent (``streamotion_serving.metrics``), renamed on scrape.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

MAX_TEXTS = 1024  # per request; more is a 422 with a clear message
# Characters per text (serving's ``max_text_chars``; the event contract's own limit by default):
# a longer text is a 422 naming it, so a client can set that one text aside and send the others.
MAX_TEXT_CHARS = 100_000

# What a model reads of a text: transformers keep ``max_length`` tokens (spec.model.maxLength, 128 by
# default), so characters past a bound carry nothing the model uses, and the client cuts them off
# instead of sending up to MAX_TEXT_CHARS per text. The bound is conservative: CHARS_PER_TOKEN
# characters per token (English WordPiece/BPE tokens average about 4 characters, words of up to 15
# characters are one or two tokens) plus CHARS_MARGIN, after whitespace runs are collapsed (a tokenizer
# splits on whitespace and keeps none of it). A text whose first ``max_length`` tokens span more
# (runs of words longer than 15 characters) is classified on its first truncate_chars() characters.
CHARS_PER_TOKEN = 16
CHARS_MARGIN = 256


def truncate_chars(max_length: int) -> int:
    """Characters of a text sent to a model that reads ``max_length`` tokens (2,304 for 128)."""
    return max(1, int(max_length)) * CHARS_PER_TOKEN + CHARS_MARGIN


def truncate_text(text: str, max_length: int) -> str:
    """``text`` as the model reads it for ``max_length`` tokens: unchanged when short enough,
    else whitespace runs collapsed and cut to :func:`truncate_chars` characters."""
    limit = truncate_chars(max_length)
    if len(text) <= limit:
        return text
    # split at most what can be kept: limit words cover at least limit characters
    return " ".join(text[: limit * 64].split(maxsplit=limit)[:limit])[:limit]


# Ray exports application metrics as ray_<name>; scrapes rename the model service's back
RAY_METRIC_REGEX = "ray_(streamotion_model_.+)"


def ray_metric_relabelings(style: str = "prometheus") -> list[dict[str, Any]]:
    """The rename as Prometheus ``metric_relabel_configs`` (``style="prometheus"``) or as a
    Prometheus Operator PodMonitor's ``metricRelabelings`` (``style="operator"``)."""
    source, target = (
        ("sourceLabels", "targetLabel") if style == "operator" else ("source_labels", "target_label")
    )
    return [
        {
            "action": "replace",
            source: ["__name__"],
            "regex": RAY_METRIC_REGEX,
            target: "__name__",
            "replacement": "$1",
        }
    ]


class ClassifyRequest(BaseModel):
    texts: list[str] = Field(min_length=1, max_length=MAX_TEXTS)


class Classification(BaseModel):
    label: str  # the top label (single-label) or the top label above its threshold (multi-label)
    score: float  # the score of ``label``
    scores: dict[str, float]  # every canonical label
    labels: list[str] | None = None  # multi-label heads: every label above its threshold, strongest
    # first, else the top label alone (``label`` is the first)
    model_version: str


class ClassifyResponse(BaseModel):
    results: list[Classification]


class ModelInfo(BaseModel):
    name: str
    version: str
    labels: list[str]
    taxonomy: str  # ekman | original
    multi_label: bool
    backend: str  # torch | onnx | linear
    device: str
    max_length: int
    arch: str = "transformer"  # transformer | linear (spec.model.arch)
    dtype: str | None = None  # the weights' dtype (torch backend)

"""The per-record work of the job, as pandas functions for ``mapInPandas`` (Arrow batches).

``parse_records``: Kafka records -> validated, cleaned events (or the reason they are invalid).
``classify_events``: events -> the same plus emotion, scores, sentiment (one model call per batch).
Event times travel as microseconds since the epoch (UTC) and become timestamps in the sinks.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pandas as pd
from pydantic import ValidationError

from streamotion.events import Event
from streamotion.labels import GOEMOTIONS_TO_EKMAN, NEGATIVE, POSITIVE, sentiment
from streamotion_jobs.text import clean_text, hashtags, terms

# Kafka's columns as the job reads them (key and value as bytes).
RAW_COLUMNS = ["key", "value", "topic", "partition", "offset"]

PARSED_SCHEMA = (
    "event_id string, id string, source string, platform string, channel string, author string, "
    "text string, clean_text string, lang string, created_at_us long, ingested_at_us long, url string, "
    "hashtags array<string>, terms array<string>, text_length int, "
    "kafka_topic string, kafka_partition int, kafka_offset long, "
    "error string, payload string"
)
EVENT_COLUMNS = [
    "event_id",
    "id",
    "source",
    "platform",
    "channel",
    "author",
    "text",
    "clean_text",
    "lang",
    "created_at_us",
    "ingested_at_us",
    "url",
    "hashtags",
    "terms",
    "text_length",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
]
CLASSIFIED_SCHEMA = (
    "event_id string, id string, source string, platform string, channel string, author string, "
    "text string, clean_text string, lang string, created_at_us long, ingested_at_us long, url string, "
    "hashtags array<string>, terms array<string>, text_length int, "
    "kafka_topic string, kafka_partition int, kafka_offset long, "
    "emotion string, score double, scores string, sentiment string, sentiment_index double, "
    "model_version string, classified_at_us long"
)
MAX_PAYLOAD_CHARS = 100_000


def arrow_safe(df: pd.DataFrame) -> pd.DataFrame:
    """Plain object columns for strings: pandas 3 infers Arrow-backed ``str`` columns, which
    pyspark 3.5's Arrow serializer cannot put into its output batches."""
    for col in df.columns:
        if pd.api.types.is_string_dtype(df[col].dtype) and df[col].dtype != object:
            df[col] = df[col].astype(object).where(df[col].notna(), None)
    return df


def to_us(dt: datetime) -> int:
    return int(dt.timestamp() * 1_000_000)


def now_us() -> int:
    return to_us(datetime.now(UTC))


def _validation_reason(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:10]:
        loc = ".".join(str(x) for x in err.get("loc", ())) or "(event)"
        parts.append(f"{loc}: {err.get('msg')}")
    return "invalid event: " + "; ".join(parts)


def parse_one(value: bytes | None) -> tuple[Event | None, str | None, str]:
    """(event, None, payload) or (None, reason, payload) for one Kafka message value."""
    if value is None:
        return None, "empty message (null value)", ""
    raw = bytes(value)
    payload = raw.decode("utf-8", errors="replace")[:MAX_PAYLOAD_CHARS]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: {exc}", payload
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}", payload
    if not isinstance(doc, dict):
        return None, f"not a JSON object but {type(doc).__name__}", payload
    try:
        return Event.model_validate(doc), None, payload
    except ValidationError as exc:
        return None, _validation_reason(exc), payload


def parse_frame(pdf: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for value, topic, partition, offset in zip(
        pdf["value"], pdf["topic"], pdf["partition"], pdf["offset"], strict=True
    ):
        where = {"kafka_topic": topic, "kafka_partition": int(partition), "kafka_offset": int(offset)}
        try:
            event, error, payload = parse_one(value)
        except Exception as exc:  # bad input never crashes the job
            event, error, payload = None, f"unexpected error while parsing: {exc!r}", ""
        if event is None:
            rows.append({**where, "hashtags": [], "terms": [], "error": error, "payload": payload})
            continue
        clean = clean_text(event.text) or event.text.strip() or event.text
        rows.append(
            {
                "event_id": event.key,
                "id": event.id,
                "source": event.source,
                "platform": event.platform,
                "channel": event.channel,
                "author": event.author,
                "text": event.text,
                "clean_text": clean,
                "lang": event.lang,
                "created_at_us": to_us(event.created_at),
                "ingested_at_us": to_us(event.ingested_at),
                "url": event.url,
                "hashtags": hashtags(event.text),
                "terms": terms(clean, event.lang),
                "text_length": len(event.text),
                **where,
                "error": None,
                "payload": None,
            }
        )
    ints = {"created_at_us": "Int64", "ingested_at_us": "Int64", "kafka_offset": "Int64"}
    ints |= {"kafka_partition": "Int32", "text_length": "Int32"}
    return pd.DataFrame(
        {
            col: pd.Series([r.get(col) for r in rows], dtype=ints.get(col, object))
            for col in [*EVENT_COLUMNS, "error", "payload"]
        }
    )


def parse_records(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for pdf in batches:
        yield parse_frame(pdf)


def sentiment_index(scores: dict[str, float]) -> float:
    """P(positive emotions) - P(negative emotions), over Ekman emotions (GoEmotions labels mapped)."""
    ekman: dict[str, float] = {}
    for label, score in scores.items():
        target = GOEMOTIONS_TO_EKMAN.get(label, label)
        ekman[target] = ekman.get(target, 0.0) + float(score)
    return sum(ekman.get(x, 0.0) for x in POSITIVE) - sum(ekman.get(x, 0.0) for x in NEGATIVE)


def enrich(pdf: pd.DataFrame, results: list[dict], threshold: float) -> pd.DataFrame:
    out = pdf[EVENT_COLUMNS].copy()
    out["emotion"] = [r["label"] for r in results]
    out["score"] = [float(r["score"]) for r in results]
    out["scores"] = [json.dumps(r["scores"], sort_keys=True) for r in results]
    out["sentiment"] = [sentiment(r["scores"], threshold) for r in results]
    out["sentiment_index"] = [sentiment_index(r["scores"]) for r in results]
    out["model_version"] = [str(r.get("model_version") or "unknown") for r in results]
    out["classified_at_us"] = now_us()
    return arrow_safe(out)


def classifier(
    model_url: str, threshold: float, batch_size: int = 256, deadline_s: float = 120.0
) -> Callable:
    """A ``mapInPandas`` function: each Arrow batch of a partition becomes one or a few model calls."""

    def classify_events(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streamotion_jobs.classify import ModelClient

        client = ModelClient(model_url, batch_size=batch_size, deadline_s=deadline_s)
        try:
            for pdf in batches:
                if pdf.empty:
                    continue
                results = client.classify(pdf["clean_text"].tolist())
                yield enrich(pdf, results, threshold)
        finally:
            client.close()

    return classify_events


# Parse, validate and classify in one pass over each partition (the streaming job's micro-batch):
# one Spark job per micro-batch; invalid records come out with ``error`` and ``payload`` set.
PROCESSED_SCHEMA = CLASSIFIED_SCHEMA + ", error string, payload string"
_CLASSIFIED_ONLY = [
    "emotion",
    "score",
    "scores",
    "sentiment",
    "sentiment_index",
    "model_version",
    "classified_at_us",
]


def processor(
    model_url: str,
    threshold: float,
    batch_size: int = 256,
    deadline_s: float = 120.0,
    per_row: bool = False,
) -> Callable:
    """A ``mapInPandas`` function: Kafka records -> classified events and dead letters."""

    def process(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streamotion_jobs.classify import ModelClient

        client = ModelClient(model_url, batch_size=1 if per_row else batch_size, deadline_s=deadline_s)
        try:
            for raw in batches:
                parsed = parse_frame(raw)
                ok = parsed[parsed["error"].isna()].reset_index(drop=True)
                bad = parsed[parsed["error"].notna()].reset_index(drop=True)
                if len(ok):
                    texts = ok["clean_text"].tolist()
                    # per_row: the ancestors' pattern (benchmark only), one HTTP call per row
                    results = [client.classify([t])[0] for t in texts] if per_row else client.classify(texts)
                    classified = enrich(ok, results, threshold)
                    classified["error"] = None
                    classified["payload"] = None
                else:
                    classified = None
                if len(bad):
                    for col in _CLASSIFIED_ONLY:
                        bad[col] = None
                parts = [f for f in (classified, bad) if f is not None and len(f)]
                if parts:
                    out = pd.concat(parts, ignore_index=True)
                    yield arrow_safe(out[PROCESSED_COLUMNS])
        finally:
            client.close()

    return process


PROCESSED_COLUMNS = [*EVENT_COLUMNS, *_CLASSIFIED_ONLY, "error", "payload"]

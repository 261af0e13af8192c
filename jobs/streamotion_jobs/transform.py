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

from streamotion.events import Event, UnreadableVersion, read_event
from streamotion.labels import sentiment
from streamotion.labels import sentiment_index as _sentiment_index
from streamotion_jobs.text import clean_text, hashtags, terms

# Kafka's columns as the job reads them (key and value as bytes).
RAW_COLUMNS = ["key", "value", "topic", "partition", "offset"]

PARSED_SCHEMA = (
    "event_id string, id string, source string, platform string, channel string, author string, "
    "text string, clean_text string, lang string, created_at_us long, ingested_at_us long, url string, "
    "hashtags array<string>, terms array<string>, text_length int, "
    "kafka_topic string, kafka_partition int, kafka_offset long, "
    "error string, payload string, dropped_fields array<string>"
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
    "model_version string, classified_at_us long, labels array<string>"
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
    event, error, payload, _ = read_one(value)
    return event, error, payload


def read_one(value: bytes | None) -> tuple[Event | None, str | None, str, list[str]]:
    """:func:`parse_one` plus the names of the unknown fields dropped (:func:`streamotion.events.read_event`)."""
    if value is None:
        return None, "empty message (null value)", "", []
    raw = bytes(value)
    payload = raw.decode("utf-8", errors="replace")[:MAX_PAYLOAD_CHARS]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8: {exc}", payload, []
    try:
        doc = json.loads(text)
    except ValueError as exc:
        return None, f"not JSON: {exc}", payload, []
    if not isinstance(doc, dict):
        return None, f"not a JSON object but {type(doc).__name__}", payload, []
    try:
        event, dropped = read_event(doc)
        return event, None, payload, dropped
    except UnreadableVersion as exc:
        return None, str(exc), payload, []
    except ValidationError as exc:
        return None, _validation_reason(exc), payload, []


def future_reason(created_us: int, ingested_us: int, now: int, max_future_skew_s: float) -> str | None:
    """Why an event's time is out of bounds, or None: ``created_at`` may be at most
    ``max_future_skew_s`` ahead of its ``ingested_at`` (or of the job's clock, when that is earlier)."""
    reference = min(ingested_us, now)
    ahead = created_us - reference
    if ahead <= max_future_skew_s * 1_000_000:
        return None
    which = "ingested_at" if ingested_us <= now else "the job's clock"
    created = datetime.fromtimestamp(created_us / 1_000_000, UTC).isoformat()
    return (
        f"event time in the future: created_at {created} is {ahead / 1_000_000:.0f}s ahead of {which}, "
        f"more than processing.maxFutureSkew ({max_future_skew_s:g}s): a wrong clock at the platform or "
        "producer (stored, it would move the watermark past every later event)"
    )


EMPTY_TEXT_REASON = (
    "no text to classify: the text is empty after cleaning (only whitespace, URLs or @mentions)"
)


def parse_frame(
    pdf: pd.DataFrame, max_future_skew_s: float | None = None, now: int | None = None
) -> pd.DataFrame:
    """One row per Kafka record: the event's columns, or ``error`` and ``payload`` (a dead letter).

    Dead letters besides invalid payloads: an event whose text is empty once cleaned, and, with
    ``max_future_skew_s``, one whose ``created_at`` is further ahead than that (:func:`future_reason`)
    of ``now`` (the job's clock, microseconds; the current time by default).

    The pure-Python path: the job parses in Spark (:mod:`streamotion_jobs.parse`) and comes here
    only for the records Spark leaves undecided (:func:`finish_frame`).
    """
    rows = []
    now = now_us() if now is None else now
    for value, topic, partition, offset in zip(
        pdf["value"], pdf["topic"], pdf["partition"], pdf["offset"], strict=True
    ):
        where = {"kafka_topic": topic, "kafka_partition": int(partition), "kafka_offset": int(offset)}
        dropped: list[str] = []
        try:
            event, error, payload, dropped = read_one(value)
            if event is not None:
                clean = clean_text(event.text)
                if not clean:
                    event, error = None, EMPTY_TEXT_REASON
                elif max_future_skew_s is not None:
                    error = future_reason(
                        to_us(event.created_at), to_us(event.ingested_at), now, max_future_skew_s
                    )
                    event = None if error else event
        except Exception as exc:  # bad input never crashes the job
            event, error, payload = None, f"unexpected error while parsing: {exc!r}", ""
        if event is None:
            rows.append(
                {
                    **where,
                    "hashtags": [],
                    "terms": [],
                    "error": error,
                    "payload": payload,
                    "dropped_fields": [],
                }
            )
            continue
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
                "dropped_fields": dropped,
            }
        )
    ints = {"created_at_us": "Int64", "ingested_at_us": "Int64", "kafka_offset": "Int64"}
    ints |= {"kafka_partition": "Int32", "text_length": "Int32"}
    return pd.DataFrame(
        {
            col: pd.Series([r.get(col) for r in rows], dtype=ints.get(col, object))
            for col in [*EVENT_COLUMNS, "error", "payload", "dropped_fields"]
        }
    )


PARSED_COLUMNS = [*EVENT_COLUMNS, "error", "payload", "dropped_fields"]


def finish_frame(
    pdf: pd.DataFrame, max_future_skew_s: float | None = None, now: int | None = None
) -> pd.DataFrame:
    """The Python half of parsing, over :func:`streamotion_jobs.parse.native_parse`'s rows: what
    Spark left undecided (``fallback``: the raw ``value``) through :func:`parse_frame`; for the rows
    Spark validated but did not clean (``cleaned`` false: entities, non-ASCII words), the cleaned
    text (an empty one is a dead letter, before the future bound Spark computed), hashtags and
    terms; rows Spark cleaned pass as they are. Same columns and order as :func:`parse_frame`, plus
    ``raw_payload`` (the record's text for a later dead letter: a text the model refuses)."""
    if "fallback" not in pdf:  # Kafka's own columns (value, topic, ...): the whole parse here
        out = parse_frame(pdf, max_future_skew_s, now)
        out["raw_payload"] = [_payload(v) for v in pdf["value"]]
        return out
    cleaned = (
        pdf["cleaned"].fillna(False).astype(bool) if "cleaned" in pdf else pd.Series(False, index=pdf.index)
    )
    out = pdf.drop(columns=["future_error", "value", "fallback", "cleaned"], errors="ignore").copy()
    for col in ("hashtags", "terms"):  # Spark's (cleaned rows) or filled below
        out[col] = (
            [
                list(v) if cleaned[i] and v is not None else []
                for i, v in zip(out.index, out[col], strict=True)
            ]
            if col in out
            else [[] for _ in range(len(out))]
        )
    out["clean_text"] = out["clean_text"].astype(object).where(cleaned, None) if "clean_text" in out else None
    raw_payload = pdf["payload"].copy()
    undecided = pdf.index[pdf["fallback"].fillna(False).astype(bool)]
    if len(undecided):
        sub = pd.DataFrame(
            {
                "value": pdf.loc[undecided, "value"].tolist(),
                "topic": pdf.loc[undecided, "kafka_topic"].tolist(),
                "partition": pdf.loc[undecided, "kafka_partition"].tolist(),
                "offset": pdf.loc[undecided, "kafka_offset"].tolist(),
            }
        )
        slow = parse_frame(sub, max_future_skew_s, now)
        for col in PARSED_COLUMNS:
            out[col] = out[col].astype(object)
            out.loc[undecided, col] = pd.Series(slow[col].astype(object).tolist(), index=undecided)
        raw_payload.loc[undecided] = [_payload(v) for v in pdf.loc[undecided, "value"]]
    decided = pdf.index[~pdf["fallback"].fillna(False).astype(bool) & pdf["error"].isna() & ~cleaned]
    errors, cleans, tags, words = [], [], [], []
    for text, lang, future in zip(
        pdf.loc[decided, "text"], pdf.loc[decided, "lang"], pdf.loc[decided, "future_error"], strict=True
    ):
        clean = clean_text(text)
        error = EMPTY_TEXT_REASON if not clean else (future if isinstance(future, str) else None)
        errors.append(error)
        cleans.append(None if error else clean)
        tags.append([] if error else hashtags(text))
        words.append([] if error else terms(clean, lang if isinstance(lang, str) else None))
    if len(decided):
        out["error"] = out["error"].astype(object)
        out.loc[decided, "error"] = pd.Series(errors, index=decided, dtype=object)
        out.loc[decided, "clean_text"] = pd.Series(cleans, index=decided, dtype=object)
        out.loc[decided, "hashtags"] = pd.Series(tags, index=decided, dtype=object)
        out.loc[decided, "terms"] = pd.Series(words, index=decided, dtype=object)
    bad = out["error"].notna()
    event_cols = [c for c in EVENT_COLUMNS if not c.startswith("kafka_")]
    for col in event_cols:  # a dead letter carries its position, reason and payload only
        out[col] = out[col].astype(object).where(~bad, None)
    out.loc[bad, "hashtags"] = pd.Series(
        [[] for _ in range(int(bad.sum()))], index=out.index[bad], dtype=object
    )
    out.loc[bad, "terms"] = pd.Series([[] for _ in range(int(bad.sum()))], index=out.index[bad], dtype=object)
    out.loc[bad, "dropped_fields"] = pd.Series(
        [[] for _ in range(int(bad.sum()))], index=out.index[bad], dtype=object
    )
    out["payload"] = out["payload"].astype(object).where(bad, None)
    out = out[PARSED_COLUMNS].copy()
    for col, dtype in (
        ("created_at_us", "Int64"),
        ("ingested_at_us", "Int64"),
        ("kafka_offset", "Int64"),
        ("kafka_partition", "Int32"),
        ("text_length", "Int32"),
    ):
        out[col] = pd.array([None if pd.isna(v) else int(v) for v in out[col]], dtype=dtype)
    out["raw_payload"] = raw_payload.astype(object)
    return out.reset_index(drop=True)


def parse_records(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    for pdf in batches:
        yield parse_frame(pdf)


def sentiment_index(scores: dict[str, float], multi_label: bool = False) -> float:
    """P(positive emotions) - P(negative emotions) (:func:`streamotion.labels.sentiment_index`)."""
    return _sentiment_index(scores, multi_label)


def chosen_labels(result: dict) -> list[str]:
    """The labels a result stands for, by serving's documented rule: a multi-label head's
    ``labels`` (every label over its threshold, strongest first, else the top label), a single-label
    head's top ``label``."""
    labels = result.get("labels")
    return [str(x) for x in labels] if labels else [str(result["label"])]


def enrich(pdf: pd.DataFrame, results: list[dict], threshold: float) -> pd.DataFrame:
    """The events plus their classification: ``emotion`` is the first chosen label (its ``score``
    beside it), ``labels`` every chosen one, sentiment derived from them (:func:`streamotion.labels.sentiment`)."""
    out = pdf[EVENT_COLUMNS].copy()
    chosen = [chosen_labels(r) for r in results]
    indices = [sentiment_index(r["scores"], r.get("labels") is not None) for r in results]
    out["emotion"] = [c[0] for c in chosen]
    out["score"] = [float(r["scores"].get(c[0], r["score"])) for r, c in zip(results, chosen, strict=True)]
    out["scores"] = [json.dumps(r["scores"], sort_keys=True) for r in results]
    out["sentiment"] = [sentiment(c, i, threshold) for c, i in zip(chosen, indices, strict=True)]
    out["sentiment_index"] = indices
    out["model_version"] = [str(r.get("model_version") or "unknown") for r in results]
    out["classified_at_us"] = now_us()
    out["labels"] = chosen
    return arrow_safe(out)


def classifier(
    model_url: str,
    threshold: float,
    batch_size: int = 256,
    deadline_s: float = 120.0,
    max_length: int = 128,
) -> Callable:
    """A ``mapInPandas`` function: each Arrow batch of a partition becomes one or a few model calls;
    batch k+1 is sent before batch k's results are enriched (output in input order)."""

    def classify_events(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streamotion_jobs.classify import ModelClient

        client = ModelClient(model_url, batch_size=batch_size, deadline_s=deadline_s, max_length=max_length)
        try:
            pending = None
            for pdf in batches:
                if pdf.empty:
                    continue
                call = client.submit(pdf["clean_text"].tolist())
                if pending is not None:
                    yield enrich(pending[0], pending[1].result(), threshold)
                pending = (pdf, call)
            if pending is not None:
                yield enrich(pending[0], pending[1].result(), threshold)
        finally:
            client.close()

    return classify_events


# Parse, validate and classify in one pass over each partition (the streaming job's micro-batch):
# one Spark job per micro-batch; invalid records come out with ``error`` and ``payload`` set.
PROCESSED_SCHEMA = CLASSIFIED_SCHEMA + ", error string, payload string, dropped_fields array<string>"
_CLASSIFIED_ONLY = [
    "emotion",
    "score",
    "scores",
    "sentiment",
    "sentiment_index",
    "model_version",
    "classified_at_us",
    "labels",
]


def _payload(value: bytes | None) -> str:
    return "" if value is None else bytes(value).decode("utf-8", errors="replace")[:MAX_PAYLOAD_CHARS]


def processor(
    model_url: str,
    threshold: float,
    batch_size: int = 256,
    deadline_s: float = 120.0,
    per_row: bool = False,
    max_future_skew_s: float | None = None,
    max_length: int = 128,
    now: int | None = None,
) -> Callable:
    """A ``mapInPandas`` function: Kafka records, or the rows of
    :func:`streamotion_jobs.parse.native_parse` (``now`` its clock) -> classified events and dead
    letters (:func:`finish_frame` parses, or completes Spark's parse).

    Each Arrow batch's texts are sent to the model (:meth:`ModelClient.submit`) before the previous
    batch's results are awaited, so batch k is classified while batch k+1 is parsed; the output keeps
    the input's order. Texts are cut on the client to the model's ``max_length`` tokens.

    A text the model service refuses on its own (a 400/413/422, isolated by bisecting the request)
    becomes a dead letter with the service's message; the rest of the batch carries on. The service
    being down or failing (5xx, timeouts) still fails the micro-batch, which is retried."""

    def process(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        from streamotion_jobs.classify import ModelClient

        client = ModelClient(
            model_url,
            batch_size=1 if per_row else batch_size,
            deadline_s=deadline_s,
            max_length=max_length,
        )
        try:
            pending = None
            for raw in batches:
                parsed = finish_frame(raw, max_future_skew_s, now)  # one row per record, in order
                ok = parsed[parsed["error"].isna()]
                call = None
                if len(ok):
                    texts = ok["clean_text"].tolist()
                    # per_row: the ancestors' pattern (benchmark only), one HTTP call per row
                    if per_row:
                        call = [client.classify([t], isolate=True)[0] for t in texts]
                    else:
                        call = client.submit(texts, isolate=True)
                if pending is not None:
                    out = _processed(*pending, threshold)
                    if out is not None:
                        yield out
                pending = (raw, parsed, ok, call)
            if pending is not None:
                out = _processed(*pending, threshold)
                if out is not None:
                    yield out
        finally:
            client.close()

    return process


def _processed(raw: pd.DataFrame, parsed: pd.DataFrame, ok: pd.DataFrame, call, threshold: float):
    """One Arrow batch's output once its model call (a ``Pending`` or the results) is back: refused
    texts become dead letters, the rest classified events; None when the batch has no row."""
    from streamotion_jobs.classify import Refusal

    classified = None
    if len(ok):
        results = call if isinstance(call, list) else call.result()
        refused = [k for k, r in enumerate(results) if isinstance(r, Refusal)]
        if refused:
            rows = ok.index[refused]
            parsed.loc[rows, "error"] = [results[k].reason for k in refused]
            parsed.loc[rows, "payload"] = parsed.loc[rows, "raw_payload"].tolist()
            ok = ok.drop(index=rows)
            results = [r for r in results if not isinstance(r, Refusal)]
        if len(ok):
            ok = ok.reset_index(drop=True)
            classified = enrich(ok, results, threshold)
            classified["error"] = None
            classified["payload"] = None
            classified["dropped_fields"] = ok["dropped_fields"].tolist()
    bad = parsed[parsed["error"].notna()].reset_index(drop=True)
    if len(bad):
        for col in _CLASSIFIED_ONLY:
            bad[col] = None
        bad["dropped_fields"] = [[] for _ in range(len(bad))]
    parts = [f for f in (classified, bad) if f is not None and len(f)]
    if not parts:
        return None
    return arrow_safe(pd.concat(parts, ignore_index=True)[PROCESSED_COLUMNS])


PROCESSED_COLUMNS = [*EVENT_COLUMNS, *_CLASSIFIED_ONLY, "error", "payload", "dropped_fields"]

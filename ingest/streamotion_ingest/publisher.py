"""Publishing to Kafka: idempotent, acks=all, compressed, bounded queue with backpressure.

Every payload either becomes a valid :class:`Event` on the raw topic (key ``source:platform:id``), is
dropped by the source's filters (counted), or goes to the dead-letter topic with a reason and
the raw payload. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streamotion.events import DeadLetter, Event
from streamotion.security.clients import CredentialWatch, confluent_config
from streamotion_ingest import filters as f
from streamotion_ingest.metrics import SourceMetrics

log = logging.getLogger("streamotion.ingest")


@dataclass
class Malformed:
    """A payload that cannot become a valid event: it goes to the dead-letter topic."""

    reason: str
    payload: Any


# Kafka header of raw-topic records: where the source was in the platform's stream when it read the
# event (Jetstream time_us, Mastodon timeline and status id, X post id, replay pass). A restarted
# producer reads it back from the last records of its source (streamotion_ingest.resume).
CURSOR_HEADER = "streamotion-cursor"


@dataclass
class Positioned:
    """An event and the source's cursor after it (published as the CURSOR_HEADER header)."""

    item: Event | Malformed
    cursor: str


@dataclass
class Filters:
    languages: frozenset[str] = frozenset()
    keywords: tuple[str, ...] = ()
    redact_pii: bool = False
    _match: Callable[[str], bool] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self._match = f.keyword_matcher(self.keywords)

    @classmethod
    def of(cls, source) -> Filters:
        return cls(frozenset(source.languages), tuple(source.keywords), bool(source.redact_pii))

    def apply(self, event: Event) -> tuple[Event | None, str | None]:
        """The event to publish (maybe redacted, lang filled in), or None and the reason it was dropped."""
        if self.languages:
            lang = f.normalise_lang(event.lang) or f.detect_language(event.text)
            if lang not in self.languages:
                return None, "language"
            if event.lang != lang:
                event = event.model_copy(update={"lang": lang})
        if self._match is not None and not self._match(event.text):
            return None, "keyword"
        if self.redact_pii:
            text = f.redact_pii(event.text)
            if text != event.text:
                event = event.model_copy(update={"text": text})
        return event, None


def validation_reason(exc: ValidationError) -> str:
    """``field.path: message; ...`` from a pydantic error."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "(payload)"
        parts.append(f"{loc}: {err['msg']}")
    return "invalid event: " + "; ".join(parts)


def make_event(payload: Any, **fields: Any) -> Event | Malformed:
    """An Event from normalised fields, or Malformed(reason, payload) when they do not validate."""
    try:
        return Event.model_validate(fields)
    except ValidationError as exc:
        return Malformed(validation_reason(exc), payload)


def payload_text(payload: Any) -> str:
    if isinstance(payload, bytes):
        return payload.decode("utf-8", errors="replace")
    if isinstance(payload, str):
        return payload
    try:
        return json.dumps(payload, default=str, ensure_ascii=False)
    except (TypeError, ValueError):
        return repr(payload)


class KafkaUnavailable(RuntimeError):
    pass


class Publisher:
    """One confluent-kafka producer for one pipeline source, with a background poll thread."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        dlq_topic: str,
        *,
        pipeline: str,
        source: str,
        filters: Filters | None = None,
        queue_max_messages: int = 100_000,
        message_timeout_ms: int = 0,
        linger_ms: int = 5,
        compression: str = "lz4",
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        self.bootstrap = bootstrap
        self.topic, self.dlq_topic, self.source = topic, dlq_topic, source
        self.filters = filters or Filters()
        self.metrics = SourceMetrics(pipeline, source)
        self.fatal: Exception | None = None
        self.brokers_down = False
        self._ready_cache = (0.0, False)  # (monotonic time of the check, Kafka answered)
        self._last_error: str | None = None
        self._ok = 0  # acknowledged since the last metrics flush (poll thread only)
        self._latencies: list[float] = []
        self._published = 0
        conf = {
            **confluent_config(bootstrap),  # the producer's own identity (STREAMOTION_KAFKA_*)
            "client.id": f"streamotion-{pipeline}-{source}",
            "enable.idempotence": True,
            "acks": "all",
            "compression.type": compression,
            "linger.ms": linger_ms,
            "batch.num.messages": 10_000,
            "queue.buffering.max.messages": queue_max_messages,
            "queue.buffering.max.kbytes": 262_144,
            "message.timeout.ms": message_timeout_ms,  # 0: retry until delivered (streams)
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 2000,
            "error_cb": self._on_error,
            "logger": logging.getLogger("librdkafka"),  # client logs as JSON lines too
            **(extra_config or {}),
        }
        self.producer = Producer(conf)
        self._conf = conf
        # Rotated credentials (files mounted from Secrets change in place): librdkafka reads them only
        # when a client is created, so the poll thread creates a new producer, delivers everything the
        # old one holds, then swaps them (under _swap: nothing is produced into the old one meanwhile).
        self._watch = CredentialWatch()
        self._swap = threading.Lock()
        self.rotations = 0
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll_loop, name="kafka-poll", daemon=True)
        self._poller.start()

    # ---------------------------------------------------------------- callbacks
    def _poll_loop(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self._flush_metrics()
            self._rotate_if_changed()

    def _rotate_if_changed(self) -> None:
        """A new producer with the credentials as the files now are, once the old one delivered all
        it holds (nothing lost, order kept). A failure (files caught mid-rotation, Kafka unreachable
        while flushing) keeps the old producer and is tried again at the next look."""
        from confluent_kafka import KafkaException, Producer

        digest = self._watch.changed(time.monotonic())
        if digest is None:
            return
        try:
            new = Producer({**self._conf, **confluent_config(self.bootstrap)})
        except (KafkaException, ValueError, OSError) as exc:
            log.warning("rotated Kafka credentials not usable yet", extra={"error": str(exc)})
            return
        with self._swap:
            left = self.producer.flush(30)
            if left:
                log.warning("credentials rotated; old producer still delivering", extra={"count": left})
                return
            self.producer = new
        self._watch.commit(digest)
        self.rotations += 1
        log.info("kafka credentials rotated: new producer", extra={"rotations": self.rotations})

    def _flush_metrics(self) -> None:
        """Move the callback counters into Prometheus (cheaper than one update per message)."""
        ok, self._ok = self._ok, 0
        if ok:
            self.metrics.produced.inc(ok)
        lat, self._latencies = self._latencies, []
        for v in lat:
            self.metrics.latency.observe(v)
        self.metrics.queue.set(len(self.producer))

    def _on_error(self, err) -> None:
        from confluent_kafka import KafkaError

        self._last_error = str(err)
        if err.fatal():
            self.fatal = RuntimeError(f"fatal Kafka producer error: {err}")
            log.error("fatal kafka error", extra={"error": str(err)})
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            self.brokers_down = True
            log.warning("all kafka brokers down", extra={"error": str(err)})
        else:
            log.info("kafka client error", extra={"error": str(err)})

    def _delivered(self, err, msg) -> None:
        if err is None:
            self.brokers_down = False
            self._ok += 1
            if self._ok < 200 or self._ok % 16 == 0:  # a sample when busy
                latency = msg.latency()
                if latency is not None:
                    self._latencies.append(latency)
        else:
            self.metrics.failed.inc()
            log.error("delivery failed", extra={"error": str(err), "key": _key(msg)})

    def _dlq_delivered(self, err, msg) -> None:
        if err is None:
            self.metrics.dead_lettered.inc()
        else:
            self.metrics.failed.inc()
            log.error("dead letter delivery failed", extra={"error": str(err)})

    # ---------------------------------------------------------------- publishing
    def _produce(
        self, topic: str, value: bytes, key: str | None, callback, block: bool, headers=None
    ) -> None:
        while True:
            if self.fatal is not None:
                raise self.fatal
            try:
                with self._swap:
                    if headers:
                        self.producer.produce(
                            topic, value=value, key=key, on_delivery=callback, headers=headers
                        )
                    else:
                        self.producer.produce(topic, value=value, key=key, on_delivery=callback)
                return
            except BufferError:
                if not block:
                    raise
                time.sleep(0.005)  # backpressure: the poll thread drains the queue

    def publish(
        self,
        event: Event | Malformed | Positioned,
        *,
        on_delivery: Callable[[Any, Any], None] | None = None,
        block: bool = True,
        apply_filters: bool = True,
        cursor: str | None = None,
    ) -> bool:
        """Queue one event (after filters) or dead letter. False when a filter dropped it.

        ``block=False`` raises BufferError when the queue is full instead of waiting; ``cursor`` is
        recorded with the event (header CURSOR_HEADER) for a restart to resume from.
        """
        if isinstance(event, Positioned):
            event, cursor = event.item, event.cursor
        if isinstance(event, Malformed):
            self.dead_letter(event.reason, event.payload, block=block)
            return True
        if apply_filters:
            kept, reason = self.filters.apply(event)
            if kept is None:
                self.metrics.filtered(reason or "filter").inc()
                return False
            event = kept
        callback = self._delivered
        if on_delivery is not None:

            def callback(err, msg, _user=on_delivery):
                self._delivered(err, msg)
                _user(err, msg)

        headers = [(CURSOR_HEADER, cursor.encode())] if cursor is not None else None
        self._produce(self.topic, event.to_json(), event.key, callback, block, headers)
        self._published += 1
        if self._published & 63 == 1:  # every 64th event is plenty for a gauge
            lag = (event.ingested_at - event.created_at).total_seconds()
            self.metrics.lag.set(max(lag, 0.0))
        return True

    def dead_letter(self, reason: str, payload: Any, *, block: bool = True, on_delivery=None) -> None:
        letter = DeadLetter(
            reason=reason, stage="producer", source=self.source, payload=payload_text(payload)
        )
        callback = self._dlq_delivered
        if on_delivery is not None:

            def callback(err, msg, _user=on_delivery):
                self._dlq_delivered(err, msg)
                _user(err, msg)

        log.warning("dead letter", extra={"reason": reason, "source": self.source})
        self._produce(self.dlq_topic, letter.model_dump_json().encode(), None, callback, block)

    def flush(self, timeout: float = 30) -> int:
        """Wait until queued messages are acknowledged; returns how many are left."""
        left = self.producer.flush(timeout)
        self.metrics.queue.set(left)
        return left

    def kafka_reachable(self, timeout: float = 1.0) -> bool:
        try:
            self.producer.list_topics(self.topic, timeout=timeout)
        except Exception:
            return False
        self.brokers_down = False
        return True

    def ready(self, max_age: float = 5.0) -> bool:
        """Whether the producer can publish now: Kafka answered a metadata request for the raw topic
        within the last ``max_age`` seconds (asked again when older), and no fatal error. Probes
        (every 10 s) make at most one request each."""
        if self.fatal is not None:
            return False
        now = time.monotonic()
        checked, ok = self._ready_cache
        if now - checked > max_age:
            ok = self.kafka_reachable(timeout=2.0)
            self._ready_cache = (time.monotonic(), ok)
        return ok

    def close(self, timeout: float = 30) -> int:
        """Stop polling in the background, then flush here (delivery callbacks run in this thread)."""
        self._stop.set()
        self._poller.join(5)
        left = self.producer.flush(timeout)
        self._flush_metrics()
        if left:
            log.error("messages not acknowledged at shutdown", extra={"count": left})
        return left


def _key(msg) -> str | None:
    k = msg.key()
    return k.decode(errors="replace") if k else None


def now() -> datetime:
    return datetime.now(UTC)

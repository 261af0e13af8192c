"""The HTTP ingest service: ``POST /v1/events`` for your own applications (FastAPI).

- Bearer token (``INGEST_TOKEN``, from the source's Secret key ``token``: one token, or several
  separated by commas or new lines, one per client application); 401 without a valid one. Tokens
  are compared in constant time (``hmac.compare_digest``, every token every time).
- A rate limit per token (``STREAMOTION_INGEST_RATE`` events/s, default 5,000; 0 turns it off;
  bursts up to ``STREAMOTION_INGEST_BURST``, default twice the rate and at least a full batch): over
  it, 429 with ``Retry-After`` (seconds until the request's events fit), nothing published.
- One event (a JSON object), or a batch: a JSON array or ``{"events": [...]}`` of up to
  ``maxBatchSize`` (1,000) events. Invalid JSON: 400; invalid events: 422 with field paths;
  bodies over the size limit or batches over the maximum: 413.
- 202 only after Kafka acknowledged every event of the request; 429 when the producer queue is
  full, 503 when Kafka is unavailable or slow (nothing is acknowledged then, so clients retry).
- ``/healthz``, ``/metrics``, OpenAPI docs at ``/docs``.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import os
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from streamotion.events import Event, hash_author, utcnow
from streamotion_ingest.publisher import Publisher

log = logging.getLogger("streamotion.ingest.http")

TOKEN_ENV = "INGEST_TOKEN"
ACK_TIMEOUT_ENV = "STREAMOTION_INGEST_ACK_TIMEOUT"  # seconds to wait for Kafka before 503 (default 10)
MAX_BYTES_ENV = "STREAMOTION_INGEST_MAX_BYTES"  # request body limit (default 8 MiB)
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
RATE_ENV = "STREAMOTION_INGEST_RATE"  # events per second per token (default 5,000; 0: no limit)
BURST_ENV = "STREAMOTION_INGEST_BURST"  # events a token may send at once (default 2 x rate)
DEFAULT_RATE = 5000.0


def parse_tokens(raw: str) -> list[str]:
    """The tokens of INGEST_TOKEN: one, or several separated by commas or new lines."""
    return [t.strip() for t in re.split(r"[,\n]", raw) if t.strip()]


class TokenBucket:
    """``rate`` events per second with bursts of up to ``burst`` (a token bucket; event-loop only)."""

    def __init__(self, rate: float, burst: float, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, burst, clock
        self.level, self.at = burst, clock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now

    def wait(self, n: int) -> float:
        """Seconds until ``n`` events fit (0: they fit now); nothing is taken."""
        self._refill()
        return 0.0 if self.level >= n else (n - self.level) / self.rate

    def take(self, n: int) -> float:
        """Take ``n`` events if they fit now (returns 0), else the seconds until they would."""
        wait = self.wait(n)
        if wait == 0:
            self.level -= n
        return wait


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


class IngestEvent(BaseModel):
    """One event as clients send it."""

    model_config = ConfigDict(extra="forbid")
    id: str = Field(
        min_length=1, max_length=256, description="Your id: unique and stable (retries reuse it)."
    )
    text: str = Field(min_length=1, max_length=100_000)
    created_at: datetime | None = Field(None, description="Event time (ISO 8601); default: now.")
    lang: str | None = Field(None, max_length=16, description="ISO 639-1 code when known.")
    channel: str | None = Field(None, max_length=256, description="Product, app, form, ...")
    author: str | None = Field(None, max_length=512, description="Author handle: hashed before publishing.")
    url: str | None = Field(None, max_length=2048)


class Batch(BaseModel):
    events: list[IngestEvent] = Field(min_length=1, max_length=1000)


class Accepted(BaseModel):
    accepted: int = Field(description="Events Kafka acknowledged.")
    filtered: int = Field(description="Events dropped by the source's language/keyword filters.")


_EVENTS = TypeAdapter(list[IngestEvent])


def _problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class _Pending:
    """Counts down the Kafka acknowledgements of one request; wakes its coroutine once."""

    __slots__ = ("errors", "future", "left", "lock", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, n: int) -> None:
        self.loop, self.left, self.errors = loop, n, []
        self.future: asyncio.Future = loop.create_future()
        self.lock = threading.Lock()

    def __call__(self, err, _msg) -> None:  # in the poll thread
        with self.lock:
            if err is not None:
                self.errors.append(str(err))
            self.left -= 1
            done = self.left == 0
        if done:
            self.loop.call_soon_threadsafe(_resolve, self.future)


def _resolve(fut: asyncio.Future) -> None:
    if not fut.done():
        fut.set_result(None)


def create_app(
    publisher: Publisher,
    *,
    token: str | list[str],
    source: str,
    max_batch_size: int = 1000,
    max_bytes: int = DEFAULT_MAX_BYTES,
    ack_timeout: float = 10.0,
    queue_max_messages: int = 100_000,
    rate: float = 0.0,
    burst: float | None = None,
    clock=time.monotonic,
) -> FastAPI:
    tokens = parse_tokens(token) if isinstance(token, str) else [t for t in token if t]
    if not tokens:
        raise ValueError(f"the ingest token is empty: set {TOKEN_ENV} (the Secret's key 'token')")
    expected = [f"Bearer {t}".encode() for t in tokens]
    # one bucket per token; a batch always fits in a full bucket
    size = max(burst if burst else 2 * rate, max_batch_size)
    buckets = [TokenBucket(rate, size, clock) for _ in tokens] if rate > 0 else None

    def caller(auth: bytes) -> int | None:
        """Which token ``auth`` carries: every token compared in constant time, no early exit."""
        found = None
        for i, candidate in enumerate(expected):
            if hmac.compare_digest(auth, candidate):
                found = i
        return found

    metrics = publisher.metrics
    by_code: dict[int, Any] = {}

    async def watch_kafka() -> None:
        while True:
            await asyncio.sleep(1.0)
            if publisher.brokers_down:
                await asyncio.to_thread(publisher.kafka_reachable, 2.0)

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        task = asyncio.create_task(watch_kafka())
        log.info("ingest service ready", extra={"topic": publisher.topic})
        try:
            yield
        finally:
            task.cancel()
            left = await asyncio.to_thread(publisher.close, 30)
            log.info("ingest service stopped", extra={"unacknowledged": left})

    app = FastAPI(
        title="Streamotion ingest",
        version="1",
        description=__doc__,
        lifespan=lifespan,
    )

    from prometheus_client import make_asgi_app

    app.mount("/metrics", make_asgi_app())

    @app.get("/healthz", summary="Liveness and Kafka reachability")
    async def healthz() -> JSONResponse:
        down = publisher.brokers_down
        return JSONResponse(
            {"status": "degraded" if down else "ok", "kafka": "down" if down else "up"},
            status_code=503 if down else 200,
        )

    body_schema = {
        "oneOf": [
            {"$ref": "#/components/schemas/IngestEvent"},
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/IngestEvent"},
                "maxItems": max_batch_size,
            },
            {"$ref": "#/components/schemas/Batch"},
        ]
    }

    @app.post(
        "/v1/events",
        status_code=202,
        response_model=Accepted,
        summary="Publish one event or a batch",
        responses={
            400: {"description": "Body is not JSON"},
            401: {"description": "Missing or wrong bearer token"},
            413: {"description": "Body or batch too large"},
            422: {"description": "Invalid events (field paths in detail)"},
            429: {
                "description": "Token's rate limit exceeded or producer queue full: retry after Retry-After seconds"
            },
            503: {"description": "Kafka unavailable or slow: nothing acknowledged, retry"},
        },
        openapi_extra={
            "requestBody": {"required": True, "content": {"application/json": {"schema": body_schema}}}
        },
    )
    async def post_events(request: Request):
        status = await _handle(request)
        counter = by_code.get(status.status_code)
        if counter is None:
            counter = by_code[status.status_code] = metrics.http(status.status_code)
        counter.inc()
        return status

    async def _handle(request: Request) -> JSONResponse:
        auth = request.headers.get("authorization", "").encode()
        who = caller(auth)
        if who is None:
            return _problem(401, "missing or invalid bearer token", {"WWW-Authenticate": "Bearer"})
        bucket = buckets[who] if buckets else None
        if bucket is not None and (wait := bucket.wait(1)) > 0:  # before reading the body
            return _problem(429, "rate limit of this token exceeded; retry later", _retry_after(wait))
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > max_bytes:
            return _problem(413, f"request body over {max_bytes} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_bytes:
                return _problem(413, f"request body over {max_bytes} bytes")
        try:
            doc = json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            return _problem(400, f"body is not valid JSON: {exc}")
        prefix: tuple = ()
        if isinstance(doc, dict) and "events" in doc and "text" not in doc:
            if set(doc) != {"events"}:
                return _problem(422, [{"loc": ["body"], "msg": "a batch object has only the key 'events'"}])
            items, prefix = doc["events"], ("events",)
            if not isinstance(items, list):
                return _problem(422, [{"loc": ["body", "events"], "msg": "must be a list of events"}])
        elif isinstance(doc, list):
            items = doc
        elif isinstance(doc, dict):
            items = [doc]
        else:
            return _problem(422, [{"loc": ["body"], "msg": "expected an event object or a list of events"}])
        if not items:
            return _problem(422, [{"loc": ["body", *prefix], "msg": "no events"}])
        if len(items) > max_batch_size:
            return _problem(413, f"{len(items)} events in one request; at most {max_batch_size}")
        try:
            events = _EVENTS.validate_python(items)
        except ValidationError as exc:
            errs = []
            for e in exc.errors(include_url=False):
                loc = list(e["loc"])
                if len(items) == 1 and not isinstance(doc, list) and not prefix:
                    loc = loc[1:]
                errs.append({"loc": ["body", *prefix, *loc], "msg": e["msg"], "type": e["type"]})
            return _problem(422, errs)
        if publisher.brokers_down:
            return _problem(503, "Kafka is unavailable; nothing was accepted", {"Retry-After": "5"})
        if bucket is not None and (wait := bucket.take(len(events))) > 0:
            return _problem(
                429,
                f"rate limit of this token exceeded ({len(events)} events); retry later",
                _retry_after(wait),
            )
        if len(publisher.producer) + len(events) > queue_max_messages:
            return _problem(429, "ingest queue is full; retry later", {"Retry-After": "1"})
        # read from the platform (filtered ones included, as a streaming source counts them): what
        # StreamotionSourceSilent watches; a refused request is not counted, its retry is
        metrics.received.inc(len(events))

        now = utcnow()
        out: list[Event] = []
        for ev in events:
            # IngestEvent already enforced Event's constraints: construct without validating twice.
            created = ev.created_at
            if created is None:
                created = now
            elif created.tzinfo is None:
                created = created.replace(tzinfo=UTC)
            elif created.utcoffset():
                created = created.astimezone(UTC)
            event = Event.model_construct(
                id=ev.id,
                source=source,
                platform="http",
                channel=ev.channel,
                author=hash_author(ev.author) if ev.author else None,
                text=ev.text,
                lang=ev.lang,
                created_at=created,
                url=ev.url,
                ingested_at=now,
                schema_version=1,
            )
            kept, reason = publisher.filters.apply(event)
            if kept is None:
                metrics.filtered(reason or "filter").inc()
            else:
                out.append(kept)
        filtered = len(events) - len(out)
        if not out:
            return JSONResponse({"accepted": 0, "filtered": filtered}, status_code=202)
        pending = _Pending(asyncio.get_running_loop(), len(out))
        queued = 0
        try:
            for event in out:
                publisher.publish(event, on_delivery=pending, block=False, apply_filters=False)
                queued += 1
        except BufferError:
            # Some events may still reach Kafka: the client retries all (same ids, same keys).
            with pending.lock:
                pending.left -= len(out) - queued
                pending.errors.append("queue full")
                if pending.left == 0:
                    _resolve(pending.future)
            return _problem(429, "ingest queue is full; retry later", {"Retry-After": "1"})
        try:
            await asyncio.wait_for(asyncio.shield(pending.future), ack_timeout)
        except TimeoutError:
            return _problem(
                503, f"Kafka did not acknowledge within {ack_timeout:g}s; retry", {"Retry-After": "5"}
            )
        if pending.errors:
            return _problem(
                503,
                f"Kafka refused {len(pending.errors)} event(s): {pending.errors[0]}; retry",
                {"Retry-After": "5"},
            )
        return JSONResponse({"accepted": len(out), "filtered": filtered}, status_code=202)

    def openapi() -> dict:
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(
                title=app.title, version=app.version, description=app.description, routes=app.routes
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in (IngestEvent, Batch):
                doc = model.model_json_schema(ref_template="#/components/schemas/{model}")
                components.update(doc.pop("$defs", {}))
                components[model.__name__] = doc
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def build(pipeline, source_name: str, bootstrap: str | None = None, **kw) -> tuple[FastAPI, Publisher]:
    """The app and its publisher for one http source of a pipeline (token from $INGEST_TOKEN)."""
    from streamotion_ingest.context import find_source
    from streamotion_ingest.run import make_publisher

    source = find_source(pipeline, source_name)
    if source.type != "http" or source.http is None:
        raise ValueError(f"source {source_name} is not of type http")
    ack_timeout = float(kw.pop("ack_timeout", None) or os.environ.get(ACK_TIMEOUT_ENV, "10"))
    max_bytes = int(kw.pop("max_bytes", None) or os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_BYTES))
    token = kw.pop("token", None) or os.environ.get(TOKEN_ENV, "")
    rate = kw.pop("rate", None)
    rate = float(os.environ.get(RATE_ENV, DEFAULT_RATE)) if rate is None else float(rate)
    burst = kw.pop("burst", None) or float(os.environ.get(BURST_ENV, 0) or 0)
    clock = kw.pop("clock", time.monotonic)
    if not token:
        raise ValueError(f"the ingest token is not set: {TOKEN_ENV} (from the Secret's key 'token')")
    queue_max = 100_000
    publisher = make_publisher(
        pipeline,
        source_name,
        bootstrap,
        queue_max_messages=queue_max,
        message_timeout_ms=int(ack_timeout * 1000),
        linger_ms=2,
    )
    app = create_app(
        publisher,
        token=token,
        source=source.name,
        max_batch_size=source.http.max_batch_size,
        max_bytes=max_bytes,
        ack_timeout=ack_timeout,
        queue_max_messages=queue_max,
        rate=rate,
        burst=burst or None,
        clock=clock,
    )
    return app, publisher


def serve(
    pipeline,
    source_name: str,
    *,
    bootstrap: str | None = None,
    metrics_port: int | None = None,
    host: str = "0.0.0.0",
    port: int | None = None,
) -> int:
    """Serve until SIGTERM/SIGINT (uvicorn drains requests, then the producer flushes)."""
    import uvicorn

    from streamotion_ingest.context import find_source

    source = find_source(pipeline, source_name)
    app, _ = build(pipeline, source_name, bootstrap)
    if metrics_port:
        from streamotion_ingest.metrics import serve as serve_metrics

        serve_metrics(metrics_port)
    uvicorn.run(
        app,
        host=host,
        port=port or source.http.port,
        log_config=None,
        access_log=False,
        loop="auto",  # uvloop and httptools when installed
        http="auto",
        timeout_graceful_shutdown=30,
    )
    return 0

"""What a running source gets: its settings, a stop flag, metrics, backoff and platform URL overrides."""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from streamotion.api.models import Source, StreamPipeline
from streamotion_ingest import BOOTSTRAP_ENV, KAFKA_NAMESPACE_ENV
from streamotion_ingest.metrics import SourceMetrics

BACKOFF_SCALE_ENV = "STREAMOTION_BACKOFF_SCALE"  # multiply every backoff (tests: 0.01)


class Shutdown(BaseException):
    """Raised in the main thread on SIGTERM/SIGINT to leave blocking platform reads."""


@dataclass
class Context:
    pipeline: str
    source: Source
    metrics: SourceMetrics
    stop: threading.Event = field(default_factory=threading.Event)
    backoff_scale: float = field(default_factory=lambda: float(os.environ.get(BACKOFF_SCALE_ENV, "1")))
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("streamotion.ingest"))
    handled: int = 0  # payloads handed to the publisher so far
    busy: bool = False  # inside publish: a signal only sets stop, the loop ends after it
    # The cursors of this source's last records on the raw topic (set by run.pump; see resume.py).
    recover: Callable[[], list[str]] | None = None

    def last_cursors(self) -> list[str]:
        """Where this source was when its last events were published (before a restart); retried
        while Kafka cannot be read (until stopped: then none)."""
        from streamotion_ingest.resume import ResumeUnavailable

        if self.recover is None:
            return []
        backoff = self.backoff(1.0, 30.0)
        while not self.stop.is_set():
            try:
                cursors = self.recover()
            except ResumeUnavailable as exc:
                delay = backoff.next()
                self.log.warning(
                    "cannot read the raw topic yet; retrying",
                    extra={"error": str(exc), "in_s": round(delay, 3)},
                )
                self.wait(delay)
                continue
            if cursors:
                self.log.info("resuming from the raw topic", extra={"cursors": len(cursors)})
            return cursors
        return []

    def backoff(self, initial: float, maximum: float, *, linear: bool = False) -> Backoff:
        return Backoff(initial * self.backoff_scale, maximum * self.backoff_scale, linear=linear)

    def wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True when stopped."""
        return self.stop.wait(max(seconds, 0))


class Backoff:
    """Exponential (or linear) backoff with jitter, reset after a success."""

    def __init__(self, initial: float, maximum: float, *, linear: bool = False) -> None:
        self.initial, self.maximum, self.linear = initial, maximum, linear
        self.attempt = 0

    def next(self) -> float:
        self.attempt += 1
        delay = self.initial * self.attempt if self.linear else self.initial * 2 ** (self.attempt - 1)
        delay = min(delay, self.maximum)
        return delay * random.uniform(0.8, 1.0)

    def reset(self) -> None:
        self.attempt = 0


def find_source(p: StreamPipeline, name: str) -> Source:
    for s in p.spec.sources:
        if s.name == name:
            return s
    names = ", ".join(s.name for s in p.spec.sources)
    raise ValueError(f"pipeline {p.name} has no source named {name!r} (sources: {names})")


def bootstrap_servers(p: StreamPipeline, override: str | None = None) -> str:
    """--bootstrap, then $STREAMOTION_KAFKA_BOOTSTRAP, then spec.kafka.bootstrapServers, then Strimzi's Service."""
    if override:
        return override
    if os.environ.get(BOOTSTRAP_ENV):
        return os.environ[BOOTSTRAP_ENV]
    if p.spec.kafka.bootstrap_servers:
        return p.spec.kafka.bootstrap_servers
    ns = p.spec.kafka.namespace or os.environ.get(KAFKA_NAMESPACE_ENV) or p.namespace
    return f"{p.spec.kafka.cluster}-kafka-bootstrap.{ns}.svc:9092"

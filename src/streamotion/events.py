"""The event contract shared by every producer and the streaming job (schema version 1).

Producers publish :class:`Event` as JSON to the pipeline's raw topic with key ``source:platform:id``
(the event's identity, see :func:`event_key`); anything that cannot become a valid event goes to the
dead-letter topic as :class:`DeadLetter`.
``streamotion.events.json_schema()`` is the published JSON Schema (``docs/event.schema.json``).

Contract versions: producers write ``schema_version`` :data:`SCHEMA_VERSION`. Versions
:data:`MIN_READ_VERSION` to :data:`MAX_READ_VERSION` form one family: each only adds optional
fields to the one before, and every field of version 1 keeps its name, type and meaning (a change
that removes, renames or re-types a field starts a new family at ``MAX_READ_VERSION + 1``). The
streaming job reads the whole family with :func:`read_event`: it validates the fields it knows and
drops (and counts) the others, so a producer one version ahead is read, not dead-lettered; a version
outside the family, or a known field it cannot validate, is dead-lettered with the reason.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

SCHEMA_VERSION = 1  # what this code writes
MIN_READ_VERSION = 1  # the family the streaming job reads (see the module docstring)
MAX_READ_VERSION = 9
Platform = Literal["reddit", "mastodon", "bluesky", "x", "http", "replay", "cdc"]
AUTHOR_KEY_ENV = "STREAMOTION_AUTHOR_KEY"  # HMAC key for author hashing (a Secret in clusters)


def utcnow() -> datetime:
    return datetime.now(UTC)


class Event(BaseModel):
    """One piece of text from a platform, normalised."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=256, description="Stable and unique within the source.")
    source: str = Field(min_length=1, max_length=63, description="The pipeline's source name.")
    platform: Platform
    channel: str | None = Field(None, max_length=256, description="Subreddit, hashtag, app, ...")
    author: str | None = Field(
        None, max_length=128, description="Keyed hash of the handle, never the handle."
    )
    text: str = Field(min_length=1, max_length=100_000)
    lang: str | None = Field(None, max_length=16, description="ISO 639-1 code when known.")
    created_at: datetime = Field(description="Event time, UTC.")
    url: str | None = Field(None, max_length=2048)
    ingested_at: datetime = Field(default_factory=utcnow)
    schema_version: int = Field(
        SCHEMA_VERSION,
        ge=MIN_READ_VERSION,
        le=MAX_READ_VERSION,
        description=f"Contract version; readers accept {MIN_READ_VERSION} to {MAX_READ_VERSION} (additive changes only).",
    )

    @field_validator("created_at", "ingested_at")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @property
    def key(self) -> str:
        """The event's identity: ``source:platform:id`` (see :func:`event_key`)."""
        return event_key(self.source, self.platform, self.id)

    def to_json(self) -> bytes:
        return self.model_dump_json().encode()


class DeadLetter(BaseModel):
    """A payload that could not become (or be processed as) a valid event."""

    reason: str
    stage: Literal["producer", "job"]
    source: str | None = None
    payload: str  # the original payload, as text (undecodable bytes replaced)
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    failed_at: datetime = Field(default_factory=utcnow)


def event_key(source: str, platform: str, event_id: str) -> str:
    """Identity of an event: ``<source>:<platform>:<id>``, the Kafka message key and the sinks' event_id.

    Unique per pipeline source: two sources (two ``http`` endpoints, two replays of one data set)
    may send the same platform id without one hiding the other. Source names are DNS-1123 labels
    and platforms are fixed words, so neither holds ``:`` and the id is everything after the second
    one. The sinks keep the first row of each identity, so a re-sent event is stored once.
    """
    return f"{source}:{platform}:{event_id}"


class UnreadableVersion(ValueError):
    """A payload of a contract version outside the family this code reads."""


def read_event(doc: dict[str, Any]) -> tuple[Event, list[str]]:
    """A consumer's reading of one decoded payload: ``(event, names of the fields dropped)``.

    Fields this version of the contract does not know (a newer producer's additions) are dropped,
    not refused; raises :class:`UnreadableVersion` for a ``schema_version`` outside
    ``MIN_READ_VERSION..MAX_READ_VERSION`` and pydantic's ``ValidationError`` for a known field
    that does not validate."""
    version = doc.get("schema_version", SCHEMA_VERSION)
    readable = MIN_READ_VERSION <= version <= MAX_READ_VERSION if isinstance(version, int) else True
    if not readable and not isinstance(version, bool):
        raise UnreadableVersion(
            f"schema_version {version} is not readable by this job (it reads contract versions "
            f"{MIN_READ_VERSION} to {MAX_READ_VERSION}): upgrade the job, or re-publish as a version it reads"
        )
    known = Event.model_fields
    dropped = sorted(str(k) for k in doc if k not in known)
    if dropped:
        doc = {k: v for k, v in doc.items() if k in known}
    return Event.model_validate(doc), dropped


def hash_author(handle: Any, key: str | bytes | None = None) -> str | None:
    """A keyed, stable pseudonym for an author handle (HMAC-SHA256, 32 hex chars).

    Any value is hashed as its text (a platform may send a number); lone surrogates from JSON
    escapes are hashed as they are, never raise."""
    if handle is None or handle == "":
        return None
    if key is None:
        key = os.environ.get(AUTHOR_KEY_ENV, "streamotion-dev-author-key")
    if isinstance(key, str):
        key = key.encode()
    text = str(handle).strip().lower().encode("utf-8", "surrogatepass")
    return hmac.new(key, text, hashlib.sha256).hexdigest()[:32]


def json_schema() -> dict[str, Any]:
    schema = Event.model_json_schema()
    schema["$id"] = f"https://streamotion.io/schemas/event/v{SCHEMA_VERSION}.json"
    return schema

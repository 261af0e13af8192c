"""Change data capture (``type: cdc``): Debezium's PostgreSQL change events -> contract events.

One place for everything the cluster and ``streamotion run --local`` share: the Debezium connector
configuration a ``cdc`` source runs with (:func:`connector_config`), the topics it writes
(:func:`table_topic`) and the mapping of one change event onto the event contract
(:func:`map_change`), which the cdc producer (``streamotion_ingest.cdc``, the same process in a
cluster and on one machine) applies before it publishes to the raw topic like every other source.

The envelope (Debezium 3.6, ``io.debezium.data.Envelope``): ``{"before", "after", "op", "source",
"ts_ms"}`` with ``op`` one of ``r`` (snapshot read), ``c`` (insert), ``u`` (update), ``d`` (delete),
``t`` (truncate), ``m`` (message). The connector is pinned to Kafka's JSON converter WITHOUT schemas
(``value.converter.schemas.enable=false``); a ``{"schema", "payload"}`` document (the converter with
schemas) is read too. Temporal columns are pinned to ``time.precision.mode=connect`` (a ``timestamp``
is epoch milliseconds; a ``timestamptz`` an ISO-8601 string) and decimals to strings.

Identity and versions: an event's id is ``<schema>.<table>:<row id>:<text version>``, the text
version a keyed hash of the mapped text. Debezium delivers at least once (a restarted connector
resends changes after its last committed offset; an interrupted snapshot starts again), and every
resend of a change maps to the same id, so the sinks, which keep the first row of an identity, store
it once. An update that changes the text is a new version: a new event, classified again; an update
that leaves the text as it was maps to the id already stored (nothing new). A text changed back to
an earlier version of the same row is that earlier event (already stored).

Deletes, truncates, messages and tombstones are not events (:class:`Skipped`); a change event that
cannot be read (not JSON, no envelope, a table not in the spec, a NULL id or text) is
:class:`Unreadable` with the reason, for the dead-letter topic.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from streamotion.api.models import CdcSource, CdcTable, Source, StreamPipeline
from streamotion.events import AUTHOR_KEY_ENV, Event, hash_author

DEBEZIUM_VERSION = "3.6.1.Final"
PLUGIN_URL = (
    "https://repo1.maven.org/maven2/io/debezium/debezium-connector-postgres/"
    f"{DEBEZIUM_VERSION}/debezium-connector-postgres-{DEBEZIUM_VERSION}-plugin.tar.gz"
)
PLUGIN_SHA512 = (
    "774f6854a6c1c9a7ad3bdb6ddd367e9479a0b80e511ea27fc361320a955f9bf5"
    "7a72393ff0e045b868b63589e7e16c27266cda296d9b1419bb071e914ee4d212"
)
CONNECTOR_CLASS = "io.debezium.connector.postgresql.PostgresConnector"
JSON_CONVERTER = "org.apache.kafka.connect.json.JsonConverter"
INSERT_OPS = frozenset({"c", "r"})  # a snapshot read counts as an insert
UPDATE_OPS = frozenset({"u"})
SKIPPED_OPS = frozenset({"d", "t", "m"})
MAX_ROW_ID = 120  # longer row ids are hashed (an event id is at most 256 characters)


@dataclass(frozen=True)
class Unreadable:
    """A change event that cannot become an event: it goes to the dead-letter topic with ``reason``."""

    reason: str


@dataclass(frozen=True)
class Skipped:
    """A change that is, by design, not an event: ``why`` is tombstone, delete, truncate, message or
    operation (an insert or update not in ``spec.cdc.operations``)."""

    why: str


# ------------------------------------------------------------------------- names and config
TOPIC_ROOT = "streamotion-cdc"
"""Every change topic starts with ``streamotion-cdc.``, a prefix no pipeline topic has (those start
with ``streamotion.``): Kafka Connect's identity may write and create under it and nowhere else
(streamotion.security.acls.connect_acls)."""


def topic_prefix(p: StreamPipeline, source: str) -> str:
    """Debezium's ``topic.prefix``: unique per pipeline source (letters, digits, ``.``, ``-``), and
    no source's prefix + ``.`` starts another's (neither a namespace, a pipeline nor a source name
    has a ``.``): the cdc producer's Read ACL is this prefix."""
    return f"{TOPIC_ROOT}.{p.namespace}.{p.name}.{source}"


def bridge_group(p: StreamPipeline, source: str) -> str:
    """The consumer group the cdc producer reads its change topics in (its Read ACL is this group)."""
    return f"streamotion.{p.namespace}.{p.name}.{source}.cdc"


def table_topic(p: StreamPipeline, source: str, table: str) -> str:
    """The topic Debezium writes the changes of ``table`` (schema.table) to: ``<prefix>.<schema>.<table>``."""
    return f"{topic_prefix(p, source)}.{table}"


def source_topics(p: StreamPipeline, s: Source) -> dict[str, CdcTable]:
    """Topic -> the table it carries, for every table of the cdc source ``s``."""
    assert s.cdc is not None
    return {table_topic(p, s.name, t.name): t for t in s.cdc.tables}


def slot_name(p: StreamPipeline, source: str) -> str:
    """The replication slot and publication name: unique per pipeline source, a valid PostgreSQL
    slot name (lower-case letters, digits and ``_``, at most 63)."""
    digest = hashlib.sha256(f"{p.namespace}/{p.name}/{source}".encode()).hexdigest()[:6]
    return re.sub(r"[^a-z0-9_]", "_", f"so_{p.name}_{source}_{digest}")[:63]


def connector_name(p: StreamPipeline, source: str) -> str:
    """The KafkaConnector (and Connect connector) name: unique per namespace, pipeline and source."""
    digest = hashlib.sha256(f"{p.namespace}/{p.name}".encode()).hexdigest()[:6]
    return f"{p.name}-cdc-{source}-{digest}"


def connector_config(
    p: StreamPipeline,
    s: Source,
    *,
    user: str,
    password: str,
    host: str | None = None,
    port: int | None = None,
) -> dict[str, str]:
    """Debezium's PostgreSQL connector configuration of cdc source ``s`` (as Connect's REST API and
    Strimzi's ``KafkaConnector.spec.config`` take it). ``user`` and ``password`` are the values, or
    config-provider references (``${secrets:ns/name:key}``) in a cluster."""
    cdc: CdcSource = s.cdc  # type: ignore[assignment]
    slot = slot_name(p, s.name)
    return {
        "connector.class": CONNECTOR_CLASS,
        "tasks.max": "1",
        "plugin.name": "pgoutput",
        "database.hostname": host or cdc.host,
        "database.port": str(port or cdc.port),
        "database.dbname": cdc.database,
        "database.user": user,
        "database.password": password,
        "database.sslmode": cdc.ssl_mode,
        "topic.prefix": topic_prefix(p, s.name),
        "table.include.list": ",".join(re.escape(t.name) for t in cdc.tables),
        "slot.name": slot,
        "publication.name": slot,
        "publication.autocreate.mode": "filtered",
        "snapshot.mode": "initial" if cdc.start_from == "snapshot" else "no_data",
        "time.precision.mode": "connect",
        "decimal.handling.mode": "string",
        "tombstones.on.delete": "false",
        "key.converter": JSON_CONVERTER,
        "key.converter.schemas.enable": "false",
        "value.converter": JSON_CONVERTER,
        "value.converter.schemas.enable": "false",
        "topic.creation.default.replication.factor": "-1",
        "topic.creation.default.partitions": "-1",
    }


# ---------------------------------------------------------------------------------- mapping
def text_version(text: str, key: str | bytes | None = None) -> str:
    """A keyed, stable hash of a text (16 hex characters): the version part of a cdc event's id."""
    if key is None:
        key = os.environ.get(AUTHOR_KEY_ENV, "streamotion-dev-author-key")
    if isinstance(key, str):
        key = key.encode()
    return hmac.new(key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()[:16]


def _row_id(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
    if len(text) > MAX_ROW_ID or ":" in text:
        return "h" + hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]
    return text


def _time(value: Any) -> datetime | None:
    """A column value as Debezium writes it with time.precision.mode=connect: epoch milliseconds
    (``timestamp``, ``date`` as days is refused), or an ISO-8601 string (``timestamptz``)."""
    if isinstance(value, bool):
        raise ValueError(f"not a time: {value!r}")
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value / 1000, UTC)
    if isinstance(value, str):
        dt = datetime.fromisoformat(value.replace("Z", "+00:00") if value.endswith("Z") else value)
        return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)
    raise ValueError(f"not a time: {type(value).__name__}")


def _scalar_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    return None


def table_of(doc: dict[str, Any], topic: str | None, prefix: str | None) -> str | None:
    """``schema.table`` of a change: from its ``source`` block, else from the topic name."""
    src = doc.get("source")
    if isinstance(src, dict) and isinstance(src.get("schema"), str) and isinstance(src.get("table"), str):
        return f"{src['schema']}.{src['table']}"
    if topic and prefix and topic.startswith(prefix + "."):
        return topic[len(prefix) + 1 :]
    return None


def map_change(
    value: bytes | str | None,
    *,
    source: Source,
    topic: str | None = None,
    prefix: str | None = None,
    key: str | bytes | None = None,
) -> Event | Unreadable | Skipped:
    """One Kafka record of a Debezium topic -> the contract event, an :class:`Unreadable` change
    (dead letter, with the reason) or :class:`Skipped` (not an event). Never raises."""
    try:
        return _map(value, source, topic, prefix, key)
    except Exception as exc:  # bad input never crashes the producer
        return Unreadable(f"unexpected error while mapping the change event: {exc!r}")


def _map(value, source: Source, topic, prefix, key) -> Event | Unreadable | Skipped:
    cdc = source.cdc
    if cdc is None:
        return Unreadable(f"source {source.name} is not a cdc source")
    if value is None:
        return Skipped("tombstone")
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as exc:
            return Unreadable(f"change event not UTF-8: {exc}")
    try:
        doc = json.loads(value)
    except ValueError as exc:
        return Unreadable(f"change event not JSON: {exc}")
    if doc is None:
        return Skipped("tombstone")
    if isinstance(doc, dict) and set(doc) == {"schema", "payload"}:  # the JSON converter with schemas
        doc = doc["payload"]
        if doc is None:
            return Skipped("tombstone")
    if not isinstance(doc, dict):
        return Unreadable(f"change event not a JSON object but {type(doc).__name__}")
    op = doc.get("op")
    if not isinstance(op, str) or op not in INSERT_OPS | UPDATE_OPS | SKIPPED_OPS:
        return Unreadable(f"not a Debezium change event: op is {op!r}, not one of c, r, u, d, t, m")
    if op in SKIPPED_OPS:
        return Skipped({"d": "delete", "t": "truncate", "m": "message"}[op])
    wanted = "insert" if op in INSERT_OPS else "update"
    if wanted not in cdc.operations:
        return Skipped("operation")  # not in spec.cdc.operations
    table = table_of(doc, topic, prefix)
    mapping = next((t for t in cdc.tables if t.name == table), None)
    if mapping is None:
        return Unreadable(f"change of table {table!r}, which is not in spec.cdc.tables")
    after = doc.get("after")
    if not isinstance(after, dict):
        return Unreadable(f"{table}: change event (op {op}) without an 'after' row")
    row_id = after.get(mapping.id_column)
    if row_id is None or row_id == "":
        return Unreadable(f"{table}: id column {mapping.id_column!r} is missing or NULL")
    text = _scalar_text(after.get(mapping.text_column))
    if text is None:
        return Unreadable(f"{table}: text column {mapping.text_column!r} is missing, NULL or not text")
    raw_time = after.get(mapping.time_column)
    if raw_time is None:
        src = doc.get("source") if isinstance(doc.get("source"), dict) else {}
        raw_time = src.get("ts_ms") if src.get("ts_ms") is not None else doc.get("ts_ms")
    try:
        created_at = _time(raw_time)
    except (ValueError, TypeError, OverflowError, OSError) as exc:
        return Unreadable(f"{table}: time column {mapping.time_column!r}: {exc}")
    if created_at is None:
        return Unreadable(f"{table}: time column {mapping.time_column!r} is NULL and the change has no ts_ms")
    author = _scalar_text(after.get(mapping.author_column)) if mapping.author_column else None
    lang = _scalar_text(after.get(mapping.language_column)) if mapping.language_column else None
    lang = lang.strip().lower() if lang and len(lang.strip()) <= 16 and lang.strip() else None
    channel = _scalar_text(after.get(mapping.channel_column)) if mapping.channel_column else None
    channel = (channel[:256] or None) if channel is not None else mapping.name.split(".", 1)[1]
    try:
        return Event(
            id=f"{mapping.name}:{_row_id(row_id)}:{text_version(text, key)}",
            source=source.name,
            platform="cdc",
            channel=channel,
            author=hash_author(author),
            text=text,
            lang=lang,
            created_at=created_at,
        )
    except ValidationError as exc:
        parts = [f"{'.'.join(str(x) for x in e['loc']) or '(event)'}: {e['msg']}" for e in exc.errors()[:5]]
        return Unreadable(f"{table}: invalid event: " + "; ".join(parts))

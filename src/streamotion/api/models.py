"""The StreamPipeline API (``streamotion.io/v1alpha2``; ``v1alpha1`` converted): the single source of truth.

Everything else derives from these pydantic models: the CRD (``streamotion crd``), the
CLI's validation (``streamotion validate``), the API reference in ``docs/api.md`` and the
typed objects the operator, producers and streaming job work with.

Versions: the models describe the current version (:data:`VERSION`, the CRD's storage version);
an older served version differs from it only by the fields listed in :data:`CHANGES` (each with
its old form as a pydantic field and the value mapping both ways). ``streamotion.api.conversion``
derives the older version's schema and converts objects from that list alone, so a field added
here needs no conversion code.

Cross-field rules are declared once, as :class:`Rule`: a CEL expression the API server
enforces (``x-kubernetes-validations``) and the equivalent Python check the CLI runs.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "streamotion.io"
VERSION = "v1alpha2"
API_VERSION = f"{GROUP}/{VERSION}"
OLD_VERSIONS = ("v1alpha1",)
"""Older versions the CRD still serves (converted by the operator's webhook); see :data:`CHANGES`."""
KIND = "StreamPipeline"
PLURAL = "streampipelines"
SINGULAR = "streampipeline"
SHORT_NAMES = ["sp"]

# Longest pipeline name: every derived child must stay within its own limit
# (RayService <= 47 characters, DNS-1035 for SparkApplication and Services).
MAX_PIPELINE_NAME = 30
MAX_SOURCE_NAME = 20

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
DNS1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
JVM_MEMORY_PATTERN = r"^[0-9]+[kmgt]$"

SourceType = Literal["reddit", "mastodon", "bluesky", "x", "http", "replay", "cdc"]
SOURCE_TYPES: tuple[str, ...] = SourceType.__args__  # type: ignore[attr-defined]
SinkType = Literal["postgres", "bigquery", "lake"]
SINK_TYPES: tuple[str, ...] = SinkType.__args__  # type: ignore[attr-defined]
Phase = Literal["Pending", "Provisioning", "Running", "Degraded", "Suspended", "Failed"]
CONDITION_TYPES = (
    "Ready",
    "TopicsReady",
    "SourcesReady",
    "ProcessingReady",
    "ModelReady",
    "SinksReady",
    "DashboardsReady",
)

SecretName = Annotated[
    str,
    Field(
        min_length=1,
        max_length=253,
        pattern=DNS1123_SUBDOMAIN,
    ),
]
# no description of its own: each field's docstring is its description (pydantic keeps an Annotated
# description over the attribute docstring, and kubectl explain would show only that)
Duration = Annotated[str, Field(max_length=32, pattern=DURATION_PATTERN)]


@dataclass(frozen=True)
class Rule:
    """A cross-field rule: CEL for the API server, the same check in Python for the CLI."""

    cel: str
    message: str
    check: Callable[[dict[str, Any]], bool]
    field_path: str | None = None

    def schema(self) -> dict[str, str]:
        out = {"rule": self.cel, "message": self.message}
        if self.field_path:
            out["fieldPath"] = self.field_path
        return out


def exactly_block_of_type(block: str) -> Rule:
    """``block`` must be present exactly when ``type`` names it."""
    return Rule(
        cel=f"has(self.{block}) == (self.type == '{block}')",
        message=f"the '{block}' block is required when type is '{block}' and not allowed otherwise",
        field_path=f".{block}",
        check=lambda obj: (block in obj) == (obj.get("type") == block),
    )


class ApiModel(BaseModel):
    """Base: camelCase field names, unknown fields refused."""

    model_config = ConfigDict(
        extra="forbid",
        alias_generator=to_camel,
        populate_by_name=True,
        use_attribute_docstrings=True,
    )
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema, handler):  # type: ignore[override]
        schema = handler(core_schema)
        target = handler.resolve_ref_schema(schema)
        if cls.cel_rules:
            target["x-kubernetes-validations"] = [r.schema() for r in cls.cel_rules]
        return schema


def _nested(model: type[ApiModel]) -> Any:
    """A nested object whose schema default is the object with all its own defaults filled in."""
    default = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return Field(default_factory=model, json_schema_extra={"default": default})


# ---------------------------------------------------------------------------------------- kafka
def retention_hours(value: str) -> int:
    """Hours of a retention such as ``168h`` (the pattern is checked separately)."""
    return int(value.removesuffix("h"))


class KafkaSpec(ApiModel):
    """The Strimzi Kafka cluster that carries the pipeline's topics."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="duration(self.retention) <= duration('87600h')",
            message="retention must be at most 87600h (10 years)",
            field_path=".retention",
            check=lambda o: retention_hours(o.get("retention", "168h")) <= 87600,
        ),
    )

    cluster: str = Field("streamotion", min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Name of the Strimzi Kafka resource."""
    namespace: str | None = Field(None, min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Namespace of the Kafka resource; defaults to the operator's configured Kafka namespace."""
    partitions: int = Field(3, ge=1, le=1000)
    """Partitions of the raw-events topic. Can grow, never shrink (Kafka cannot remove partitions)."""
    replicas: int | None = Field(None, ge=1, le=10)
    """Replication factor of every topic (default: the operator's); min.insync.replicas is min(2, this)."""
    retention: str = Field("168h", min_length=2, max_length=6, pattern=r"^[1-9][0-9]{0,4}h$")
    """How long raw events and dead letters are kept (the window for backfills): whole hours such as
    168h (7 days) or 720h, at most 87600h. In v1alpha1 this was retentionHours, a number of hours."""
    bootstrap_servers: str | None = Field(None, max_length=1024)
    """Bootstrap address override (host:port,...). Defaults to the Strimzi cluster's listener that
    matches authentication (9093 tls, 9094 scram-sha-512, 9092 none)."""
    authentication: Literal["tls", "scram-sha-512", "none"] = "tls"
    """How the pipeline's components prove who they are to Kafka. tls: mutual TLS, a client
    certificate per component; scram-sha-512: a password per component, over TLS. With either, the
    operator creates a Strimzi KafkaUser per component (each producer, the job) whose ACLs allow only
    its own pipeline's topics, and copies its credentials into this namespace. none: the plaintext
    listener, no identity and no ACLs (a demo on a cluster whose chart value kafka.plainListener is on)."""

    @property
    def retention_hours(self) -> int:
        return retention_hours(self.retention)


# -------------------------------------------------------------------------------------- sources
class RedditSource(ApiModel):
    """Comment stream over subreddits, through PRAW."""

    subreddits: list[Annotated[str, Field(min_length=2, max_length=64, pattern=r"^[A-Za-z0-9_]+$")]] = Field(
        min_length=1, max_length=100
    )
    """Subreddits to stream comments from (without the r/ prefix)."""
    credentials_secret: SecretName
    """Secret with keys client_id, client_secret and user_agent (a Reddit "script" app)."""


class MastodonSource(ApiModel):
    """A Mastodon instance's streaming timeline, through Mastodon.py."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.timeline != 'hashtag' || (has(self.hashtags) && size(self.hashtags) > 0)",
            message="timeline 'hashtag' needs at least one entry in hashtags",
            field_path=".hashtags",
            check=lambda o: o.get("timeline") != "hashtag" or len(o.get("hashtags") or []) > 0,
        ),
    )
    instance: str = Field("https://mastodon.social", max_length=256, pattern=r"^https?://[^\s/]+/?$")
    """Base URL of the Mastodon instance."""
    timeline: Literal["public", "local", "hashtag"] = "public"
    """Which timeline to stream."""
    hashtags: list[Annotated[str, Field(min_length=1, max_length=100, pattern=r"^[^#\s]+$")]] = Field(
        default_factory=list, max_length=20
    )
    """Hashtags (without #) for the hashtag timeline; one stream each."""
    access_token_secret: SecretName | None = None
    """Secret with key access_token; many instances require one for streaming."""


class BlueskySource(ApiModel):
    """Bluesky posts through a public Jetstream WebSocket (no credentials)."""

    endpoint: str = Field(
        "wss://jetstream2.us-east.bsky.network/subscribe", max_length=512, pattern=r"^wss?://\S+$"
    )
    """Jetstream subscribe endpoint."""


class XSource(ApiModel):
    """X (Twitter) API v2 filtered stream."""

    rules: list[Annotated[str, Field(min_length=1, max_length=1024)]] = Field(min_length=1, max_length=25)
    """Filtered-stream rules, in X's rule syntax (for example "covid lang:fr")."""
    bearer_token_secret: SecretName
    """Secret with key bearer_token."""


class AllowedSource(ApiModel):
    """Who may call an HTTP ingest service (a NetworkPolicy peer): pods of a namespace, or addresses."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.__namespace__) != has(self.cidr)",
            message="set exactly one of namespace or cidr",
            check=lambda o: ("namespace" in o) != ("cidr" in o),
        ),
        Rule(
            cel="!has(self.podLabels) || has(self.__namespace__)",
            message="podLabels narrows a namespace: it needs namespace",
            field_path=".podLabels",
            check=lambda o: "podLabels" not in o or "namespace" in o,
        ),
    )
    namespace: str | None = Field(None, min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Pods of this namespace (for example your ingress controller's)."""
    pod_labels: dict[str, str] | None = Field(None, max_length=20)
    """Only the pods of that namespace with these labels."""
    cidr: str | None = Field(None, max_length=43, pattern=r"^[0-9a-fA-F.:]+/[0-9]{1,3}$")
    """Addresses in this CIDR (0.0.0.0/0: anywhere, for a LoadBalancer or NodePort service)."""


class HttpSource(ApiModel):
    """An HTTP ingest endpoint (POST /v1/events) for your own applications."""

    port: int = Field(8080, ge=1024, le=65535)
    """Container port of the ingest service."""
    token_secret: SecretName
    """Secret with key token: clients send it as a bearer token."""
    max_batch_size: int = Field(1000, ge=1, le=1000)
    """Most events one request may carry."""
    allowed_sources: list[AllowedSource] = Field(
        default_factory=lambda: [AllowedSource(namespace="ingress-nginx")],
        min_length=1,
        max_length=20,
        json_schema_extra={"default": [{"namespace": "ingress-nginx"}]},
    )
    """Who may reach the ingest port (the pipeline's NetworkPolicy); everything else is refused.
    Default: the ingress-nginx namespace."""


class ReplaySource(ApiModel):
    """Replays a labelled data set at a fixed rate: demos, load tests, backtests."""

    dataset: str = Field("goemotions", min_length=1, max_length=2048)
    """"goemotions" (the sample bundled in the image), or a URL or path of a JSONL or GoEmotions-style TSV file."""
    rate_per_second: float = Field(20, gt=0, le=1_000_000)
    """Events per second."""
    loop: bool = True
    """Start again at the end of the data set."""
    limit: int | None = Field(None, ge=1)
    """Stop after this many events (default: no limit)."""


PG_IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_$]*$"
PgIdentifier = Annotated[str, Field(min_length=1, max_length=63, pattern=PG_IDENTIFIER)]


class CdcTable(ApiModel):
    """One captured table and how its columns map onto the event contract."""

    name: str = Field(
        min_length=3, max_length=127, pattern=r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$"
    )
    """The table as schema.table (for example public.reviews); unquoted PostgreSQL identifiers."""
    id_column: PgIdentifier
    """Column holding the row's stable id (usually the primary key); part of each event's id."""
    text_column: PgIdentifier
    """Column holding the text to classify."""
    time_column: PgIdentifier
    """Column holding the event time (timestamptz or timestamp, read as UTC); when it is NULL the
    change's commit time is used."""
    author_column: PgIdentifier | None = None
    """Column holding the author; stored as a keyed hash, never as is."""
    language_column: PgIdentifier | None = None
    """Column holding an ISO 639-1 language code."""
    channel_column: PgIdentifier | None = None
    """Column holding the channel (product, app, queue...); default: the table's name."""


class CdcSource(ApiModel):
    """Change data capture from PostgreSQL: Debezium's connector (Kafka Connect) reads the tables'
    logical replication stream; inserted and updated rows become events."""

    host: str = Field(min_length=1, max_length=253)
    """Database host, as Kafka Connect reaches it."""
    port: int = Field(5432, ge=1, le=65535)
    database: str = Field(min_length=1, max_length=63)
    """Database holding the tables; it needs wal_level=logical."""
    credentials_secret: SecretName
    """Secret with keys username and password of a role with the REPLICATION attribute and SELECT
    on the tables (a CloudNativePG app secret works as is); read by Kafka Connect, never copied."""
    tables: list[CdcTable] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Tables to capture, 1 to 32, names unique."""
    operations: list[Literal["insert", "update"]] = Field(
        default_factory=lambda: ["insert", "update"],
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set", "default": ["insert", "update"]},
    )
    """Which changes become events: insert (with the snapshot's rows), update (a changed text is a
    new version of the event). Deletes never do."""
    start_from: Literal["snapshot", "new"] = "snapshot"
    """snapshot: the rows already in the tables, then every change; new: only changes from now on."""
    ssl_mode: Literal["disable", "prefer", "require", "verify-ca", "verify-full"] = "prefer"
    """TLS to the database (Debezium's database.sslmode)."""


class Source(ApiModel):
    """One input stream; it runs as its own producer Deployment."""

    cel_rules: ClassVar[tuple[Rule, ...]] = tuple(exactly_block_of_type(t) for t in SOURCE_TYPES)
    name: str = Field(min_length=1, max_length=MAX_SOURCE_NAME, pattern=DNS1123_LABEL)
    """Unique name within the pipeline (DNS-1123 label); it names the producer and tags each event."""
    type: SourceType
    """Platform; the block of the same name carries its settings."""
    replicas: int = Field(1, ge=0, le=10)
    """Producer replicas (0 pauses this source)."""
    languages: list[Annotated[str, Field(pattern=r"^[a-z]{2,3}$")]] = Field(
        default_factory=list, max_length=50
    )
    """Keep only events in these ISO 639-1 languages (empty: all)."""
    keywords: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(
        default_factory=list, max_length=100
    )
    """Keep only events containing one of these words (case-insensitive; empty: all)."""
    redact_pii: bool = Field(False, alias="redactPII")
    """Redact e-mail addresses, phone numbers, @handles and URL tokens before publishing."""
    reddit: RedditSource | None = None
    mastodon: MastodonSource | None = None
    bluesky: BlueskySource | None = None
    x: XSource | None = None
    http: HttpSource | None = None
    replay: ReplaySource | None = None
    cdc: CdcSource | None = None


# ----------------------------------------------------------------------------------- processing
class ExecutorSpec(ApiModel):
    """Spark executors."""

    instances: int = Field(1, ge=1, le=100)
    cores: int = Field(1, ge=1, le=64)
    memory: str = Field("2g", pattern=JVM_MEMORY_PATTERN)
    """JVM memory such as 2g or 512m."""


class DriverSpec(ApiModel):
    """Spark driver."""

    cores: int = Field(1, ge=1, le=64)
    memory: str = Field("1g", pattern=JVM_MEMORY_PATTERN)


class CheckpointSpec(ApiModel):
    """Where the streaming job keeps its checkpoint (offsets and state)."""

    size: str = Field("1Gi", pattern=QUANTITY_PATTERN)
    """Size of the PersistentVolumeClaim the operator creates (ignored with uri)."""
    storage_class: str = Field("", max_length=253)
    """StorageClass of that claim ("" for the cluster's default)."""
    uri: str | None = Field(None, max_length=1024, pattern=r"^[a-z][a-z0-9+.-]*://\S+$")
    """An object-store or HDFS URI (gs://bucket/path); no claim is created then."""


def positive_duration(field: str) -> Rule:
    """``field`` (a Duration) must be longer than zero and fit a Go ``time.Duration`` (CEL's ``duration()``)."""
    return Rule(
        cel=f"duration(self.{field}) > duration('0s')",
        message=f"{field} must be longer than 0s (and at most 2562047h)",
        field_path=f".{field}",
        check=lambda o: 0 < duration_seconds(o.get(field, "1s")) <= MAX_GO_DURATION_S,
    )


MAX_GO_DURATION_S = (2**63 - 1) / 1e9  # about 292 years: longer is an error for CEL's duration()
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration_seconds(value: str) -> float:
    """Seconds of a Duration (``1h30m``, ``500ms``); the pattern is checked separately."""
    return sum(
        float(n) * _DURATION_UNITS[u] for n, u in re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", value)
    )


class ProcessingSpec(ApiModel):
    """The Spark Structured Streaming job."""

    cel_rules: ClassVar[tuple[Rule, ...]] = tuple(
        positive_duration(f) for f in ("window", "watermark", "maxFutureSkew")
    )
    trigger: Duration = "5s"
    """Micro-batch interval."""
    window: Duration = "1m"
    """Tumbling window of the aggregates (longer than 0s)."""
    watermark: Duration = "2m"
    """How late an event may arrive and still count in its window's aggregates (longer than 0s)."""
    max_future_skew: Duration = "10m"
    """How far an event's created_at may be ahead of its ingested_at (wrong clocks); a later one is
    dead-lettered with the reason, so it never moves the watermark. Longer than 0s."""
    max_events_per_trigger: int = Field(5000, ge=1, le=10_000_000)
    """Most events one micro-batch reads."""
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    """Where a new job starts reading (a restarted job always resumes from its checkpoint)."""
    sentiment_threshold: float = Field(0.15, ge=0, le=1)
    """Sentiment follows the labels a result chose (joy positive; anger, disgust, fear, sadness negative); a
    mixed set is positive when P(joy) minus P(the negative ones) exceeds this, negative below its negative."""
    driver: DriverSpec = _nested(DriverSpec)
    executors: ExecutorSpec = _nested(ExecutorSpec)
    checkpoint: CheckpointSpec = _nested(CheckpointSpec)


# ---------------------------------------------------------------------------------------- model
class ModelReplicas(ApiModel):
    """Autoscaling bounds of the model deployment."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.min <= self.max",
            message="min must not exceed max",
            check=lambda o: o.get("min", 1) <= o.get("max", 2),
        ),
    )
    min: int = Field(1, ge=0, le=100)
    max: int = Field(2, ge=1, le=100)
    target_texts_per_replica: int = Field(0, ge=0, le=1_000_000)
    """Texts in flight (queued or in the model) per replica that autoscaling aims for; 0: 4 x maxBatchSize."""


class ModelSpec(ApiModel):
    """The emotion classifier, served by Ray Serve."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="self.arch != 'linear' || (self.device == 'cpu' && self.backend == 'torch')",
            message="a linear model runs on CPUs: arch 'linear' needs device 'cpu' and backend 'torch' (the defaults)",
            field_path=".arch",
            check=lambda o: (
                o.get("arch", "transformer") != "linear"
                or (o.get("device", "cpu") == "cpu" and o.get("backend", "torch") == "torch")
            ),
        ),
    )
    name: str = Field("j-hartmann/emotion-english-distilroberta-base", min_length=1, max_length=512)
    """Hugging Face model id, or a path inside the model image."""
    arch: Literal["transformer", "linear"] = "transformer"
    """transformer: a Hugging Face sequence-classification model; linear: a directory written by
    `streamotion model train --arch linear` (TF-IDF + logistic regression: CPU only, tens of thousands of
    texts/s per core, lower macro-F1). The model service refuses a model that is not this arch."""
    taxonomy: Literal["ekman", "original"] = "ekman"
    """Canonical labels: Ekman's 7, or the 28 GoEmotions labels."""
    replicas: ModelReplicas = _nested(ModelReplicas)
    max_batch_size: int = Field(64, ge=1, le=1024)
    """Largest batch the server forms."""
    batch_wait_ms: int = Field(10, ge=0, le=10_000)
    """How long a batch waits to fill, in milliseconds."""
    max_length: int = Field(128, ge=8, le=512)
    """Longer texts are truncated to this many tokens."""
    device: Literal["cpu", "gpu"] = "cpu"
    """gpu requests one nvidia.com/gpu per replica."""
    backend: Literal["torch", "onnx"] = "torch"
    """Inference runtime."""
    max_queued_requests: int = Field(64, ge=1, le=100_000)
    """Requests the model service queues for busy replicas; past it the service answers 503 at once and the
    job's client backs off and retries (back-pressure)."""


# ---------------------------------------------------------------------------------------- sinks
class PostgresSink(ApiModel):
    """PostgreSQL tables and views."""

    host: str = Field(min_length=1, max_length=253)
    port: int = Field(5432, ge=1, le=65535)
    database: str = Field("streamotion", min_length=1, max_length=63)
    schema_: str = Field("public", alias="schema", min_length=1, max_length=63, pattern=r"^[a-z_][a-z0-9_]*$")
    """Schema of the tables (created if missing)."""
    credentials_secret: SecretName
    """Secret with keys username and password (a CloudNativePG app secret works as is)."""
    ssl_mode: Literal["disable", "allow", "prefer", "require", "verify-ca", "verify-full"] = "prefer"


class BigQuerySink(ApiModel):
    """BigQuery tables, day-partitioned on event time."""

    project: str = Field(min_length=1, max_length=128)
    dataset: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z0-9_]+$")
    location: str = Field("US", min_length=1, max_length=64)
    credentials_secret: str = Field(
        "", max_length=253, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"
    )
    """Secret with a service-account key under key.json; empty: Workload Identity."""


class LakeSink(ApiModel):
    """Delta Lake tables (events, window aggregates, the batch ledger) under one location, written by the
    job's executors; see the sinks page of the docs for the layout."""

    location: str = Field(min_length=1, max_length=1024, pattern=r"^((s3a|gs|file)://[^\s]+|/[^\s]*)$")
    """Root of the tables: s3a://bucket/prefix, gs://bucket/prefix, or an absolute local path (one machine);
    the events table is <location>/events, the aggregates <location>/<aggregate>."""
    credentials_secret: str = Field(
        "", max_length=253, pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$"
    )
    """Secret with the object store's credentials: for s3a keys accessKeyId and secretAccessKey (and
    optionally sessionToken); for gs a service-account key under key.json. Empty: Workload Identity (GKE's
    for gs; for s3a the web identity token of IRSA / EKS Pod Identity)."""
    endpoint: str = Field("", max_length=512, pattern=r"^(https?://[^\s]+)?$")
    """s3a only: an S3-compatible endpoint (MinIO, Ceph, ...); empty: AWS S3 of the region."""
    region: str = Field("", max_length=64, pattern=r"^([a-z0-9-]+)?$")
    """s3a only: the bucket's region (empty: the AWS SDK's own lookup)."""
    path_style_access: bool = False
    """s3a only: path-style requests (most S3-compatible stores want them)."""
    maintenance_interval: Duration = "1h"
    """How often the job compacts (OPTIMIZE) the partitions written since the last run and removes files no
    table version needs any more (VACUUM); 0s: never (compact with another Delta tool then)."""
    retention: Duration = "168h"
    """How long VACUUM keeps files that older table versions still use (time travel and slow readers);
    Delta refuses less than 168h unless its retention check is turned off."""
    aggregate_interval: Duration = "1m"
    """How often the window aggregates are merged: every this much time, by the job's driver beside the
    stream (micro-batches do not wait for it), for every batch since the last merge (each MERGE is a
    Delta commit per aggregate table, the lake's main cost per batch). The events table is written
    every batch; the aggregates are at most about this much behind it, and what a stop or crash left
    out is merged when the job starts. 0s: every micro-batch, in its commit."""


class Sink(ApiModel):
    """Where classified events and aggregates are written."""

    cel_rules: ClassVar[tuple[Rule, ...]] = tuple(exactly_block_of_type(t) for t in SINK_TYPES)
    type: SinkType
    postgres: PostgresSink | None = None
    bigquery: BigQuerySink | None = None
    lake: LakeSink | None = None


class DashboardsSpec(ApiModel):
    """Grafana dashboards (ConfigMaps picked up by Grafana's sidecar) and Prometheus monitors."""

    enabled: bool = True
    namespace: str = Field("monitoring", min_length=1, max_length=63, pattern=DNS1123_LABEL)
    """Namespace watched by Grafana's dashboard sidecar."""


class StreamPipelineSpec(ApiModel):
    """Desired state of a pipeline: sources -> Kafka -> Spark + model -> sinks."""

    suspend: bool = False
    """true: producers and job stopped; topics and data kept."""
    kafka: KafkaSpec = _nested(KafkaSpec)
    sources: list[Source] = Field(
        min_length=1,
        max_length=16,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )
    """Inputs, 1 to 16, names unique."""
    processing: ProcessingSpec = _nested(ProcessingSpec)
    model: ModelSpec = _nested(ModelSpec)
    sinks: list[Sink] = Field(min_length=1, max_length=4)
    """Outputs, 1 to 4."""
    dashboards: DashboardsSpec = _nested(DashboardsSpec)


# --------------------------------------------------------------------------------------- status
class Condition(ApiModel):
    """The standard Kubernetes condition (metav1.Condition)."""

    type: str = Field(
        max_length=316,
        pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
    )
    status: Literal["True", "False", "Unknown"]
    observed_generation: int | None = Field(None, ge=0)
    last_transition_time: str = Field(json_schema_extra={"format": "date-time"})
    reason: str = Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")
    message: str = Field(max_length=32768)


class TopicsStatus(ApiModel):
    """The pipeline's Kafka topics."""

    namespace: str | None = None
    raw: str | None = None
    dead_letter: str | None = None
    ready: bool = False
    topic_ids: dict[str, str] | None = None
    """Kafka's topic id of each topic (raw, deadLetter) as Strimzi reported it when the job first
    used it: a different id means the topic was deleted and created again (reason TopicRecreated)."""


class SourceStatus(ApiModel):
    name: str
    ready: bool = False
    replicas: int = 0
    available_replicas: int = 0
    message: str | None = None


class ProcessingStatus(ApiModel):
    application: str | None = None
    state: str | None = None
    spec_hash: str | None = None
    applied_generation: int | None = None
    """The SparkApplication's generation when the operator last changed its spec."""
    spec_applied_at: str | None = None
    """When (API server time) the operator last changed the SparkApplication's spec: the job runs
    that spec once spark-operator has submitted it at or after this time."""
    ready: bool = False
    message: str | None = None


class ModelStatus(ApiModel):
    service: str | None = None
    name: str | None = None
    ready: bool = False
    message: str | None = None


class SinkStatus(ApiModel):
    type: str
    target: str | None = None
    ready: bool = False
    message: str | None = None


class StreamPipelineStatus(ApiModel):
    """Observed state, written by the operator."""

    observed_generation: int | None = None
    phase: Phase | None = None
    sources_ready: str | None = None
    """Ready sources out of all, such as 2/3."""
    sinks_ready: str | None = None
    """Ready sinks out of all, such as 1/1."""
    conditions: list[Condition] = Field(
        default_factory=list,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    )
    topics: TopicsStatus | None = None
    sources: list[SourceStatus] = Field(default_factory=list)
    processing: ProcessingStatus | None = None
    model: ModelStatus | None = None
    sinks: list[SinkStatus] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str = Field(min_length=1, max_length=MAX_PIPELINE_NAME, pattern=DNS1035_LABEL)
    namespace: str | None = None


class StreamPipeline(BaseModel):
    """A streaming emotion-analytics pipeline: sources -> Kafka -> Spark + model -> sinks."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    api_version: Literal["streamotion.io/v1alpha2"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["StreamPipeline"] = KIND
    metadata: ObjectMeta
    spec: StreamPipelineSpec
    status: StreamPipelineStatus | None = None

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"


def all_rules() -> dict[str, Rule]:
    """Every cross-field rule, by its CEL expression."""
    out: dict[str, Rule] = {}
    models: list[type[ApiModel]] = [ApiModel]
    while models:  # every model of the API, so that a model added later needs no entry here
        model = models.pop()
        models.extend(model.__subclasses__())
        for rule in model.cel_rules:
            out[rule.cel] = rule
    return out


# ------------------------------------------------------------------------------ older versions
@dataclass(frozen=True)
class Renamed:
    """A field that an older version names (and types) differently; everything else is the same.

    ``path`` leads (through objects only) to the object that holds the field; ``legacy`` is a model
    whose one field is the old field as that version declared it (its schema, default and
    description go into that version's CRD schema); ``to_new``/``to_old`` map a value both ways
    and must be inverse to each other on every valid value (a round trip is lossless)."""

    version: str
    path: tuple[str, ...]
    old: str
    new: str
    legacy: type[BaseModel]
    to_new: Callable[[Any], Any]
    to_old: Callable[[Any], Any]


class V1alpha1Kafka(ApiModel):
    """spec.kafka fields of v1alpha1 that v1alpha2 renamed."""

    retention_hours: int = Field(168, ge=1, le=87600)
    """How long raw events and dead letters are kept, in hours (the window for backfills).
    v1alpha2 calls it retention, a duration in whole hours (168 is 168h)."""


CHANGES: tuple[Renamed, ...] = (
    # Every other span of time in the API is a duration string (trigger, window, watermark): the
    # retention is one too from v1alpha2 on, and says its unit. Whole hours only, so that each
    # value has exactly one form in either version (round trips are lossless).
    Renamed(
        version="v1alpha1",
        path=("spec", "kafka"),
        old="retentionHours",
        new="retention",
        legacy=V1alpha1Kafka,
        to_new=lambda hours: f"{int(hours)}h",
        to_old=retention_hours,
    ),
)

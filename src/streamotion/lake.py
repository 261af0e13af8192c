"""The lake sink's settings shared by the operator (what it renders into the SparkApplication) and the
job (what a local SparkSession gets): the pinned Delta Lake release, the Spark configuration for Delta's
SQL extension and catalog, and the object store's Hadoop settings (s3a, gs) with credentials taken from
the environment or a mounted key, never from the spec.

Delta Lake 4.0.0 is the release built against Spark 4.0.0, the Spark line the job runs
(delta-io/delta v4.0.0 build.sbt: SPARK_MASTER_VERSION = "4.0.0"; Scala 2.13 only, like Spark 4).
"""

from __future__ import annotations

from streamotion.api.models import LakeSink

DELTA_VERSION = "4.0.0"
SCALA_BINARY = "2.13"
DELTA_PACKAGE = f"io.delta:delta-spark_{SCALA_BINARY}:{DELTA_VERSION}"
# The object-store connectors (not in Spark's distribution): hadoop-aws of Spark 4.0.0's Hadoop (3.4.1,
# pyspark's hadoop-client-api-3.4.1.jar) and the shaded Cloud Storage connector (one jar, about 37 MB).
HADOOP_VERSION = "3.4.1"
HADOOP_AWS_PACKAGE = f"org.apache.hadoop:hadoop-aws:{HADOOP_VERSION}"
# hadoop-aws 3.4.1 depends on the AWS SDK v2 ``bundle`` (2.24.6, hadoop-project 3.4.1 pom
# aws-java-sdk-v2.version; 558 MB, every AWS service shaded into one jar). S3A needs only the SDK's s3 and
# s3-transfer-manager modules (and sts for web identity: the SDK's WebIdentityCredentialsUtils loads it by
# reflection), with their own dependencies, about 9 MB in all: the bundle is excluded and those modules
# resolved instead. S3A links the bundle's shaded Apache HTTP classes only in an optional binding
# (hadoop-aws 3.4.1 NetworkBinding.java, ConfigureShadedAWSSocketFactory: fs.s3a.ssl.channel.mode is
# ignored without them). 2.24.8: the 2.24 release nearest after 2.24.6 whose every module our Maven
# Central mirror serves (it lacks s3-transfer-manager 2.24.6). Netty is Spark's own (jars/netty-*).
AWS_SDK_VERSION = "2.24.8"
AWS_SDK_MODULES = ("s3", "s3-transfer-manager", "sts")
S3A_PACKAGES = (
    HADOOP_AWS_PACKAGE,
    *(f"software.amazon.awssdk:{m}:{AWS_SDK_VERSION}" for m in AWS_SDK_MODULES),
)
S3A_EXCLUDES = ("software.amazon.awssdk:bundle", "io.netty:*")
GCS_CONNECTOR_VERSION = "3.0.4"
GCS_CONNECTOR_JAR = (
    "https://repo1.maven.org/maven2/com/google/cloud/bigdataoss/gcs-connector/"
    f"{GCS_CONNECTOR_VERSION}/gcs-connector-{GCS_CONNECTOR_VERSION}-shaded.jar"
)
GCS_KEY_DIR = "/var/run/secrets/streamotion/lake-gcs"
# s3a's default credential chain (Hadoop 3.4.1 core-default.xml fs.s3a.aws.credentials.provider) reads
# AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (EnvironmentVariableCredentialsProvider) but has no web
# identity provider: Workload Identity (IRSA, EKS Pod Identity) names the AWS SDK's own.
S3A_ENV_PROVIDER = "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"
S3A_WEB_IDENTITY_PROVIDER = "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider"
S3A_SECRET_KEYS = {  # Secret key -> environment variable (the AWS SDK's names)
    "accessKeyId": "AWS_ACCESS_KEY_ID",
    "secretAccessKey": "AWS_SECRET_ACCESS_KEY",
}

DELTA_SQL_CONF = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}


def scheme(location: str) -> str:
    """s3a, gs or file (an absolute path is a local file system path)."""
    return location.split("://", 1)[0] if "://" in location else "file"


def table_uri(sink: LakeSink, table: str) -> str:
    return f"{sink.location.rstrip('/')}/{table}"


def object_store_conf(sink: LakeSink) -> dict[str, str]:
    """Hadoop settings (``spark.hadoop.*``) for the sink's store; credentials by reference only."""
    kind = scheme(sink.location)
    conf: dict[str, str] = {}
    if kind == "s3a":
        conf["spark.hadoop.fs.s3a.impl"] = "org.apache.hadoop.fs.s3a.S3AFileSystem"
        conf["spark.hadoop.fs.s3a.aws.credentials.provider"] = (
            S3A_ENV_PROVIDER if sink.credentials_secret else S3A_WEB_IDENTITY_PROVIDER
        )
        if sink.endpoint:
            conf["spark.hadoop.fs.s3a.endpoint"] = sink.endpoint
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
                sink.endpoint.startswith("https://")
            ).lower()
        if sink.region:
            conf["spark.hadoop.fs.s3a.endpoint.region"] = sink.region
        if sink.path_style_access:
            conf["spark.hadoop.fs.s3a.path.style.access"] = "true"
    elif kind == "gs":
        conf["spark.hadoop.fs.gs.impl"] = "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFileSystem"
        conf["spark.hadoop.fs.AbstractFileSystem.gs.impl"] = "com.google.cloud.hadoop.fs.gcs.GoogleHadoopFS"
        # Application Default Credentials: the mounted key (GOOGLE_APPLICATION_CREDENTIALS) or GKE's
        # Workload Identity through the metadata server
        conf["spark.hadoop.fs.gs.auth.type"] = "APPLICATION_DEFAULT"
    return conf


def spark_conf(sinks: list[LakeSink]) -> dict[str, str]:
    """Everything a SparkSession needs for these lake sinks (empty without one)."""
    if not sinks:
        return {}
    conf = dict(DELTA_SQL_CONF)
    for sink in sinks:
        conf |= object_store_conf(sink)
    return conf


def packages(sinks: list[LakeSink], delta_in_image: bool = False) -> list[str]:
    """Maven coordinates to resolve (``spark.jars.packages``): Delta unless the image has it, hadoop-aws
    and the AWS SDK modules S3A uses for s3a locations (see :data:`S3A_PACKAGES`)."""
    out: list[str] = []
    if sinks and not delta_in_image:
        out.append(DELTA_PACKAGE)
    if any(scheme(s.location) == "s3a" for s in sinks):
        out.extend(S3A_PACKAGES)
    return out


def excludes(sinks: list[LakeSink]) -> list[str]:
    """``groupId:artifactId`` left out of that resolution (``spark.jars.excludes``): the AWS SDK bundle
    hadoop-aws depends on, and Netty (Spark ships it)."""
    return list(S3A_EXCLUDES) if any(scheme(s.location) == "s3a" for s in sinks) else []


def jars(sinks: list[LakeSink]) -> list[str]:
    """Jar URLs to fetch (``spark.jars``): the shaded Cloud Storage connector for gs locations."""
    return [GCS_CONNECTOR_JAR] if any(scheme(s.location) == "gs" for s in sinks) else []


def secret_env(sink: LakeSink) -> list[dict]:
    """Environment entries (Kubernetes EnvVar) for the sink's credentials Secret."""
    if not sink.credentials_secret:
        return []
    kind = scheme(sink.location)
    ref = sink.credentials_secret
    if kind == "s3a":
        env = [
            {"name": var, "valueFrom": {"secretKeyRef": {"name": ref, "key": key}}}
            for key, var in S3A_SECRET_KEYS.items()
        ]
        env.append(
            {
                "name": "AWS_SESSION_TOKEN",
                "valueFrom": {"secretKeyRef": {"name": ref, "key": "sessionToken", "optional": True}},
            }
        )
        return env
    if kind == "gs":
        return [{"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": f"{GCS_KEY_DIR}/key.json"}]
    return []


# ---------------------------------------------------------------------------------- reading it back
def reader_options(sink: LakeSink) -> dict[str, str]:
    """delta-rs (``deltalake``) storage options for the sink's store, from the spec settings s3a gets:
    the endpoint (plain HTTP allowed when it is http://) and the region. No credentials: delta-rs reads
    AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL, AWS_REGION, ...) from the
    environment as the AWS SDK does. It requests path-style unless told otherwise, as s3a with
    pathStyleAccess. Reading needs no AWS_S3_ALLOW_UNSAFE_RENAME (only delta-rs's own writes do)."""
    if scheme(sink.location) != "s3a":
        return {}
    options: dict[str, str] = {}
    if sink.endpoint:
        options["AWS_ENDPOINT_URL"] = sink.endpoint
        if sink.endpoint.startswith("http://"):
            options["AWS_ALLOW_HTTP"] = "true"
    if sink.region:
        options["AWS_REGION"] = sink.region
    return options


def daily_views(location: str, days: int | None = None, today=None) -> dict:
    """The daily views of the PostgreSQL sink (``v_emotion_daily``, ``v_sentiment_daily``: every event
    row, late ones included) computed from the lake's ``events`` table with delta-rs (the ``deltalake``
    package, no Spark), reading only the event days asked for (``days``: the last N UTC days); an
    object store's settings and keys come from the environment (see :func:`reader_options`)."""
    from datetime import UTC, datetime, timedelta

    try:
        from deltalake import DeltaTable
    except ModuleNotFoundError:
        raise RuntimeError(
            "reading a lake needs the deltalake package (pip install 'streamotion[jobs]')"
        ) from None
    filters = None
    if days:
        first = (today or datetime.now(UTC).date()) - timedelta(days=days - 1)
        filters = [("event_date", ">=", first)]
    events = DeltaTable(f"{location.rstrip('/')}/events").to_pandas(
        columns=["event_date", "source", "emotion", "score", "sentiment", "sentiment_index"], filters=filters
    )
    events = events.rename(columns={"event_date": "day"})
    emotion = (
        events.groupby(["day", "source", "emotion"])
        .agg(events=("score", "size"), mean_score=("score", "mean"))
        .reset_index()
    )
    sentiment = (
        events.groupby(["day", "source", "sentiment"])
        .agg(events=("sentiment_index", "size"), mean_sentiment_index=("sentiment_index", "mean"))
        .reset_index()
    )
    sentiment["share"] = sentiment["events"] / sentiment.groupby(["day", "source"])["events"].transform("sum")
    return {
        "v_emotion_daily": emotion.sort_values(["day", "source", "emotion"]).reset_index(drop=True),
        "v_sentiment_daily": sentiment[
            ["day", "source", "sentiment", "events", "share", "mean_sentiment_index"]
        ]
        .sort_values(["day", "source", "sentiment"])
        .reset_index(drop=True),
    }

"""The lake sink on an S3-compatible object store: moto's S3 server on loopback (tests/fixtures/s3.py),
Spark 4.0.0 with the real s3a connector (hadoop-aws 3.4.1 and the AWS SDK v2 modules S3A uses, from
Maven Central through Ivy, cached by ``make prepare``), the object-store settings and the credentials'
environment taken from a pipeline spec as the job takes them, and delta-rs (``deltalake``) reading
what s3a wrote.

Not here: a job killed mid-stream on s3a. The local-path kill test (tests/test_sinks_lake.py) runs the
job as a child process with Kafka and the model service, about 3 minutes in CI; on s3a it would add as
much again, and the sink's code path is the same (the store only changes where Delta's files and log
go). What the kill relies on is tested here on s3a instead: a micro-batch crashed between its data
writes and its ledger row, replayed under the same batch id, writes nothing twice (Delta's transaction
identifiers, read back from the log in the object store), and counts are exact.
"""

from __future__ import annotations

import json
import uuid
import zipfile
from pathlib import Path

import pytest

from streamotion import lake
from tests.test_sinks_lake import (
    _fresh_jvm,
    assert_aggregates_match,
    classified,
    frames,
    info,
    lake_pipeline,
    read,
)

BUCKET = "streamotion-lake"
# stands in for the credentials Secret (lake-keys): the job gets its keys as the environment variables
# the operator renders from it (lake.secret_env); moto accepts any keys
SECRET = {"accessKeyId": "streamotion-test-key", "secretAccessKey": "streamotion-test-secret"}


def s3_pipeline(s3_server, location: str):
    return lake_pipeline(
        "s3",
        location,
        credentialsSecret="lake-keys",
        endpoint=s3_server.url,
        region=s3_server.region,
        pathStyleAccess=True,
    )


@pytest.fixture(scope="module")
def s3_spark(s3_server):
    """A SparkSession configured from a pipeline spec with an s3a lake (pipeline_conf: Delta, hadoop-aws
    and the SDK modules, the endpoint, path-style access, the region, the environment credentials
    provider), started with the Secret's keys in its environment."""
    from streamotion_jobs.spark import pipeline_conf, session

    s3_server.client().create_bucket(Bucket=BUCKET)
    p = s3_pipeline(s3_server, f"s3a://{BUCKET}/unused")
    with pytest.MonkeyPatch.context() as mp:
        for ref in lake.secret_env(p.spec.sinks[0].lake):
            key = ref["valueFrom"]["secretKeyRef"]["key"]
            if key in SECRET:
                mp.setenv(ref["name"], SECRET[key])
            else:
                mp.delenv(ref["name"], raising=False)
        _fresh_jvm()
        s = session("streamotion-lake-s3-tests", master="local[2]", extra=pipeline_conf(p))
        yield s
        s.stop()


def test_s3a_lake_counts_exact_replay_writes_nothing_twice_and_deltalake_reads_the_same_rows(
    s3_spark, s3_server
):
    """On an S3-compatible store with the real s3a connector: a batch crashed after its data writes and
    before its ledger row, replayed with the same batch id, completes without writing anything twice
    (its events MERGE inserts nothing and commits nothing: delta-io/delta v4.0.0
    spark/src/main/scala/org/apache/spark/sql/delta/OptimisticTransaction.scala commitIfNeeded; Delta
    skips the aggregate MERGEs it has the batch's txnAppId/txnVersion for:
    spark/src/main/scala/org/apache/spark/sql/delta/commands/DeltaCommand.scala hasBeenExecuted; none
    of those tables gets a new version); a second replay is skipped whole. The objects are in the store,
    and delta-rs (storage options from the same spec: lake.reader_options) reads the same rows as
    Spark, the aggregates a GROUP BY over them; `streamotion lake daily` reads it with the store's
    settings from the environment."""
    from deltalake import DeltaTable
    from streamotion_jobs.sinks.lake import AGGREGATES, LakeSink

    prefix = f"t{uuid.uuid4().hex[:8]}"
    location = f"s3a://{BUCKET}/{prefix}"
    sink_spec = s3_pipeline(s3_server, location).spec.sinks[0].lake
    options = lake.reader_options(sink_spec)
    assert options == {
        "AWS_ENDPOINT_URL": s3_server.url,
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": s3_server.region,
    }
    for key, var in lake.S3A_SECRET_KEYS.items():  # delta-rs: the keys as the job gets them
        options[var] = SECRET[key]

    sink = LakeSink(location, "test/unit", spark=s3_spark, maintenance_interval_s=0, aggregate_interval_s=0)
    sink.open()
    q = str(uuid.uuid4())
    events, dead = frames(s3_spark, classified(range(0, 20)))
    sink.stage(events, dead, info(q, 0, {"raw": {0: 10, 1: 10}}))
    assert sink.commit(info(q, 0, {"raw": {0: 10, 1: 10}}))["lake_inserted"] == 20

    # batch 1 crashes after its data writes, before its ledger row
    second = classified(range(20, 30))

    def crash(*_a, **_k):
        raise RuntimeError("driver killed")

    sink._append_ledger = crash
    events, dead = frames(s3_spark, second)
    sink.stage(events, dead, info(q, 1, {"raw": {0: 15, 1: 15}}))
    with pytest.raises(RuntimeError, match="driver killed"):
        sink.commit(info(q, 1, {"raw": {0: 15, 1: 15}}))

    def versions() -> dict[str, int]:
        return {
            t: DeltaTable(f"{location}/{t}", storage_options=options).version()
            for t in ("events", *AGGREGATES)
        }

    written = versions()
    assert len(read(location, "events", options)) == 30

    # the restarted job replays batch 1 under the same query and batch id
    restarted = LakeSink(
        location, "test/unit", spark=s3_spark, maintenance_interval_s=0, aggregate_interval_s=0
    )
    restarted.open()
    assert restarted.resume_offsets("raw") == {0: 10, 1: 10}
    events, dead = frames(s3_spark, second)
    restarted.stage(events, dead, info(q, 1, {"raw": {0: 15, 1: 15}}))
    stats = restarted.commit(info(q, 1, {"raw": {0: 15, 1: 15}}))
    assert stats is not None and stats["lake_inserted"] == 10  # batch 1's rows, read back by their tag
    assert versions() == written  # no new commit in the events or any aggregate table
    restarted.stage(events, dead, info(q, 1))
    assert restarted.commit(info(q, 1)) is None  # in the ledger now: skipped whole

    stored = read(location, "events", options)
    assert len(stored) == 30 and stored["event_id"].is_unique
    assert set(stored["event_id"]) == {f"{('a', 'b')[i % 2]}:http:e{i}" for i in range(30)}
    ledger = read(location, "_ledger", options)
    assert sorted(ledger["batch_id"]) == [0, 1] and ledger["events"].sum() == 30
    assert_aggregates_match(location, options)
    spark_ids = {
        r[0] for r in s3_spark.read.format("delta").load(f"{location}/events").select("event_id").collect()
    }
    assert spark_ids == set(stored["event_id"])

    # the files are objects in the store, partitioned as on a local path
    keys = [
        o["Key"]
        for page in s3_server.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        for o in page.get("Contents", [])
    ]
    assert any(k.startswith(f"{prefix}/events/event_date=2026-03-01/source=a/") for k in keys)
    assert f"{prefix}/events/_delta_log/00000000000000000000.json" in keys

    # `streamotion lake daily` on the s3a location: the store's settings and keys from the environment
    from typer.testing import CliRunner

    from streamotion.cli import app

    with pytest.MonkeyPatch.context() as mp:
        for var, value in options.items():
            mp.setenv(var, value)
        result = CliRunner().invoke(app, ["lake", "daily", location, "--days", "0", "--json"])
    assert result.exit_code == 0, result.output
    views = json.loads(result.output)
    assert sum(r["events"] for r in views["v_emotion_daily"]) == 30


def test_s3a_resolves_the_sdk_modules_s3a_uses_instead_of_the_558_mb_bundle(s3_spark):
    """Upstream rules, checked on the artifacts the session above resolved from Maven Central:
    - apache/hadoop rel/release-3.4.1 hadoop-tools/hadoop-aws/pom.xml: hadoop-aws's only AWS SDK v2
      dependency is software.amazon.awssdk:bundle at ${aws-java-sdk-v2.version}, 2.24.6
      (hadoop-project/pom.xml): our SDK modules are of that 2.24 line, at or after it, and the bundle
      is excluded (S3A links the bundle's shaded HTTP classes only in an optional binding:
      hadoop-aws/src/main/java/org/apache/hadoop/fs/s3a/impl/NetworkBinding.java, which ignores
      fs.s3a.ssl.channel.mode without them; DefaultS3ClientFactory.java builds its clients from the
      s3 module, with apache-client and netty-nio-client);
    - aws/aws-sdk-java-v2 2.24.8 core/auth/.../credentials/internal/WebIdentityCredentialsUtils.java
      loads sts's StsWebIdentityCredentialsProviderFactory by reflection: without the sts module the
      web identity provider (IRSA, rendered when no Secret is named) fails at its first request.
    """
    from urllib.parse import urlparse
    from xml.etree import ElementTree

    from streamotion_jobs.spark import ivy_dir

    jars = s3_spark.sparkContext.getConf().get("spark.jars").split(",")
    resolved = [Path(urlparse(j).path) for j in jars]
    names = {j.name for j in resolved}
    assert f"org.apache.hadoop_hadoop-aws-{lake.HADOOP_VERSION}.jar" in names
    assert not [n for n in names if "awssdk_bundle" in n or n.startswith("io.netty")]
    sdk = [j for j in resolved if j.name.startswith("software.amazon.awssdk_")]
    assert {j.name for j in sdk} >= {
        f"software.amazon.awssdk_{m}-{lake.AWS_SDK_VERSION}.jar"
        for m in (*lake.AWS_SDK_MODULES, "apache-client", "netty-nio-client", "auth")
    }
    assert sum(j.stat().st_size for j in sdk) < 20_000_000  # the bundle is 558 MB

    # hadoop-aws's pom and its parent, as Ivy cached them (the original Maven poms)
    ns = {"m": "http://maven.apache.org/POM/4.0.0"}
    cache = ivy_dir() / "cache" / "org.apache.hadoop"
    pom = ElementTree.parse(cache / "hadoop-aws" / f"ivy-{lake.HADOOP_VERSION}.xml.original")
    sdk_deps = [
        (d.findtext("m:artifactId", namespaces=ns), d.findtext("m:scope", namespaces=ns))
        for d in pom.getroot().iterfind("m:dependencies/m:dependency", ns)
        if d.findtext("m:groupId", namespaces=ns) == "software.amazon.awssdk"
    ]
    assert sdk_deps == [("bundle", "compile")]
    parent = ElementTree.parse(cache / "hadoop-project" / f"ivy-{lake.HADOOP_VERSION}.xml.original")
    pinned = parent.getroot().findtext("m:properties/m:aws-java-sdk-v2.version", namespaces=ns)
    assert pinned == "2.24.6"
    major, minor, patch = (int(x) for x in lake.AWS_SDK_VERSION.split("."))
    assert (major, minor) == (2, 24) and patch >= 6

    # the web identity provider finds sts
    (auth,) = [j for j in sdk if j.name.startswith("software.amazon.awssdk_auth-")]
    (sts,) = [j for j in sdk if j.name.startswith("software.amazon.awssdk_sts-")]
    factory = "software.amazon.awssdk.services.sts.internal.StsWebIdentityCredentialsProviderFactory"
    with zipfile.ZipFile(auth) as z:
        utils = z.read("software/amazon/awssdk/auth/credentials/internal/WebIdentityCredentialsUtils.class")
    assert factory.encode() in utils
    with zipfile.ZipFile(sts) as z:
        assert factory.replace(".", "/") + ".class" in z.namelist()


def test_delta_writes_s3a_through_its_single_driver_log_store(s3_spark):
    """Upstream rule (delta-io/delta v4.0.0 spark/src/main/scala/org/apache/spark/sql/delta/storage/
    DelegatingLogStore.scala: s3, s3a and s3n default to io.delta.storage.S3SingleDriverLogStore;
    docs/source/delta-storage.md "Single-cluster setup (default)": concurrent writes to one table on S3
    must come from a single Spark driver): the sink sets no other log store, so one job (one driver)
    writes a pipeline's tables, as the docs say; readers may be many."""
    jvm = s3_spark.sparkContext._jvm
    store = jvm.org.apache.spark.sql.delta.storage.DelegatingLogStore.getDefaultLogStoreClassName("s3a")
    assert store.get() == "io.delta.storage.S3SingleDriverLogStore"
    conf = dict(s3_spark.sparkContext.getConf().getAll())
    assert not [k for k in conf if k.startswith(("spark.delta.logStore", "spark.databricks.delta.logStore"))]

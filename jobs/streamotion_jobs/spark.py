"""The SparkSession the job runs in, with the Kafka connector from Maven Central.

The connector (``spark-sql-kafka-0-10_2.13``) is pinned to the running pyspark's version and
resolved through ``spark.jars.packages`` (Ivy) into ``~/.cache/streamotion/ivy``: the first run
downloads it (``make prepare`` does that once), later runs resolve from the cache.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SCALA_BINARY = "2.13"  # Spark 4 is built for Scala 2.13 only


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def spark_version() -> str:
    import pyspark

    return pyspark.__version__


def kafka_package() -> str:
    return f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_BINARY}:{spark_version()}"


def ivy_dir() -> Path:
    return cache_dir() / "ivy"


def connector_in_image() -> bool:
    """The job image bakes the connector into $SPARK_HOME/jars: nothing to resolve then."""
    home = os.environ.get("SPARK_HOME")
    return bool(home) and any(Path(home, "jars").glob("spark-sql-kafka-0-10_*.jar"))


def delta_in_image() -> bool:
    """The job image bakes Delta Lake into $SPARK_HOME/jars as well."""
    home = os.environ.get("SPARK_HOME")
    return bool(home) and any(Path(home, "jars").glob("delta-spark_*.jar"))


def pipeline_conf(pipeline) -> dict[str, str]:
    """The Spark configuration a pipeline's sinks need (Delta Lake's extension and catalog, the object
    store's settings for a lake sink; see :mod:`streamotion.lake`), ``spark.jars.packages`` included."""
    from streamotion import lake

    sinks = [s.lake for s in pipeline.spec.sinks if s.lake is not None]
    if not sinks:
        return {}
    conf = lake.spark_conf(sinks)
    from streamotion_jobs.config import in_cluster

    if in_cluster():  # spark-submit resolved what the SparkApplication lists (deps): nothing to add
        return conf
    extra = lake.packages(sinks, delta_in_image=delta_in_image())
    if extra:
        conf["spark.jars.packages"] = ",".join(extra)
    if lake.excludes(sinks):  # the AWS SDK bundle hadoop-aws names: the SDK modules S3A uses instead
        conf["spark.jars.excludes"] = ",".join(lake.excludes(sinks))
    if lake.jars(sinks):
        conf["spark.jars"] = ",".join(lake.jars(sinks))
    return conf


def base_conf(
    app_name: str = "streamotion-job", master: str | None = None, packages: str | None = None
) -> dict[str, str]:
    conf = {"spark.app.name": app_name}
    wanted = ([] if connector_in_image() else [kafka_package()]) + [
        p for p in (packages or "").split(",") if p
    ]
    if wanted:
        conf["spark.jars.packages"] = ",".join(wanted)
        conf["spark.jars.ivy"] = str(ivy_dir())
    conf |= {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.streaming.forceDeleteTempCheckpointLocation": "true",
        "spark.ui.showConsoleProgress": "false",
        # Structured Streaming metrics (input rate, batch duration, ...) for Prometheus
        "spark.sql.streaming.metricsEnabled": "true",
        # Python workers fork from a daemon that has already imported pandas, pyarrow and the job
        "spark.python.daemon.module": "streamotion_jobs.daemon",
    }
    if master:
        conf["spark.master"] = master
    if master and master.startswith("local"):
        conf.update(
            {
                "spark.sql.shuffle.partitions": "2",
                "spark.default.parallelism": "2",
                "spark.ui.enabled": "false",
                # loopback only: the driver and block manager never listen on other interfaces
                "spark.driver.host": "127.0.0.1",
                "spark.driver.bindAddress": "127.0.0.1",
                "spark.driver.memory": os.environ.get(
                    "STREAMOTION_SPARK_DRIVER_MEMORY", local_driver_memory(master)
                ),
                "spark.sql.streaming.stopTimeout": "30s",
                # a lake sink's Delta log read in as few tasks as the machine has cores (default 50)
                "spark.databricks.delta.snapshotPartitions": "2",
            }
        )
    return conf


def session(
    app_name: str = "streamotion-job", master: str | None = None, extra: dict[str, str] | None = None
):
    """getOrCreate a SparkSession; ``master=None`` leaves it to spark-submit (the cluster)."""
    # Python workers run this interpreter (the one with pandas, pyarrow and streamotion installed)
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    if master and master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        from streamotion.dev.java import for_spark_local  # a supported Java: the system's or the wheel's

        extra = {**for_spark_local(), **local_cluster_conf(master), **(extra or {})}
    from pyspark.sql import SparkSession

    extra = dict(extra or {})
    packages = extra.pop("spark.jars.packages", None)  # added to the Kafka connector's, not instead
    builder = SparkSession.builder
    for key, value in {**base_conf(app_name, master, packages), **extra}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("STREAMOTION_SPARK_LOG_LEVEL", "WARN"))
    return spark


def local_driver_memory(master: str) -> str:
    """The driver JVM's heap on one machine. ``local[...]`` runs the executor's tasks in the driver's
    JVM, so it gets what a cluster gives both by the spec's defaults (driver 1g + one executor 2g: the
    Delta log state and cached micro-batches of a lake sink do not fit 1g without the collector taking
    a large share of the CPU); ``local-cluster[...]`` starts executor JVMs of their own."""
    from streamotion.api.models import DriverSpec, ExecutorSpec

    if master.startswith("local-cluster"):
        return DriverSpec().memory
    return f"{_gib(DriverSpec().memory) + _gib(ExecutorSpec().memory):g}g"


def _gib(memory: str) -> float:
    number, unit = float(memory[:-1]), memory[-1].lower()
    return number * {"k": 1 / 1024**2, "m": 1 / 1024, "g": 1, "t": 1024}[unit]


def local_cluster_conf(master: str) -> dict[str, str]:
    """``local-cluster[N,cores,MiB]`` (N executor JVMs on this machine, started by an in-process
    standalone worker through ``$SPARK_HOME/bin/spark-class``): SPARK_HOME is pyspark's own folder
    (the pip package carries bin/ and jars/), and the executors' Python workers get this process's
    PYTHONPATH and the executors its Java options."""
    if not master.startswith("local-cluster"):
        return {}
    import pyspark

    os.environ.setdefault("SPARK_HOME", str(Path(pyspark.__file__).parent))
    conf = {}
    if os.environ.get("PYTHONPATH"):
        conf["spark.executorEnv.PYTHONPATH"] = os.environ["PYTHONPATH"]
    from streamotion.dev.java import jvm_flags

    conf["spark.executor.extraJavaOptions"] = " ".join(jvm_flags())
    return conf


def ensure_delta_jars() -> str:
    """Resolve Delta Lake (``streamotion.lake.DELTA_PACKAGE``) into the Ivy cache (``make prepare``):
    a local lake sink and its tests then start without the network."""
    from streamotion import lake

    jars = ivy_dir() / "jars"
    wanted = f"io.delta_delta-spark_{SCALA_BINARY}-{lake.DELTA_VERSION}.jar"
    if (jars / wanted).exists():
        return f"{lake.DELTA_PACKAGE} cached in {jars}"
    spark = session(
        "streamotion-prepare", master="local[1]", extra={"spark.jars.packages": lake.DELTA_PACKAGE}
    )
    try:
        spark.range(1).count()
    finally:
        spark.stop()
    if not (jars / wanted).exists():
        raise RuntimeError(f"{lake.DELTA_PACKAGE} was not resolved into {jars}")
    return f"resolved {lake.DELTA_PACKAGE} into {jars}"


def ensure_s3a_jars() -> str:
    """Resolve hadoop-aws and the AWS SDK modules S3A uses (``streamotion.lake.S3A_PACKAGES``, the SDK's
    bundle excluded) into the Ivy cache (``make prepare``): a lake on s3a and its tests then start
    without the network."""
    from streamotion import lake

    jars = ivy_dir() / "jars"
    wanted = [f"{c.split(':')[0]}_{c.split(':')[1]}-{c.split(':')[2]}.jar" for c in lake.S3A_PACKAGES]
    if all((jars / w).exists() for w in wanted):
        return f"hadoop-aws {lake.HADOOP_VERSION}, AWS SDK {lake.AWS_SDK_VERSION} cached in {jars}"
    spark = session(
        "streamotion-prepare",
        master="local[1]",
        extra={
            "spark.jars.packages": ",".join(lake.S3A_PACKAGES),
            "spark.jars.excludes": ",".join(lake.S3A_EXCLUDES),
        },
    )
    try:
        spark.range(1).count()
    finally:
        spark.stop()
    missing = [w for w in wanted if not (jars / w).exists()]
    if missing:
        raise RuntimeError(f"{', '.join(missing)} not resolved into {jars}")
    return f"resolved hadoop-aws {lake.HADOOP_VERSION} and AWS SDK {lake.AWS_SDK_VERSION} modules into {jars}"


def ensure_kafka_connector() -> str:
    """Resolve the Kafka connector and its dependencies into the Ivy cache (``make prepare``)."""
    jars = ivy_dir() / "jars"
    wanted = f"org.apache.spark_spark-sql-kafka-0-10_{SCALA_BINARY}-{spark_version()}.jar"
    if (jars / wanted).exists():
        return f"{kafka_package()} cached in {jars}"
    spark = session("streamotion-prepare", master="local[1]")
    try:
        spark.range(1).count()
    finally:
        spark.stop()
    if not (jars / wanted).exists():
        raise RuntimeError(f"{kafka_package()} was not resolved into {jars}")
    return f"resolved {kafka_package()} into {jars}"

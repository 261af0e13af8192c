"""Build or fetch every real server the tests and local runs use (``make prepare``).

Each step is idempotent and caches under ``~/.cache/streamotion``; a second run takes seconds.
Components add their step to ``STEPS`` as "module:function".
"""

from __future__ import annotations

import importlib
import sys
import time

STEPS: list[tuple[str, str]] = [
    (
        "Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kubectl)",
        "streamotion.dev.controlplane:ensure_binaries",
    ),
    ("Apache Kafka broker jars (Maven Central, KRaft)", "streamotion.dev.kafka:ensure_jars"),
    (
        "Kafka Connect jars and Debezium 3.6.1.Final's PostgreSQL connector (Maven Central; cdc tests)",
        "streamotion.dev.connect:prepare",
    ),
    ("Helm (pinned, from its Go module; chart tests and make up)", "streamotion.dev.helm:ensure_helm"),
    (
        "Prometheus (Debian package; dashboard and alert tests)",
        "streamotion.dev.prometheus:ensure_prometheus",
    ),
    ("PostgreSQL server (Debian packages; sink tests)", "streamotion.dev.postgres:ensure_postgres"),
    (
        "Spark Kafka connector (Maven Central via Ivy, pinned to pyspark)",
        "streamotion_jobs.spark:ensure_kafka_connector",
    ),
    (
        "Delta Lake for the lake sink (Maven Central via Ivy, the release for pyspark's Spark)",
        "streamotion_jobs.spark:ensure_delta_jars",
    ),
    (
        "hadoop-aws and the AWS SDK modules S3A uses (Maven Central via Ivy; the lake's s3a tests)",
        "streamotion_jobs.spark:ensure_s3a_jars",
    ),
    ("BigQuery emulator (bqemulator from PyPI, own venv)", "streamotion.dev.bigquery:ensure_bqemulator"),
]


def main(argv: list[str] | None = None) -> int:
    only = set(argv if argv is not None else sys.argv[1:])
    for title, target in STEPS:
        module, func = target.split(":")
        if only and not any(o in target for o in only):
            continue
        start = time.monotonic()
        print(f"==> {title}", flush=True)
        result = getattr(importlib.import_module(module), func)()
        print(f"    ready in {time.monotonic() - start:.1f}s{f': {result}' if result else ''}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

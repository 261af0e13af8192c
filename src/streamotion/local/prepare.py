"""Install what a local run needs, when missing (``make local`` runs this first; idempotent, seconds
when everything is there): a Java runtime, the Kafka broker jars, PostgreSQL, the Spark Kafka
connector and, optionally, Prometheus."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable


def _java() -> str:
    if shutil.which("java"):
        return "already installed"
    from streamotion.dev.system import ensure_apt

    return ensure_apt({"openjdk-17-jre-headless": "java"})


def _kafka() -> str:
    from streamotion.dev.kafka import ensure_jars

    return str(ensure_jars())


def _postgres() -> str:
    from streamotion.dev.postgres import ensure_postgres

    return ensure_postgres()


def _spark_kafka() -> str:
    from streamotion_jobs.spark import ensure_kafka_connector

    return ensure_kafka_connector()


def _prometheus() -> str:
    from streamotion.dev.prometheus import ensure_prometheus

    return ensure_prometheus()


STEPS: list[tuple[str, Callable[[], str], bool]] = [
    ("Java runtime (Kafka, Spark)", _java, True),
    ("Apache Kafka broker jars (Maven Central)", _kafka, True),
    ("PostgreSQL (Debian)", _postgres, True),
    ("Spark Kafka connector (Maven Central, Ivy cache)", _spark_kafka, True),
    ("Prometheus (Debian; optional)", _prometheus, False),
]


def main() -> int:
    for title, step, required in STEPS:
        start = time.monotonic()
        print(f"==> {title}", flush=True)
        try:
            result = step()
        except Exception as exc:
            if required:
                print(f"    failed: {exc}", file=sys.stderr, flush=True)
                return 1
            print(f"    skipped: {exc}", flush=True)
            continue
        print(f"    ready in {time.monotonic() - start:.1f}s: {result}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

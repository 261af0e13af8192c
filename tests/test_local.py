"""`streamotion run FILE --local`: a whole pipeline on this machine (real Kafka, producers, Ray Serve
with the tiny model, the PySpark job, PostgreSQL), its summary, its clean stop, and a crash."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from streamotion.api.validate import parse
from streamotion.local.runner import leftover_pids

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "ingest" / "streamotion_ingest" / "data" / "goemotions-sample.tsv"
GOOD_ROWS = 150
BAD_ROWS = 3
HANG_GUARD_S = 600  # a run that never ends fails the test instead of hanging the suite


def pipeline_doc(name: str, dataset: str, sink: dict, *, rate: float, loop: bool) -> dict:
    return {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": name},
        "spec": {
            "sources": [
                {
                    "name": "replay",
                    "type": "replay",
                    "replay": {"dataset": dataset, "ratePerSecond": rate, "loop": loop},
                }
            ],
            "processing": {"trigger": "1s"},
            "model": {"maxBatchSize": 32},
            "sinks": [{"type": "postgres", "postgres": sink}],
        },
    }


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamotion", "run", *args]


@pytest.fixture
def dataset(tmp_path) -> Path:
    """150 comments of the bundled sample, with 3 malformed lines (too few columns) among them."""
    rows = SAMPLE.read_text(encoding="utf-8").splitlines()[:GOOD_ROWS]
    bad = ["just some text without labels or id", "another\tbroken", "third broken line"]
    lines = rows[:50] + bad[:1] + rows[50:100] + bad[1:2] + rows[100:] + bad[2:]
    path = tmp_path / "replay.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_local_run_writes_every_event_and_stops_cleanly(tmp_path, dataset, postgres, pg_schema):
    """With --secure (the default path differs only in not handing out identities): the broker
    enforces the pipeline's ACLs (streamotion.security.acls) and each producer and the job
    work under their own certificate."""
    doc = pipeline_doc(
        "local-e2e",
        str(dataset),
        {"host": "127.0.0.1", "database": "streamotion", "schema": pg_schema, "credentialsSecret": "unused"},
        rate=200,
        loop=False,
    )
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir, summary_path, reports = tmp_path / "work", tmp_path / "summary.json", tmp_path / "reports"
    result = subprocess.run(
        cli(
            str(file), "--local", "--secure", "--tiny-model", "--plain", "--pg-dsn", postgres.dsn,
            "--workdir", str(workdir), "--summary-json", str(summary_path), "--reports", str(reports),
        ),
        capture_output=True, text=True, timeout=HANG_GUARD_S, cwd=tmp_path,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    summary = json.loads(summary_path.read_text())
    from streamotion.security.acls import identity_of

    p = parse(doc)
    for component, ident in (
        ("producer-replay", identity_of(p, "producer", "replay")),
        ("job", identity_of(p, "job")),
    ):
        assert f"kafka: {component} is User:CN={ident.user}" in output

    # Kafka saw the valid events; the malformed lines went to the dead-letter topic.
    assert summary["events_in"] == GOOD_ROWS, output
    assert summary["producer_dead_letters"] == BAD_ROWS
    assert summary["events_out"] + summary["job_dead_letters"] == GOOD_ROWS
    assert summary["dead_letters"] == BAD_ROWS + summary["job_dead_letters"]
    assert sum(summary["per_emotion"].values()) == summary["events_out"] > 0
    assert summary["stop_reason"].startswith("every source finished")

    # The summary agrees with what PostgreSQL holds.
    with postgres.connect() as conn:
        rows = conn.execute(f'SELECT emotion, count(*) FROM "{pg_schema}".events GROUP BY 1').fetchall()
        sources = conn.execute(f'SELECT DISTINCT source FROM "{pg_schema}".events').fetchall()
        (latency_ok,) = conn.execute(
            f'SELECT bool_and(written_at >= ingested_at) FROM "{pg_schema}".events'
        ).fetchone()
    assert {e: n for e, n in rows} == summary["per_emotion"]
    assert sum(n for _, n in rows) == summary["events_out"]
    assert sources == [("replay",)]
    assert summary["per_source"] == {"replay": summary["per_emotion"]}
    assert latency_ok
    assert 0 < summary["p50_latency_s"] <= summary["p99_latency_s"]
    assert summary["events_per_s"] > 0

    for name in ("emotion_distribution.png", "emotions_over_time.png", "top_hashtags.png"):
        assert (reports / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Summary: local-e2e" in output

    # Nothing left behind: no process of the run, no temporary data.
    assert leftover_pids(summary["run_id"]) == []
    assert not (workdir / "kafka").exists()
    assert not (workdir / "checkpoint").exists()


def test_a_crashed_component_fails_the_run_naming_it(tmp_path):
    doc = pipeline_doc(
        "local-crash",
        "goemotions",
        {"host": "127.0.0.1", "database": "streamotion", "credentialsSecret": "unused"},
        rate=20,
        loop=True,  # never ends by itself
    )
    file = tmp_path / "pipeline.yaml"
    file.write_text(yaml.safe_dump(doc))
    workdir = tmp_path / "work"
    log = open(tmp_path / "run.log", "w+")  # noqa: SIM115
    proc = subprocess.Popen(
        cli(str(file), "--local", "--tiny-model", "--plain", "--no-reports", "--workdir", str(workdir)),
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, start_new_session=True,
    )  # fmt: skip
    try:
        state_file = workdir / "run.json"
        deadline = time.monotonic() + HANG_GUARD_S
        state: dict = {}
        while not state.get("running"):
            assert proc.poll() is None, (tmp_path / "run.log").read_text()
            assert time.monotonic() < deadline, "the run never got running"
            if state_file.exists():
                state = json.loads(state_file.read_text())
            time.sleep(0.5)
        assert {"kafka", "postgres", "model", "job", "producer-replay"} <= set(state["components"])
        postgres_dir = Path(state["postgres_workdir"])
        assert postgres_dir.exists()

        os.kill(state["components"]["model"]["pid"], signal.SIGKILL)  # the model service crashes
        code = proc.wait(timeout=HANG_GUARD_S)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = (tmp_path / "run.log").read_text()
    assert code == 1, output
    assert "FAILED: model" in output
    assert "component 'model' failed: exited with code" in output
    assert leftover_pids(state["run_id"]) == []
    assert not postgres_dir.exists()
    assert not (workdir / "kafka").exists()

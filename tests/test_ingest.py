"""Producers against the real Kafka broker: replay, the event contract, dead letters, broker restarts."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from streamotion_ingest import ENV_FROM_SECRET, SECRET_FIELD, secret_env
from streamotion_ingest.context import bootstrap_servers

from streamotion.events import Event, json_schema
from tests.ingest_helpers import make_pipeline, pipeline_doc, read_all, run_source, values

ROOT = Path(__file__).resolve().parents[1]


def test_event_schema_is_current():
    on_disk = json.loads((ROOT / "docs" / "event.schema.json").read_text())
    assert on_disk == json_schema(), "run: python -m streamotion_ingest.schema > docs/event.schema.json"


def test_replay_n_events_give_n_messages_with_valid_keys(kafka, tmp_path, shared):
    dataset = shared / "data" / "goemotions" / "ekman" / "dev.tsv"
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {
                "name": "replay",
                "type": "replay",
                "replay": {"dataset": str(dataset), "ratePerSecond": 100000, "loop": True, "limit": 6000},
            }
        ],
    )
    assert run_source(p, "replay", kafka.bootstrap) == 6000  # > the 5,426 rows: the loop gives fresh ids
    msgs = read_all(kafka.bootstrap, topics["raw"], expect=6000)
    assert len(msgs) == 6000
    ids = set()
    for m in msgs:
        ev = Event.model_validate_json(m.value())
        assert m.key().decode() == f"replay:replay:{ev.id}" == ev.key  # source:platform:id
        assert ev.platform == "replay" and ev.source == "replay" and ev.channel == "dev"
        ids.add(ev.id)
    assert len(ids) == 6000
    rows = [line.split("\t")[2].strip() for line in dataset.read_text().splitlines() if line.strip()]
    assert set(rows) <= ids
    assert read_all(kafka.bootstrap, topics["deadLetter"], timeout=3) == []


def test_bundled_sample_replays(kafka, tmp_path):
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [{"name": "demo", "type": "replay", "replay": {"ratePerSecond": 100000, "loop": False}}],
    )
    assert run_source(p, "demo", kafka.bootstrap) == 1000
    evs = values(read_all(kafka.bootstrap, topics["raw"], expect=1000))
    assert len(evs) == 1000 and {e["channel"] for e in evs} == {"goemotions"}


def test_malformed_payloads_go_to_the_dlq_with_a_reason(kafka, tmp_path):
    data = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps({"id": "ok-1", "text": "Fine and dandy", "lang": "en"}),
        "{not json",
        json.dumps(["a", "list"]),
        json.dumps({"id": "no-text"}),
        json.dumps({"id": "bad-date", "text": "x", "created_at": "yesterday-ish"}),
        json.dumps({"text": "no id"}),
        json.dumps({"id": "ok-2", "text": "Also fine", "author": "alice"}),
    ]
    data.write_text("\n".join(lines) + "\n")
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {
                "name": "mixed",
                "type": "replay",
                "replay": {"dataset": str(data), "ratePerSecond": 1000, "loop": False},
            }
        ],
    )
    run_source(p, "mixed", kafka.bootstrap)
    good = values(read_all(kafka.bootstrap, topics["raw"], expect=2))
    assert sorted(e["id"] for e in good) == ["ok-1", "ok-2"]
    alice = next(e for e in good if e["id"] == "ok-2")
    assert alice["author"] and alice["author"] != "alice"  # hashed, never the handle
    dead = values(read_all(kafka.bootstrap, topics["deadLetter"], expect=5))
    assert len(dead) == 5
    by_payload = {d["payload"]: d for d in dead}
    assert set(by_payload) == set(lines[1:6])
    assert all(d["stage"] == "producer" and d["source"] == "mixed" for d in dead)
    assert "invalid JSON" in by_payload["{not json"]["reason"]
    assert "expected a JSON object" in by_payload[lines[2]]["reason"]
    assert "text" in by_payload[lines[3]]["reason"]
    assert "created_at" in by_payload[lines[4]]["reason"]
    assert "id" in by_payload[lines[5]]["reason"]


def test_filters_and_redaction(kafka, tmp_path):
    data = tmp_path / "f.jsonl"
    rows = [
        {"id": "1", "text": "The weather in Paris is lovely today, mail me at ann@example.com", "lang": "en"},
        {"id": "2", "text": "Il fait beau à Paris aujourd'hui, vraiment très beau", "lang": None},
        {"id": "3", "text": "Nothing relevant here at all, just words", "lang": "en"},
        {
            "id": "4",
            "text": "Paris: call +33 6 12 34 56 78 or ping @bob, https://t.co/x?token=s3cr3t",
            "lang": "en-GB",
        },
        {"id": "5", "text": "Paris ist schön und ich bin sehr glücklich heute", "lang": "de"},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {
                "name": "flt",
                "type": "replay",
                "languages": ["en", "fr"],
                "keywords": ["paris"],
                "redactPII": True,
                "replay": {"dataset": str(data), "ratePerSecond": 1000, "loop": False},
            }
        ],
    )
    run_source(p, "flt", kafka.bootstrap)
    evs = {e["id"]: e for e in values(read_all(kafka.bootstrap, topics["raw"], expect=3))}
    assert set(evs) == {"1", "2", "4"}  # 3: no keyword; 5: German
    assert evs["2"]["lang"] == "fr"  # detected offline
    assert "ann@example.com" not in evs["1"]["text"] and "[EMAIL]" in evs["1"]["text"]
    t4 = evs["4"]["text"]
    assert "@bob" not in t4 and "12 34 56" not in t4 and "s3cr3t" not in t4 and "https://t.co/x?token=" in t4


def test_broker_restart_mid_stream_loses_nothing(kafka, tmp_path, shared):
    dataset = shared / "data" / "goemotions" / "original" / "dev.tsv"
    n = 4000
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {
                "name": "steady",
                "type": "replay",
                "replay": {"dataset": str(dataset), "ratePerSecond": 800, "loop": False, "limit": n},
            }
        ],
    )
    done = threading.Event()
    result = {}

    def produce():
        try:
            result["n"] = run_source(p, "steady", kafka.bootstrap)
        finally:
            done.set()

    t = threading.Thread(target=produce)
    t.start()
    # restart once some events are in (the producer keeps going and retries while the broker is away)
    read_all(kafka.bootstrap, topics["raw"], expect=300, timeout=60, settle=0)
    assert not done.is_set()
    before, old_pid = kafka.bootstrap, kafka.process.pid
    kafka.restart(down_for=2)
    assert kafka.bootstrap == before and kafka.process.pid != old_pid  # same port, same data dir
    t.join(180)
    assert result.get("n") == n
    msgs = read_all(kafka.bootstrap, topics["raw"], expect=n, timeout=90)
    ids = {Event.model_validate_json(m.value()).id for m in msgs}
    expected = [line.split("\t")[2] for line in dataset.read_text().splitlines()[:n]]
    assert ids == set(expected)
    assert len(msgs) == n  # the idempotent producer wrote no duplicates


def test_produce_command_runs_replay_and_stops_on_sigterm(kafka, tmp_path):
    p, path, topics = make_pipeline(
        kafka,
        tmp_path,
        [{"name": "cmd", "type": "replay", "replay": {"ratePerSecond": 200, "loop": True}}],
    )
    env = {**os.environ, "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamotion",
            "produce",
            "--source",
            "cmd",
            "--pipeline",
            str(path),
            "--metrics-port",
            "0",
        ],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert len(read_all(kafka.bootstrap, topics["raw"], expect=50, settle=0)) >= 50
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    logs = [json.loads(line) for line in proc.stderr.read().splitlines() if line.startswith("{")]
    stopped = next(entry for entry in logs if entry["msg"] == "producer stopped")
    assert stopped["unacknowledged"] == 0 and stopped["pipeline"] == p.name
    # everything handled before SIGTERM was flushed to Kafka
    assert len(read_all(kafka.bootstrap, topics["raw"])) == stopped["handled"]


def test_produce_command_unknown_source_is_a_clear_error(tmp_path):
    import yaml

    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline_doc([{"name": "a", "type": "replay", "replay": {}}])))
    out = subprocess.run(
        [sys.executable, "-m", "streamotion", "produce", "--source", "nope", "--pipeline", str(path)],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "no source named 'nope'" in out.stderr


def test_bootstrap_resolution(monkeypatch):
    from streamotion.api.validate import parse

    p = parse(pipeline_doc([{"name": "a", "type": "replay", "replay": {}}]))
    monkeypatch.delenv("STREAMOTION_KAFKA_BOOTSTRAP", raising=False)
    assert bootstrap_servers(p) == "streamotion-kafka-bootstrap.test.svc:9092"
    monkeypatch.setenv("STREAMOTION_KAFKA_BOOTSTRAP", "env:1")
    assert bootstrap_servers(p) == "env:1"
    assert bootstrap_servers(p, "flag:2") == "flag:2"
    monkeypatch.delenv("STREAMOTION_KAFKA_BOOTSTRAP")
    p2 = parse(pipeline_doc([{"name": "a", "type": "replay", "replay": {}}], bootstrap="spec:3"))
    assert bootstrap_servers(p2) == "spec:3"


def test_env_from_secret_covers_every_secret_field():
    from streamotion.api.models import SOURCE_TYPES

    assert set(ENV_FROM_SECRET) == set(SOURCE_TYPES)
    p = __import__("streamotion.api.validate", fromlist=["parse"]).parse(
        pipeline_doc(
            [
                {
                    "name": "r",
                    "type": "reddit",
                    "reddit": {"subreddits": ["python"], "credentialsSecret": "rc"},
                },
                {"name": "h", "type": "http", "http": {"tokenSecret": "tok"}},
                {"name": "b", "type": "bluesky", "bluesky": {}},
            ]
        )
    )
    assert set(SECRET_FIELD) == {t for t, envs in ENV_FROM_SECRET.items() if envs}
    r, h, b = p.spec.sources
    assert secret_env(r) == [
        ("REDDIT_CLIENT_ID", "rc", "client_id"),
        ("REDDIT_CLIENT_SECRET", "rc", "client_secret"),
        ("REDDIT_USER_AGENT", "rc", "user_agent"),
    ]
    assert secret_env(h) == [("INGEST_TOKEN", "tok", "token")]
    assert secret_env(b) == []


@pytest.mark.parametrize(
    "text,expected",
    [
        ("write to jo.doe+x@mail.example.org now", "write to [EMAIL] now"),
        ("thanks @someone!", "thanks @[USER]!"),
        ("call 555-123-4567 today", "call [PHONE] today"),
        ("https://u:pw@host.io/p?api_key=abc&x=1", "https://[REDACTED]@host.io/p?api_key=[REDACTED]&x=1"),
        ("no pii in 2024, 3 cats", "no pii in 2024, 3 cats"),
        # dates and times are not phone numbers (the digit-run regex masked them)
        ("meeting on 2024-01-15 at 10:30", "meeting on 2024-01-15 at 10:30"),
        ("due 15.01.2024 or 01/15/2024, logged 2024-01-15T10:00:00Z", None),
        ("born 13.01.2000 (the matcher reads 1 + a local number)", None),
        ("ISBN 978-3-16-148410-0, v1.2.3, 192.168.100.200", None),
        ("tel:+1-202-555-0143 or +44 20 7946 0958", "tel:[PHONE] or [PHONE]"),
        ("mail me: /jo{x}@mail.example.org", "mail me: [EMAIL]"),  # RFC 5322 atext in the local part
        ("see https://a.io/unsubscribe?email=jo@x.com", "see https://a.io/unsubscribe?email=[EMAIL]"),
        # NUL characters (replayed data sets carry them): no IndexError, nothing swapped or lost
        ("a\x007\x00 b", "a\x007\x00 b"),
        ("a\x000\x00 https://x.io/p?token=t b", "a\x000\x00 https://x.io/p?token=[REDACTED] b"),
        ("\x00jo@x.com\x00 +33 6 12 34 56 78", "\x00[EMAIL]\x00 [PHONE]"),
    ],
)
def test_redact_pii(text, expected):
    from streamotion_ingest.filters import redact_pii

    assert redact_pii(text) == (text if expected is None else expected)

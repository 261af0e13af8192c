"""Event identity is ``<source>:<platform>:<id>``: two sources with overlapping platform ids both
land, a restarted looping replay never collides with itself, and existing rows are migrated (real
Kafka, PostgreSQL and bqemulator)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
from streamotion_ingest.publisher import CURSOR_HEADER
from streamotion_jobs.sinks import Batch
from streamotion_jobs.transform import enrich, parse_frame

from streamotion.events import Event, event_key
from streamotion.labels import EKMAN
from tests.ingest_helpers import make_pipeline, read_all, run_source

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _batch_from(msgs, batch_id: int, query: str = "q") -> Batch:
    """What the job does with raw-topic records (parse, classify), with a fixed model answer."""
    raw = pd.DataFrame(
        {
            "key": [m.key() for m in msgs],
            "value": [m.value() for m in msgs],
            "topic": [m.topic() for m in msgs],
            "partition": [m.partition() for m in msgs],
            "offset": [m.offset() for m in msgs],
        }
    )
    parsed = parse_frame(raw)
    ok = parsed[parsed["error"].isna()].reset_index(drop=True)
    bad = parsed[parsed["error"].notna()].reset_index(drop=True)
    scores = dict.fromkeys(EKMAN, 0.0) | {"joy": 0.9, "neutral": 0.1}
    results = [{"label": "joy", "score": 0.9, "scores": scores, "model_version": "m"}] * len(ok)
    return Batch(query, batch_id, enrich(ok, results, 0.15), bad, window_s=60, watermark_s=60)


def test_identity_format():
    e = Event(id="at://did:plc:x/p/1", source="sky", platform="bluesky", text="t", created_at=BASE)
    assert e.key == event_key("sky", "bluesky", "at://did:plc:x/p/1") == "sky:bluesky:at://did:plc:x/p/1"


def test_two_sources_with_overlapping_ids_both_land(kafka, tmp_path, postgres, pg_schema):
    """Two replays of one data set (or two http endpoints) send the same ids: both are stored."""
    from streamotion_jobs.sinks.postgres import PostgresSink

    data = tmp_path / "shared.jsonl"
    data.write_text(
        "".join(json.dumps({"id": str(i), "text": f"row {i} is lovely"}) + "\n" for i in range(5))
    )
    replay = {"dataset": str(data), "ratePerSecond": 10000, "loop": False}
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {"name": "first", "type": "replay", "replay": replay},
            {"name": "second", "type": "replay", "replay": replay},
        ],
    )
    assert run_source(p, "first", kafka.bootstrap) == 5
    assert run_source(p, "second", kafka.bootstrap) == 5
    msgs = read_all(kafka.bootstrap, topics["raw"], expect=10)
    keys = sorted(m.key().decode() for m in msgs)
    assert keys == sorted(f"{s}:replay:{i}" for s in ("first", "second") for i in range(5))

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    try:
        assert sink.write(_batch_from(msgs, 0)) is True
        with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
            rows = conn.execute("SELECT source, count(*) FROM events GROUP BY 1 ORDER BY 1").fetchall()
            assert rows == [("first", 5), ("second", 5)]
            ids = {r[0] for r in conn.execute("SELECT event_id FROM events")}
            assert ids == set(keys)
    finally:
        sink.close()


def test_restarted_looping_replay_starts_a_new_pass(kafka, tmp_path):
    """The pass number survives a restart: it is read back from the raw topic, not a local file."""
    data = tmp_path / "three.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "text": f"row {i}"}) + "\n" for i in range(3)))
    p, _, topics = make_pipeline(
        kafka,
        tmp_path,
        [
            {
                "name": "loop",
                "type": "replay",
                "replay": {"dataset": str(data), "ratePerSecond": 10000, "limit": 5},
            }
        ],
    )
    assert run_source(p, "loop", kafka.bootstrap) == 5  # pass 0 (r0, r1, r2), pass 1 (r0~1, r1~1)
    assert run_source(p, "loop", kafka.bootstrap) == 5  # a new pod: pass 2 (3 rows), pass 3 (2 rows)
    msgs = read_all(kafka.bootstrap, topics["raw"], expect=10)
    ids = [Event.model_validate_json(m.value()).id for m in msgs]
    assert len(ids) == len(set(ids)) == 10, sorted(ids)
    assert set(ids) == {"r0", "r1", "r2", "r0~1", "r1~1", "r0~2", "r1~2", "r2~2", "r0~3", "r1~3"}
    passes = {dict(m.headers())[CURSOR_HEADER].decode() for m in msgs}
    assert passes == {"0", "1", "2", "3"}


def _old_ids(batch: Batch) -> Batch:
    """The batch as the previous release wrote it: event_id = platform:id."""
    events = batch.events.copy()
    events["event_id"] = events["platform"] + ":" + events["id"]
    return Batch(
        batch.query_id, batch.batch_id, events, batch.dead_letters, batch.window_s, batch.watermark_s
    )


def _events(n: int, source: str) -> list[bytes]:
    return [
        Event(id=str(i), source=source, platform="http", text=f"so happy {i}", created_at=BASE).to_json()
        for i in range(n)
    ]


class _Msg:
    """A raw-topic record as confluent-kafka gives it (for the batches of the migration tests)."""

    def __init__(self, value: bytes, offset: int) -> None:
        self._value, self._offset = value, offset

    def key(self):
        return None

    def value(self):
        return self._value

    def topic(self):
        return "t"

    def partition(self):
        return 0

    def offset(self):
        return self._offset


def test_postgres_migration_rewrites_existing_ids(postgres, pg_schema, monkeypatch):
    from streamotion_jobs.sinks import postgres as pg
    from streamotion_jobs.sinks import with_windows

    every = pg.migrations()
    monkeypatch.setattr(pg, "migrations", lambda: [m for m in every if m[0] < 4])
    sink = pg.PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()  # the schema of the previous release
    old = _old_ids(_batch_from([_Msg(v, k) for k, v in enumerate(_events(3, "api"))], 0))
    # its rows as that release wrote them (today's write path needs migration 0005's staging tables)
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        rows = pg.event_rows(with_windows(old.events, old.window_s, None), old.query_id, old.batch_id)
        with conn.cursor().copy(f"COPY events ({', '.join(pg.EVENT_COLUMNS)}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)
    scored = old.events.assign(model_version="m2")
    assert sink.write_scores(scored) == 3
    monkeypatch.setattr(pg, "migrations", lambda: every)
    sink.open()  # the upgrade applies 0004
    try:
        with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
            ids = sorted(r[0] for r in conn.execute("SELECT event_id FROM events"))
            assert ids == ["api:http:0", "api:http:1", "api:http:2"]
            scores = sorted(r[0] for r in conn.execute("SELECT event_id FROM event_scores"))
            assert scores == ids
            joined = conn.execute("SELECT count(*) FROM v_model_comparison").fetchone()[0]
            assert joined == 3
        # the same events again (a replay from Kafka after the upgrade) are recognised
        again = _batch_from([_Msg(v, 10 + k) for k, v in enumerate(_events(3, "api"))], 1)
        assert sink.write(again) is True
        with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
            assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 3
    finally:
        sink.close()


def test_bigquery_migration_rewrites_existing_ids(bigquery_emulator, monkeypatch):
    import uuid

    from streamotion_jobs.sinks import bigquery as bq

    every = dict(bq.MIGRATIONS)
    monkeypatch.setattr(bq, "MIGRATIONS", {})
    dataset = "ident_" + uuid.uuid4().hex[:8]
    sink = bq.BigQuerySink(
        bigquery_emulator.project, dataset, client=bigquery_emulator.client(), log=lambda *_: None
    )
    sink.open()
    old = _old_ids(_batch_from([_Msg(v, k) for k, v in enumerate(_events(3, "api"))], 0))
    assert sink.write(old) is True
    assert sink.write_scores(old.events.assign(model_version="m2")) == 3
    monkeypatch.setattr(bq, "MIGRATIONS", every)
    sink.open()
    sink.open()  # recorded: not applied twice
    client = bigquery_emulator.client()
    ds = f"{bigquery_emulator.project}.{dataset}"

    def ids(table: str) -> list[str]:
        return sorted(r[0] for r in client.query(f"SELECT event_id FROM `{ds}.{table}`").result())

    assert ids("events") == ["api:http:0", "api:http:1", "api:http:2"]
    assert ids("event_scores") == ids("events")
    versions = [r[0] for r in client.query(f"SELECT version FROM `{ds}.schema_migrations`").result()]
    assert versions == [4, 5]  # 5: aggregate sums (#14)
    again = _batch_from([_Msg(v, 10 + k) for k, v in enumerate(_events(3, "api"))], 1)
    assert sink.write(again) is True
    assert ids("events") == ["api:http:0", "api:http:1", "api:http:2"]
    sink.close()

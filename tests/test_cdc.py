"""Change data capture (``type: cdc``): the Debezium envelope mapping (property-based), and end to
end with a real PostgreSQL (wal_level=logical), real Kafka, real Kafka Connect running Debezium
3.6.1.Final's PostgreSQL connector, the cdc producer and the streaming job into a PostgreSQL sink.

One Connect worker for the module; the end-to-end test kills and restarts it.
"""

from __future__ import annotations

import json
import os
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamotion import cdc
from streamotion.api.validate import parse
from streamotion.events import Event

TABLE = "public.reviews"


def cdc_pipeline(name: str, host: str = "127.0.0.1", port: int = 5432, sinks=None, **cdc_extra) -> object:
    return parse(
        {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": name, "namespace": "test"},
            "spec": {
                "kafka": {"partitions": 2},
                "sources": [
                    {
                        "name": "reviews",
                        "type": "cdc",
                        "redactPII": True,
                        "cdc": {
                            "host": host,
                            "port": port,
                            "database": "shop",
                            "credentialsSecret": "shop-db",
                            "sslMode": "disable",
                            "tables": [
                                {
                                    "name": TABLE,
                                    "idColumn": "id",
                                    "textColumn": "body",
                                    "timeColumn": "created_at",
                                    "authorColumn": "email",
                                    "channelColumn": "product",
                                }
                            ],
                            **cdc_extra,
                        },
                    }
                ],
                "processing": {"trigger": "500ms", "maxEventsPerTrigger": 200},
                "sinks": sinks
                or [{"type": "postgres", "postgres": {"host": "127.0.0.1", "credentialsSecret": "pg"}}],
            },
        }
    )


def envelope(op: str, after: dict | None, before: dict | None = None, table: str = TABLE, **extra) -> bytes:
    schema, name = table.split(".")
    return json.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "source": {"schema": schema, "table": name, "ts_ms": 1_780_000_000_000, "lsn": 123},
            "ts_ms": 1_780_000_000_100,
            **extra,
        }
    ).encode()


ROW = {
    "id": 7,
    "body": "I love it",
    "created_at": "2026-03-01T12:00:00.123456Z",
    "email": "a@b.c",
    "product": "mug",
}


def test_a_bad_cdc_block_is_refused_with_the_field_path():
    import yaml

    from streamotion.api.validate import validate_object

    body = yaml.safe_load(
        """
        apiVersion: streamotion.io/v1alpha2
        kind: StreamPipeline
        metadata: {name: bad}
        spec:
          sources:
          - name: r
            type: cdc
            cdc:
              host: db
              database: shop
              credentialsSecret: s
              tables: [{name: reviews, idColumn: id, textColumn: "bo dy", timeColumn: t}]
              operations: [insert, delete]
          - name: s
            type: replay
            replay: {}
            cdc:
              host: db
              database: x
              credentialsSecret: s
              tables: [{name: public.x, idColumn: id, textColumn: b, timeColumn: t}]
          sinks: [{type: postgres, postgres: {host: pg, credentialsSecret: pg}}]
        """
    )
    paths = {e.path for e in validate_object(body)}
    assert {
        "spec.sources[0].cdc.operations[1]",
        "spec.sources[0].cdc.tables[0].name",
        "spec.sources[0].cdc.tables[0].textColumn",
    } <= paths, paths
    del body["spec"]["sources"][0]  # valid schema: the cross-field rule (a cdc block only with type cdc)
    assert {e.path for e in validate_object(body)} == {"spec.sources[0].cdc"}
    assert cdc_pipeline("ok").spec.sources[0].cdc.operations == ["insert", "update"]  # the default


# ------------------------------------------------------------------------------------ mapping
def test_inserts_and_snapshot_reads_become_events_with_the_mapped_columns():
    source = cdc_pipeline("m1").spec.sources[0]
    for op in ("c", "r"):
        event = cdc.map_change(envelope(op, ROW), source=source)
        assert isinstance(event, Event), event
        assert event.platform == "cdc" and event.source == "reviews" and event.channel == "mug"
        assert event.text == "I love it" and event.id.startswith("public.reviews:7:")
        assert event.created_at.isoformat() == "2026-03-01T12:00:00.123456+00:00"
        assert event.author and "a@b.c" not in event.author  # a keyed hash, never the handle
    # the JSON converter with schemas wraps the same envelope: read alike
    wrapped = json.dumps({"schema": {"type": "struct"}, "payload": json.loads(envelope("c", ROW))})
    plain = cdc.map_change(envelope("c", ROW), source=source).model_dump(exclude={"ingested_at"})
    assert cdc.map_change(wrapped.encode(), source=source).model_dump(exclude={"ingested_at"}) == plain
    # time.precision.mode=connect: a timestamp column is epoch milliseconds
    millis = cdc.map_change(envelope("c", {**ROW, "created_at": 1_772_366_400_000}), source=source)
    assert millis.created_at.isoformat() == "2026-03-01T12:00:00+00:00"
    # a NULL time column: the change's commit time
    null_time = cdc.map_change(envelope("c", {**ROW, "created_at": None}), source=source)
    assert null_time.created_at.timestamp() == 1_780_000_000


def test_an_update_that_changes_the_text_is_a_new_version_and_one_that_does_not_is_the_same_event():
    source = cdc_pipeline("m2").spec.sources[0]
    first = cdc.map_change(envelope("c", ROW), source=source)
    same_text = cdc.map_change(envelope("u", {**ROW, "product": "cup"}), source=source)
    edited = cdc.map_change(envelope("u", {**ROW, "body": "I hate it now"}), source=source)
    assert same_text.id == first.id  # the sinks already hold it: stored once
    assert edited.id != first.id and edited.id.rsplit(":", 1)[0] == first.id.rsplit(":", 1)[0]
    # a resent change (Debezium delivers at least once) maps to the same id
    assert cdc.map_change(envelope("u", {**ROW, "body": "I hate it now"}), source=source).id == edited.id


def test_deletes_tombstones_and_operations_not_counted_are_skipped_not_dead_lettered():
    source = cdc_pipeline("m3", operations=["insert"]).spec.sources[0]
    assert cdc.map_change(None, source=source) == cdc.Skipped("tombstone")
    assert cdc.map_change(b"null", source=source) == cdc.Skipped("tombstone")
    assert cdc.map_change(envelope("d", None, ROW), source=source) == cdc.Skipped("delete")
    assert cdc.map_change(envelope("t", None), source=source) == cdc.Skipped("truncate")
    assert cdc.map_change(envelope("u", ROW), source=source) == cdc.Skipped("operation")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\xff\xfe", "not UTF-8"),
        (b"{oops", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"after": {}}', "not a Debezium change event"),
        (envelope("c", ROW, table="public.other"), "not in spec.cdc.tables"),
        (envelope("c", None), "without an 'after' row"),
        (envelope("c", {**ROW, "id": None}), "id column 'id'"),
        (envelope("c", {**ROW, "body": None}), "text column 'body'"),
        (envelope("c", {**ROW, "body": ""}), "invalid event"),
        (envelope("c", {**ROW, "created_at": "yesterday"}), "time column 'created_at'"),
    ],
)
def test_unreadable_change_events_say_why(value, reason):
    got = cdc.map_change(value, source=cdc_pipeline("m4").spec.sources[0])
    assert isinstance(got, cdc.Unreadable) and reason in got.reason, got


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_row = st.fixed_dictionaries(
    {},
    optional={
        "id": _json,
        "body": _json,
        "created_at": _json | st.integers(min_value=-(10**15), max_value=10**15),
        "email": _json,
        "product": _json,
    },
)
_envelope = st.fixed_dictionaries(
    {"op": st.sampled_from(["c", "r", "u", "d", "t", "m", "x", None]) | _json},
    optional={
        "after": _row | _json,
        "before": _row | _json,
        "source": st.fixed_dictionaries({"schema": st.just("public"), "table": st.just("reviews")})
        | st.fixed_dictionaries({}, optional={"schema": _json, "table": _json, "ts_ms": _json}),
        "ts_ms": _json,
    },
)


PROPERTY_SOURCE = cdc_pipeline("prop").spec.sources[0]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    doc=_envelope | _json,
    wrap=st.booleans(),
    raw=st.one_of(st.none(), st.binary(max_size=40)),
)
def test_the_mapping_never_raises_and_never_makes_an_event_of_a_delete_or_tombstone(doc, wrap, raw):
    source = PROPERTY_SOURCE
    value = raw if raw is not None else json.dumps({"schema": {}, "payload": doc} if wrap else doc).encode()
    got = cdc.map_change(value, source=source, topic="t", prefix="p")
    assert isinstance(got, Event | cdc.Unreadable | cdc.Skipped)
    if isinstance(got, cdc.Unreadable):
        assert got.reason  # a dead letter always says why
    inner = doc.get("payload") if isinstance(doc, dict) and set(doc) == {"schema", "payload"} else doc
    if raw is None and wrap:
        inner = doc
    if raw is None and (inner is None or (isinstance(inner, dict) and inner.get("op") in ("d", "t", "m"))):
        assert isinstance(got, cdc.Skipped)
    if isinstance(got, Event):
        assert isinstance(inner, dict) and inner.get("op") in ("c", "r", "u")
        assert got.id.startswith(f"{TABLE}:") and got.platform == "cdc"


def test_connector_config_pins_the_converters_and_names_one_slot_and_topic_per_source():
    p = cdc_pipeline("cfg")
    s = p.spec.sources[0]
    conf = cdc.connector_config(p, s, user="u", password="pw")
    assert (
        conf["value.converter.schemas.enable"] == "false" and conf["key.converter.schemas.enable"] == "false"
    )
    assert conf["time.precision.mode"] == "connect" and conf["snapshot.mode"] == "initial"
    assert conf["table.include.list"] == r"public\.reviews"
    assert cdc.table_topic(p, "reviews", TABLE) == f"{conf['topic.prefix']}.public.reviews"
    assert len(conf["slot.name"]) <= 63 and conf["slot.name"] == conf["publication.name"]
    other = cdc_pipeline("cfg2", startFrom="new")
    assert (
        cdc.connector_config(other, other.spec.sources[0], user="u", password="p")["snapshot.mode"]
        == "no_data"
    )
    assert cdc.slot_name(other, "reviews") != conf["slot.name"]


# ---------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    s = session("streamotion-cdc-tests", master="local[2]")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def logical_pg(tmp_path_factory):
    """A PostgreSQL with wal_level=logical: the captured database ``shop`` and the sink's."""
    from streamotion.dev.postgres import PostgresServer

    server = PostgresServer(workdir=tmp_path_factory.mktemp("pg-logical"), logical=True)
    server.start()
    with server.connect(autocommit=True) as conn:
        conn.execute("CREATE DATABASE shop")
    yield server
    server.cleanup()


def shop(server):
    import psycopg

    return psycopg.connect(server.dsn.rsplit("/", 1)[0] + "/shop", autocommit=True)


@pytest.fixture(scope="module")
def connect_worker(kafka, logical_pg, tmp_path_factory):
    """One Connect worker for the module, running the connector of the module's pipeline. Offsets
    are flushed rarely (10 min), so a killed worker resends every change it delivered."""
    from streamotion.dev.connect import KafkaConnect
    from streamotion.local.cdc import connectors

    host, port = logical_pg.address.split(":")
    p = cdc_pipeline("c" + uuid.uuid4().hex[:8], host=host, port=int(port))
    # what `streamotion run --local` does: the database's missing table created with the mapped
    # columns, the connector pointed at the run's server
    configs, notes = connectors(p, logical_pg.dsn, say=print)
    assert notes == [f"cdc source reviews: created table shop.{TABLE} (empty) on the run's PostgreSQL"]
    with shop(logical_pg) as conn:
        conn.execute(
            "INSERT INTO reviews (body, email, product) VALUES ('I love this mug, wonderful', 'ann@x.io', 'mug'),"
            "('Terrible, it broke and I am angry', 'bob@x.io', 'cup'),"
            "('Mail me at jane.doe@example.com, I am so happy', NULL, 'mug')"
        )
    [name] = configs
    assert configs[name]["database.hostname"] == host and configs[name]["database.port"] == port
    worker = KafkaConnect(
        kafka.bootstrap, configs, workdir=tmp_path_factory.mktemp("connect"), offset_flush_ms=600_000
    )
    worker.start()
    worker.wait_running(name)
    worker.pipeline, worker.connector = p, name
    yield worker
    worker.stop()


class BridgeThread:
    def __init__(self, p, bootstrap: str):
        from streamotion_ingest.cdc import Bridge
        from streamotion_ingest.run import make_publisher

        self.publisher = make_publisher(p, "reviews", bootstrap)
        self.bridge = Bridge(p, "reviews", self.publisher)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            self.bridge.run()
        except BaseException as exc:
            self.error = exc

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.bridge.stop.set()
        self.thread.join(30)
        self.bridge.close()
        self.publisher.close(10)


def test_inserted_and_updated_rows_arrive_classified_once_across_a_connect_restart_with_pii_redacted(
    spark, kafka, model_server, logical_pg, connect_worker, pg_schema, tmp_path
):
    from confluent_kafka import Producer

    from streamotion.naming import topic_names
    from tests.test_jobs import JobThread, new_job, pg_rows, read_topic, wait_for

    p = connect_worker.pipeline
    p.spec.sinks[0].postgres.schema_ = pg_schema
    names = topic_names(p)
    kafka.create_topic(names["raw"], partitions=2)
    kafka.create_topic(names["deadLetter"], partitions=1)
    os.environ["STREAMOTION_PG_DSN"] = logical_pg.dsn

    def stored() -> dict[str, tuple]:
        try:
            rows = pg_rows(
                logical_pg, pg_schema, "SELECT event_id, text, emotion, channel, author FROM events"
            )
        except Exception:
            return {}
        return {r[0]: r[1:] for r in rows}

    def texts() -> list[str]:
        return sorted(v[0] for v in stored().values())

    job = new_job(p, spark, kafka, model_server.url, tmp_path / "ckpt")
    with JobThread(job) as jt, BridgeThread(p, kafka.bootstrap) as bt:
        wait_for(lambda: len(stored()) == 3 or texts(), timeout=180, what="the snapshot's 3 rows", job=jt)
        with shop(logical_pg) as conn:
            conn.execute("UPDATE reviews SET body = 'Now I hate this mug' WHERE id = 1")  # a new version
            conn.execute("UPDATE reviews SET product = 'teacup' WHERE id = 2")  # same text: same event
            conn.execute("DELETE FROM reviews WHERE id = 3")  # not an event
            conn.execute("INSERT INTO reviews (body, product) VALUES ('What a surprise, amazing', 'mug')")
        wait_for(lambda: len(stored()) == 5 or texts(), timeout=120, what="the update and the insert", job=jt)
        # Connect killed: nothing of its offsets was flushed, so it snapshots and streams again
        raw_before = len(read_topic(kafka, names["raw"], 10**6, timeout=3))
        connect_worker.kill()
        with shop(logical_pg) as conn:
            conn.execute("INSERT INTO reviews (body, product) VALUES ('So sad and lonely today', 'cup')")
        connect_worker.start()
        connect_worker.wait_running(connect_worker.connector)
        wait_for(
            lambda: len(stored()) == 6 or texts(), timeout=120, what="the row inserted while down", job=jt
        )
        # a change event Connect could not have written: dead-lettered by the producer with the reason
        producer = Producer({"bootstrap.servers": kafka.bootstrap})
        producer.produce(cdc.table_topic(p, "reviews", TABLE), value=b'{"op": "c", "after": "oops"}')
        assert producer.flush(10) == 0
        dead = read_topic(kafka, names["deadLetter"], 1, timeout=60)
        raw_after = read_topic(kafka, names["raw"], 10**6, timeout=3)
    assert bt.error is None
    # the restart resent changes (at least once): more raw records than events ...
    assert len(raw_after) > raw_before
    assert len(raw_after) > len({m.key() for m in raw_after})
    # ... and the sink holds each version exactly once, classified
    rows = stored()
    assert len(rows) == 6
    assert sorted(v[0] for v in rows.values()) == sorted(
        [
            "I love this mug, wonderful",
            "Now I hate this mug",
            "Terrible, it broke and I am angry",
            "Mail me at [EMAIL], I am so happy",
            "What a surprise, amazing",
            "So sad and lonely today",
        ]
    ), rows
    assert all(v[1] for v in rows.values())  # every row has its emotion
    ids = {k.split(":")[3] for k in rows}  # source:platform:schema.table:row:version
    assert ids == {"1", "2", "3", "4", "5"}
    assert all(k.startswith("reviews:cdc:public.reviews:") for k in rows)
    assert not any("jane.doe@example.com" in v[0] or "@x.io" in (v[3] or "") for v in rows.values())
    letters = [json.loads(m.value()) for m in dead]
    assert any("without an 'after' row" in d["reason"] and d["stage"] == "producer" for d in letters), letters

"""PostgreSQL sink (psycopg 3): one transaction per micro-batch, recorded with its batch id.

Inside that transaction: skip if ``(query_id, batch_id)`` is in ``batches``; insert the events
(``ON CONFLICT (event_id) DO NOTHING``); insert the dead letters (keyed by topic/partition/offset);
recompute every aggregate of the windows the new on-time events touched, from the events table
(upsert on window start + dimensions), so aggregates always equal a GROUP BY over event rows;
record the batch and the new watermark. Either all of it commits or none of it does.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pandas as pd

from streamotion_jobs.sinks import US, Batch, Sink, next_watermark, with_windows

MIGRATIONS_LOCK = 0x5354524D  # pg_advisory_xact_lock key: one migrator at a time


def migrations() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every file in migrations/postgres, in order."""
    folder = resources.files("streamotion_jobs") / "migrations" / "postgres"
    out = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name, entry.read_text()))
    return sorted(out)


def _now_us() -> int:
    return int(time.time() * US)


def _ts(us: Any) -> datetime | None:
    if us is None or (isinstance(us, float) and math.isnan(us)) or us is pd.NA:
        return None
    return datetime.fromtimestamp(int(us) / US, UTC)


def _val(v: Any) -> Any:
    if v is None or v is pd.NA:
        return None
    if isinstance(v, float) and math.isnan(v):
        return None
    if isinstance(v, str) and "\x00" in v:
        return _text(v)
    return v


def _text(v: Any) -> str:
    """PostgreSQL text cannot hold NUL characters: they become U+FFFD (the rest is kept)."""
    return str(v).replace("\x00", "\ufffd")


def _list(v: Any) -> list[str]:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return []
    return [str(x) for x in list(v)]


EVENT_COLUMNS = (
    "event_id",
    "id",
    "source",
    "platform",
    "channel",
    "author",
    "text",
    "clean_text",
    "lang",
    "created_at",
    "ingested_at",
    "url",
    "hashtags",
    "terms",
    "text_length",
    "emotion",
    "score",
    "scores",
    "sentiment",
    "sentiment_index",
    "model_version",
    "window_start",
    "window_end",
    "late",
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "query_id",
    "batch_id",
    "classified_at",
    "labels",
)


def event_rows(events: pd.DataFrame, query_id: str, batch_id: int) -> list[tuple]:
    rows = []
    for r in events.to_dict("records"):
        rows.append(
            (
                _text(r["event_id"]),
                _text(r["id"]),
                _text(r["source"]),
                r["platform"],
                _val(r["channel"]),
                _val(r["author"]),
                _text(r["text"]),
                _text(r["clean_text"]),
                _val(r["lang"]),
                _ts(r["created_at_us"]),
                _ts(r["ingested_at_us"]),
                _val(r["url"]),
                _list(r["hashtags"]),
                _list(r["terms"]),
                int(r["text_length"]),
                r["emotion"],
                float(r["score"]),
                r["scores"],
                r["sentiment"],
                float(r["sentiment_index"]),
                r["model_version"],
                _ts(r["window_start_us"]),
                _ts(r["window_end_us"]),
                bool(r["late"]),
                _val(r["kafka_topic"]),
                None if _val(r["kafka_partition"]) is None else int(r["kafka_partition"]),
                None if _val(r["kafka_offset"]) is None else int(r["kafka_offset"]),
                query_id,
                batch_id,
                _ts(r.get("classified_at_us")),
                _list(r.get("labels")),
            )
        )
    return rows


# Aggregates of the given windows, recomputed from the on-time event rows (upsert).
AGGREGATES_SQL = (
    """
    INSERT INTO emotion_window AS t (window_start, window_end, source, channel, lang, emotion,
                                     events, mean_score, mean_sentiment_index, updated_at)
    SELECT window_start, window_end, source, coalesce(channel, ''), coalesce(lang, ''), emotion,
           count(*), avg(score), avg(sentiment_index), now()
    FROM events WHERE window_start = ANY(%(windows)s) AND NOT late
    GROUP BY window_start, window_end, source, coalesce(channel, ''), coalesce(lang, ''), emotion
    ON CONFLICT (window_start, source, channel, lang, emotion) DO UPDATE
    SET events = excluded.events, mean_score = excluded.mean_score,
        mean_sentiment_index = excluded.mean_sentiment_index, updated_at = excluded.updated_at
    """,
    """
    INSERT INTO hashtag_window AS t (window_start, window_end, hashtag, events, updated_at)
    SELECT window_start, window_end, h, count(*), now()
    FROM events, unnest(hashtags) AS h
    WHERE window_start = ANY(%(windows)s) AND NOT late
    GROUP BY window_start, window_end, h
    ON CONFLICT (window_start, hashtag) DO UPDATE
    SET events = excluded.events, updated_at = excluded.updated_at
    """,
    """
    INSERT INTO term_window AS t (window_start, window_end, lang, term, events, updated_at)
    SELECT window_start, window_end, coalesce(lang, ''), w, count(*), now()
    FROM events, unnest(terms) AS w
    WHERE window_start = ANY(%(windows)s) AND NOT late
    GROUP BY window_start, window_end, coalesce(lang, ''), w
    ON CONFLICT (window_start, lang, term) DO UPDATE
    SET events = excluded.events, updated_at = excluded.updated_at
    """,
    """
    INSERT INTO author_activity AS t (window_start, window_end, author, events, mean_text_length, updated_at)
    SELECT window_start, window_end, author, count(*), avg(text_length), now()
    FROM events
    WHERE window_start = ANY(%(windows)s) AND NOT late AND author IS NOT NULL
    GROUP BY window_start, window_end, author
    ON CONFLICT (window_start, author) DO UPDATE
    SET events = excluded.events, mean_text_length = excluded.mean_text_length,
        updated_at = excluded.updated_at
    """,
)


# The watermark so far: each batch's counts for at most its commit time minus the watermark delay
# (the job's clock bounds it), so one logged from a future-dated event cannot keep windows final.
WATERMARK_SQL = """
    SELECT max(CASE WHEN watermark > committed_at - make_interval(secs => %(delay_s)s)
                    THEN committed_at - make_interval(secs => %(delay_s)s) ELSE watermark END)
    FROM batches"""


class PostgresSink(Sink):
    name = "postgres"

    def __init__(self, dsn: str, schema: str = "public", connect_timeout: int = 10, log=print) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.log = log
        self._conn = None

    # ------------------------------------------------------------------------ connection
    def connect(self):
        import psycopg

        conn = psycopg.connect(
            self.dsn,
            connect_timeout=self.connect_timeout,
            options=f"-c search_path={self.schema}",
            autocommit=True,
        )
        return conn

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self.connect()
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    # ------------------------------------------------------------------------ migrations
    def open(self) -> None:
        """Create the schema and apply pending versioned migrations (in one transaction)."""
        from psycopg import sql

        conn = self._connection()
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATIONS_LOCK,))
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema)))
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version integer PRIMARY KEY, name text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            applied = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            for version, name, text in migrations():
                if version in applied:
                    continue
                self.log(f"postgres: applying migration {name} in schema {self.schema}")
                conn.execute(text)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))

    # ------------------------------------------------------------------------ batches
    def write(self, batch: Batch) -> bool:
        try:
            return self._write(batch)
        except Exception:
            self.close()  # a broken or aborted connection is not reused
            raise

    def _write(self, batch: Batch) -> bool:
        conn = self._connection()
        started = time.monotonic()
        with conn.transaction():
            cur = conn.cursor()
            done = cur.execute(
                "SELECT 1 FROM batches WHERE query_id = %s AND batch_id = %s",
                (batch.query_id, batch.batch_id),
            ).fetchone()
            if done:
                return False
            (watermark,) = cur.execute(WATERMARK_SQL, {"delay_s": batch.watermark_s}).fetchone()
            watermark_us = None if watermark is None else int(watermark.timestamp() * US)
            events = with_windows(batch.events, batch.window_s, watermark_us)
            cur.execute("CREATE TEMP TABLE staging_events (LIKE events INCLUDING DEFAULTS) ON COMMIT DROP")
            cols = ", ".join(EVENT_COLUMNS)
            with cur.copy(f"COPY staging_events ({cols}) FROM STDIN") as copy:
                for row in event_rows(events, batch.query_id, batch.batch_id):
                    copy.write_row(row)
            inserted = cur.execute(
                f"""INSERT INTO events ({cols}) SELECT {cols} FROM staging_events
                    ON CONFLICT (event_id) DO NOTHING RETURNING window_start, late"""
            ).fetchall()
            windows = sorted({ws for ws, late in inserted if not late})
            if windows:
                for statement in AGGREGATES_SQL:
                    cur.execute(statement, {"windows": windows})
            dead = batch.dead_letters
            if not dead.empty:
                cur.executemany(
                    """INSERT INTO dead_letters (kafka_topic, kafka_partition, kafka_offset, reason, payload,
                                                query_id, batch_id)
                       VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING""",
                    [
                        (
                            r["kafka_topic"],
                            int(r["kafka_partition"]),
                            int(r["kafka_offset"]),
                            _text(r["error"]),
                            _text(_val(r["payload"]) or ""),
                            batch.query_id,
                            batch.batch_id,
                        )
                        for r in dead.to_dict("records")
                    ],
                )
            new_watermark = next_watermark(watermark_us, events, batch.watermark_s, _now_us())
            late = sum(1 for _, is_late in inserted if is_late)
            cur.execute(
                """INSERT INTO batches (query_id, batch_id, events, late_events, dead_letters, watermark)
                   VALUES (%s, %s, %s, %s, %s, %s)""",
                (
                    batch.query_id,
                    batch.batch_id,
                    len(inserted),
                    late,
                    len(dead),
                    _ts(new_watermark),
                ),
            )
        batch.stats["postgres_s"] = time.monotonic() - started
        batch.stats["postgres_inserted"] = len(inserted)
        return True

    # ------------------------------------------------------------------------ re-scoring
    def write_scores(self, scored: pd.DataFrame) -> int:
        """Backfill results: one row per (event_id, model_version), replaced when run again."""
        conn = self._connection()
        rows = [
            (
                r["event_id"],
                r["model_version"],
                _ts(r["created_at_us"]),
                r["source"],
                r["emotion"],
                float(r["score"]),
                r["scores"],
                r["sentiment"],
                float(r["sentiment_index"]),
                _list(r.get("labels")),
            )
            for r in scored.to_dict("records")
        ]
        with conn.transaction():
            conn.cursor().executemany(
                """INSERT INTO event_scores (event_id, model_version, created_at, source, emotion, score, scores,
                                            sentiment, sentiment_index, labels)
                   VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s)
                   ON CONFLICT (event_id, model_version) DO UPDATE
                   SET emotion = excluded.emotion, score = excluded.score, scores = excluded.scores,
                       sentiment = excluded.sentiment, sentiment_index = excluded.sentiment_index,
                       labels = excluded.labels, scored_at = now()""",
                rows,
            )
        return len(rows)

    def read_events(self, start: datetime, end: datetime) -> pd.DataFrame:
        """Events with created_at in [start, end), for backfills from the sink."""
        conn = self._connection()
        cur = conn.execute(
            """SELECT event_id, id, source, platform, channel, author, text, clean_text, lang,
                      (extract(epoch FROM created_at) * 1000000)::bigint AS created_at_us,
                      (extract(epoch FROM ingested_at) * 1000000)::bigint AS ingested_at_us,
                      url, hashtags, terms, text_length, kafka_topic, kafka_partition, kafka_offset
               FROM events WHERE created_at >= %s AND created_at < %s ORDER BY created_at""",
            (start, end),
        )
        names = [d.name for d in cur.description]
        return pd.DataFrame(cur.fetchall(), columns=names)


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


# ---------------------------------------------------------------------------- backfill at scale (#14)
# Re-scoring writes from the executors: each Spark partition replaces its own rows of the run in
# event_scores_staging (DELETE + COPY in one transaction, so a retried task never doubles them);
# the driver then upserts the run into event_scores in one transaction (a re-run REPLACES scores).
SCORES_STAGING_DDL = """CREATE UNLOGGED TABLE IF NOT EXISTS event_scores_staging (
    run_id          text NOT NULL,
    part            int NOT NULL,
    event_id        text NOT NULL,
    model_version   text NOT NULL,
    created_at      timestamptz NOT NULL,
    source          text NOT NULL,
    emotion         text NOT NULL,
    score           double precision NOT NULL,
    scores          jsonb NOT NULL,
    sentiment       text NOT NULL,
    sentiment_index double precision NOT NULL,
    labels          text[] NOT NULL DEFAULT '{}'
)"""
SCORE_COLUMNS = (
    "event_id, model_version, created_at, source, emotion, score, scores, sentiment, sentiment_index, labels"
)
SCORES_STAGED = "part int, rows long"


def scores_stager(dsn: str, schema: str, run_id: str, connect_timeout: int = 10):
    """The ``mapInPandas`` function of :func:`stage_scores` (executors): captures only the DSN
    (credentials from the executor's PGUSER/PGPASSWORD), the schema and the run id."""

    def stage_partition(frames):
        import psycopg
        from pyspark import TaskContext

        ctx = TaskContext.get()
        part = ctx.partitionId() if ctx is not None else 0
        rows = [
            (
                r["event_id"],
                r["model_version"],
                _ts(r["created_at_us"]),
                r["source"],
                r["emotion"],
                float(r["score"]),
                r["scores"],
                r["sentiment"],
                float(r["sentiment_index"]),
                _list(r.get("labels")),
            )
            for pdf in frames
            for r in pdf.to_dict("records")
        ]
        with psycopg.connect(
            dsn, connect_timeout=connect_timeout, options=f"-c search_path={schema}"
        ) as conn:
            conn.execute("DELETE FROM event_scores_staging WHERE run_id = %s AND part = %s", (run_id, part))
            with conn.cursor().copy(
                f"COPY event_scores_staging (run_id, part, {SCORE_COLUMNS}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row((run_id, part, *row))
        yield pd.DataFrame(
            {"part": pd.Series([part], dtype="int32"), "rows": pd.Series([len(rows)], dtype="int64")}
        )

    return stage_partition


def stage_scores(sink: PostgresSink, scored, run_id: str) -> dict[int, int]:
    """Backfill results (a Spark DataFrame, ``transform.CLASSIFIED_SCHEMA``) into the staging table,
    from the executors; returns rows per partition (the driver keeps only these counts)."""
    sink._connection().execute(SCORES_STAGING_DDL)
    report = scored.mapInPandas(
        scores_stager(sink.dsn, sink.schema, run_id, sink.connect_timeout), SCORES_STAGED
    ).collect()
    staged = {int(r["part"]): int(r["rows"]) for r in report}
    sink.__dict__.setdefault("_scores_staged", {})[run_id] = staged
    return staged


def commit_scores(sink: PostgresSink, run_id: str) -> int:
    """One transaction: the run's staged scores upserted into event_scores (an (event_id,
    model_version) already there is UPDATED: a re-run replaces), the run's staging removed. The
    staged counts must match what the partitions reported."""
    staged = sink.__dict__.get("_scores_staged", {}).pop(run_id, None)
    conn = sink._connection()
    conn.execute(SCORES_STAGING_DDL)
    with conn.transaction():
        have = dict(
            conn.execute(
                "SELECT part, count(*) FROM event_scores_staging WHERE run_id = %s GROUP BY part", (run_id,)
            ).fetchall()
        )
        if staged is not None:
            expected = {p: n for p, n in staged.items() if n}
            if {int(p): int(n) for p, n in have.items()} != expected:
                raise RuntimeError(
                    f"run {run_id}: staged scores {have} differ from the partitions' {expected}"
                )
        cur = conn.execute(
            f"""INSERT INTO event_scores ({SCORE_COLUMNS})
                SELECT DISTINCT ON (event_id, model_version) {SCORE_COLUMNS}
                FROM event_scores_staging WHERE run_id = %s ORDER BY event_id, model_version, part
                ON CONFLICT (event_id, model_version) DO UPDATE
                SET created_at = excluded.created_at, source = excluded.source, emotion = excluded.emotion,
                    score = excluded.score, scores = excluded.scores, sentiment = excluded.sentiment,
                    sentiment_index = excluded.sentiment_index, labels = excluded.labels, scored_at = now()""",
            (run_id,),
        )
        written = cur.rowcount
        conn.execute("DELETE FROM event_scores_staging WHERE run_id = %s", (run_id,))
    return written


EVENTS_READ_SQL = """SELECT event_id, id, source, platform, channel, author, text, clean_text, lang,
       (extract(epoch FROM created_at) * 1000000)::bigint AS created_at_us,
       (extract(epoch FROM ingested_at) * 1000000)::bigint AS ingested_at_us,
       url, hashtags, terms, text_length, kafka_topic, kafka_partition, kafka_offset
FROM events WHERE created_at >= %s AND created_at < %s"""


def events_reader(dsn: str, schema: str, connect_timeout: int = 10):
    """``mapInPandas`` function over (lo_us, hi_us) time slices: each task reads the events of its
    slices (an index range scan on created_at) on the executor, not through the driver."""

    def read(slices):
        import psycopg

        from streamotion_jobs.sinks.bigquery import event_frame

        with psycopg.connect(
            dsn, connect_timeout=connect_timeout, options=f"-c search_path={schema}"
        ) as conn:
            for pdf in slices:
                for lo, hi in zip(pdf["lo_us"], pdf["hi_us"], strict=True):
                    cur = conn.execute(EVENTS_READ_SQL, (_ts(lo), _ts(hi)))
                    names = [d.name for d in cur.description]
                    while batch := cur.fetchmany(5000):
                        yield event_frame(pd.DataFrame(batch, columns=names))

    return read

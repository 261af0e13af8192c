"""PostgreSQL sink (psycopg 3): rows staged from the executors, one transaction per micro-batch.

Staging (:meth:`PostgresSink.stage`, on the executors): each partition of the batch's events and dead
letters COPYs its rows into ``events_staging`` / ``dead_letters_staging``, tagged (query_id,
batch_id, part), in one transaction that first deletes what an earlier attempt of that partition
staged, so a retried task replaces its rows.

Commit (:meth:`PostgresSink.commit`, on the driver), one transaction: ``pg_advisory_xact_lock`` per
sink schema (a zombie driver or a second job cannot interleave); skip if ``(query_id, batch_id)`` is
in ``batches``; ``INSERT ... SELECT ... ON CONFLICT (event_id) DO NOTHING RETURNING`` from staging
into ``events``, the staged row counts checked against what the executors reported; the aggregates
upserted incrementally from exactly the returned rows that are on time (sums and counts; the means
of ``emotion_window`` and ``author_activity`` are derived in views); dead letters (keyed by
topic/partition/offset); the ledger row with the batch's end offsets and watermark; the one-row
``sink_state`` (watermark so far, furthest offsets: no scan of ``batches``); staging removed.
Either all of it commits or none of it does.
"""

from __future__ import annotations

import json
import math
import time
from datetime import UTC, datetime
from importlib import resources
from typing import Any

import pandas as pd

from streamotion_jobs.sinks import US, Batch, BatchInfo, Sink, with_windows

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


# ---------------------------------------------------------------------------- staging (executors)
STAGED_EVENT_COLUMNS = tuple(c for c in EVENT_COLUMNS if c != "late")  # late is decided at commit
DEAD_LETTER_COLUMNS = (
    "kafka_topic",
    "kafka_partition",
    "kafka_offset",
    "reason",
    "payload",
    "query_id",
    "batch_id",
)
STAGING = {"events": "events_staging", "dead_letters": "dead_letters_staging"}
STAGED_SCHEMA = "part int, rows long"  # what each partition's staging task reports to the driver


def staged_event_rows(events: pd.DataFrame, query_id: str, batch_id: int, window_s: float) -> list[tuple]:
    """The staging rows of classified events (windows from ``created_at``; ``late`` left to the commit)."""
    late = EVENT_COLUMNS.index("late")
    return [
        row[:late] + row[late + 1 :]
        for row in event_rows(with_windows(events, window_s, None), query_id, batch_id)
    ]


def dead_letter_rows(dead: pd.DataFrame, query_id: str, batch_id: int) -> list[tuple]:
    return [
        (
            _text(r["kafka_topic"]),
            int(r["kafka_partition"]),
            int(r["kafka_offset"]),
            _text(r["error"]),
            _text(_val(r["payload"]) or ""),
            query_id,
            batch_id,
        )
        for r in dead.to_dict("records")
    ]


def stage_rows(
    dsn: str,
    schema: str,
    kind: str,
    query_id: str,
    batch_id: int,
    part: int,
    frames,
    window_s: float,
    connect_timeout: int = 10,
) -> int:
    """Stage one partition's rows (an iterator of pandas frames) in ONE transaction that first removes
    what an earlier attempt of the same partition staged (a retried or speculative task replaces it;
    an advisory lock per partition orders two attempts running at once). Runs on an executor."""
    import psycopg

    frames = (f for f in frames if len(f))
    first = next(frames, None)
    if first is None:
        return 0  # nothing to stage: no connection
    table = STAGING[kind]
    columns = (*STAGED_EVENT_COLUMNS, "part") if kind == "events" else (*DEAD_LETTER_COLUMNS, "part")
    rows = 0
    options = f"-c search_path={schema}"
    with (
        psycopg.connect(dsn, connect_timeout=connect_timeout, options=options, autocommit=True) as conn,
        conn.transaction(),
    ):
        conn.execute(
            "SELECT pg_advisory_xact_lock(%s, hashtext(%s))",
            (STAGING_LOCK, f"{kind}:{query_id}:{batch_id}:{part}"),
        )
        conn.execute(
            f"DELETE FROM {table} WHERE query_id = %s AND batch_id = %s AND part = %s",
            (query_id, batch_id, part),
        )
        with conn.cursor().copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
            for frame in _chain(first, frames):
                if kind == "events":
                    batch_rows = staged_event_rows(frame, query_id, batch_id, window_s)
                else:
                    batch_rows = dead_letter_rows(frame, query_id, batch_id)
                for row in batch_rows:
                    copy.write_row((*row, part))
                rows += len(batch_rows)
    return rows


def _chain(first, rest):
    yield first
    yield from rest


def stager(dsn: str, schema: str, kind: str, info: BatchInfo, connect_timeout: int = 10):
    """The ``mapInPandas`` function that stages each partition and reports (part, rows). It captures
    only the DSN (credentials come from the executor's PGUSER/PGPASSWORD), schema and batch metadata."""
    query_id, batch_id, window_s = info.query_id, info.batch_id, info.window_s

    def stage_partition(frames):
        from pyspark import TaskContext

        part = TaskContext.get().partitionId()
        rows = stage_rows(dsn, schema, kind, query_id, batch_id, part, frames, window_s, connect_timeout)
        yield pd.DataFrame(
            {"part": pd.Series([part], dtype="int32"), "rows": pd.Series([rows], dtype="int64")}
        )

    return stage_partition


# ---------------------------------------------------------------------------- commit (driver)
# The batch's events, from staging, into events; the aggregates from exactly the rows that were new
# and on time (sums and counts: emotion_window and author_activity are views deriving the means).
COMMIT_EVENTS_SQL = f"""
WITH staged AS (
    SELECT * FROM events_staging
    WHERE query_id = %(query_id)s AND batch_id = %(batch_id)s AND part = ANY(%(parts)s)
), new AS (
    INSERT INTO events ({", ".join(STAGED_EVENT_COLUMNS)}, late)
    SELECT {", ".join(STAGED_EVENT_COLUMNS)}, coalesce(window_end <= %(watermark)s::timestamptz, false)
    FROM staged
    ON CONFLICT (event_id) DO NOTHING
    RETURNING window_start, window_end, source, channel, lang, emotion, score, sentiment_index,
              hashtags, terms, author, text_length, late
), on_time AS (
    SELECT * FROM new WHERE NOT late
), emotion AS (
    INSERT INTO emotion_window_totals AS t (window_start, window_end, source, channel, lang, emotion,
                                            events, sum_score, sum_sentiment_index, updated_at)
    SELECT window_start, window_end, source, coalesce(channel, ''), coalesce(lang, ''), emotion,
           count(*), sum(score), sum(sentiment_index), now()
    FROM on_time GROUP BY 1, 2, 3, 4, 5, 6
    ON CONFLICT (window_start, source, channel, lang, emotion) DO UPDATE
    SET events = t.events + excluded.events, sum_score = t.sum_score + excluded.sum_score,
        sum_sentiment_index = t.sum_sentiment_index + excluded.sum_sentiment_index,
        updated_at = excluded.updated_at
), hashtag AS (
    INSERT INTO hashtag_window AS t (window_start, window_end, hashtag, events, updated_at)
    SELECT window_start, window_end, h, count(*), now()
    FROM on_time, unnest(hashtags) AS h GROUP BY 1, 2, 3
    ON CONFLICT (window_start, hashtag) DO UPDATE
    SET events = t.events + excluded.events, updated_at = excluded.updated_at
), term AS (
    INSERT INTO term_window AS t (window_start, window_end, lang, term, events, updated_at)
    SELECT window_start, window_end, coalesce(lang, ''), w, count(*), now()
    FROM on_time, unnest(terms) AS w GROUP BY 1, 2, 3, 4
    ON CONFLICT (window_start, lang, term) DO UPDATE
    SET events = t.events + excluded.events, updated_at = excluded.updated_at
), author AS (
    INSERT INTO author_activity_totals AS t (window_start, window_end, author, events, sum_text_length, updated_at)
    SELECT window_start, window_end, author, count(*), sum(text_length), now()
    FROM on_time WHERE author IS NOT NULL GROUP BY 1, 2, 3
    ON CONFLICT (window_start, author) DO UPDATE
    SET events = t.events + excluded.events, sum_text_length = t.sum_text_length + excluded.sum_text_length,
        updated_at = excluded.updated_at
)
SELECT (SELECT count(*) FROM staged), (SELECT count(*) FROM new), (SELECT count(*) FROM new WHERE late),
       (SELECT max(created_at) FROM staged)
"""

COMMIT_DEAD_LETTERS_SQL = f"""
WITH staged AS (
    SELECT * FROM dead_letters_staging
    WHERE query_id = %(query_id)s AND batch_id = %(batch_id)s AND part = ANY(%(parts)s)
), new AS (
    INSERT INTO dead_letters ({", ".join(DEAD_LETTER_COLUMNS)})
    SELECT {", ".join(DEAD_LETTER_COLUMNS)} FROM staged
    ON CONFLICT DO NOTHING RETURNING 1
)
SELECT (SELECT count(*) FROM staged), (SELECT count(*) FROM new)
"""

# Staging of this batch (every attempt) and of batches nobody committed within a day (a query whose
# checkpoint was deleted, a job that died between staging and commit).
CLEAN_STAGING_SQL = (
    """DELETE FROM events_staging WHERE (query_id = %(query_id)s AND batch_id = %(batch_id)s)
       OR written_at < now() - interval '1 day'""",
    """DELETE FROM dead_letters_staging WHERE (query_id = %(query_id)s AND batch_id = %(batch_id)s)
       OR staged_at < now() - interval '1 day'""",
)

# The watermark of a ledger from before the state row: each batch's counts for at most its commit time
# minus the watermark delay (the job's clock bounds it), so one logged from a future-dated event cannot
# keep windows final. Read once, then kept in sink_state.
WATERMARK_SQL = """
    SELECT max(CASE WHEN watermark > committed_at - make_interval(secs => %(delay_s)s)
                    THEN committed_at - make_interval(secs => %(delay_s)s) ELSE watermark END)
    FROM batches"""

STAGING_LOCK = 0x53544147  # pg_advisory_xact_lock(STAGING_LOCK, hashtext(kind:query:batch:part))
COMMIT_LOCK = 0x53494E4B  # pg_advisory_xact_lock(COMMIT_LOCK, hashtext(schema)): one committer per sink


def merge_offsets(stored: dict | None, batch: dict[str, dict[int, int]]) -> dict[str, dict[str, int]]:
    """The furthest end offset per topic partition (JSON keys are strings)."""
    out = {t: dict(parts) for t, parts in (stored or {}).items()}
    for topic, parts in batch.items():
        known = out.setdefault(topic, {})
        for partition, offset in parts.items():
            key = str(int(partition))
            known[key] = max(int(offset), int(known.get(key, offset)))
    return out


def _us(ts: datetime | None) -> int | None:
    return None if ts is None else int(ts.timestamp() * US)


class PostgresSink(Sink):
    name = "postgres"

    def __init__(self, dsn: str, schema: str = "public", connect_timeout: int = 10, log=print) -> None:
        self.dsn = dsn
        self.schema = schema
        self.connect_timeout = connect_timeout
        self.log = log
        self._conn = None
        self._staged: dict[tuple[str, int], tuple[dict[int, int], dict[int, int]]] = {}

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
    def stage(self, events, dead_letters, info: BatchInfo) -> None:
        """Each partition of ``events`` / ``dead_letters`` COPYs its rows into the staging tables from
        its executor; the driver receives one (part, rows) pair per partition."""
        staged = []
        for kind, frame in (("events", events), ("dead_letters", dead_letters)):
            fn = stager(self.dsn, self.schema, kind, info, self.connect_timeout)
            report = frame.mapInPandas(fn, STAGED_SCHEMA).collect()
            staged.append({int(r["part"]): int(r["rows"]) for r in report if r["rows"]})
        self._staged[(info.query_id, info.batch_id)] = (staged[0], staged[1])

    def write(self, batch: Batch) -> bool:
        """A batch held in pandas (tests, tools): staged from this process as partition 0, then committed."""
        info = BatchInfo(
            pipeline=self.schema,
            query_id=batch.query_id,
            batch_id=batch.batch_id,
            window_s=batch.window_s,
            watermark_s=batch.watermark_s,
            now_us=_now_us(),
            offsets=batch.offsets,
        )
        staged = []
        for kind, frame in (("events", batch.events), ("dead_letters", batch.dead_letters)):
            n = stage_rows(
                self.dsn,
                self.schema,
                kind,
                info.query_id,
                info.batch_id,
                0,
                [frame],
                info.window_s,
                self.connect_timeout,
            )
            staged.append({0: n} if n else {})
        self._staged[(info.query_id, info.batch_id)] = (staged[0], staged[1])
        stats = self.commit(info)
        batch.stats.update(stats or {})
        return stats is not None

    def commit(self, info: BatchInfo) -> dict | None:
        try:
            return self._commit(info)
        except Exception:
            self.close()  # a broken or aborted connection is not reused
            raise

    def _commit(self, info: BatchInfo) -> dict | None:
        from psycopg.types.json import Jsonb

        staged = self._staged.pop((info.query_id, info.batch_id), None)
        if staged is None:
            raise RuntimeError(f"postgres: batch {info.batch_id} of query {info.query_id} was not staged")
        staged_events, staged_dead = staged
        conn = self._connection()
        started = time.monotonic()
        key = {"query_id": info.query_id, "batch_id": info.batch_id}
        with conn.transaction():
            cur = conn.cursor()
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (COMMIT_LOCK, self.schema))
            done = cur.execute(
                "SELECT 1 FROM batches WHERE query_id = %(query_id)s AND batch_id = %(batch_id)s", key
            ).fetchone()
            if done:
                for statement in CLEAN_STAGING_SQL:
                    cur.execute(statement, key)
                return None
            state = cur.execute("SELECT watermark, offsets FROM sink_state WHERE id").fetchone()
            if state is None:  # the first commit since migration 0005: the watermark from the ledger, once
                (watermark,) = cur.execute(WATERMARK_SQL, {"delay_s": info.watermark_s}).fetchone()
                cur.execute("INSERT INTO sink_state (id, watermark) VALUES (true, %s)", (watermark,))
                state = (watermark, {})
            watermark, stored_offsets = state
            staged_n, inserted, late, latest = cur.execute(
                COMMIT_EVENTS_SQL, {**key, "parts": sorted(staged_events), "watermark": watermark}
            ).fetchone()
            dead_n, dead_new = cur.execute(
                COMMIT_DEAD_LETTERS_SQL, {**key, "parts": sorted(staged_dead)}
            ).fetchone()
            expected = (sum(staged_events.values()), sum(staged_dead.values()))
            if (staged_n, dead_n) != expected:  # staging lost (an unlogged table after a crash) or foreign
                raise RuntimeError(
                    f"postgres: batch {info.batch_id} staged {expected[0]} events and {expected[1]} dead "
                    f"letters, the staging tables hold {staged_n} and {dead_n}: the batch is retried"
                )
            new_watermark = _watermark_after(_us(watermark), _us(latest), info.watermark_s, info.now_us)
            cur.execute(
                """INSERT INTO batches (query_id, batch_id, events, late_events, dead_letters, watermark, offsets)
                   VALUES (%s, %s, %s, %s, %s, %s, %s)""",
                (
                    info.query_id,
                    info.batch_id,
                    inserted,
                    late,
                    dead_n,
                    _ts(new_watermark),
                    Jsonb(info.offsets),
                ),
            )
            cur.execute(
                """UPDATE sink_state
                   SET watermark = CASE WHEN %(wm)s::timestamptz IS NULL THEN watermark  -- least() skips NULLs
                       ELSE greatest(watermark, least(%(wm)s::timestamptz,
                                     clock_timestamp() - make_interval(secs => %(delay_s)s))) END,
                       offsets = %(offsets)s, updated_at = clock_timestamp()
                   WHERE id""",
                {
                    "wm": _ts(new_watermark),
                    "delay_s": info.watermark_s,
                    "offsets": Jsonb(merge_offsets(stored_offsets, info.offsets)),
                },
            )
            for statement in CLEAN_STAGING_SQL:
                cur.execute(statement, key)
        return {
            "postgres_s": time.monotonic() - started,
            "postgres_inserted": inserted,
            "postgres_late": late,
            "postgres_dead_letters_inserted": dead_new,
        }

    def resume_offsets(self, topic: str) -> dict[int, int] | None:
        conn = self._connection()
        try:
            row = conn.execute("SELECT offsets FROM sink_state WHERE id").fetchone()
        except Exception:
            self.close()
            raise
        parts = (row[0] or {}).get(topic) if row else None
        return {int(p): int(o) for p, o in parts.items()} if parts else None

    # ------------------------------------------------------------------------ re-scoring
    def write_scores(self, scored: pd.DataFrame) -> int:
        """Backfill results: one row per (event_id, model_version), replaced when run again."""
        conn = self._connection()
        rows = [score_row(r) for r in scored.to_dict("records")]
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


def score_row(r: dict) -> tuple:
    """One backfill result as the event_scores columns (``SCORE_COLUMNS`` order)."""
    return (
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


def dumps(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True)


def _watermark_after(
    previous_us: int | None, latest_us: int | None, watermark_s: float, now_us: int
) -> int | None:
    """:func:`streamotion_jobs.sinks.next_watermark` from the batch's latest event time."""
    if latest_us is None:
        return previous_us
    candidate = min(latest_us, now_us) - int(watermark_s * US)
    return candidate if previous_us is None else max(previous_us, candidate)


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
        rows = [score_row(r) for pdf in frames for r in pdf.to_dict("records")]
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

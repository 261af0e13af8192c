"""BigQuery sink (google-cloud-bigquery): the PostgreSQL sink's tables, day-partitioned on event
time and clustered by source and emotion, created (and migrated) when missing.

Write path of one micro-batch (no event row passes through the driver):

1. ``stage`` (executors): each Spark partition loads its rows into its own staging table
   ``_staging_e_<query>_<batch>_<partition>`` (and ``_staging_d_...`` for dead letters) with one
   load job of newline-delimited JSON, ``WRITE_TRUNCATE``: a retried or speculative task replaces
   its partition's rows, never appends. Only (table, rows) per partition come back to the driver.
2. ``commit`` (driver): ONE multi-statement transaction script (:func:`commit_script`): skip when
   the ledger has ``(query_id, batch_id)``; read the watermark from ``pipeline_state``; the batch's
   new events (anti-join on ``event_id`` restricted to the batch's ``created_at`` range, so only the
   touched day partitions are read) into a temp table; ``MERGE`` them into ``events`` on
   ``event_id`` with the same range filter; incremental ``MERGE`` of sums and counts into the
   window aggregates from exactly the new non-late rows; ``MERGE`` of the dead letters; the ledger
   row with the batch's end offsets; the new watermark. Concurrent scripts on the same tables
   conflict and one is aborted by BigQuery (and retried here): there is no advisory lock to take.
3. the staging tables are deleted (table deletes are API calls, not jobs; each staging table also
   expires on its own after a day, so a crashed attempt leaves nothing for long).

Jobs per batch: one load job per non-empty partition (and per partition with dead letters) plus
one script job (whose statements BigQuery runs as child jobs). ``commit`` returns the counts and
the bytes BigQuery reports as processed and billed (see the docs' "Sinks and tables" costs).
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from streamotion_jobs.sinks import US, Batch, Sink, with_windows

EMULATOR_HOST_ENV = "BIGQUERY_EMULATOR_HOST"


def _schema():
    from google.cloud.bigquery import SchemaField as F

    def req(name: str, kind: str) -> Any:
        return F(name, kind, mode="REQUIRED")

    events = [
        req("event_id", "STRING"),
        req("id", "STRING"),
        req("source", "STRING"),
        req("platform", "STRING"),
        F("channel", "STRING"),
        F("author", "STRING"),
        req("text", "STRING"),
        req("clean_text", "STRING"),
        F("lang", "STRING"),
        req("created_at", "TIMESTAMP"),
        F("ingested_at", "TIMESTAMP"),
        F("url", "STRING"),
        F("hashtags", "STRING", mode="REPEATED"),
        F("terms", "STRING", mode="REPEATED"),
        req("text_length", "INT64"),
        req("emotion", "STRING"),
        req("score", "FLOAT64"),
        req("scores", "JSON"),
        req("sentiment", "STRING"),
        req("sentiment_index", "FLOAT64"),
        req("model_version", "STRING"),
        req("window_start", "TIMESTAMP"),
        req("window_end", "TIMESTAMP"),
        req("late", "BOOL"),
        F("kafka_topic", "STRING"),
        F("kafka_partition", "INT64"),
        F("kafka_offset", "INT64"),
        F("query_id", "STRING"),
        F("batch_id", "INT64"),
        F("classified_at", "TIMESTAMP"),
        F("written_at", "TIMESTAMP"),
        F("labels", "STRING", mode="REPEATED"),  # added after the first release: NULLABLE/REPEATED only
    ]
    window = [req("window_start", "TIMESTAMP"), req("window_end", "TIMESTAMP")]
    updated = [F("updated_at", "TIMESTAMP")]
    return {
        "events": (events, "created_at", ["source", "emotion"]),
        "emotion_window": (
            [
                *window,
                req("source", "STRING"),
                req("channel", "STRING"),
                req("lang", "STRING"),
                req("emotion", "STRING"),
                req("events", "INT64"),
                req("mean_score", "FLOAT64"),
                req("mean_sentiment_index", "FLOAT64"),
                *updated,
                # sums beside the counts (#14): a batch adds to them; the means follow from them
                F("score_sum", "FLOAT64"),
                F("sentiment_index_sum", "FLOAT64"),
            ],
            "window_start",
            ["source", "emotion"],
        ),
        "hashtag_window": (
            [*window, req("hashtag", "STRING"), req("events", "INT64"), *updated],
            "window_start",
            ["hashtag"],
        ),
        "term_window": (
            [*window, req("lang", "STRING"), req("term", "STRING"), req("events", "INT64"), *updated],
            "window_start",
            ["lang", "term"],
        ),
        "author_activity": (
            [
                *window,
                req("author", "STRING"),
                req("events", "INT64"),
                req("mean_text_length", "FLOAT64"),
                *updated,
                F("text_length_sum", "FLOAT64"),
            ],
            "window_start",
            ["author"],
        ),
        "dead_letters": (
            [
                req("kafka_topic", "STRING"),
                req("kafka_partition", "INT64"),
                req("kafka_offset", "INT64"),
                req("reason", "STRING"),
                req("payload", "STRING"),
                req("stage", "STRING"),
                F("query_id", "STRING"),
                F("batch_id", "INT64"),
                req("failed_at", "TIMESTAMP"),
            ],
            "failed_at",
            ["kafka_topic"],
        ),
        "batches": (
            [
                req("query_id", "STRING"),
                req("batch_id", "INT64"),
                req("events", "INT64"),
                req("late_events", "INT64"),
                req("dead_letters", "INT64"),
                F("watermark", "TIMESTAMP"),
                req("committed_at", "TIMESTAMP"),
                F("pipeline", "STRING"),  # "<namespace>/<name>" (#14)
                F("offsets", "STRING"),  # JSON {topic: {partition: end offset}}, exclusive (#14)
            ],
            None,
            ["query_id", "batch_id"],  # the ledger check reads the blocks of one (query, batch)
        ),
        # one row per pipeline: the watermark the next batch reads, without a scan of `batches`
        "pipeline_state": (
            [req("pipeline", "STRING"), F("watermark", "TIMESTAMP"), req("updated_at", "TIMESTAMP")],
            None,
            None,
        ),
        # the ledger's end offsets, merged (max per partition) over the committed batches
        "ledger_offsets": (
            [
                req("pipeline", "STRING"),
                req("topic", "STRING"),
                req("kafka_partition", "INT64"),
                req("end_offset", "INT64"),
                req("updated_at", "TIMESTAMP"),
            ],
            None,
            None,
        ),
        "schema_migrations": (
            [req("version", "INT64"), req("name", "STRING"), req("applied_at", "TIMESTAMP")],
            None,
            None,
        ),
        "event_scores": (
            [
                req("event_id", "STRING"),
                req("model_version", "STRING"),
                req("created_at", "TIMESTAMP"),
                req("emotion", "STRING"),
                req("score", "FLOAT64"),
                req("scores", "JSON"),
                req("sentiment", "STRING"),
                req("sentiment_index", "FLOAT64"),
                req("scored_at", "TIMESTAMP"),
                F("labels", "STRING", mode="REPEATED"),
            ],
            "created_at",
            ["model_version", "emotion"],
        ),
    }


# Versioned data migrations, numbered like the PostgreSQL ones, each applied once (recorded in
# schema_migrations). Every statement is idempotent on its own (a crash between two is harmless).
MIGRATIONS: dict[int, tuple[str, list[str]]] = {
    4: (
        "event_identity",
        [
            # event_id was platform:id; it is source:platform:id (never equal to platform:id)
            """UPDATE `{ds}.events` SET event_id = CONCAT(source, ':', event_id)
               WHERE event_id = CONCAT(platform, ':', id)""",
            # re-scored results follow their events (event_scores has no source column)
            """UPDATE `{ds}.event_scores` S SET event_id = E.event_id FROM `{ds}.events` E
               WHERE S.event_id = CONCAT(E.platform, ':', E.id)""",
        ],
    ),
    5: (
        "aggregate_sums",
        [
            # aggregates are incremental (#14): sums beside the counts, filled from the stored means
            """UPDATE `{ds}.emotion_window` SET score_sum = mean_score * events,
                      sentiment_index_sum = mean_sentiment_index * events
               WHERE score_sum IS NULL OR sentiment_index_sum IS NULL""",
            """UPDATE `{ds}.author_activity` SET text_length_sum = mean_text_length * events
               WHERE text_length_sum IS NULL""",
        ],
    ),
}

VIEWS = {
    "v_emotion_daily": """
        SELECT DATE(created_at) AS day, source, emotion, COUNT(*) AS events, AVG(score) AS mean_score
        FROM `{ds}.events` GROUP BY day, source, emotion""",
    "v_sentiment_daily": """
        SELECT DATE(created_at) AS day, source, sentiment, COUNT(*) AS events,
               AVG(sentiment_index) AS mean_sentiment_index
        FROM `{ds}.events` GROUP BY day, source, sentiment""",
    # the means from the stored sums and counts (the tables keep mean columns too, for dashboards
    # written before #14; a batch's MERGE sets them from the same sums)
    "v_emotion_window": """
        SELECT window_start, window_end, source, channel, lang, emotion, events,
               SAFE_DIVIDE(score_sum, events) AS mean_score,
               SAFE_DIVIDE(sentiment_index_sum, events) AS mean_sentiment_index
        FROM `{ds}.emotion_window`""",
    "v_author_activity": """
        SELECT window_start, window_end, author, events, SAFE_DIVIDE(text_length_sum, events) AS mean_text_length
        FROM `{ds}.author_activity`""",
}

# Incremental aggregates: each MERGE adds exactly the batch's new, non-late rows (temp table
# {new}) to the stored sums and counts of the windows they fall in. ``T.window_start BETWEEN``
# the batch's window range restricts the target to the touched day partitions.
_WINDOW_RANGE = "T.window_start BETWEEN v_wlo AND v_whi"
AGGREGATE_MERGES = {
    "emotion_window": f"""
MERGE `{{ds}}.emotion_window` T
USING (SELECT window_start, window_end, source, IFNULL(channel, '') AS channel, IFNULL(lang, '') AS lang,
              emotion, COUNT(*) AS n, SUM(score) AS s, SUM(sentiment_index) AS si
       FROM {{new}} WHERE NOT late GROUP BY 1, 2, 3, 4, 5, 6) S
ON T.window_start = S.window_start AND T.source = S.source AND T.channel = S.channel AND T.lang = S.lang
   AND T.emotion = S.emotion AND {_WINDOW_RANGE}
WHEN MATCHED THEN UPDATE SET
  events = T.events + S.n,
  score_sum = IFNULL(T.score_sum, T.mean_score * T.events) + S.s,
  sentiment_index_sum = IFNULL(T.sentiment_index_sum, T.mean_sentiment_index * T.events) + S.si,
  mean_score = (IFNULL(T.score_sum, T.mean_score * T.events) + S.s) / (T.events + S.n),
  mean_sentiment_index = (IFNULL(T.sentiment_index_sum, T.mean_sentiment_index * T.events) + S.si)
                         / (T.events + S.n),
  updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (window_start, window_end, source, channel, lang, emotion, events, mean_score,
                              mean_sentiment_index, updated_at, score_sum, sentiment_index_sum)
  VALUES (S.window_start, S.window_end, S.source, S.channel, S.lang, S.emotion, S.n, S.s / S.n, S.si / S.n,
          CURRENT_TIMESTAMP(), S.s, S.si)""",
    "hashtag_window": f"""
MERGE `{{ds}}.hashtag_window` T
USING (SELECT window_start, window_end, h AS hashtag, COUNT(*) AS n
       FROM {{new}}, UNNEST(hashtags) AS h WHERE NOT late GROUP BY 1, 2, 3) S
ON T.window_start = S.window_start AND T.hashtag = S.hashtag AND {_WINDOW_RANGE}
WHEN MATCHED THEN UPDATE SET events = T.events + S.n, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (window_start, window_end, hashtag, events, updated_at)
  VALUES (S.window_start, S.window_end, S.hashtag, S.n, CURRENT_TIMESTAMP())""",
    "term_window": f"""
MERGE `{{ds}}.term_window` T
USING (SELECT window_start, window_end, IFNULL(lang, '') AS lang, w AS term, COUNT(*) AS n
       FROM {{new}}, UNNEST(terms) AS w WHERE NOT late GROUP BY 1, 2, 3, 4) S
ON T.window_start = S.window_start AND T.lang = S.lang AND T.term = S.term AND {_WINDOW_RANGE}
WHEN MATCHED THEN UPDATE SET events = T.events + S.n, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (window_start, window_end, lang, term, events, updated_at)
  VALUES (S.window_start, S.window_end, S.lang, S.term, S.n, CURRENT_TIMESTAMP())""",
    "author_activity": f"""
MERGE `{{ds}}.author_activity` T
USING (SELECT window_start, window_end, author, COUNT(*) AS n, SUM(text_length) AS tl
       FROM {{new}} WHERE NOT late AND author IS NOT NULL GROUP BY 1, 2, 3) S
ON T.window_start = S.window_start AND T.author = S.author AND {_WINDOW_RANGE}
WHEN MATCHED THEN UPDATE SET
  events = T.events + S.n,
  text_length_sum = IFNULL(T.text_length_sum, T.mean_text_length * T.events) + S.tl,
  mean_text_length = (IFNULL(T.text_length_sum, T.mean_text_length * T.events) + S.tl) / (T.events + S.n),
  updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (window_start, window_end, author, events, mean_text_length, updated_at,
                              text_length_sum)
  VALUES (S.window_start, S.window_end, S.author, S.n, S.tl / S.n, CURRENT_TIMESTAMP(), S.tl)""",
}

# dead letters are deduplicated against this many days of failed_at partitions (see the docs)
DEAD_LETTER_DEDUP_DAYS = 7
STAGING_EXPIRY_S = 24 * 3600
STAGED = "table string, rows long, kind string"  # what each partition reports to the driver


def _iso(us: Any) -> str | None:
    if us is None or us is pd.NA or (isinstance(us, float) and math.isnan(us)):
        return None
    return datetime.fromtimestamp(int(us) / US, UTC).isoformat()


def _val(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def make_client(project: str, location: str | None = None, emulator_host: str | None = None):
    """A BigQuery client: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or
    Workload Identity), or the local emulator when BIGQUERY_EMULATOR_HOST is set (or given)."""
    from google.cloud import bigquery

    host = emulator_host or os.environ.get(EMULATOR_HOST_ENV)
    if host:
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials

        endpoint = host if "://" in host else f"http://{host}"
        return bigquery.Client(
            project=project,
            location=location,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=endpoint),
        )
    return bigquery.Client(project=project, location=location)


def staged_event_fields():
    """The staging table's columns: the events table's, less ``late`` (the commit script decides it
    against the watermark it reads inside the transaction)."""
    return [f for f in _schema()["events"][0] if f.name != "late"]


def load_rows(client, table: str, rows: list[dict], schema) -> None:
    """One load job of newline-delimited JSON into ``table``, replacing its rows (a retried load
    replaces, never appends); the table expires by itself after a day."""
    from google.cloud import bigquery

    data = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
    config = bigquery.LoadJobConfig(
        schema=schema,
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
    )
    # size=None: a resumable upload (the emulator, like BigQuery, takes those for any size)
    client.load_table_from_file(io.BytesIO(data), table, size=None, job_config=config).result()
    try:
        t = client.get_table(table)
        t.expires = datetime.fromtimestamp(time.time() + STAGING_EXPIRY_S, UTC)
        client.update_table(t, ["expires"])
    except Exception:  # expiry is housekeeping: the driver deletes the table after the commit
        pass


def _suffix(query_id: str, batch_id: int) -> str:
    return f"{''.join(c for c in query_id if c.isalnum())[:32]}_{int(batch_id)}"


def staging_writer(conf: dict, kind: str, client=None):
    """The ``mapInPandas`` function of :meth:`BigQuerySink.stage`: runs on the executors; loads its
    partition's rows into ``_staging_<kind>_<query>_<batch>_<partition>`` and yields one
    (table, rows, kind) row. It captures only ``conf`` (plain strings and numbers); ``client`` is for
    the driver-side :meth:`BigQuerySink.stage_pandas` only."""

    def write(frames):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        partition = ctx.partitionId() if ctx is not None else 0
        rows: list[dict] = []
        for pdf in frames:
            if pdf.empty:
                continue
            if kind == "e":
                rows.extend(event_rows(with_windows(pdf, conf["window_s"], None), conf))
            else:
                rows.extend(dead_letter_rows(pdf, conf))
        if not rows:
            return
        table = f"{conf['ds']}._staging_{kind}_{conf['suffix']}_{partition}"
        schema = staged_event_fields() if kind == "e" else _schema()["dead_letters"][0]
        _load_with(client, conf, table, rows, schema)
        yield pd.DataFrame({"table": [table], "rows": [len(rows)], "kind": [kind]})

    return write


def event_rows(events: pd.DataFrame, conf: dict) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    rows = []
    for r in events.to_dict("records"):
        rows.append(
            {
                "event_id": r["event_id"],
                "id": r["id"],
                "source": r["source"],
                "platform": r["platform"],
                "channel": _val(r["channel"]),
                "author": _val(r["author"]),
                "text": r["text"],
                "clean_text": r["clean_text"],
                "lang": _val(r["lang"]),
                "created_at": _iso(r["created_at_us"]),
                "ingested_at": _iso(r["ingested_at_us"]),
                "url": _val(r["url"]),
                "hashtags": _strings(r["hashtags"]),
                "terms": _strings(r["terms"]),
                "text_length": int(r["text_length"]),
                "emotion": r["emotion"],
                "score": float(r["score"]),
                "scores": r["scores"],
                "sentiment": r["sentiment"],
                "sentiment_index": float(r["sentiment_index"]),
                "model_version": r["model_version"],
                "window_start": _iso(r["window_start_us"]),
                "window_end": _iso(r["window_end_us"]),
                "kafka_topic": _val(r["kafka_topic"]),
                "kafka_partition": None if _val(r["kafka_partition"]) is None else int(r["kafka_partition"]),
                "kafka_offset": None if _val(r["kafka_offset"]) is None else int(r["kafka_offset"]),
                "query_id": conf["query_id"],
                "batch_id": conf["batch_id"],
                "classified_at": _iso(r.get("classified_at_us")),
                "written_at": now,
                "labels": _strings(r.get("labels")),
            }
        )
    return rows


def dead_letter_rows(dead: pd.DataFrame, conf: dict) -> list[dict]:
    now = datetime.now(UTC).isoformat()
    return [
        {
            "kafka_topic": r["kafka_topic"],
            "kafka_partition": int(r["kafka_partition"]),
            "kafka_offset": int(r["kafka_offset"]),
            "reason": str(r["error"]),
            "payload": str(_val(r["payload"]) or ""),
            "stage": "job",
            "query_id": conf["query_id"],
            "batch_id": conf["batch_id"],
            "failed_at": now,
        }
        for r in dead.to_dict("records")
    ]


def commit_script(
    ds: str,
    suffix: str,
    event_tables: list[str],
    dead_tables: list[str],
    offsets: dict[str, dict[int, int]] | None = None,
    dedup_horizon_s: float = 3600,
) -> str:
    """The batch's one multi-statement transaction (parameters @q query id, @b batch id, @p
    pipeline, @delay watermark delay in microseconds, @now the batch's processing time, @offsets
    its end offsets as JSON). An event id already stored with a ``created_at`` up to
    ``dedup_horizon_s`` away from the batch's range is found (a re-sent event whose created_at
    moved further than that is not: see the docs). Its last statement returns (outcome, events, inserted, late, dead):
    outcome "skipped" when the ledger had the batch (its transaction then changed nothing).

    Script variables are named ``v_*`` and temp tables carry the batch's suffix: bqemulator 1.4.0
    substitutes a variable for a same-named column, and keeps temp tables beyond their script."""
    staged, new = f"_staged_{suffix}", f"_new_{suffix}"
    cols = [f.name for f in _schema()["events"][0]]
    dead_cols = [f.name for f in _schema()["dead_letters"][0]]
    out = [
        "DECLARE v_wm TIMESTAMP;",
        "DECLARE v_new_wm TIMESTAMP;",
        "DECLARE v_state_wm TIMESTAMP;",
        "DECLARE v_lo TIMESTAMP;",
        "DECLARE v_hi TIMESTAMP;",
        "DECLARE v_wlo TIMESTAMP;",
        "DECLARE v_whi TIMESTAMP;",
        "DECLARE v_events INT64 DEFAULT 0;",
        "DECLARE v_inserted INT64 DEFAULT 0;",
        "DECLARE v_late INT64 DEFAULT 0;",
        "DECLARE v_dead INT64 DEFAULT 0;",
        "DECLARE v_skip BOOL DEFAULT FALSE;",
        "BEGIN TRANSACTION;",
        f"SET v_skip = EXISTS (SELECT 1 FROM `{ds}.batches` WHERE query_id = @q AND batch_id = @b);",
        "IF NOT v_skip THEN",
        # the watermark: pipeline_state; a dataset from before #14 has none yet: its ledger, once
        f"""IF EXISTS (SELECT 1 FROM `{ds}.pipeline_state` WHERE pipeline = @p) THEN
  SET v_wm = (SELECT MAX(watermark) FROM `{ds}.pipeline_state` WHERE pipeline = @p);
ELSE
  SET v_wm = (SELECT MAX(IF(watermark > TIMESTAMP_SUB(committed_at, INTERVAL @delay MICROSECOND),
                            TIMESTAMP_SUB(committed_at, INTERVAL @delay MICROSECOND), watermark))
              FROM `{ds}.batches`);
END IF;""",
    ]
    if event_tables:
        union = " UNION ALL ".join(f"SELECT * FROM `{t}`" for t in event_tables)
        out += [
            f"""CREATE OR REPLACE TEMP TABLE {staged} AS
SELECT * EXCEPT (rn), (v_wm IS NOT NULL AND window_end <= v_wm) AS late FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY kafka_partition, kafka_offset) AS rn
  FROM ({union})) WHERE rn = 1;""",
            f"SET v_lo = (SELECT MIN(created_at) FROM {staged});",
            f"SET v_hi = (SELECT MAX(created_at) FROM {staged});",
            f"SET v_lo = TIMESTAMP_SUB(v_lo, INTERVAL {int(dedup_horizon_s * US)} MICROSECOND);",
            f"SET v_hi = TIMESTAMP_ADD(v_hi, INTERVAL {int(dedup_horizon_s * US)} MICROSECOND);",
            f"SET v_events = (SELECT COUNT(*) FROM {staged});",
            f"SET v_late = (SELECT COUNTIF(late) FROM {staged});",
            f"SET v_new_wm = (SELECT TIMESTAMP_SUB(LEAST(MAX(created_at), @now), INTERVAL @delay MICROSECOND) "
            f"FROM {staged});",
            # the new rows: not in events within the batch's created_at range, widened by the
            # dedup horizon (the day partitions it touches)
            f"""CREATE OR REPLACE TEMP TABLE {new} AS
SELECT * FROM {staged}
WHERE event_id NOT IN (SELECT event_id FROM `{ds}.events` WHERE created_at BETWEEN v_lo AND v_hi);""",
            f"SET v_inserted = (SELECT COUNT(*) FROM {new});",
            f"""MERGE `{ds}.events` T USING {new} S
ON T.event_id = S.event_id AND T.created_at BETWEEN v_lo AND v_hi
WHEN NOT MATCHED THEN INSERT ({", ".join(cols)}) VALUES ({", ".join("S." + c for c in cols)});""",
            f"SET v_wlo = (SELECT MIN(window_start) FROM {new} WHERE NOT late);",
            f"SET v_whi = (SELECT MAX(window_start) FROM {new} WHERE NOT late);",
            "IF v_wlo IS NOT NULL THEN\n"
            + "\n".join(sql.format(ds=ds, new=new).strip() + ";" for sql in AGGREGATE_MERGES.values())
            + "\nEND IF;",
        ]
    if dead_tables:
        union = " UNION ALL ".join(f"SELECT * FROM `{t}`" for t in dead_tables)
        out += [
            f"SET v_dead = (SELECT COUNT(*) FROM ({union}));",
            f"""MERGE `{ds}.dead_letters` T
USING (SELECT * EXCEPT (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY kafka_topic, kafka_partition, kafka_offset ORDER BY failed_at) AS rn
  FROM ({union})) WHERE rn = 1) S
ON T.kafka_topic = S.kafka_topic AND T.kafka_partition = S.kafka_partition AND T.kafka_offset = S.kafka_offset
   AND T.failed_at >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {DEAD_LETTER_DEDUP_DAYS * 24} HOUR)
WHEN NOT MATCHED THEN INSERT ({", ".join(dead_cols)}) VALUES ({", ".join("S." + c for c in dead_cols)});""",
        ]
    out += [
        # the batch's watermark (as before #14) and the bounded one the next batch reads
        "SET v_new_wm = IF(v_wm IS NULL OR v_new_wm > v_wm, v_new_wm, v_wm);",
        "SET v_state_wm = LEAST(v_new_wm, TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL @delay MICROSECOND));",
        "SET v_state_wm = IF(v_wm IS NULL OR v_state_wm > v_wm, v_state_wm, v_wm);",
        f"""INSERT INTO `{ds}.batches` (query_id, batch_id, events, late_events, dead_letters, watermark,
                                 committed_at, pipeline, offsets)
VALUES (@q, @b, v_events, v_late, v_dead, v_new_wm, CURRENT_TIMESTAMP(), @p, @offsets);""",
        f"""MERGE `{ds}.pipeline_state` T USING (SELECT @p AS pipeline) S ON T.pipeline = S.pipeline
WHEN MATCHED THEN UPDATE SET watermark = v_state_wm, updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (pipeline, watermark, updated_at) VALUES (@p, v_state_wm, CURRENT_TIMESTAMP());""",
    ]
    if offsets:
        values = " UNION ALL ".join(
            f"SELECT {sql_literal(str(topic))} AS topic, {int(p)} AS kafka_partition, {int(o)} AS end_offset"
            for topic, parts in sorted(offsets.items())
            for p, o in sorted(parts.items())
        )
        out.append(
            f"""MERGE `{ds}.ledger_offsets` T USING ({values}) S
ON T.pipeline = @p AND T.topic = S.topic AND T.kafka_partition = S.kafka_partition
WHEN MATCHED THEN UPDATE SET end_offset = GREATEST(T.end_offset, S.end_offset), updated_at = CURRENT_TIMESTAMP()
WHEN NOT MATCHED THEN INSERT (pipeline, topic, kafka_partition, end_offset, updated_at)
  VALUES (@p, S.topic, S.kafka_partition, S.end_offset, CURRENT_TIMESTAMP());"""
        )
    out += [
        "END IF;",
        "COMMIT TRANSACTION;",
        "SELECT IF(v_skip, 'skipped', 'committed') AS outcome, v_events AS events, v_inserted AS inserted, "
        "v_late AS late, v_dead AS dead;",
    ]
    return "\n".join(out)


def sql_literal(value: Any) -> str:
    """A GoogleSQL literal for an int, a timestamp or a string (escaped)."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.astimezone(UTC).isoformat()}'"
    text = str(value).replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{text}'"


def bind(script: str, params: dict[str, Any]) -> str:
    """Inline ``@name`` parameters as literals: bqemulator 1.4.0 binds no query parameters inside
    a multi-statement script ("Values were not provided for the following prepared statement
    parameters"), BigQuery does; the values here are ids, numbers and JSON of numbers."""
    return re.sub(r"@(\w+)", lambda m: sql_literal(params[m.group(1)]), script)


def _conflict(exc: Exception) -> bool:
    """A transaction aborted by a concurrent one (BigQuery: "Transaction is aborted due to
    concurrent update"; the emulator: DuckDB's "Transaction conflict")."""
    text = str(exc).lower()
    return "concurrent" in text or "conflict" in text or "aborted" in text


@dataclass(frozen=True)
class _Info:
    """What ``commit`` reads of a batch (the job passes ``streamotion_jobs.sinks.BatchInfo``)."""

    pipeline: str
    query_id: str
    batch_id: int
    window_s: float
    watermark_s: float
    now_us: int
    offsets: dict = field(default_factory=dict)


class BigQuerySink(Sink):
    name = "bigquery"

    def __init__(
        self,
        project: str,
        dataset: str,
        location: str = "US",
        client=None,
        log=print,
        pipeline: str = "",
        commit_retries: int = 5,
        max_load_jobs: int = 4,
        dedup_horizon_s: float = 3600,
    ) -> None:
        self.project = project
        self.dataset = dataset
        self.location = location
        self.log = log
        self.pipeline = pipeline
        self.commit_retries = commit_retries
        # load jobs per batch for the events (dead letters: one): BigQuery allows 100,000 load jobs
        # per project per day, and a 5 s trigger makes 17,280 batches a day
        self.max_load_jobs = max(1, max_load_jobs)
        self.dedup_horizon_s = dedup_horizon_s
        self._client = client
        self._staged: dict[tuple[str, int], list[dict]] = {}

    @property
    def client(self):
        if self._client is None:
            self._client = make_client(self.project, self.location)
        return self._client

    @property
    def ds(self) -> str:
        return f"{self.project}.{self.dataset}"

    # ------------------------------------------------------------------------ tables
    def open(self) -> None:
        from google.cloud import bigquery

        ds = bigquery.Dataset(self.ds)
        ds.location = self.location
        self.client.create_dataset(ds, exists_ok=True)
        for name, (schema, partition, cluster) in _schema().items():
            table = bigquery.Table(f"{self.ds}.{name}", schema=schema)
            if partition:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=bigquery.TimePartitioningType.DAY, field=partition
                )
            if cluster:
                table.clustering_fields = cluster
            existing = self.client.create_table(table, exists_ok=True)
            self._add_columns(existing, schema)
            if cluster and not existing.clustering_fields:
                self._cluster(existing, cluster)
        self._migrate()
        for name, query in VIEWS.items():
            view = bigquery.Table(f"{self.ds}.{name}")
            view.view_query = query.format(ds=self.ds)
            try:
                self.client.create_table(view, exists_ok=True)
            except Exception as exc:  # views are a convenience; the tables are the contract
                self.log(f"bigquery: view {name} not created: {exc}")

    def _cluster(self, table, fields: list[str]) -> None:
        """Cluster a table an older release created unclustered (BigQuery applies a new clustering
        spec to data written from then on)."""
        try:
            table.clustering_fields = fields
            self.client.update_table(table, ["clustering_fields"])
            self.log(f"bigquery: {table.table_id} clustered by {', '.join(fields)}")
        except Exception as exc:  # reads stay correct, only less pruned
            self.log(f"bigquery: {table.table_id} not clustered: {exc}")

    def _migrate(self) -> None:
        applied = {r["version"] for r in self._query(f"SELECT version FROM `{self.ds}.schema_migrations`")}
        for version, (name, statements) in sorted(MIGRATIONS.items()):
            if version in applied:
                continue
            self.log(f"bigquery: applying migration {version} {name} in {self.ds}")
            for statement in statements:
                self._query(statement.format(ds=self.ds))
            self._query(
                f"""INSERT INTO `{self.ds}.schema_migrations` (version, name, applied_at)
                    VALUES (@v, @n, CURRENT_TIMESTAMP())""",
                v=version,
                n=name,
            )

    def _add_columns(self, table, schema) -> None:
        """Add the columns a newer release defines to a table an older one created, with DDL
        (``ALTER TABLE ... ADD COLUMN IF NOT EXISTS``; NULLABLE and REPEATED columns only: existing
        rows read NULL or an empty array)."""
        have = {f.name for f in table.schema}
        missing = [f for f in schema if f.name not in have]
        if not missing:
            return
        self.log(f"bigquery: adding {', '.join(f.name for f in missing)} to {table.table_id}")
        for f in missing:  # one column per statement: bqemulator takes one ALTER command per statement
            kind = f"ARRAY<{f.field_type}>" if f.mode == "REPEATED" else f.field_type
            self._query(f"ALTER TABLE `{self.ds}.{table.table_id}` ADD COLUMN IF NOT EXISTS {f.name} {kind}")

    @staticmethod
    def _params(params: dict[str, Any]) -> list:
        from google.cloud import bigquery

        qp = []
        for key, value in params.items():
            if value is None:
                qp.append(bigquery.ScalarQueryParameter(key, "TIMESTAMP", None))
            elif isinstance(value, list):
                qp.append(bigquery.ArrayQueryParameter(key, "TIMESTAMP", value))
            elif isinstance(value, int):
                qp.append(bigquery.ScalarQueryParameter(key, "INT64", value))
            elif isinstance(value, datetime):
                qp.append(bigquery.ScalarQueryParameter(key, "TIMESTAMP", value))
            else:
                qp.append(bigquery.ScalarQueryParameter(key, "STRING", value))
        return qp

    def _run(self, sql: str, **params: Any):
        """Run one query job; returns (job, rows)."""
        from google.cloud import bigquery

        job = self.client.query(
            sql, job_config=bigquery.QueryJobConfig(query_parameters=self._params(params))
        )
        return job, list(job.result())

    def _query(self, sql: str, **params: Any):
        return self._run(sql, **params)[1]

    # ------------------------------------------------------------------------ batches
    def _conf(self, info) -> dict:
        return {
            "project": self.project,
            "location": self.location,
            "ds": self.ds,
            "emulator_host": os.environ.get(EMULATOR_HOST_ENV),
            "query_id": info.query_id,
            "batch_id": int(info.batch_id),
            "suffix": _suffix(info.query_id, info.batch_id),
            "window_s": float(info.window_s),
        }

    def stage(self, events, dead_letters, info) -> None:
        """Executors load their partitions' rows into per-partition staging tables (one Spark job
        for events and dead letters); the driver keeps only the tables' names and row counts."""
        conf = self._conf(info)
        if events.rdd.getNumPartitions() > self.max_load_jobs:
            events = events.coalesce(self.max_load_jobs)  # no shuffle: partitions merged where they are
        staged = (
            events.mapInPandas(staging_writer(conf, "e"), STAGED)
            .unionByName(dead_letters.coalesce(1).mapInPandas(staging_writer(conf, "d"), STAGED))
            .collect()
        )
        self._staged[(info.query_id, int(info.batch_id))] = [r.asDict() for r in staged]

    def stage_pandas(self, events: pd.DataFrame, dead_letters: pd.DataFrame, info) -> None:
        """:meth:`stage` for rows already in this process (tests, the pre-#14 ``write``)."""
        conf = self._conf(info)
        staged: list[dict] = []
        for kind, pdf in (("e", events), ("d", dead_letters)):
            for out in staging_writer(conf, kind, self.client)(iter([pdf])):
                staged.extend(out.to_dict("records"))
        self._staged[(info.query_id, int(info.batch_id))] = staged

    def commit(self, info) -> dict | None:
        """The batch's one transaction script; None when the ledger already had the batch."""
        from google.cloud import bigquery

        started = time.monotonic()
        if not info.query_id:
            raise ValueError("a batch without a query id cannot be recorded")
        staged = self._staged.pop((info.query_id, int(info.batch_id)), [])
        event_tables = sorted(r["table"] for r in staged if r["kind"] == "e")
        dead_tables = sorted(r["table"] for r in staged if r["kind"] == "d")
        script = commit_script(
            self.ds,
            _suffix(info.query_id, info.batch_id),
            event_tables,
            dead_tables,
            info.offsets,
            self.dedup_horizon_s,
        )
        offsets = {t: {str(p): int(o) for p, o in parts.items()} for t, parts in (info.offsets or {}).items()}
        params = {
            "q": info.query_id,
            "b": int(info.batch_id),
            "p": info.pipeline or self.pipeline or self.dataset,
            "delay": int(info.watermark_s * US),
            "now": datetime.fromtimestamp(info.now_us / US, UTC),
            "offsets": json.dumps(offsets, sort_keys=True),
        }
        attempts = 0
        while True:
            attempts += 1
            try:
                job = self.client.query(bind(script, params), job_config=bigquery.QueryJobConfig())
                result = list(job.result())
                break
            except Exception as exc:
                if not _conflict(exc) or attempts >= self.commit_retries:
                    raise
                self.log(f"bigquery: batch {info.batch_id} conflicted with a concurrent commit; retrying")
                time.sleep(min(0.5 * 2**attempts, 10))
        for table in event_tables + dead_tables:
            try:
                self.client.delete_table(table, not_found_ok=True)
            except Exception as exc:  # it expires by itself
                self.log(f"bigquery: staging table {table} not deleted: {exc}")
        row = result[-1] if result else None
        if row is None or row["outcome"] == "skipped":
            return None
        try:
            children = list(self.client.list_jobs(parent_job=job.job_id))
        except Exception:
            children = []
        return {
            "events": int(row["events"]),
            "inserted": int(row["inserted"]),
            "late": int(row["late"]),
            "dead_letters": int(row["dead"]),
            "rows_staged": int(sum(r["rows"] for r in staged)),
            "load_jobs": len(staged),
            "script_jobs": 1,
            "script_attempts": attempts,
            "child_jobs": len(children),
            "jobs": len(staged) + attempts,
            "bytes_processed": int(job.total_bytes_processed or 0),
            "bytes_billed": int(job.total_bytes_billed or 0),
            "commit_s": time.monotonic() - started,
        }

    def write(self, batch: Batch) -> bool:
        """The pre-#14 entry point (rows on the driver): stage from this process, then commit."""
        started = time.monotonic()
        info = _Info(
            offsets=dict(getattr(batch, "offsets", None) or {}),
            pipeline=self.pipeline or self.dataset,
            query_id=batch.query_id,
            batch_id=batch.batch_id,
            window_s=batch.window_s,
            watermark_s=batch.watermark_s,
            now_us=int(time.time() * US),
        )
        self.stage_pandas(batch.events, batch.dead_letters, info)
        stats = self.commit(info)
        batch.stats["bigquery_s"] = time.monotonic() - started
        if stats is None:
            return False
        batch.stats.update({f"bigquery_{k}": v for k, v in stats.items()})
        return True

    def resume_offsets(self, topic: str) -> dict[int, int] | None:
        """The ledger's end offsets per partition of ``topic`` (max over the committed batches of this
        sink's pipeline, or of the dataset when the sink was built without one); None without any."""
        where = "topic = @t" + (" AND pipeline = @p" if self.pipeline else "")
        rows = self._query(
            f"""SELECT kafka_partition, MAX(end_offset) AS o FROM `{self.ds}.ledger_offsets`
                WHERE {where} GROUP BY kafka_partition""",
            t=topic,
            **({"p": self.pipeline} if self.pipeline else {}),
        )
        return {int(r["kafka_partition"]): int(r["o"]) for r in rows} or None

    # ------------------------------------------------------------------------ re-scoring
    def stage_scores(self, scored, run_id: str) -> None:
        """Backfill results (a Spark DataFrame of ``transform.CLASSIFIED_SCHEMA``): each partition
        loads its scores into ``_staging_s_<run>_<partition>`` from the executors."""
        conf = self._scores_conf(run_id)
        staged = scored.mapInPandas(scores_writer(conf), STAGED).collect()
        self._staged[(run_id, -1)] = [r.asDict() for r in staged]

    def commit_scores(self, run_id: str) -> int:
        """One MERGE: a (event_id, model_version) already scored is UPDATED (a re-run replaces),
        a new one inserted; the staged rows' created_at range bounds the partitions read."""
        staged = self._staged.pop((run_id, -1), [])
        tables = sorted(r["table"] for r in staged)
        if not tables:
            return 0
        cols = [f.name for f in _schema()["event_scores"][0]]
        keep = ("event_id", "model_version", "created_at")
        union = " UNION ALL ".join(f"SELECT * FROM `{t}`" for t in tables)
        self._query(
            f"""DECLARE v_lo TIMESTAMP;
DECLARE v_hi TIMESTAMP;
CREATE OR REPLACE TEMP TABLE _scores_{run_id} AS
SELECT * EXCEPT (rn) FROM (
  SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id, model_version ORDER BY scored_at DESC) AS rn
  FROM ({union})) WHERE rn = 1;
SET v_lo = (SELECT MIN(created_at) FROM _scores_{run_id});
SET v_hi = (SELECT MAX(created_at) FROM _scores_{run_id});
MERGE `{self.ds}.event_scores` T USING _scores_{run_id} S
ON T.event_id = S.event_id AND T.model_version = S.model_version AND T.created_at BETWEEN v_lo AND v_hi
WHEN MATCHED THEN UPDATE SET {", ".join(f"{c} = S.{c}" for c in cols if c not in keep)}
WHEN NOT MATCHED THEN INSERT ({", ".join(cols)}) VALUES ({", ".join("S." + c for c in cols)});"""
        )
        for table in tables:
            self.client.delete_table(table, not_found_ok=True)
        return int(sum(r["rows"] for r in staged))

    def write_scores(self, scored: pd.DataFrame) -> int:
        """Backfill results already in this process: staged from here, then :meth:`commit_scores`."""
        if scored.empty:
            return 0
        run_id = f"w{int(time.time() * 1000)}"
        conf = self._scores_conf(run_id)
        self._staged[(run_id, -1)] = [
            row for out in scores_writer(conf, self.client)(iter([scored])) for row in out.to_dict("records")
        ]
        return self.commit_scores(run_id)

    def reader_conf(self) -> dict:
        """What :func:`events_reader` needs on the executors."""
        return {
            "project": self.project,
            "location": self.location,
            "ds": self.ds,
            "emulator_host": os.environ.get(EMULATOR_HOST_ENV),
        }

    def _scores_conf(self, run_id: str) -> dict:
        if not run_id.replace("_", "").isalnum():
            raise ValueError(f"run id {run_id!r}: letters, digits and _ only")
        return {
            "project": self.project,
            "location": self.location,
            "ds": self.ds,
            "emulator_host": os.environ.get(EMULATOR_HOST_ENV),
            "run_id": run_id,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _load_with(client, conf: dict, table: str, rows: list[dict], schema) -> None:
    if client is not None:
        load_rows(client, table, rows, schema)
        return
    own = make_client(conf["project"], conf["location"], conf.get("emulator_host"))
    try:
        load_rows(own, table, rows, schema)
    finally:
        own.close()


def scores_writer(conf: dict, client=None):
    """``mapInPandas`` function of :meth:`BigQuerySink.stage_scores` (executors)."""

    def write(frames):
        from pyspark import TaskContext

        ctx = TaskContext.get()
        partition = ctx.partitionId() if ctx is not None else 0
        now = datetime.now(UTC).isoformat()
        rows = [
            {
                "event_id": r["event_id"],
                "model_version": r["model_version"],
                "created_at": _iso(r["created_at_us"]),
                "emotion": r["emotion"],
                "score": float(r["score"]),
                "scores": r["scores"],
                "sentiment": r["sentiment"],
                "sentiment_index": float(r["sentiment_index"]),
                "scored_at": now,
                "labels": _strings(r.get("labels")),
            }
            for pdf in frames
            for r in pdf.to_dict("records")
        ]
        if not rows:
            return
        table = f"{conf['ds']}._staging_s_{conf['run_id']}_{partition}"
        _load_with(client, conf, table, rows, _schema()["event_scores"][0])
        yield pd.DataFrame({"table": [table], "rows": [len(rows)], "kind": ["s"]})

    return write


EVENTS_READ_SQL = """SELECT event_id, id, source, platform, channel, author, text, clean_text, lang,
       UNIX_MICROS(created_at) AS created_at_us, UNIX_MICROS(ingested_at) AS ingested_at_us, url,
       hashtags, terms, text_length, kafka_topic, kafka_partition, kafka_offset
FROM `{ds}.events` WHERE created_at >= @lo AND created_at < @hi"""


def event_frame(pdf: pd.DataFrame) -> pd.DataFrame:
    """Rows read back from a sink, typed for ``mapInPandas``'s Arrow output: object strings (see
    ``transform.arrow_safe``), nullable integers, lists for the array columns."""
    from streamotion_jobs.transform import arrow_safe

    for col in ("created_at_us", "ingested_at_us", "text_length", "kafka_partition", "kafka_offset"):
        if col in pdf:
            pdf[col] = pdf[col].astype("Int64")
    for col in ("hashtags", "terms"):
        if col in pdf:
            pdf[col] = [list(v) if _val_list(v) else [] for v in pdf[col]]
    return arrow_safe(pdf)


def events_reader(conf: dict):
    """``mapInPandas`` function over (lo_us, hi_us) time slices for backfills: each task runs one
    query per slice (the filter on the partitioning column reads only the slice's days) on the
    executor. ``conf``: project, location, ds, emulator_host."""

    def read(slices):
        from google.cloud import bigquery

        client = make_client(conf["project"], conf["location"], conf.get("emulator_host"))
        try:
            for pdf in slices:
                for lo, hi in zip(pdf["lo_us"], pdf["hi_us"], strict=True):
                    params = [
                        bigquery.ScalarQueryParameter(
                            "lo", "TIMESTAMP", datetime.fromtimestamp(lo / US, UTC)
                        ),
                        bigquery.ScalarQueryParameter(
                            "hi", "TIMESTAMP", datetime.fromtimestamp(hi / US, UTC)
                        ),
                    ]
                    job = client.query(
                        EVENTS_READ_SQL.format(ds=conf["ds"]),
                        job_config=bigquery.QueryJobConfig(query_parameters=params),
                    )
                    rows = [dict(r.items()) for r in job.result()]
                    if rows:
                        yield event_frame(pd.DataFrame(rows))
        finally:
            client.close()

    return read


def _val_list(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _strings(v: Any) -> list[str]:
    return [str(x) for x in list(v)] if _val_list(v) else []

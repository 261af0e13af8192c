"""BigQuery sink (google-cloud-bigquery): the PostgreSQL sink's tables, day-partitioned on event
time and clustered by source and emotion, created when missing.

BigQuery has no transaction spanning load jobs, so each step is idempotent on its own and the
batch is recorded last:

1. skip when ``(query_id, batch_id)`` is in ``batches``; read the watermark from ``batches``;
2. load the batch's events and dead letters into per-batch staging tables (load jobs,
   ``WRITE_TRUNCATE``: a retried load replaces, never appends);
3. ``MERGE`` them into ``events`` / ``dead_letters`` on the event id (topic/partition/offset):
   rows already present are kept — dedup by event id;
4. recompute the aggregates of the touched windows from ``events`` (delete + insert ... select);
5. record the batch (with the new watermark) and drop the staging tables.

A crash anywhere before step 5 replays the batch from the checkpoint; every step gives the same
result the second time.
"""

from __future__ import annotations

import io
import json
import math
import os
import time
from datetime import UTC, datetime
from typing import Any

import pandas as pd

from streamotion_jobs.sinks import US, Batch, Sink, next_watermark, with_windows

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
}

VIEWS = {
    "v_emotion_daily": """
        SELECT DATE(created_at) AS day, source, emotion, COUNT(*) AS events, AVG(score) AS mean_score
        FROM `{ds}.events` GROUP BY day, source, emotion""",
    "v_sentiment_daily": """
        SELECT DATE(created_at) AS day, source, sentiment, COUNT(*) AS events,
               AVG(sentiment_index) AS mean_sentiment_index
        FROM `{ds}.events` GROUP BY day, source, sentiment""",
}

AGGREGATES = {
    "emotion_window": """
        INSERT INTO `{ds}.emotion_window` (window_start, window_end, source, channel, lang, emotion, events,
                                           mean_score, mean_sentiment_index, updated_at)
        SELECT window_start, window_end, source, IFNULL(channel, ''), IFNULL(lang, ''), emotion, COUNT(*),
               AVG(score), AVG(sentiment_index), CURRENT_TIMESTAMP()
        FROM `{ds}.events` WHERE window_start IN UNNEST(@windows) AND NOT late
        GROUP BY window_start, window_end, source, IFNULL(channel, ''), IFNULL(lang, ''), emotion""",
    "hashtag_window": """
        INSERT INTO `{ds}.hashtag_window` (window_start, window_end, hashtag, events, updated_at)
        SELECT window_start, window_end, h, COUNT(*), CURRENT_TIMESTAMP()
        FROM `{ds}.events`, UNNEST(hashtags) AS h
        WHERE window_start IN UNNEST(@windows) AND NOT late
        GROUP BY window_start, window_end, h""",
    "term_window": """
        INSERT INTO `{ds}.term_window` (window_start, window_end, lang, term, events, updated_at)
        SELECT window_start, window_end, IFNULL(lang, ''), w, COUNT(*), CURRENT_TIMESTAMP()
        FROM `{ds}.events`, UNNEST(terms) AS w
        WHERE window_start IN UNNEST(@windows) AND NOT late
        GROUP BY window_start, window_end, IFNULL(lang, ''), w""",
    "author_activity": """
        INSERT INTO `{ds}.author_activity` (window_start, window_end, author, events, mean_text_length,
                                            updated_at)
        SELECT window_start, window_end, author, COUNT(*), AVG(text_length), CURRENT_TIMESTAMP()
        FROM `{ds}.events`
        WHERE window_start IN UNNEST(@windows) AND NOT late AND author IS NOT NULL
        GROUP BY window_start, window_end, author""",
}


def _iso(us: Any) -> str | None:
    if us is None or us is pd.NA or (isinstance(us, float) and math.isnan(us)):
        return None
    return datetime.fromtimestamp(int(us) / US, UTC).isoformat()


def _val(v: Any) -> Any:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return None
    return v


def make_client(project: str, location: str | None = None):
    """A BigQuery client: Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS or
    Workload Identity), or the local emulator when BIGQUERY_EMULATOR_HOST is set."""
    from google.cloud import bigquery

    host = os.environ.get(EMULATOR_HOST_ENV)
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


class BigQuerySink(Sink):
    name = "bigquery"

    def __init__(self, project: str, dataset: str, location: str = "US", client=None, log=print) -> None:
        self.project = project
        self.dataset = dataset
        self.location = location
        self.log = log
        self._client = client

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
        self._migrate()
        for name, query in VIEWS.items():
            view = bigquery.Table(f"{self.ds}.{name}")
            view.view_query = query.format(ds=self.ds)
            try:
                self.client.create_table(view, exists_ok=True)
            except Exception as exc:  # views are a convenience; the tables are the contract
                self.log(f"bigquery: view {name} not created: {exc}")

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
        columns = ", ".join(
            f"ADD COLUMN IF NOT EXISTS {f.name} "
            + (f"ARRAY<{f.field_type}>" if f.mode == "REPEATED" else f.field_type)
            for f in missing
        )
        self._query(f"ALTER TABLE `{self.ds}.{table.table_id}` {columns}")

    def _query(self, sql: str, **params: Any):
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
        job = self.client.query(sql, job_config=bigquery.QueryJobConfig(query_parameters=qp))
        return list(job.result())

    def _load(self, table: str, rows: list[dict], schema) -> None:
        from google.cloud import bigquery

        data = "".join(json.dumps(r, default=str) + "\n" for r in rows).encode()
        config = bigquery.LoadJobConfig(
            schema=schema,
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
            write_disposition=bigquery.WriteDisposition.WRITE_TRUNCATE,
            create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        )
        # size=None: a resumable upload (the emulator, like BigQuery, takes those for any size)
        self.client.load_table_from_file(io.BytesIO(data), table, size=None, job_config=config).result()

    # ------------------------------------------------------------------------ batches
    def write(self, batch: Batch) -> bool:
        started = time.monotonic()
        ds = self.ds
        done = self._query(
            f"SELECT COUNT(*) AS n FROM `{ds}.batches` WHERE query_id = @q AND batch_id = @b",
            q=batch.query_id,
            b=batch.batch_id,
        )
        if done[0]["n"]:
            return False
        # each batch's watermark counts for at most its commit time minus the delay (see the PostgreSQL sink)
        wm_row = self._query(
            f"""SELECT MAX(CASE WHEN watermark > TIMESTAMP_SUB(committed_at, INTERVAL @delay MICROSECOND)
                           THEN TIMESTAMP_SUB(committed_at, INTERVAL @delay MICROSECOND) ELSE watermark END) AS w
                FROM `{ds}.batches`""",
            delay=int(batch.watermark_s * US),
        )
        watermark = wm_row[0]["w"] if wm_row else None
        watermark_us = None if watermark is None else int(watermark.timestamp() * US)
        events = with_windows(batch.events, batch.window_s, watermark_us)
        schemas = _schema()
        suffix = f"{batch.query_id.replace('-', '')[:12]}_{batch.batch_id}"
        staging = []
        if not events.empty:
            table = f"{ds}._staging_events_{suffix}"
            self._load(table, self._event_rows(events, batch), schemas["events"][0])
            staging.append(table)
            cols = [f.name for f in schemas["events"][0]]
            self._query(
                f"""MERGE `{ds}.events` T
                USING (SELECT * EXCEPT (rn) FROM (
                    SELECT *, ROW_NUMBER() OVER (PARTITION BY event_id ORDER BY kafka_offset) AS rn
                    FROM `{table}`) WHERE rn = 1) S
                ON T.event_id = S.event_id
                WHEN NOT MATCHED THEN INSERT ({", ".join(cols)})
                VALUES ({", ".join("S." + c for c in cols)})"""
            )
            windows_us = sorted(
                {
                    int(w)
                    for w, late in zip(events["window_start_us"], events["late"], strict=True)
                    if not late
                }
            )
            if windows_us:
                windows = [datetime.fromtimestamp(w / US, UTC) for w in windows_us]
                for name, insert in AGGREGATES.items():
                    self._query(
                        f"DELETE FROM `{ds}.{name}` WHERE window_start IN UNNEST(@windows)", windows=windows
                    )
                    self._query(insert.format(ds=ds), windows=windows)
        dead = batch.dead_letters
        if not dead.empty:
            table = f"{ds}._staging_dead_{suffix}"
            now = datetime.now(UTC).isoformat()
            rows = [
                {
                    "kafka_topic": r["kafka_topic"],
                    "kafka_partition": int(r["kafka_partition"]),
                    "kafka_offset": int(r["kafka_offset"]),
                    "reason": str(r["error"]),
                    "payload": str(_val(r["payload"]) or ""),
                    "stage": "job",
                    "query_id": batch.query_id,
                    "batch_id": batch.batch_id,
                    "failed_at": now,
                }
                for r in dead.to_dict("records")
            ]
            self._load(table, rows, schemas["dead_letters"][0])
            staging.append(table)
            cols = [f.name for f in schemas["dead_letters"][0]]
            self._query(
                f"""MERGE `{ds}.dead_letters` T USING `{table}` S
                ON T.kafka_topic = S.kafka_topic AND T.kafka_partition = S.kafka_partition
                   AND T.kafka_offset = S.kafka_offset
                WHEN NOT MATCHED THEN INSERT ({", ".join(cols)}) VALUES ({", ".join("S." + c for c in cols)})"""
            )
        new_watermark = next_watermark(watermark_us, events, batch.watermark_s, int(time.time() * US))
        self._query(
            f"""INSERT INTO `{ds}.batches` (query_id, batch_id, events, late_events, dead_letters, watermark,
                                            committed_at)
                VALUES (@q, @b, @n, @late, @dead, @w, CURRENT_TIMESTAMP())""",
            q=batch.query_id,
            b=batch.batch_id,
            n=len(events),
            late=int(events["late"].sum()) if not events.empty else 0,
            dead=len(dead),
            w=None if new_watermark is None else datetime.fromtimestamp(new_watermark / US, UTC),
        )
        for table in staging:
            self.client.delete_table(table, not_found_ok=True)
        batch.stats["bigquery_s"] = time.monotonic() - started
        return True

    @staticmethod
    def _event_rows(events: pd.DataFrame, batch: Batch) -> list[dict]:
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
                    "hashtags": [str(x) for x in list(r["hashtags"])] if _val_list(r["hashtags"]) else [],
                    "terms": [str(x) for x in list(r["terms"])] if _val_list(r["terms"]) else [],
                    "text_length": int(r["text_length"]),
                    "emotion": r["emotion"],
                    "score": float(r["score"]),
                    "scores": r["scores"],
                    "sentiment": r["sentiment"],
                    "sentiment_index": float(r["sentiment_index"]),
                    "model_version": r["model_version"],
                    "window_start": _iso(r["window_start_us"]),
                    "window_end": _iso(r["window_end_us"]),
                    "late": bool(r["late"]),
                    "kafka_topic": _val(r["kafka_topic"]),
                    "kafka_partition": None
                    if _val(r["kafka_partition"]) is None
                    else int(r["kafka_partition"]),
                    "kafka_offset": None if _val(r["kafka_offset"]) is None else int(r["kafka_offset"]),
                    "query_id": batch.query_id,
                    "batch_id": batch.batch_id,
                    "classified_at": _iso(r.get("classified_at_us")),
                    "written_at": now,
                    "labels": _strings(r.get("labels")),
                }
            )
        return rows

    # ------------------------------------------------------------------------ re-scoring
    def write_scores(self, scored: pd.DataFrame) -> int:
        schema = _schema()["event_scores"][0]
        if scored.empty:
            return 0
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
            for r in scored.to_dict("records")
        ]
        table = f"{self.ds}._staging_scores_{int(time.time() * 1000)}"
        self._load(table, rows, schema)
        cols = [f.name for f in schema]
        self._query(
            f"""MERGE `{self.ds}.event_scores` T USING `{table}` S
            ON T.event_id = S.event_id AND T.model_version = S.model_version
            WHEN NOT MATCHED THEN INSERT ({", ".join(cols)}) VALUES ({", ".join("S." + c for c in cols)})"""
        )
        self.client.delete_table(table, not_found_ok=True)
        return len(rows)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _val_list(v: Any) -> bool:
    return v is not None and v is not pd.NA and not (isinstance(v, float) and math.isnan(v))


def _strings(v: Any) -> list[str]:
    return [str(x) for x in list(v)] if _val_list(v) else []

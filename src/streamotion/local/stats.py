"""What a local run has done so far: events in (Kafka), out (the PostgreSQL sink), dead letters, latency.

Events in are the raw topic's end offsets; producer dead letters are the dead-letter topic's end
offsets; events out, the job's dead letters, the per-emotion and per-source counts and the
end-to-end latency (``written_at - ingested_at``) come from the PostgreSQL sink's tables, counting
only rows written since the run started (a DSN given with ``--pg-dsn`` may hold older rows).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass
class Snapshot:
    at: float  # time.monotonic()
    events_in: int = 0
    events_out: int = 0
    dead_letter_topic: int = 0  # every dead letter: producers' and the job's (it publishes them too)
    job_dead_letters: int = 0  # the job's, from the sink's dead_letters table
    per_emotion: dict[str, int] = field(default_factory=dict)

    @property
    def dead_letters(self) -> int:
        return max(self.dead_letter_topic, self.job_dead_letters)

    @property
    def producer_dead_letters(self) -> int:
        return max(self.dead_letter_topic - self.job_dead_letters, 0)

    @property
    def lag(self) -> int:
        """Events in Kafka that are neither written nor dead-lettered yet."""
        return max(self.events_in - self.events_out - self.job_dead_letters, 0)


class KafkaCounter:
    """End offsets of the raw and dead-letter topics (sum over partitions)."""

    def __init__(self, bootstrap: str, raw_topic: str, dlq_topic: str, client: dict | None = None) -> None:
        """``client``: confluent-kafka settings (default: security.clients' from the environment)."""
        from confluent_kafka import Consumer

        from streamotion.security.clients import confluent_config

        self.raw_topic, self.dlq_topic = raw_topic, dlq_topic
        self._consumer = Consumer(
            {
                **(client or confluent_config(bootstrap)),
                "group.id": "streamotion-local-stats",  # never subscribes nor commits
                "enable.auto.commit": False,
                "socket.timeout.ms": 5000,
            }
        )
        self._partitions: dict[str, list[int]] = {}

    def _parts(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            md = self._consumer.list_topics(topic, timeout=5).topics.get(topic)
            if md is None or md.error is not None or not md.partitions:
                return []
            self._partitions[topic] = sorted(md.partitions)
        return self._partitions[topic]

    def end_offsets(self, topic: str) -> int:
        from confluent_kafka import TopicPartition

        total = 0
        for p in self._parts(topic):
            _low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)
            total += max(high, 0)
        return total

    def close(self) -> None:
        self._consumer.close()


class PostgresCounter:
    """Counts in the sink's tables, rows written since ``since`` only."""

    def __init__(self, dsn: str, schema: str, since: datetime) -> None:
        self.dsn, self.schema, self.since = dsn, schema, since
        self._conn = None

    def _connect(self):
        import psycopg

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
            self._conn.execute(
                "SELECT set_config('search_path', %s, false)", (f"{self.schema},public",)
            ).fetchone()
        return self._conn

    def _query(self, sql: str, params: tuple = ()) -> list[tuple]:
        import psycopg

        try:
            return self._connect().execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:  # the job has not created its tables yet
            return []
        except psycopg.OperationalError:
            self._conn = None
            raise

    def counts(self) -> tuple[int, int, dict[str, int]]:
        """(events written, job dead letters, per emotion)."""
        per_emotion = {
            e: int(n)
            for e, n in self._query(
                "SELECT emotion, count(*) FROM events WHERE written_at >= %s GROUP BY emotion ORDER BY 2 DESC",
                (self.since,),
            )
        }
        rows = self._query(
            "SELECT count(*) FROM dead_letters WHERE failed_at >= %s AND stage <> 'producer'", (self.since,)
        )
        return sum(per_emotion.values()), int(rows[0][0]) if rows else 0, per_emotion

    def details(self) -> dict[str, Any]:
        """Per emotion and source, latency percentiles, throughput window and top hashtags."""
        per_source: dict[str, dict[str, int]] = {}
        for source, emotion, n in self._query(
            "SELECT source, emotion, count(*) FROM events WHERE written_at >= %s GROUP BY 1, 2 ORDER BY 1, 3 DESC",
            (self.since,),
        ):
            per_source.setdefault(source, {})[emotion] = int(n)
        lat = self._query(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - ingested_at)),"
            " percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM written_at - ingested_at)),"
            " min(ingested_at), max(written_at), count(*)"
            " FROM events WHERE written_at >= %s AND ingested_at IS NOT NULL",
            (self.since,),
        )
        p50, p99, first_in, last_out, n = lat[0] if lat else (None, None, None, None, 0)
        span = (last_out - first_in).total_seconds() if first_in and last_out else None
        bucket = max(5, int((span or 0) / 40) + 1)  # about 40 points whatever the run's length
        over_time = [
            (ts, emotion, int(k))
            for ts, emotion, k in self._query(
                "SELECT to_timestamp(floor(extract(epoch FROM created_at) / %s) * %s), emotion, count(*)"
                " FROM events WHERE written_at >= %s GROUP BY 1, 2 ORDER BY 1",
                (bucket, bucket, self.since),
            )
        ]
        hashtags = [
            (tag, int(k))
            for tag, k in self._query(
                "SELECT h, count(*) FROM events, unnest(hashtags) AS h WHERE written_at >= %s"
                " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 20",
                (self.since,),
            )
        ]
        return {
            "per_source": per_source,
            "p50_latency_s": float(p50) if p50 is not None else None,
            "p99_latency_s": float(p99) if p99 is not None else None,
            "events_with_latency": int(n or 0),
            "span_s": span,
            "bucket_s": bucket,
            "over_time": over_time,
            "top_hashtags": hashtags,
        }

    def close(self) -> None:
        if self._conn is not None and not self._conn.closed:
            self._conn.close()


class Rates:
    """Events per second in and out over the last few seconds."""

    def __init__(self, window_s: float = 5.0) -> None:
        self.window_s = window_s
        self._points: deque[tuple[float, int, int]] = deque()

    def add(self, s: Snapshot) -> tuple[float, float]:
        self._points.append((s.at, s.events_in, s.events_out))
        while len(self._points) > 2 and s.at - self._points[0][0] > self.window_s:
            self._points.popleft()
        t0, in0, out0 = self._points[0]
        dt = s.at - t0
        if dt <= 0:
            return 0.0, 0.0
        return (s.events_in - in0) / dt, (s.events_out - out0) / dt


def now() -> float:
    return time.monotonic()

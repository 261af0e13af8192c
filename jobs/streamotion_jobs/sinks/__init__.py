"""Idempotent sinks: each micro-batch is written so that a replay neither loses nor duplicates.

The write path (no event row passes through the driver): the driver hands each sink the batch's
``events`` and ``dead_letters`` as Spark DataFrames; :meth:`Sink.stage` moves their rows from the
executors into the sink's staging area, each partition tagged ``(query_id, batch_id, partition)``
(a retried task replaces its own partition's rows); :meth:`Sink.commit` then runs on the driver,
once per batch, as one transaction: per-pipeline lock, ledger check, events inserted from staging,
incremental aggregates from exactly the rows that were new, ledger row with the batch's end
offsets, staging removed. :meth:`Sink.resume_offsets` gives the ledger's offsets to a job whose
checkpoint is gone.

Shared rules (PostgreSQL and BigQuery apply them the same way):

* events are keyed by ``event_id`` (the message key ``source:platform:id``); a row already present is kept;
* every micro-batch is recorded with its ``(query_id, batch_id)``; a recorded batch is skipped;
* window aggregates are updated incrementally from the rows the batch inserted (sums and counts;
  means are derived from them), so they always equal a GROUP BY over the non-late event rows;
* late data: the watermark is the largest event time seen so far minus ``processing.watermark``;
  a window is final once the watermark has passed its end. An event that arrives for a final window
  is stored (``late = true``) but does not change that window's aggregates. The watermark is read
  from the sink's batch log, so a replayed batch sees the same watermark as its first attempt;
* bounded event time: events more than ``processing.maxFutureSkew`` ahead never reach the sinks
  (dead letters), and the watermark never passes the job's own clock minus ``processing.watermark``:
  a batch's watermark is computed from event times no later than its processing time, and read back
  as at most its commit time minus the watermark delay, so a ledger written before this bound
  existed (a watermark in 2099) cannot keep every window final.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

US = 1_000_000


@dataclass(frozen=True)
class BatchInfo:
    """One micro-batch's metadata (small, picklable), built on the driver."""

    pipeline: str  # "<namespace>/<name>": the scope of the sink's lock and ledger
    query_id: str  # the streaming query's id (stable across restarts from one checkpoint)
    batch_id: int
    window_s: float
    watermark_s: float
    now_us: int  # the batch's processing time (driver clock): bounds the watermark
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> end offset
    dead_letters: int | None = None  # the batch's invalid records, when the job has counted them

    def __post_init__(self) -> None:
        if not self.query_id or self.query_id == "unknown":
            raise ValueError("a micro-batch needs its streaming query id (none was given)")


@dataclass
class Batch:
    """One micro-batch, computed once and handed to every sink."""

    query_id: str
    batch_id: int
    events: pd.DataFrame  # transform.CLASSIFIED_SCHEMA columns, one row per distinct event_id
    dead_letters: pd.DataFrame  # kafka_topic, kafka_partition, kafka_offset, error, payload
    window_s: float
    watermark_s: float
    stats: dict[str, float] = field(default_factory=dict)
    offsets: dict[str, dict[int, int]] = field(default_factory=dict)  # topic -> partition -> end offset


def with_windows(events: pd.DataFrame, window_s: float, watermark_us: int | None) -> pd.DataFrame:
    """Add window_start_us, window_end_us and late (the window was final when the batch arrived)."""
    out = events.copy()
    window_us = int(window_s * US)
    created = out["created_at_us"].astype("int64")
    out["window_start_us"] = (created // window_us) * window_us
    out["window_end_us"] = out["window_start_us"] + window_us
    if watermark_us is None:
        out["late"] = False
    else:
        out["late"] = out["window_end_us"] <= watermark_us
    return out


def next_watermark(
    previous_us: int | None, events: pd.DataFrame, watermark_s: float, now_us: int | None = None
) -> int | None:
    """The watermark after a batch: its latest event time, no later than ``now_us`` (the batch's
    processing time), minus the watermark delay; it never moves back."""
    if events.empty:
        return previous_us
    latest = int(events["created_at_us"].astype("int64").max())
    if now_us is not None:
        latest = min(latest, now_us)
    candidate = latest - int(watermark_s * US)
    return candidate if previous_us is None else max(previous_us, candidate)


class Sink:
    name = "sink"

    def open(self) -> None:
        """Create or migrate the schema, staging included (called once at job start, on the driver)."""

    def stage(self, events, dead_letters, info: BatchInfo) -> None:
        """Move the batch's rows (pyspark DataFrames: ``events`` in ``transform.CLASSIFIED_SCHEMA``, one
        row per event id; ``dead_letters``: kafka_topic, kafka_partition, kafka_offset, error, payload)
        into the staging area FROM THE EXECUTORS. The functions shipped to executors capture only
        picklable configuration.

        The default, for a sink without executor writes, collects the batch on the driver and keeps it
        for :meth:`commit`, which hands it to :meth:`write`."""
        self._pending = (
            info,
            events.toPandas(),
            dead_letters.toPandas(),
        )

    def commit(self, info: BatchInfo) -> dict | None:
        """Commit the staged batch exactly once; None when the ledger already had it (skipped)."""
        pending, self._pending = getattr(self, "_pending", None), None
        if pending is None or pending[0] != info:
            raise RuntimeError(f"{self.name}: batch {info.batch_id} was not staged")
        _, events, dead = pending
        batch = Batch(info.query_id, info.batch_id, events, dead, info.window_s, info.watermark_s)
        return dict(batch.stats) if self.write(batch) else None

    def resume_offsets(self, topic: str) -> dict[int, int] | None:
        """The ledger's end offsets per partition of ``topic`` (None: the ledger has none)."""
        return None

    def write(self, batch: Batch) -> bool:
        """Write a batch held in pandas (tests, tools); False when it had been written before (skipped)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

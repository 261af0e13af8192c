"""Idempotent sinks: each micro-batch is written so that a replay neither loses nor duplicates.

Shared rules (PostgreSQL and BigQuery apply them the same way):

* events are keyed by ``event_id`` (the message key ``source:platform:id``); a row already present is kept;
* every micro-batch is recorded with its ``(query_id, batch_id)``; a recorded batch is skipped;
* window aggregates are recomputed, for the windows the batch touched, from the events table;
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
        """Create or migrate the schema (called once at job start)."""

    def write(self, batch: Batch) -> bool:
        """Write the batch; False when it had been written before (skipped)."""
        raise NotImplementedError

    def close(self) -> None:
        pass

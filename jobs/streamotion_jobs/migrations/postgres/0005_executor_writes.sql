-- Executor writes (issue #14): staging tables the executors COPY into, each row tagged with its
-- (query_id, batch_id, part); window aggregates kept as sums and counts (updated incrementally from the
-- rows each batch inserted) with the means derived in views of the old names; the batch's end offsets
-- in the ledger; and a one-row state (watermark, offsets) so a commit never scans the ledger.

-- Unlogged: a crash empties them, which a commit detects (its staged row count is checked) and the
-- micro-batch's retry stages again.
CREATE UNLOGGED TABLE events_staging (LIKE events INCLUDING DEFAULTS);
ALTER TABLE events_staging ADD COLUMN part integer NOT NULL;
CREATE INDEX events_staging_batch_idx ON events_staging (query_id, batch_id, part);

CREATE UNLOGGED TABLE dead_letters_staging (
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    reason          text NOT NULL,
    payload         text NOT NULL,
    query_id        text NOT NULL,
    batch_id        bigint NOT NULL,
    part            integer NOT NULL,
    staged_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX dead_letters_staging_batch_idx ON dead_letters_staging (query_id, batch_id, part);

-- Sums and counts; an existing database keeps its aggregates (sum = mean x count).
ALTER TABLE emotion_window RENAME TO emotion_window_totals;
ALTER TABLE emotion_window_totals ADD COLUMN sum_score double precision;
ALTER TABLE emotion_window_totals ADD COLUMN sum_sentiment_index double precision;
UPDATE emotion_window_totals SET sum_score = mean_score * events, sum_sentiment_index = mean_sentiment_index * events;
ALTER TABLE emotion_window_totals ALTER COLUMN sum_score SET NOT NULL;
ALTER TABLE emotion_window_totals ALTER COLUMN sum_sentiment_index SET NOT NULL;
ALTER TABLE emotion_window_totals DROP COLUMN mean_score;
ALTER TABLE emotion_window_totals DROP COLUMN mean_sentiment_index;
CREATE VIEW emotion_window AS
SELECT window_start, window_end, source, channel, lang, emotion, events,
       sum_score / events AS mean_score, sum_sentiment_index / events AS mean_sentiment_index, updated_at
FROM emotion_window_totals;

ALTER TABLE author_activity RENAME TO author_activity_totals;
ALTER TABLE author_activity_totals ADD COLUMN sum_text_length bigint;
UPDATE author_activity_totals SET sum_text_length = round(mean_text_length * events)::bigint;
ALTER TABLE author_activity_totals ALTER COLUMN sum_text_length SET NOT NULL;
ALTER TABLE author_activity_totals DROP COLUMN mean_text_length;
CREATE VIEW author_activity AS
SELECT window_start, window_end, author, events, sum_text_length::double precision / events AS mean_text_length,
       updated_at
FROM author_activity_totals;

-- The ledger: each batch's end offsets (topic -> partition -> next offset to read).
ALTER TABLE batches ADD COLUMN offsets jsonb;
CREATE INDEX batches_committed_idx ON batches (committed_at);

-- One row: the watermark so far (each batch's, bounded by its commit time minus the watermark delay)
-- and the furthest end offset per topic partition over every committed batch. Filled by the first
-- commit after this migration (from the ledger, once).
CREATE TABLE sink_state (
    id         boolean PRIMARY KEY DEFAULT true CHECK (id),
    watermark  timestamptz,
    offsets    jsonb NOT NULL DEFAULT '{}',
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);

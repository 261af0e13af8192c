-- Backfill / re-scoring: one row per event and model version, beside the live classification.
CREATE TABLE event_scores (
    event_id        text NOT NULL,             -- events.event_id (the event may come from Kafka only)
    model_version   text NOT NULL,
    created_at      timestamptz NOT NULL,
    source          text NOT NULL,
    emotion         text NOT NULL,
    score           double precision NOT NULL,
    scores          jsonb NOT NULL,
    sentiment       text NOT NULL,
    sentiment_index double precision NOT NULL,
    scored_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (event_id, model_version)
);

-- Two models side by side: the live result and every re-scored one, per event.
CREATE VIEW v_model_comparison AS
SELECT e.event_id, e.created_at, e.source,
       e.model_version AS live_model_version, e.emotion AS live_emotion, e.sentiment AS live_sentiment,
       s.model_version, s.emotion, s.sentiment, (s.emotion = e.emotion) AS same_emotion
FROM events e JOIN event_scores s USING (event_id);

CREATE VIEW v_emotion_daily_by_model AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model_version, emotion, count(*) AS events
FROM (
    SELECT event_id, created_at, model_version, emotion FROM event_scores
    UNION
    SELECT event_id, created_at, model_version, emotion FROM events
) x
GROUP BY 1, 2, 3;

CREATE INDEX event_scores_created_idx ON event_scores (created_at);

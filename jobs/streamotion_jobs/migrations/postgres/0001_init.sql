-- Enriched events, window aggregates, dead letters and the micro-batch log.
CREATE TABLE events (
    event_id        text PRIMARY KEY,          -- the message key platform:id
    id              text NOT NULL,
    source          text NOT NULL,
    platform        text NOT NULL,
    channel         text,
    author          text,                      -- keyed hash, never the handle
    text            text NOT NULL,             -- the original text
    clean_text      text NOT NULL,             -- what the model saw
    lang            text,
    created_at      timestamptz NOT NULL,      -- event time
    ingested_at     timestamptz,
    url             text,
    hashtags        text[] NOT NULL DEFAULT '{}',
    terms           text[] NOT NULL DEFAULT '{}',
    text_length     integer NOT NULL,
    emotion         text NOT NULL,
    score           double precision NOT NULL,
    scores          jsonb NOT NULL,
    sentiment       text NOT NULL CHECK (sentiment IN ('positive', 'negative', 'neutral')),
    sentiment_index double precision NOT NULL,
    model_version   text NOT NULL,
    window_start    timestamptz NOT NULL,
    window_end      timestamptz NOT NULL,
    late            boolean NOT NULL DEFAULT false,  -- arrived after its window was final
    kafka_topic     text,
    kafka_partition integer,
    kafka_offset    bigint,
    query_id        text,
    batch_id        bigint,
    classified_at   timestamptz,
    written_at      timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX events_window_idx ON events (window_start);
CREATE INDEX events_created_idx ON events (created_at);
CREATE INDEX events_source_emotion_idx ON events (source, emotion);

-- Per window x source x channel x lang x emotion ('' where channel or lang is unknown).
CREATE TABLE emotion_window (
    window_start         timestamptz NOT NULL,
    window_end           timestamptz NOT NULL,
    source               text NOT NULL,
    channel              text NOT NULL,
    lang                 text NOT NULL,
    emotion              text NOT NULL,
    events               bigint NOT NULL,
    mean_score           double precision NOT NULL,
    mean_sentiment_index double precision NOT NULL,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, source, channel, lang, emotion)
);

CREATE TABLE hashtag_window (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    hashtag      text NOT NULL,
    events       bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, hashtag)
);

CREATE TABLE term_window (
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    lang         text NOT NULL,
    term         text NOT NULL,
    events       bigint NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, lang, term)
);

CREATE TABLE author_activity (
    window_start     timestamptz NOT NULL,
    window_end       timestamptz NOT NULL,
    author           text NOT NULL,
    events           bigint NOT NULL,
    mean_text_length double precision NOT NULL,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, author)
);

CREATE TABLE dead_letters (
    kafka_topic     text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    reason          text NOT NULL,
    payload         text NOT NULL,
    stage           text NOT NULL DEFAULT 'job',
    query_id        text,
    batch_id        bigint,
    failed_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (kafka_topic, kafka_partition, kafka_offset)
);

-- One row per committed micro-batch: the exactly-once ledger and the watermark's memory.
CREATE TABLE batches (
    query_id     text NOT NULL,
    batch_id     bigint NOT NULL,
    events       integer NOT NULL,
    late_events  integer NOT NULL,
    dead_letters integer NOT NULL,
    watermark    timestamptz,
    committed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (query_id, batch_id)
);

-- Daily views over every event row (late events included), like the ancestors' v_sentiment_daily.
CREATE VIEW v_emotion_daily AS
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, source, emotion,
       count(*) AS events, avg(score) AS mean_score
FROM events
GROUP BY 1, 2, 3;

CREATE VIEW v_sentiment_daily AS
SELECT day, source, sentiment, events,
       events::double precision / sum(events) OVER (PARTITION BY day, source) AS share,
       mean_sentiment_index
FROM (
    SELECT (created_at AT TIME ZONE 'UTC')::date AS day, source, sentiment,
           count(*) AS events, avg(sentiment_index) AS mean_sentiment_index
    FROM events
    GROUP BY 1, 2, 3
) d;

CREATE VIEW v_top_hashtags_daily AS
SELECT (window_start AT TIME ZONE 'UTC')::date AS day, hashtag, sum(events) AS events
FROM hashtag_window GROUP BY 1, 2;

CREATE VIEW v_top_terms_daily AS
SELECT (window_start AT TIME ZONE 'UTC')::date AS day, lang, term, sum(events) AS events
FROM term_window GROUP BY 1, 2, 3;

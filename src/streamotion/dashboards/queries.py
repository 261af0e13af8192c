"""Every dashboard query, as data: the dashboards, the tests and ``streamotion report`` share them.

SQL queries read the streaming job's sink tables (``jobs/streamotion_jobs/migrations/postgres``):
``emotion_window``, ``hashtag_window``, ``term_window``, ``events`` and the ``v_sentiment_daily``
view, in the pipeline's schema (PostgreSQL) or dataset (BigQuery, the same table names). They use
Grafana's SQL macros (``$__timeFilter``, ``$__timeGroupAlias``, ...) and the dashboard variables
``schema`` (or ``project``/``dataset``), ``source``, ``channel`` and ``lang``; multi-value
variables expand to quoted lists, so filters read ``source IN ($source)``.

PromQL queries read the metrics of the producers (``streamotion_producer_*``), the job
(``streamotion_job_*`` and Spark's streaming metrics), the model service (``streamotion_model_*``)
and the operator (``streamotion_operator_*``); every pipeline series carries the ``namespace`` and
``pipeline`` labels (the operator's PodMonitors add them), producers also ``source``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# ----------------------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class SqlPanel:
    """One panel of the Emotions dashboard, with its PostgreSQL and BigQuery query."""

    key: str
    title: str
    kind: str  # timeseries | barchart | piechart | table | stat
    postgres: str
    bigquery: str
    columns: tuple[str, ...]  # the columns the query returns (checked against real data in tests)
    description: str = ""
    format: str = "table"  # Grafana's SQL result format: table | time_series
    unit: str | None = None
    stacking: str | None = None  # timeseries: normal | percent
    width: int = 12
    height: int = 8
    options: dict = field(default_factory=dict)


# Filters on the window aggregates (every dimension is '' when unknown) and on event rows.
_W = "source IN ($source) AND channel IN ($channel) AND lang IN ($lang)"
_E = "source IN ($source) AND coalesce(channel, '') IN ($channel) AND coalesce(lang, '') IN ($lang)"
_PG = '"$schema"'
_BQ = "`$project.$dataset"

EMOTION_PANELS: tuple[SqlPanel, ...] = (
    SqlPanel(
        key="events",
        title="Events",
        kind="stat",
        description="Classified events in the time range (on-time events, from the window aggregates).",
        postgres=f"""SELECT coalesce(sum(events), 0) AS events
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}""",
        bigquery=f"""SELECT coalesce(sum(events), 0) AS events
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}""",
        columns=("events",),
        unit="short",
        width=6,
        height=4,
    ),
    SqlPanel(
        key="sentiment_now",
        title="Sentiment index",
        kind="stat",
        description="P(joy) minus P(anger, disgust, fear, sadness), averaged over the events: -1 to 1.",
        postgres=f"""SELECT sum(events * mean_sentiment_index) / nullif(sum(events), 0) AS sentiment_index
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}""",
        bigquery=f"""SELECT SAFE_DIVIDE(sum(events * mean_sentiment_index), sum(events)) AS sentiment_index
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}""",
        columns=("sentiment_index",),
        unit="none",
        width=6,
        height=4,
    ),
    SqlPanel(
        key="dominant_emotion",
        title="Dominant emotion",
        kind="stat",
        description="The emotion with the most events in the time range, and its share.",
        postgres=f"""SELECT emotion, sum(events)::double precision / sum(sum(events)) OVER () AS share
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY emotion ORDER BY share DESC, emotion LIMIT 1""",
        bigquery=f"""SELECT emotion, sum(events) / sum(sum(events)) OVER () AS share
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY emotion ORDER BY share DESC, emotion LIMIT 1""",
        columns=("emotion", "share"),
        unit="percentunit",
        width=12,
        height=4,
    ),
    SqlPanel(
        key="emotion_share",
        title="Emotion share over time",
        kind="timeseries",
        format="time_series",
        description="Events per emotion and time bucket, stacked to 100%.",
        postgres=f"""SELECT $__timeGroupAlias(window_start, $__interval), emotion AS metric, sum(events) AS events
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1, 2 ORDER BY 1, 2""",
        bigquery=f"""SELECT $__timeGroup(window_start, $__interval) AS time, emotion AS metric, sum(events) AS events
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1, 2 ORDER BY 1, 2""",
        columns=("time", "metric", "events"),
        stacking="percent",
        unit="short",
        width=24,
        height=9,
    ),
    SqlPanel(
        key="emotion_by_source",
        title="Emotion share per source and channel",
        kind="barchart",
        description="Share of each emotion within each source / channel over the time range.",
        postgres=f"""SELECT source || ' / ' || coalesce(nullif(channel, ''), '-') AS source_channel, emotion,
       sum(events)::double precision / sum(sum(events)) OVER (PARTITION BY source, channel) AS share
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY source, channel, emotion ORDER BY 1, 2""",
        bigquery=f"""SELECT CONCAT(source, ' / ', coalesce(nullif(channel, ''), '-')) AS source_channel, emotion,
       sum(events) / sum(sum(events)) OVER (PARTITION BY source, channel) AS share
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY source, channel, emotion ORDER BY 1, 2""",
        columns=("source_channel", "emotion", "share"),
        unit="percentunit",
        stacking="normal",
        width=12,
        height=9,
    ),
    SqlPanel(
        key="sentiment_index",
        title="Sentiment index over time",
        kind="timeseries",
        format="time_series",
        description="Event-weighted mean sentiment index per source (-1 negative … 1 positive).",
        postgres=f"""SELECT $__timeGroupAlias(window_start, $__interval), source AS metric,
       sum(events * mean_sentiment_index) / sum(events) AS sentiment_index
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1, 2 ORDER BY 1, 2""",
        bigquery=f"""SELECT $__timeGroup(window_start, $__interval) AS time, source AS metric,
       SAFE_DIVIDE(sum(events * mean_sentiment_index), sum(events)) AS sentiment_index
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1, 2 ORDER BY 1, 2""",
        columns=("time", "metric", "sentiment_index"),
        unit="none",
        width=12,
        height=9,
        options={"min": -1, "max": 1},
    ),
    SqlPanel(
        key="top_hashtags",
        title="Top hashtags",
        kind="barchart",
        description="The most frequent hashtags over the time range (all sources).",
        postgres=f"""SELECT hashtag, sum(events) AS events
FROM {_PG}.hashtag_window
WHERE $__timeFilter(window_start)
GROUP BY hashtag ORDER BY events DESC, hashtag LIMIT 15""",
        bigquery=f"""SELECT hashtag, sum(events) AS events
FROM {_BQ}.hashtag_window`
WHERE $__timeFilter(window_start)
GROUP BY hashtag ORDER BY events DESC, hashtag LIMIT 15""",
        columns=("hashtag", "events"),
        unit="short",
        width=8,
        height=10,
        options={"orientation": "horizontal"},
    ),
    SqlPanel(
        key="top_terms",
        title="Top terms",
        kind="barchart",
        description="The most frequent terms (stop words removed) over the time range, in the chosen languages.",
        postgres=f"""SELECT term, sum(events) AS events
FROM {_PG}.term_window
WHERE $__timeFilter(window_start) AND lang IN ($lang)
GROUP BY term ORDER BY events DESC, term LIMIT 15""",
        bigquery=f"""SELECT term, sum(events) AS events
FROM {_BQ}.term_window`
WHERE $__timeFilter(window_start) AND lang IN ($lang)
GROUP BY term ORDER BY events DESC, term LIMIT 15""",
        columns=("term", "events"),
        unit="short",
        width=8,
        height=10,
        options={"orientation": "horizontal"},
    ),
    SqlPanel(
        key="language_split",
        title="Languages",
        kind="piechart",
        description="Events per language ('unknown' where the source did not tell).",
        postgres=f"""SELECT coalesce(nullif(lang, ''), 'unknown') AS lang, sum(events) AS events
FROM {_PG}.emotion_window
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1 ORDER BY events DESC, lang""",
        bigquery=f"""SELECT coalesce(nullif(lang, ''), 'unknown') AS lang, sum(events) AS events
FROM {_BQ}.emotion_window`
WHERE $__timeFilter(window_start) AND {_W}
GROUP BY 1 ORDER BY events DESC, lang""",
        columns=("lang", "events"),
        unit="short",
        width=8,
        height=10,
    ),
    SqlPanel(
        key="top_per_window",
        title="Top hashtags and terms per window",
        kind="table",
        description="The three most frequent hashtags and terms of each window, newest windows first.",
        postgres=f"""SELECT window_start AS time, kind, item, events FROM (
    SELECT window_start, 'hashtag' AS kind, hashtag AS item, events,
           row_number() OVER (PARTITION BY window_start ORDER BY events DESC, hashtag) AS rank
    FROM {_PG}.hashtag_window WHERE $__timeFilter(window_start)
    UNION ALL
    SELECT window_start, 'term', term, sum(events),
           row_number() OVER (PARTITION BY window_start ORDER BY sum(events) DESC, term)
    FROM {_PG}.term_window WHERE $__timeFilter(window_start) AND lang IN ($lang)
    GROUP BY window_start, term
) ranked
WHERE rank <= 3
ORDER BY time DESC, kind, events DESC, item
LIMIT 300""",
        bigquery=f"""SELECT window_start AS time, kind, item, events FROM (
    SELECT window_start, 'hashtag' AS kind, hashtag AS item, events,
           row_number() OVER (PARTITION BY window_start ORDER BY events DESC, hashtag) AS rank
    FROM {_BQ}.hashtag_window` WHERE $__timeFilter(window_start)
    UNION ALL
    SELECT window_start, 'term', term, sum(events),
           row_number() OVER (PARTITION BY window_start ORDER BY sum(events) DESC, term)
    FROM {_BQ}.term_window` WHERE $__timeFilter(window_start) AND lang IN ($lang)
    GROUP BY window_start, term
)
WHERE rank <= 3
ORDER BY time DESC, kind, events DESC, item
LIMIT 300""",
        columns=("time", "kind", "item", "events"),
        width=8,
        height=10,
    ),
    SqlPanel(
        key="emotional_posts",
        title="Most emotional recent posts",
        kind="table",
        description="Posts with the most confident non-neutral emotion in the time range.",
        postgres=f"""SELECT created_at AS time, source, coalesce(channel, '') AS channel, coalesce(lang, '') AS lang,
       emotion, round(score::numeric, 3) AS score, sentiment, left(text, 280) AS text, url
FROM {_PG}.events
WHERE $__timeFilter(created_at) AND {_E} AND emotion <> 'neutral'
ORDER BY score DESC, created_at DESC
LIMIT 50""",
        bigquery=f"""SELECT created_at AS time, source, coalesce(channel, '') AS channel, coalesce(lang, '') AS lang,
       emotion, ROUND(score, 3) AS score, sentiment, SUBSTR(text, 1, 280) AS text, url
FROM {_BQ}.events`
WHERE $__timeFilter(created_at) AND {_E} AND emotion <> 'neutral'
ORDER BY score DESC, created_at DESC
LIMIT 50""",
        columns=("time", "source", "channel", "lang", "emotion", "score", "sentiment", "text", "url"),
        width=24,
        height=10,
    ),
    SqlPanel(
        key="daily_summary",
        title="Daily summary",
        kind="table",
        description="Per day and source: events, positive/negative/neutral shares, mean sentiment index "
        "(v_sentiment_daily: every event row, late ones included).",
        postgres=f"""SELECT day, source, sum(events) AS events,
       coalesce(sum(share) FILTER (WHERE sentiment = 'positive'), 0) AS positive,
       coalesce(sum(share) FILTER (WHERE sentiment = 'negative'), 0) AS negative,
       coalesce(sum(share) FILTER (WHERE sentiment = 'neutral'), 0) AS neutral,
       sum(events * mean_sentiment_index) / sum(events) AS sentiment_index
FROM {_PG}.v_sentiment_daily
WHERE day BETWEEN ($__timeFrom())::date AND ($__timeTo())::date AND source IN ($source)
GROUP BY day, source ORDER BY day DESC, source""",
        bigquery=f"""SELECT DATE(created_at) AS day, source, count(*) AS events,
       COUNTIF(sentiment = 'positive') / count(*) AS positive,
       COUNTIF(sentiment = 'negative') / count(*) AS negative,
       COUNTIF(sentiment = 'neutral') / count(*) AS neutral,
       avg(sentiment_index) AS sentiment_index
FROM {_BQ}.events`
WHERE $__timeFilter(created_at) AND source IN ($source)
GROUP BY day, source ORDER BY day DESC, source""",
        columns=("day", "source", "events", "positive", "negative", "neutral", "sentiment_index"),
        width=24,
        height=8,
    ),
)

# Variable queries of the Emotions dashboard (value, and a readable text for '' = unknown).
EMOTION_VARIABLES_POSTGRES: dict[str, str] = {
    "source": f"SELECT DISTINCT source FROM {_PG}.emotion_window ORDER BY 1",
    "channel": f"""SELECT DISTINCT coalesce(nullif(channel, ''), '(none)') AS __text, channel AS __value
FROM {_PG}.emotion_window WHERE source IN ($source) ORDER BY 1""",
    "lang": f"""SELECT DISTINCT coalesce(nullif(lang, ''), '(unknown)') AS __text, lang AS __value
FROM {_PG}.emotion_window WHERE source IN ($source) ORDER BY 1""",
}
EMOTION_VARIABLES_BIGQUERY: dict[str, str] = {
    "source": f"SELECT DISTINCT source FROM {_BQ}.emotion_window` ORDER BY 1",
    "channel": f"""SELECT DISTINCT coalesce(nullif(channel, ''), '(none)') AS __text, channel AS __value
FROM {_BQ}.emotion_window` WHERE source IN ($source) ORDER BY 1""",
    "lang": f"""SELECT DISTINCT coalesce(nullif(lang, ''), '(unknown)') AS __text, lang AS __value
FROM {_BQ}.emotion_window` WHERE source IN ($source) ORDER BY 1""",
}


def emotion_panel(key: str) -> SqlPanel:
    for p in EMOTION_PANELS:
        if p.key == key:
            return p
    raise KeyError(key)


# -------------------------------------------------------------------------------------- PromQL


@dataclass(frozen=True)
class PromTarget:
    expr: str
    legend: str = ""


@dataclass(frozen=True)
class PromPanel:
    key: str
    title: str
    targets: tuple[PromTarget, ...]
    kind: str = "timeseries"  # timeseries | stat | table
    unit: str = "short"
    description: str = ""
    metrics: tuple[str, ...] = ()  # the metric names the panel reads (component contract)
    width: int = 12
    height: int = 8


_P = 'namespace="$namespace", pipeline="$pipeline"'
_S = f'{_P}, source=~"$source"'
_RI = "[$__rate_interval]"


def _q(quantile: float, metric: str, sel: str, by: str = "") -> str:
    group = f"le{', ' + by if by else ''}"
    return f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket{{{sel}}}{_RI})))"


# Spark's PrometheusServlet names streaming-query gauges
# metrics_<spark.metrics.namespace>_driver_spark_streaming_<query>_<metric>_Value.
def _spark(metric: str) -> str:
    return f'{{__name__=~"metrics_.+_driver_spark_streaming_.+_{metric}_Value", {_P}}}'


HEALTH_PANELS: tuple[PromPanel, ...] = (
    PromPanel(
        key="ingest_rate",
        title="Ingest rate per source",
        description="Events Kafka acknowledged on the raw topic, per second.",
        targets=(
            PromTarget(
                f"sum by (source) (rate(streamotion_producer_events_produced_total{{{_S}}}{_RI}))",
                "{{source}}",
            ),
        ),
        unit="ops",
        metrics=("streamotion_producer_events_produced_total",),
    ),
    PromPanel(
        key="producer_drops",
        title="Producer dead letters, failures and filtered events",
        targets=(
            PromTarget(
                f"sum by (source) (rate(streamotion_producer_events_dead_lettered_total{{{_S}}}{_RI}))",
                "{{source}} dead-lettered",
            ),
            PromTarget(
                f"sum by (source) (rate(streamotion_producer_events_failed_total{{{_S}}}{_RI}))",
                "{{source}} delivery failed",
            ),
            PromTarget(
                f"sum by (source, reason) (rate(streamotion_producer_events_filtered_total{{{_S}}}{_RI}))",
                "{{source}} filtered: {{reason}}",
            ),
        ),
        unit="ops",
        metrics=(
            "streamotion_producer_events_dead_lettered_total",
            "streamotion_producer_events_failed_total",
            "streamotion_producer_events_filtered_total",
        ),
    ),
    PromPanel(
        key="producer_latency",
        title="Kafka delivery latency and source lag",
        description="p99 from produce() to Kafka's ack; how far behind the platform each source is.",
        targets=(
            PromTarget(
                _q(0.99, "streamotion_producer_delivery_latency_seconds", _S, "source"), "{{source}} ack p99"
            ),
            PromTarget(f"max by (source) (streamotion_producer_lag_seconds{{{_S}}})", "{{source}} lag"),
        ),
        unit="s",
        metrics=("streamotion_producer_delivery_latency_seconds_bucket", "streamotion_producer_lag_seconds"),
    ),
    PromPanel(
        key="consumer_lag",
        title="Kafka consumer lag of the job",
        description="Messages on the raw topic the streaming job has not processed yet.",
        targets=(PromTarget(f"sum(streamotion_job_consumer_lag{{{_P}}})", "lag"),),
        metrics=("streamotion_job_consumer_lag",),
    ),
    PromPanel(
        key="batch_duration",
        title="Micro-batch duration",
        description="Spark's streaming metrics: duration of the last micro-batch, per query.",
        targets=(PromTarget(f"max by (__name__) ({_spark('latency')}) / 1000", "batch duration"),),
        unit="s",
    ),
    PromPanel(
        key="input_rate",
        title="Micro-batch input and processing rate",
        targets=(
            PromTarget(f"sum({_spark('inputRate_total')})", "input rows/s"),
            PromTarget(f"sum({_spark('processingRate_total')})", "processed rows/s"),
            PromTarget(f"sum(rate(streamotion_job_events_total{{{_P}}}{_RI}))", "events written/s"),
        ),
        unit="ops",
        metrics=("streamotion_job_events_total",),
    ),
    PromPanel(
        key="model_latency",
        title="Model latency p50 / p99",
        description="Classify request latency inside the model replicas, and model time per batch.",
        targets=(
            PromTarget(
                _q(0.5, "streamotion_model_request_latency_seconds", f'{_P}, endpoint="/v1/classify"'),
                "request p50",
            ),
            PromTarget(
                _q(0.99, "streamotion_model_request_latency_seconds", f'{_P}, endpoint="/v1/classify"'),
                "request p99",
            ),
            PromTarget(_q(0.99, "streamotion_model_inference_latency_seconds", _P), "inference p99"),
        ),
        unit="s",
        metrics=(
            "streamotion_model_request_latency_seconds_bucket",
            "streamotion_model_inference_latency_seconds_bucket",
        ),
    ),
    PromPanel(
        key="model_batch",
        title="Model batch size and throughput",
        targets=(
            PromTarget(
                f"sum(rate(streamotion_model_batch_size_sum{{{_P}}}{_RI})) / "
                f"sum(rate(streamotion_model_batch_size_count{{{_P}}}{_RI}))",
                "mean batch size",
            ),
            PromTarget(_q(0.99, "streamotion_model_batch_size", _P), "p99 batch size"),
            PromTarget(f"sum(rate(streamotion_model_texts_total{{{_P}}}{_RI}))", "texts/s"),
        ),
        metrics=(
            "streamotion_model_batch_size_sum",
            "streamotion_model_batch_size_count",
            "streamotion_model_batch_size_bucket",
            "streamotion_model_texts_total",
        ),
    ),
    PromPanel(
        key="model_errors",
        title="Model errors",
        targets=(
            PromTarget(
                f"sum by (kind) (rate(streamotion_model_errors_total{{{_P}}}{_RI}))",
                "{{kind}}",
            ),
            PromTarget(
                f'sum by (status) (rate(streamotion_model_requests_total{{{_P}, status!~"2.."}}{_RI}))',
                "HTTP {{status}}",
            ),
        ),
        unit="ops",
        metrics=("streamotion_model_errors_total", "streamotion_model_requests_total"),
    ),
    PromPanel(
        key="dead_letters",
        title="Dead-letter rate",
        description="Share of the job's input that went to the dead-letter topic or table.",
        targets=(
            PromTarget(
                f"sum(rate(streamotion_job_dead_letters_total{{{_P}}}{_RI})) / "
                f"clamp_min(sum(rate(streamotion_job_events_total{{{_P}}}{_RI})) + "
                f"sum(rate(streamotion_job_dead_letters_total{{{_P}}}{_RI})), 1e-9)",
                "job dead-letter share",
            ),
            PromTarget(
                f"sum(rate(streamotion_producer_events_dead_lettered_total{{{_S}}}{_RI})) / "
                f"clamp_min(sum(rate(streamotion_producer_payloads_received_total{{{_S}}}{_RI})), 1e-9)",
                "producer dead-letter share",
            ),
        ),
        unit="percentunit",
        metrics=(
            "streamotion_job_dead_letters_total",
            "streamotion_job_events_total",
            "streamotion_producer_events_dead_lettered_total",
            "streamotion_producer_payloads_received_total",
        ),
    ),
    PromPanel(
        key="sink_latency",
        title="Sink write latency and errors",
        targets=(
            PromTarget(_q(0.99, "streamotion_job_sink_write_seconds", _P, "sink"), "{{sink}} write p99"),
            PromTarget(
                f"sum by (sink) (rate(streamotion_job_sink_errors_total{{{_P}}}{_RI}))", "{{sink}} errors/s"
            ),
        ),
        unit="s",
        metrics=("streamotion_job_sink_write_seconds_bucket", "streamotion_job_sink_errors_total"),
    ),
    PromPanel(
        key="end_to_end",
        title="End-to-end latency",
        description="From the event's ingestion by a producer to its row in the sink.",
        targets=(
            PromTarget(_q(0.5, "streamotion_job_end_to_end_latency_seconds", _P), "p50"),
            PromTarget(_q(0.99, "streamotion_job_end_to_end_latency_seconds", _P), "p99"),
        ),
        unit="s",
        metrics=("streamotion_job_end_to_end_latency_seconds_bucket",),
    ),
)

HEALTH_VARIABLES: dict[str, str] = {
    "namespace": 'label_values(up{pipeline!=""}, namespace)',
    "pipeline": 'label_values(up{namespace="$namespace", pipeline!=""}, pipeline)',
    "source": 'label_values(streamotion_producer_events_produced_total{namespace="$namespace", '
    'pipeline="$pipeline"}, source)',
}

OPERATOR_PANELS: tuple[PromPanel, ...] = (
    PromPanel(
        key="phases",
        title="Pipelines by phase",
        kind="stat",
        targets=(PromTarget("sum by (phase) (streamotion_operator_pipelines)", "{{phase}}"),),
        metrics=("streamotion_operator_pipelines",),
        width=16,
        height=5,
    ),
    PromPanel(
        key="not_ready",
        title="Pipelines not Ready",
        kind="stat",
        targets=(PromTarget("count(streamotion_operator_pipeline_ready == 0) or vector(0)", "not ready"),),
        metrics=("streamotion_operator_pipeline_ready",),
        width=8,
        height=5,
    ),
    PromPanel(
        key="ready",
        title="Ready per pipeline",
        kind="table",
        targets=(PromTarget("max by (pipeline_namespace, pipeline) (streamotion_operator_pipeline_ready)"),),
        metrics=("streamotion_operator_pipeline_ready",),
        width=8,
    ),
    PromPanel(
        key="reconcile_rate",
        title="Reconcile rate",
        targets=(
            PromTarget(
                f"sum by (result) (rate(streamotion_operator_reconciles_total{_RI}))",
                "{{result}}",
            ),
        ),
        unit="ops",
        metrics=("streamotion_operator_reconciles_total",),
        width=8,
    ),
    PromPanel(
        key="reconcile_errors",
        title="Reconcile errors",
        targets=(
            PromTarget(
                f"sum by (kind) (rate(streamotion_operator_reconcile_errors_total{_RI})) or vector(0)",
                "{{kind}}",
            ),
        ),
        unit="ops",
        metrics=("streamotion_operator_reconcile_errors_total",),
        width=8,
    ),
    PromPanel(
        key="reconcile_duration",
        title="Reconcile duration",
        targets=(
            PromTarget(_q(0.5, "streamotion_operator_reconcile_duration_seconds", ""), "p50"),
            PromTarget(_q(0.99, "streamotion_operator_reconcile_duration_seconds", ""), "p99"),
        ),
        unit="s",
        metrics=("streamotion_operator_reconcile_duration_seconds_bucket",),
    ),
    PromPanel(
        key="children_applied",
        title="Children applied",
        targets=(
            PromTarget(
                f"sum by (kind, action) (rate(streamotion_operator_children_applied_total{_RI}))",
                "{{kind}} {{action}}",
            ),
        ),
        unit="ops",
        metrics=("streamotion_operator_children_applied_total",),
    ),
)

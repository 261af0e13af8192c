"""Every SQL panel and variable query of the Emotions dashboard, run against a real PostgreSQL
after an end-to-end run.

Realistic events (GoEmotions comments of three sources over three hours, tests/dashboards_helpers.py)
go through a real Kafka topic, the streaming job on Spark and the model service into PostgreSQL
(schema from the job's migrations); queries are expanded with Grafana's rules (variables, then
macros), exactly as committed in grafana/dashboards/emotions.json.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from streamotion.dashboards import interpolate
from streamotion.dashboards.build import DEFAULT_DIR
from streamotion.dashboards.queries import EMOTION_PANELS, EMOTION_VARIABLES_POSTGRES, emotion_panel
from tests import dashboards_helpers as data

NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = NOW - timedelta(hours=6), NOW + timedelta(minutes=1)


@pytest.fixture(scope="module")
def sink(postgres, kafka, model_server, tmp_path_factory):
    schema = f"dash_{uuid.uuid4().hex[:8]}"
    counts = data.run_pipeline_postgres(
        kafka, postgres, model_server.url, schema, tmp_path_factory.mktemp("dash-job"), now=NOW
    )
    yield {"schema": schema, **counts}
    with postgres.connect(autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def run(postgres, sql: str) -> tuple[list[str], list[tuple]]:
    with postgres.connect() as conn:
        cur = conn.execute(sql)
        return [d.name for d in cur.description], cur.fetchall()


def variable_values(postgres, schema: str, **chosen) -> dict:
    """What Grafana does on load: each variable query runs with the previous variables' values;
    'All' (the default) selects every value it returned."""
    values: dict = {"schema": schema, "pipeline": "demo", "namespace": "test"}
    for name, query in EMOTION_VARIABLES_POSTGRES.items():
        sql = interpolate.postgres(query, values, FROM, TO)
        cols, rows = run(postgres, sql)
        options = [r[cols.index("__value")] if "__value" in cols else r[0] for r in rows]
        assert options, f"variable {name} has no options: {sql}"
        values[name] = chosen.get(name, options)
    return values


def dashboard_sql() -> dict[str, str]:
    board = json.loads((DEFAULT_DIR / "emotions.json").read_text())
    return {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}


def test_every_panel_query_returns_rows_with_its_columns(postgres, sink):
    values = variable_values(postgres, sink["schema"])
    assert sorted(values["source"]) == sink["sources"]
    assert "" in values["channel"] and "" in values["lang"]  # unknown channel / language is a choice
    committed = dashboard_sql()
    for panel in EMOTION_PANELS:
        assert committed[panel.title] == panel.postgres  # what runs here is what Grafana runs
        sql = interpolate.postgres(panel.postgres, values, FROM, TO, interval="5m")
        cols, rows = run(postgres, sql)
        assert tuple(cols) == panel.columns, panel.key
        assert rows, f"{panel.key} returned no rows:\n{sql}"


def test_panel_values_agree_with_the_sink(postgres, sink):
    values = variable_values(postgres, sink["schema"])

    def q(key: str, **override):
        sql = interpolate.postgres(emotion_panel(key).postgres, {**values, **override}, FROM, TO, "10m")
        return run(postgres, sql)[1]

    total = sink["events"]
    assert q("events") == [(total,)]
    share = q("emotion_share")
    assert sum(r[2] for r in share) == total
    assert {r[0] % 600 for r in share} == {0}  # 10-minute buckets, epoch seconds in "time"
    (index,) = q("sentiment_now")[0]
    assert -1 <= index <= 1
    _emotion, top_share = q("dominant_emotion")[0]
    assert 0 < top_share <= 1
    by_source = q("emotion_by_source")
    for sc in {r[0] for r in by_source}:
        assert math.isclose(sum(r[2] for r in by_source if r[0] == sc), 1.0)
    hashtags = [h for h, _ in q("top_hashtags")]  # ours are frequent; a few comments carry their own
    assert set(hashtags[: len(data.HASHTAGS)]) == {h.lstrip("#") for h in data.HASHTAGS}
    assert q("top_terms") and len(q("top_per_window")) >= 2 * 3
    assert sum(r[1] for r in q("language_split")) == total
    posts = q("emotional_posts")
    assert len(posts) == 50 and all(p[4] != "neutral" for p in posts)
    assert [p[5] for p in posts] == sorted((p[5] for p in posts), reverse=True)
    daily = q("daily_summary")
    assert sum(r[2] for r in daily) == total
    for r in daily:
        assert math.isclose(r[3] + r[4] + r[5], 1.0)


def test_filters_select_what_the_variables_say(postgres, sink):
    values = variable_values(postgres, sink["schema"], source=["masto"], lang=["fr"])

    def q(key: str):
        return run(postgres, interpolate.postgres(emotion_panel(key).postgres, values, FROM, TO, "5m"))[1]

    assert [r[0] for r in q("language_split")] == ["fr"]
    assert {r[0].split(" / ")[0] for r in q("emotion_by_source")} == {"masto"}
    assert {r[1] for r in q("sentiment_index")} == {"masto"}
    posts = q("emotional_posts")
    assert posts and {(p[1], p[3]) for p in posts} == {("masto", "fr")}
    assert {r[1] for r in q("daily_summary")} == {"masto"}
    # a single-value selection is inserted unquoted by Grafana: the dashboards use multi-value variables
    (all_events,) = q("events")[0]
    assert 0 < all_events < sink["events"]


def test_time_range_bounds_every_panel(postgres, sink):
    """A range before any data: time-filtered panels return nothing (or a zero / NULL aggregate)."""
    values = variable_values(postgres, sink["schema"])
    early_from, early_to = NOW - timedelta(days=30), NOW - timedelta(days=29)
    for panel in EMOTION_PANELS:
        _, rows = run(postgres, interpolate.postgres(panel.postgres, values, early_from, early_to))
        assert rows in ([], [(0,)], [(None,)]), panel.key

"""The BigQuery variant of the Emotions dashboard: every panel and variable query on a local
BigQuery (bqemulator, real google-cloud-bigquery client) after an end-to-end run (real Kafka, the
streaming job on Spark, the model service, the job's BigQuery sink)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from streamotion.dashboards import interpolate
from streamotion.dashboards.build import DEFAULT_DIR
from streamotion.dashboards.queries import EMOTION_PANELS, EMOTION_VARIABLES_BIGQUERY, emotion_panel
from tests import dashboards_helpers as data

NOW = datetime.now(UTC).replace(microsecond=0)
FROM, TO = NOW - timedelta(hours=6), NOW + timedelta(minutes=1)


@pytest.fixture(scope="module")
def bq(bigquery_emulator, kafka, model_server, tmp_path_factory):
    dataset = f"dash_{uuid.uuid4().hex[:8]}"
    client = bigquery_emulator.client()
    counts = data.run_pipeline_bigquery(
        kafka,
        bigquery_emulator,
        model_server.url,
        dataset,
        tmp_path_factory.mktemp("dash-bq"),
        n=150,
        now=NOW,
    )
    yield {"client": client, "project": bigquery_emulator.project, "dataset": dataset, **counts}
    client.delete_dataset(f"{bigquery_emulator.project}.{dataset}", delete_contents=True, not_found_ok=True)


def run(client, sql: str) -> tuple[list[str], list[tuple]]:
    rows = client.query(sql).result()
    return [f.name for f in rows.schema], [tuple(r.values()) for r in rows]


def test_every_bigquery_panel_query_returns_rows_with_its_columns(bq):
    client = bq["client"]
    values: dict = {
        "project": bq["project"],
        "dataset": bq["dataset"],
        "pipeline": "demo",
        "namespace": "test",
    }
    for name, query in EMOTION_VARIABLES_BIGQUERY.items():
        cols, rows = run(client, interpolate.bigquery(query, values, FROM, TO))
        values[name] = [r[cols.index("__value")] if "__value" in cols else r[0] for r in rows]
        assert values[name], f"variable {name}: no options"
    assert sorted(values["source"]) == bq["sources"]
    board = json.loads((DEFAULT_DIR / "emotions-bigquery.json").read_text())
    committed = {p["title"]: p["targets"][0]["rawSql"] for p in board["panels"]}
    for panel in EMOTION_PANELS:
        assert committed[panel.title] == panel.bigquery
        sql = interpolate.bigquery(panel.bigquery, values, FROM, TO, interval="10m")
        cols, rows = run(client, sql)
        assert tuple(cols) == panel.columns, panel.key
        assert rows, f"{panel.key} returned no rows:\n{sql}"
    (events,) = run(client, interpolate.bigquery(emotion_panel("events").bigquery, values, FROM, TO))[1][0]
    assert events == bq["events"]
    daily = run(client, interpolate.bigquery(emotion_panel("daily_summary").bigquery, values, FROM, TO))[1]
    assert sum(r[2] for r in daily) == bq["events"]

"""The committed Grafana dashboards: generated, valid JSON models, data sources by variable."""

from __future__ import annotations

import json
import re

import pytest

from streamotion.dashboards import build, queries
from streamotion.dashboards.build import DEFAULT_DIR

BOARDS = build.generate()
PLUGINS = {
    "emotions.json": build.POSTGRES_PLUGIN,
    "emotions-bigquery.json": build.BIGQUERY_PLUGIN,
    "pipeline-health.json": build.PROMETHEUS_PLUGIN,
    "operator.json": build.PROMETHEUS_PLUGIN,
}
_VARS = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


def test_committed_json_equals_the_generator_output():
    assert sorted(p.name for p in DEFAULT_DIR.glob("*.json")) == sorted(BOARDS)
    assert build.check(DEFAULT_DIR) == [], "stale: run .venv/bin/python grafana/generate.py"
    for name, board in BOARDS.items():
        assert json.loads((DEFAULT_DIR / name).read_text()) == board


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_dashboard_is_a_valid_grafana_model(name):
    from grafana_foundation_sdk.models.dashboard import Dashboard

    board = json.loads((DEFAULT_DIR / name).read_text())
    # the SDK's types come from Grafana's own dashboard schema: the model reads back unchanged
    parsed = json.loads(json.dumps(Dashboard.from_json(board), cls=_encoder()))
    assert parsed["panels"] == board["panels"] and parsed["templating"] == board["templating"]
    assert board["uid"] and len(board["uid"]) <= 40 and board["title"].startswith("Streamotion")
    assert "id" not in board and isinstance(board["schemaVersion"], int)
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for p in board["panels"]:
        g = p["gridPos"]
        assert g["x"] >= 0 and g["x"] + g["w"] <= 24 and g["h"] > 0
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & area, f"panel {p['title']} overlaps another"
        cells |= area


@pytest.mark.parametrize("name", sorted(BOARDS))
def test_every_query_uses_the_datasource_variable_and_defined_variables(name):
    board = BOARDS[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == PLUGINS[name]
    ref = {"type": PLUGINS[name], "uid": "${datasource}"}
    texts = []
    for v in variables.values():
        if v["type"] == "query":
            assert v["datasource"] == ref
            texts.append(v["query"])
    for p in board["panels"]:
        assert p["datasource"] == ref, p["title"]
        assert p["targets"], p["title"]
        for t in p["targets"]:
            assert t["datasource"] == ref and t["refId"]
            texts.append(t.get("rawSql") or t.get("expr"))
    for text in texts:
        assert text, "empty query"
        for m in _VARS.finditer(text):
            var = m.group(1) or m.group(2) or m.group(3)
            assert var.startswith("__") or var in variables, f"${var} is not a variable of {name}: {text}"


def test_emotions_dashboard_has_the_panels_users_came_for():
    titles = {p["title"] for p in BOARDS["emotions.json"]["panels"]}
    assert {
        "Emotion share over time",
        "Emotion share per source and channel",
        "Sentiment index over time",
        "Top hashtags",
        "Top terms",
        "Top hashtags and terms per window",
        "Languages",
        "Most emotional recent posts",
        "Daily summary",
    } <= titles
    variables = [v["name"] for v in BOARDS["emotions.json"]["templating"]["list"]]
    assert {"pipeline", "source", "channel", "lang"} <= set(variables)
    share = next(p for p in BOARDS["emotions.json"]["panels"] if p["title"] == "Emotion share over time")
    assert share["fieldConfig"]["defaults"]["custom"]["stacking"]["mode"] == "percent"
    bq = BOARDS["emotions-bigquery.json"]
    assert [p["title"] for p in bq["panels"]] == [p["title"] for p in BOARDS["emotions.json"]["panels"]]
    assert all("`$project.$dataset." in p["targets"][0]["rawSql"] for p in bq["panels"])


def test_health_and_operator_dashboards_cover_the_issue():
    health = {p["title"] for p in BOARDS["pipeline-health.json"]["panels"]}
    for needed in (
        "Ingest rate",
        "consumer lag",
        "Micro-batch duration",
        "input",
        "Model latency",
        "batch size",
        "Dead-letter",
        "Sink write",
        "End-to-end",
    ):
        assert any(needed.lower() in t.lower() for t in health), needed
    operator = {p["title"] for p in BOARDS["operator.json"]["panels"]}
    assert {"Pipelines by phase", "Reconcile rate", "Reconcile errors", "Reconcile duration"} <= operator
    for p in (*queries.HEALTH_PANELS, *queries.OPERATOR_PANELS):
        for t in p.targets:
            names = set(re.findall(r"\b(streamotion_[a-z_]+)", t.expr))
            assert names <= set(p.metrics), f"{p.key}: declare {names - set(p.metrics)} in metrics"


def test_the_operator_ships_the_pipeline_dashboards_with_variables_preselected():
    pytest.importorskip("kopf")
    from streamotion_operator.builders import dashboards
    from streamotion_operator.config import OperatorConfig

    from streamotion.api.validate import load_pipeline

    p = load_pipeline(DEFAULT_DIR.parents[1] / "examples" / "demo.yaml")  # one PostgreSQL sink
    cm = dashboards(p, OperatorConfig(dashboards_dir=str(DEFAULT_DIR)))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    prefix = f"{p.namespace}.{p.name}."
    assert sorted(cm["data"]) == [f"{prefix}emotions.json", f"{prefix}pipeline-health.json"]
    for key, text in cm["data"].items():
        board = json.loads(text)
        assert board["uid"].startswith(BOARDS[key.removeprefix(prefix)]["uid"])
        current = {v["name"]: v.get("current", {}).get("value") for v in board["templating"]["list"]}
        assert current["pipeline"] == p.name and current["namespace"] == p.namespace, key
        if key.endswith("emotions.json"):
            assert current["schema"] == p.spec.sinks[0].postgres.schema_


def _encoder():
    from grafana_foundation_sdk.cog.encoder import JSONEncoder

    return JSONEncoder

"""The Grafana dashboards, generated with the grafana-foundation-sdk from :mod:`.queries`.

``generate()`` returns ``{file name: dashboard JSON model}``; ``write(folder)`` writes them
(``python grafana/generate.py`` or ``streamotion dashboards generate``) and ``check(folder)``
lists the files that differ from the generator's output (a test keeps the committed ones equal).
Every panel's data source is a dashboard variable (``${datasource}``), so the JSON loads into any
Grafana unchanged; the operator ships the files in a ConfigMap labelled ``grafana_dashboard: "1"``
and preselects the ``pipeline`` and ``namespace`` variables.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from grafana_foundation_sdk.builders import (
    barchart,
    bigquery,
    common,
    dashboard,
    piechart,
    prometheus,
    stat,
    table,
    timeseries,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog import variants as cogvariants
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.bigquery import EditorMode as BigQueryEditorMode
from grafana_foundation_sdk.models.bigquery import QueryFormat as BigQueryFormat
from grafana_foundation_sdk.models.piechart import PieChartType

from streamotion.dashboards import queries as q

POSTGRES_PLUGIN = "grafana-postgresql-datasource"
BIGQUERY_PLUGIN = "grafana-bigquery-datasource"
PROMETHEUS_PLUGIN = "prometheus"
DS = "${datasource}"
TAGS = ["streamotion"]
DEFAULT_DIR = Path(__file__).resolve().parents[3] / "grafana" / "dashboards"


# ------------------------------------------------------------------ SQL targets (PostgreSQL)
class SqlQuery(cogvariants.Dataquery):
    """A raw-SQL target of Grafana's core SQL data sources (PostgreSQL)."""

    def __init__(self, ref_id: str, sql: str, fmt: str, datasource: dm.DataSourceRef) -> None:
        self.ref_id, self.sql, self.fmt, self.datasource = ref_id, sql, fmt, datasource

    def to_json(self) -> dict[str, object]:
        return {
            "refId": self.ref_id,
            "datasource": self.datasource,
            "editorMode": "code",
            "format": self.fmt,
            "rawQuery": True,
            "rawSql": self.sql,
        }


class SqlQueryBuilder(cogbuilder.Builder[SqlQuery]):
    def __init__(self, ref_id: str, sql: str, fmt: str, datasource: dm.DataSourceRef) -> None:
        self._q = SqlQuery(ref_id, sql, fmt, datasource)

    def build(self) -> SqlQuery:
        return self._q


def _ds(plugin: str) -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val=plugin, uid=DS)


def _datasource_variable(plugin: str, label: str) -> dashboard.DatasourceVariable:
    return dashboard.DatasourceVariable("datasource").label(label).type(plugin)


def _text_variable(name: str, label: str, default: str, hide: bool = False) -> dashboard.TextBoxVariable:
    v = (
        dashboard.TextBoxVariable(name)
        .label(label)
        .default_value(default)
        .current(dm.VariableOption(selected=True, text=default, value=default))
    )
    return v.hide(dm.VariableHide.HIDE_VARIABLE) if hide else v


def _query_variable(
    name: str, label: str, query: str, plugin: str, multi: bool = True, include_all: bool = True
) -> dashboard.QueryVariable:
    v = (
        dashboard.QueryVariable(name)
        .label(label)
        .query(query)
        .datasource(_ds(plugin))
        .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dm.VariableSort.ALPHABETICAL_ASC)
        .multi(multi)
        .include_all(include_all)
    )
    if include_all:
        v = v.current(dm.VariableOption(selected=True, text=["All"], value=["$__all"]))
    return v


def _grid(panels: Sequence[Any]) -> list[dm.GridPos]:
    """Left-to-right, top-to-bottom placement on Grafana's 24-column grid."""
    out, x, y, row_h = [], 0, 0, 0
    for p in panels:
        if x + p.width > 24:
            x, y, row_h = 0, y + row_h, 0
        out.append(dm.GridPos(h=p.height, w=p.width, x=x, y=y))
        x += p.width
        row_h = max(row_h, p.height)
    return out


def _panel(kind: str, p: Any, pos: dm.GridPos, panel_id: int, plugin: str) -> cogbuilder.Builder:
    builders = {
        "timeseries": timeseries.Panel,
        "barchart": barchart.Panel,
        "piechart": piechart.Panel,
        "table": table.Panel,
        "stat": stat.Panel,
    }
    b = builders[kind]().id(panel_id).title(p.title).datasource(_ds(plugin)).grid_pos(pos)
    if p.description:
        b = b.description(p.description)
    if getattr(p, "unit", None) and kind != "table":
        b = b.unit(p.unit)
    options = getattr(p, "options", {}) or {}
    if kind == "timeseries":
        b = b.fill_opacity(25 if getattr(p, "stacking", None) else 10).line_width(1)
        b = b.legend(common.VizLegendOptions().show_legend(True).display_mode(cm.LegendDisplayMode.LIST))
        stacking = getattr(p, "stacking", None)
        if stacking:
            b = b.stacking(common.StackingConfig().mode(cm.StackingMode(stacking)))
        if "min" in options:
            b = b.min(options["min"]).max(options["max"])
    elif kind == "barchart":
        orientation = options.get("orientation", "auto")
        b = b.orientation(cm.VizOrientation(orientation)).show_value(cm.VisibilityMode.AUTO)
        if getattr(p, "stacking", None):
            b = b.stacking(cm.StackingMode(p.stacking))
    elif kind == "piechart":
        b = b.pie_type(PieChartType.DONUT).reduce_options(
            common.ReduceDataOptions().values(True).calcs(["lastNotNull"])
        )
    elif kind == "stat":
        b = b.graph_mode(cm.BigValueGraphMode.NONE).reduce_options(
            common.ReduceDataOptions().values(False).calcs(["lastNotNull"]).fields("/.*/")
        )
    return b


def _sql_panel(p: q.SqlPanel, pos: dm.GridPos, panel_id: int, dialect: str) -> cogbuilder.Builder:
    plugin = POSTGRES_PLUGIN if dialect == "postgres" else BIGQUERY_PLUGIN
    b = _panel(p.kind, p, pos, panel_id, plugin)
    sql = p.postgres if dialect == "postgres" else p.bigquery
    if dialect == "postgres":
        b = b.with_target(SqlQueryBuilder("A", sql, p.format, _ds(plugin)))
    else:
        fmt = BigQueryFormat.TIMESERIES if p.format == "time_series" else BigQueryFormat.TABLE
        b = b.with_target(
            bigquery.Dataquery()
            .ref_id("A")
            .datasource(_ds(plugin))
            .raw_query(True)
            .editor_mode(BigQueryEditorMode.CODE)
            .format(fmt)
            .raw_sql(sql)
        )
    if p.key == "emotion_by_source":  # long (source_channel, emotion, share) -> one bar group per row
        b = b.with_transformation(
            dm.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": "emotion", "rowField": "source_channel", "valueField": "share"},
            )
        )
    return b


def emotions(dialect: str = "postgres") -> dict[str, Any]:
    """The Emotions dashboard on PostgreSQL (default) or BigQuery."""
    if dialect == "postgres":
        plugin, label, var_queries = POSTGRES_PLUGIN, "PostgreSQL", q.EMOTION_VARIABLES_POSTGRES
        uid, title = "streamotion-emotions", "Streamotion · Emotions"
    elif dialect == "bigquery":
        plugin, label, var_queries = BIGQUERY_PLUGIN, "BigQuery", q.EMOTION_VARIABLES_BIGQUERY
        uid, title = "streamotion-emotions-bq", "Streamotion · Emotions (BigQuery)"
    else:
        raise ValueError(f"unknown dialect {dialect!r}")
    d = (
        dashboard.Dashboard(title)
        .uid(uid)
        .tags([*TAGS, "emotions", dialect])
        .description(
            "What people feel in the pipeline's streams: emotion shares, sentiment, hashtags, terms, "
            "languages and the most emotional posts, from the sink's window aggregates and event rows."
        )
        .time("now-6h", "now")
        .refresh("1m")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_variable(plugin, label))
        .with_variable(_text_variable("pipeline", "Pipeline", "demo", hide=True))
        .with_variable(_text_variable("namespace", "Namespace", "default", hide=True))
    )
    if dialect == "postgres":
        d = d.with_variable(_text_variable("schema", "Schema", "public"))
    else:
        d = d.with_variable(_text_variable("project", "Project", "my-project"))
        d = d.with_variable(_text_variable("dataset", "Dataset", "streamotion"))
    for name, label_ in (("source", "Source"), ("channel", "Channel"), ("lang", "Language")):
        d = d.with_variable(_query_variable(name, label_, var_queries[name], plugin))
    for i, (p, pos) in enumerate(zip(q.EMOTION_PANELS, _grid(q.EMOTION_PANELS), strict=True), start=1):
        d = d.with_panel(_sql_panel(p, pos, i, dialect))
    return _json(d)


def _prom_panel(p: q.PromPanel, pos: dm.GridPos, panel_id: int) -> cogbuilder.Builder:
    b = _panel(p.kind, p, pos, panel_id, PROMETHEUS_PLUGIN)
    for i, t in enumerate(p.targets):
        target = (
            prometheus.Dataquery().ref_id(chr(ord("A") + i)).datasource(_ds(PROMETHEUS_PLUGIN)).expr(t.expr)
        )
        if t.legend:
            target = target.legend_format(t.legend)
        target = target.instant() if p.kind == "table" else target.range()
        b = b.with_target(target)
    if p.kind == "table":
        b = b.with_transformation(dm.DataTransformerConfig(id_val="merge", options={}))
    return b


def pipeline_health() -> dict[str, Any]:
    d = (
        dashboard.Dashboard("Streamotion · Pipeline health")
        .uid("streamotion-health")
        .tags([*TAGS, "health"])
        .description(
            "Is the pipeline keeping up? Ingest per source, Kafka lag, micro-batches, the model, "
            "dead letters, sinks and end-to-end latency."
        )
        .time("now-1h", "now")
        .refresh("30s")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(_datasource_variable(PROMETHEUS_PLUGIN, "Prometheus"))
    )
    for name, label in (("namespace", "Namespace"), ("pipeline", "Pipeline")):
        d = d.with_variable(
            _query_variable(
                name, label, q.HEALTH_VARIABLES[name], PROMETHEUS_PLUGIN, multi=False, include_all=False
            )
        )
    d = d.with_variable(
        _query_variable("source", "Source", q.HEALTH_VARIABLES["source"], PROMETHEUS_PLUGIN).all_value(".*")
    )
    for i, (p, pos) in enumerate(zip(q.HEALTH_PANELS, _grid(q.HEALTH_PANELS), strict=True), start=1):
        d = d.with_panel(_prom_panel(p, pos, i))
    return _json(d)


def operator() -> dict[str, Any]:
    d = (
        dashboard.Dashboard("Streamotion · Operator")
        .uid("streamotion-operator")
        .tags([*TAGS, "operator"])
        .description("The Streamotion operator: pipelines by phase, readiness, reconciles and their errors.")
        .time("now-3h", "now")
        .refresh("30s")
        .with_variable(_datasource_variable(PROMETHEUS_PLUGIN, "Prometheus"))
    )
    for i, (p, pos) in enumerate(zip(q.OPERATOR_PANELS, _grid(q.OPERATOR_PANELS), strict=True), start=1):
        d = d.with_panel(_prom_panel(p, pos, i))
    return _json(d)


def _json(d: dashboard.Dashboard) -> dict[str, Any]:
    model = json.loads(json.dumps(d.build(), cls=JSONEncoder))
    model["schemaVersion"] = 39
    model.pop("id", None)
    return model


def generate() -> dict[str, dict[str, Any]]:
    """``{file name: dashboard}`` of every dashboard (the committed grafana/dashboards/*.json)."""
    return {
        "emotions.json": emotions("postgres"),
        "emotions-bigquery.json": emotions("bigquery"),
        "pipeline-health.json": pipeline_health(),
        "operator.json": operator(),
    }


def dumps(board: dict[str, Any]) -> str:
    return json.dumps(board, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


# The Helm chart ships the operator's dashboard (one per installation, not per pipeline) in a
# ConfigMap for Grafana's sidecar; Helm reads only files inside the chart, hence this copy.
CHART_DIR = DEFAULT_DIR.parents[1] / "charts" / "streamotion" / "files" / "dashboards"
CHART_BOARDS = ("operator.json",)


def _targets(folder: Path, chart: bool) -> list[tuple[Path, dict[str, Any]]]:
    boards = generate()
    out = [(folder / name, board) for name, board in boards.items()]
    if chart:
        out += [(CHART_DIR / name, boards[name]) for name in CHART_BOARDS]
    return out


def write(folder: Path = DEFAULT_DIR, chart: bool | None = None) -> list[Path]:
    """Write every dashboard under ``folder`` (and the chart's copies when writing the repository's)."""
    out = []
    for path, board in _targets(folder, folder == DEFAULT_DIR if chart is None else chart):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(board))
        out.append(path)
    return out


def check(folder: Path = DEFAULT_DIR, chart: bool | None = None) -> list[str]:
    """Files that are missing or differ from the generator's output."""
    stale = []
    for path, board in _targets(folder, folder == DEFAULT_DIR if chart is None else chart):
        if not path.exists() or path.read_text() != dumps(board):
            stale.append(
                str(path.relative_to(DEFAULT_DIR.parents[1])) if path.parent == CHART_DIR else path.name
            )
    return stale

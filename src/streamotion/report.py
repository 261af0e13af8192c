"""``streamotion report``: the Emotions dashboard's main panels as PNG charts and one HTML page.

The same queries as the Grafana dashboard (:mod:`streamotion.dashboards.queries`), expanded the
same way (:mod:`streamotion.dashboards.interpolate`), run against the pipeline's PostgreSQL sink;
matplotlib draws the charts (:mod:`streamotion.charts`). No Grafana needed::

    streamotion report --since 6h --out report/ --dsn postgresql://user@host/streamotion
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from streamotion.charts import (
    chart_by_source,
    chart_emotion_share,
    chart_languages,
    chart_sentiment,
    chart_top_hashtags,
    chart_top_terms,
)
from streamotion.dashboards import interpolate
from streamotion.dashboards.queries import EMOTION_PANELS, EMOTION_VARIABLES_POSTGRES, SqlPanel

DSN_ENV = "STREAMOTION_PG_DSN"  # the streaming job's variable (streamotion_jobs.config.PG_DSN_ENV)
NICE_BUCKETS = ("1m", "2m", "5m", "10m", "15m", "30m", "1h", "2h", "3h", "6h", "12h", "1d")


class ReportError(RuntimeError):
    pass


@dataclass
class Report:
    out: Path
    time_from: datetime
    time_to: datetime
    interval: str
    filters: dict[str, list[str]]
    frames: dict[str, Any] = field(default_factory=dict)  # panel key -> pandas.DataFrame
    images: dict[str, Path] = field(default_factory=dict)
    html: Path | None = None


def parse_since(since: str) -> timedelta:
    try:
        return timedelta(seconds=interpolate._seconds(since))
    except ValueError:
        raise ReportError(f"--since {since!r}: expected a duration such as 30m, 6h or 2d") from None


def bucket_for(span: timedelta, points: int = 60) -> str:
    """A round time bucket giving about ``points`` points over ``span`` (at least one minute)."""
    target = span.total_seconds() / points
    for b in NICE_BUCKETS:
        if interpolate._seconds(b) >= target:
            return b
    return NICE_BUCKETS[-1]


def _connect(dsn: str | None, schema: str):
    import psycopg

    dsn = dsn or os.environ.get(DSN_ENV) or ""
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True)
    except psycopg.OperationalError as exc:
        raise ReportError(
            f"cannot connect to PostgreSQL (--dsn, ${DSN_ENV} or PG* variables): {exc}"
        ) from None
    found = conn.execute(
        "SELECT 1 FROM information_schema.tables WHERE table_schema = %s AND table_name = 'emotion_window'",
        (schema,),
    ).fetchone()
    if not found:
        conn.close()
        raise ReportError(
            f"no Streamotion tables in schema {schema!r} (--schema: the sink's postgres.schema)"
        )
    return conn


def _frame(conn, sql: str):
    import pandas as pd

    cur = conn.execute(sql)
    return pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description])


def collect(
    conn,
    schema: str,
    time_from: datetime,
    time_to: datetime,
    interval: str,
    chosen: dict[str, list[str]] | None = None,
    panels: Sequence[SqlPanel] = EMOTION_PANELS,
) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """Variable values (every option unless ``chosen``) and each panel's result as a DataFrame."""
    chosen = {k: v for k, v in (chosen or {}).items() if v}
    values: dict[str, Any] = {"schema": schema, "pipeline": "", "namespace": ""}
    for name, query in EMOTION_VARIABLES_POSTGRES.items():
        df = _frame(conn, interpolate.postgres(query, values, time_from, time_to, interval))
        options = [str(v) for v in (df["__value"] if "__value" in df else df.iloc[:, 0])]
        values[name] = chosen.get(name) or options or ["(no value)"]  # no option: match nothing
    frames = {
        p.key: _frame(conn, interpolate.postgres(p.postgres, values, time_from, time_to, interval))
        for p in panels
    }
    return {k: values[k] for k in EMOTION_VARIABLES_POSTGRES}, frames


# ------------------------------------------------------------------------------------ charts
CHARTS: dict[str, tuple[str, Callable]] = {
    "emotion_share": ("emotion-share.png", chart_emotion_share),
    "sentiment_index": ("sentiment-index.png", chart_sentiment),
    "emotion_by_source": ("emotion-by-source.png", chart_by_source),
    "top_hashtags": ("top-hashtags.png", chart_top_hashtags),
    "top_terms": ("top-terms.png", chart_top_terms),
    "language_split": ("languages.png", chart_languages),
}


# -------------------------------------------------------------------------------------- HTML
def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.3f}"
    if isinstance(v, datetime):
        return v.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return "" if v is None else str(v)


def _table(df, columns: Sequence[str] | None = None, limit: int = 100) -> str:
    if df is None or df.empty:
        return "<p class=empty>No data in this range.</p>"
    columns = list(columns or df.columns)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    rows = []
    for rec in df[columns].head(limit).itertuples(index=False):
        rows.append("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in rec) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


CSS = """body{font-family:system-ui,sans-serif;margin:2rem;color:#222;max-width:1200px}
h1{margin-bottom:.2rem}.meta{color:#666;margin-top:0}.stats{display:flex;gap:2rem;margin:1rem 0}
.stat{background:#f4f6f8;padding:.8rem 1.2rem;border-radius:6px}.stat b{display:block;font-size:1.6rem}
img{max-width:100%;border:1px solid #eee;margin:.5rem 0}.grid{display:flex;flex-wrap:wrap;gap:1rem}
table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0 1.5rem}th,td{border-bottom:1px solid #ddd;
padding:.3rem .5rem;text-align:left;vertical-align:top}th{background:#f4f6f8}.empty{color:#888}"""


def render_html(r: Report) -> str:
    f = r.frames
    events = int(f["events"].iloc[0, 0]) if "events" in f and not f["events"].empty else 0
    idx = f.get("sentiment_now")
    index = idx.iloc[0, 0] if idx is not None and not idx.empty else None
    dom = f.get("dominant_emotion")
    dominant = f"{dom.iloc[0, 0]} ({float(dom.iloc[0, 1]):.0%})" if dom is not None and not dom.empty else "–"
    stats = (
        f"<div class=stat>Events<b>{events:,}</b></div>"
        f"<div class=stat>Sentiment index<b>{'–' if index is None else f'{float(index):+.2f}'}</b></div>"
        f"<div class=stat>Dominant emotion<b>{html.escape(dominant)}</b></div>"
    )
    filters = ", ".join(
        f"{k}: {', '.join(v or '(none)' for v in vals) if len(vals) <= 6 else f'{len(vals)} values'}"
        for k, vals in r.filters.items()
    )
    imgs = "".join(
        f'<img src="{html.escape(p.name)}" alt="{html.escape(k)}">' for k, p in r.images.items() if p.exists()
    )
    return f"""<!doctype html>
<html lang=en><head><meta charset=utf-8><title>Streamotion report</title><style>{CSS}</style></head>
<body><h1>Streamotion · Emotions</h1>
<p class=meta>{_fmt(r.time_from)} → {_fmt(r.time_to)} · buckets of {r.interval} · {html.escape(filters)}</p>
<div class=stats>{stats}</div>
<div class=grid>{imgs or "<p class=empty>No data in this range.</p>"}</div>
<h2>Most emotional recent posts</h2>{_table(f.get("emotional_posts"), limit=50)}
<h2>Daily summary</h2>{_table(f.get("daily_summary"))}
<h2>Top hashtags and terms per window</h2>{_table(f.get("top_per_window"), limit=60)}
</body></html>
"""


def build_report(
    dsn: str | None,
    out: Path,
    since: str = "6h",
    schema: str = "public",
    sources: Sequence[str] = (),
    channels: Sequence[str] = (),
    langs: Sequence[str] = (),
    now: datetime | None = None,
    log: Callable[[str], None] = print,
) -> Report:
    """Query the sink, draw the charts and write ``index.html`` under ``out``."""
    time_to = (now or datetime.now(UTC)).astimezone(UTC)
    time_from = time_to - parse_since(since)
    interval = bucket_for(time_to - time_from)
    out.mkdir(parents=True, exist_ok=True)
    with _connect(dsn, schema) as conn:
        log(
            f"querying {len(EMOTION_PANELS)} panels, {_fmt(time_from)} → {_fmt(time_to)} ({interval} buckets)"
        )
        filters, frames = collect(
            conn,
            schema,
            time_from,
            time_to,
            interval,
            {"source": list(sources), "channel": list(channels), "lang": list(langs)},
        )
    report = Report(out, time_from, time_to, interval, filters, frames)
    for key, (name, draw) in CHARTS.items():
        df = frames.get(key)
        if df is None or df.empty:
            log(f"  {key}: no data, no chart")
            continue
        report.images[key] = draw(df, out / name)
        log(f"  wrote {report.images[key]}")
    report.html = out / "index.html"
    report.html.write_text(render_html(report), encoding="utf-8")
    log(f"  wrote {report.html}")
    return report

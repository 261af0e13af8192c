"""Report PNGs of a local run: emotion distribution, emotions over time, top hashtags; drawn by
:mod:`streamotion.charts`, as ``streamotion report`` draws the dashboard's panels."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any


def write_reports(summary: dict[str, Any], details: dict[str, Any], out_dir: Path) -> list[Path]:
    import pandas as pd

    from streamotion import charts

    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{summary.get('pipeline', '')}: {summary.get('events_out', 0)} events"
    per_emotion = pd.DataFrame(
        list((summary.get("per_emotion") or {}).items()), columns=["emotion", "events"]
    )
    over_time = pd.DataFrame(
        [(ts.timestamp(), emotion, n) for ts, emotion, n in details.get("over_time") or []],
        columns=["time", "metric", "events"],
    )
    tags = pd.DataFrame(details.get("top_hashtags") or [], columns=["hashtag", "events"])

    def chart(name: str, df, draw: Callable[[Any, Path], Path], title: str, empty: str) -> Path:
        path = out_dir / name
        return charts.chart_message(title, empty, path) if df.empty else draw(df, path)

    distribution = f"Emotion distribution ({title})"
    return [
        chart(
            "emotion_distribution.png",
            per_emotion,
            lambda df, p: charts.chart_bars(df, "emotion", "events", distribution, p),
            distribution,
            "no classified events",
        ),
        chart(
            "emotions_over_time.png",
            over_time,
            charts.chart_emotion_share,
            "Emotion share over time",
            "no classified events",
        ),
        chart(
            "top_hashtags.png", tags, charts.chart_top_hashtags, "Top hashtags", "no hashtags in these events"
        ),
    ]

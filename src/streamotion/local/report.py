"""Report PNGs of a local run (matplotlib, no display): emotion distribution, emotions over time,
top hashtags."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def write_reports(summary: dict[str, Any], details: dict[str, Any], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{summary.get('pipeline', '')}: {summary.get('events_out', 0)} events"
    written: list[Path] = []

    per_emotion: dict[str, int] = summary.get("per_emotion") or {}
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if per_emotion:
        names = list(per_emotion)
        ax.bar(names, [per_emotion[n] for n in names], color="#4c72b0")
        ax.set_ylabel("events")
        for i, n in enumerate(names):
            ax.annotate(str(per_emotion[n]), (i, per_emotion[n]), ha="center", va="bottom", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no classified events", ha="center", va="center", transform=ax.transAxes)
    ax.set_title(f"Emotion distribution ({title})")
    fig.tight_layout()
    path = out_dir / "emotion_distribution.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    series: dict[str, dict[Any, int]] = {}
    for ts, emotion, n in details.get("over_time") or []:
        series.setdefault(emotion, {})[ts] = n
    fig, ax = plt.subplots(figsize=(9, 4.5))
    if series:
        stamps = sorted({ts for s in series.values() for ts in s})
        for emotion in sorted(series, key=lambda e: -sum(series[e].values())):
            ax.plot(stamps, [series[emotion].get(ts, 0) for ts in stamps], marker=".", label=emotion)
        ax.set_ylabel(f"events per {details.get('bucket_s', '?')} s")
        ax.legend(fontsize=8, ncol=2)
        fig.autofmt_xdate()
    else:
        ax.text(0.5, 0.5, "no classified events", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Emotions over time (event time, UTC)")
    fig.tight_layout()
    path = out_dir / "emotions_over_time.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)

    tags = details.get("top_hashtags") or []
    fig, ax = plt.subplots(figsize=(8, 4.5))
    if tags:
        names = [f"#{t}" for t, _ in tags][::-1]
        ax.barh(names, [n for _, n in tags][::-1], color="#55a868")
        ax.set_xlabel("events")
    else:
        ax.text(0.5, 0.5, "no hashtags in these events", ha="center", va="center", transform=ax.transAxes)
    ax.set_title("Top hashtags")
    fig.tight_layout()
    path = out_dir / "top_hashtags.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written

"""Charts of emotion data (matplotlib, no display), drawn from DataFrames shaped like the Emotions
dashboard's panels: used by ``streamotion report`` (the panels' query results) and by the local
runner's report PNGs (its run summary in the same shapes).

Time columns are epoch seconds, as the dashboard's queries return them.
"""

from __future__ import annotations

from pathlib import Path

EMOTION_COLORS = {
    "anger": "#d62728",
    "disgust": "#8c564b",
    "fear": "#9467bd",
    "joy": "#f2b701",
    "neutral": "#9e9e9e",
    "sadness": "#1f77b4",
    "surprise": "#2ca02c",
}


def figure(title: str, size=(10, 4.5)):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=size, dpi=110)
    ax.set_title(title, loc="left", fontsize=13, fontweight="bold")
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(axis="y", alpha=0.3)
    return fig, ax


def save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _color(emotion: str, i: int) -> str:
    import matplotlib

    return EMOTION_COLORS.get(emotion) or matplotlib.colormaps["tab20"](i % 20)


def _times(series):
    import pandas as pd

    return pd.to_datetime(series.astype("float64"), unit="s", utc=True)


def chart_emotion_share(df, path: Path) -> Path:
    import matplotlib.dates as mdates

    wide = df.pivot_table(index="time", columns="metric", values="events", aggfunc="sum").fillna(0)
    share = wide.div(wide.sum(axis=1), axis=0) * 100
    order = share.mean().sort_values(ascending=False).index
    fig, ax = figure("Emotion share over time")
    times = _times(share.index.to_series())
    ax.stackplot(
        times,
        [share[c] for c in order],
        labels=list(order),
        colors=[_color(c, i) for i, c in enumerate(order)],
        alpha=0.9,
    )
    ax.set_ylim(0, 100)
    ax.set_ylabel("% of events")
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M\n%d %b"))
    ax.set_xlabel("time (UTC)")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return save(fig, path)


def chart_sentiment(df, path: Path) -> Path:
    import matplotlib.dates as mdates

    fig, ax = figure("Sentiment index over time (−1 negative … +1 positive)")
    for source, part in df.groupby("metric"):
        ax.plot(_times(part["time"]), part["sentiment_index"].astype(float), marker=".", label=str(source))
    ax.axhline(0, color="#555", linewidth=0.8)
    ax.set_ylim(-1, 1)
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M\n%d %b"))
    ax.set_xlabel("time (UTC)")
    ax.legend(title="source", loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return save(fig, path)


def chart_bars(df, label: str, value: str, title: str, path: Path, color: str = "#4c72b0") -> Path:
    df = df.iloc[::-1]
    fig, ax = figure(title, size=(7, 0.35 * max(len(df), 4) + 1.2))
    ax.barh(df[label].astype(str), df[value].astype(float), color=color)
    ax.grid(axis="y", alpha=0)
    ax.grid(axis="x", alpha=0.3)
    for y, v in enumerate(df[value]):
        ax.text(float(v), y, f" {int(v)}", va="center", fontsize=9)
    ax.set_xlabel("events")
    return save(fig, path)


def chart_top_hashtags(df, path: Path) -> Path:
    """Columns hashtag, events (most first)."""
    return chart_bars(df, "hashtag", "events", "Top hashtags", path, "#dd8452")


def chart_top_terms(df, path: Path) -> Path:
    """Columns term, events (most first)."""
    return chart_bars(df, "term", "events", "Top terms", path)


def chart_by_source(df, path: Path) -> Path:
    wide = df.pivot_table(index="source_channel", columns="emotion", values="share", aggfunc="sum").fillna(0)
    order = wide.mean().sort_values(ascending=False).index
    fig, ax = figure("Emotion share per source and channel", size=(10, 0.45 * max(len(wide), 3) + 1.5))
    left = [0.0] * len(wide)
    for i, emotion in enumerate(order):
        vals = (wide[emotion] * 100).tolist()
        ax.barh(wide.index, vals, left=left, color=_color(emotion, i), label=emotion)
        left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.set_xlim(0, 100)
    ax.set_xlabel("% of events")
    ax.grid(axis="y", alpha=0)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    return save(fig, path)


def chart_languages(df, path: Path) -> Path:
    fig, ax = figure("Languages", size=(6, 4.5))
    ax.pie(
        df["events"].astype(float),
        labels=df["lang"].astype(str),
        autopct=lambda pct: f"{pct:.0f}%" if pct >= 3 else "",
        startangle=90,
        counterclock=False,
        pctdistance=0.78,
        wedgeprops={"width": 0.45},
    )
    ax.axis("equal")
    return save(fig, path)


def chart_message(title: str, message: str, path: Path) -> Path:
    """A chart with nothing to draw: its title and why."""
    fig, ax = figure(title)
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#888")
    ax.set_axis_off()
    return save(fig, path)

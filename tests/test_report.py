"""`streamotion report`: charts and an HTML page from the real PostgreSQL sink, without Grafana."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from streamotion.cli import app
from tests import dashboards_helpers as data

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture(scope="module")
def sink(postgres):
    schema = f"report_{uuid.uuid4().hex[:8]}"
    counts = data.write_sink(postgres.dsn, schema, n=300, now=NOW)
    yield {"schema": schema, **counts}
    with postgres.connect(autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _png_size(path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    head = path.read_bytes()[:8]
    assert head == b"\x89PNG\r\n\x1a\n", path
    img = mpimg.imread(path)
    return img.shape[1], img.shape[0]


def test_report_writes_readable_charts_and_a_page(postgres, sink, tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app, ["report", "--since", "4h", "--out", str(out), "--dsn", postgres.dsn, "--schema", sink["schema"]]
    )
    assert result.exit_code == 0, result.output
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(
        [
            "emotion-share.png",
            "sentiment-index.png",
            "emotion-by-source.png",
            "top-hashtags.png",
            "top-terms.png",
            "languages.png",
        ]
    )
    for name in pngs:
        w, h = _png_size(out / name)
        assert w >= 500 and h >= 300, (name, w, h)
        assert (out / name).stat().st_size > 10_000  # drawn, not an empty canvas
    page = (out / "index.html").read_text()
    assert f"<b>{sink['events']:,}</b>" in page  # the Events stat is the number of events written
    for name in pngs:
        assert f'src="{name}"' in page
    for heading in ("Most emotional recent posts", "Daily summary", "Top hashtags and terms per window"):
        assert heading in page
    assert len(re.findall(r"<tr><td>", page)) > 20
    assert "<script" not in page.lower()


def test_report_filters_by_source_and_language(postgres, sink, tmp_path):
    from streamotion.report import build_report

    r = build_report(
        postgres.dsn,
        tmp_path,
        since="4h",
        schema=sink["schema"],
        sources=["masto"],
        langs=["de"],
        log=lambda _: None,
    )
    assert r.filters["source"] == ["masto"] and r.filters["lang"] == ["de"]
    posts = r.frames["emotional_posts"]
    assert not posts.empty and set(posts["source"]) == {"masto"} and set(posts["lang"]) == {"de"}
    assert list(r.frames["language_split"]["lang"]) == ["de"]
    assert 0 < int(r.frames["events"].iloc[0, 0]) < sink["events"]


def test_report_explains_a_wrong_schema_or_range(postgres, sink, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["report", "--dsn", postgres.dsn, "--schema", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no Streamotion tables in schema 'nope'" in result.output
    result = runner.invoke(
        app, ["report", "--dsn", postgres.dsn, "--since", "yesterday", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2 and "--since 'yesterday'" in result.output

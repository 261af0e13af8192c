"""CLI of the dashboards: ``streamotion report`` and ``streamotion dashboards generate|check``."""

from __future__ import annotations

from pathlib import Path

import typer

dashboards_app = typer.Typer(
    help="Grafana dashboards as code (grafana/dashboards/*.json).", no_args_is_help=True
)


def report(
    since: str = typer.Option("6h", "--since", help="How far back: 30m, 6h, 2d, ..."),
    out: Path = typer.Option(Path("report"), "--out", help="Folder for the PNG charts and index.html."),
    dsn: str = typer.Option(
        None,
        "--dsn",
        envvar="STREAMOTION_PG_DSN",
        help="PostgreSQL sink (libpq DSN or URL; default: $STREAMOTION_PG_DSN, else PGHOST/PGUSER/...).",
        show_envvar=False,
    ),
    schema: str = typer.Option("public", "--schema", help="The sink's postgres.schema."),
    source: list[str] = typer.Option([], "--source", help="Only these sources (repeatable; default all)."),
    channel: list[str] = typer.Option([], "--channel", help="Only these channels (repeatable)."),
    lang: list[str] = typer.Option([], "--lang", help="Only these languages (repeatable)."),
) -> None:
    """Render the Emotions dashboard's main panels to PNG and a small HTML page (no Grafana needed)."""
    from streamotion.report import ReportError, build_report

    try:
        r = build_report(dsn, out, since=since, schema=schema, sources=source, channels=channel, langs=lang)
    except ReportError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"report: {r.html} ({len(r.images)} charts)")


@dashboards_app.command("generate")
def generate(
    out: Path = typer.Option(None, "--out", help="Folder (default grafana/dashboards of this checkout)."),
) -> None:
    """Write the dashboards' JSON from their Python definitions."""
    from streamotion.dashboards.build import DEFAULT_DIR, write

    for path in write(out or DEFAULT_DIR):
        typer.echo(str(path))


@dashboards_app.command("check")
def check(
    folder: Path = typer.Option(None, "--dir", help="Folder (default grafana/dashboards of this checkout)."),
) -> None:
    """Exit 1 when a committed dashboard differs from the generator's output."""
    from streamotion.dashboards.build import DEFAULT_DIR
    from streamotion.dashboards.build import check as stale

    bad = stale(folder or DEFAULT_DIR)
    if bad:
        typer.echo(f"stale dashboards (run `streamotion dashboards generate`): {', '.join(bad)}", err=True)
        raise typer.Exit(1)
    typer.echo("dashboards up to date")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.add_typer(dashboards_app, name="dashboards")

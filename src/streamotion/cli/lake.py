"""`streamotion lake daily`: the daily views of a lake sink's Delta tables, read with deltalake."""

from __future__ import annotations

import typer

app = typer.Typer(help="A lake sink's Delta tables (see the sinks page of the docs).", no_args_is_help=True)


@app.command("daily")
def daily(
    location: str = typer.Argument(
        ..., help="The lake sink's location (a local path, s3://... or gs://...)."
    ),
    days: int = typer.Option(7, "--days", min=0, help="The last N UTC days (0: every day)."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object instead of tables."),
) -> None:
    """v_emotion_daily and v_sentiment_daily (as in PostgreSQL) from the lake's events table."""
    import json

    from streamotion.lake import daily_views

    try:
        views = daily_views(location.replace("s3a://", "s3://", 1), days or None)
    except Exception as exc:
        typer.echo(f"error: cannot read the lake at {location}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(
            json.dumps(
                {k: json.loads(v.to_json(orient="records", date_format="iso")) for k, v in views.items()}
            )
        )
        return
    for name, frame in views.items():
        typer.echo(f"{name}:")
        typer.echo(frame.to_string(index=False) if len(frame) else "  (no rows)")

"""`streamotion docs generate|check`: the documentation site's generated pages (streamotion.docs)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="The documentation site (docs/, mkdocs.yml): its pages generated from the code.",
    no_args_is_help=True,
)
ROOT = typer.Option(Path("."), "--root", help="The repository root (where mkdocs.yml is).")


@app.command("generate")
def generate(root: Path = ROOT) -> None:
    """Write the generated pages: API, command line, metrics, Helm values, benchmarks."""
    from streamotion.docs.pages import generate as write

    written = write(root)
    for path in written:
        typer.echo(f"wrote {path}")
    if not written:
        typer.echo("every generated page is up to date")


@app.command("check")
def check(root: Path = ROOT) -> None:
    """Exit 1 when a committed generated page differs from what the code renders now."""
    from streamotion.docs.pages import stale

    old = stale(root)
    for path in old:
        typer.echo(f"stale: {path} (run `streamotion docs generate`)", err=True)
    if old:
        raise typer.Exit(1)
    typer.echo("every generated page is up to date")

"""`streamotion validate` and `streamotion crd`: the StreamPipeline API from the command line."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from streamotion.api import models as m
from streamotion.api.validate import load_documents, validate_object

out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)


def validate(
    files: list[Path] = typer.Argument(..., exists=True, dir_okay=True, help="YAML files or directories."),
) -> None:
    """Check StreamPipeline files as the API server would; exit 1 if any is invalid."""
    paths: list[Path] = []
    for f in files:
        paths.extend(sorted(p for p in f.rglob("*") if p.suffix in (".yaml", ".yml")) if f.is_dir() else [f])
    bad = 0
    for path in paths:
        try:
            docs = load_documents(path)
        except ValueError as exc:
            err.print(f"[red]✗[/] {exc}", highlight=False)
            bad += 1
            continue
        pipelines = [d for d in docs if isinstance(d.body, dict) and d.body.get("kind") == m.KIND]
        if not pipelines:
            err.print(f"[yellow]![/] {path}: no {m.KIND} document", highlight=False)
        for doc in pipelines:
            name = (doc.body.get("metadata") or {}).get("name", "?")
            errors = validate_object(doc.body)
            if errors:
                bad += 1
                err.print(
                    f"[red]✗[/] {path} (line {doc.line}): {m.KIND} {name!r} is invalid:", highlight=False
                )
                for e in errors:
                    err.print(f"    {e}", highlight=False, markup=False)
            else:
                out.print(
                    f"[green]✓[/] {path} (line {doc.line}): {m.KIND} {name!r} is valid", highlight=False
                )
    if bad:
        raise typer.Exit(1)


def crd(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
) -> None:
    """Print the StreamPipeline CustomResourceDefinition (generated from the API models)."""
    from streamotion.api.crd import crd_yaml

    text = crd_yaml()
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    app.command()(validate)
    app.command()(crd)

"""``streamotion run FILE --local ...`` and ``streamotion bench all``."""

from __future__ import annotations

import re
from pathlib import Path

import typer

_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)?$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: str) -> float:
    """``90``, ``90s``, ``5m``, ``1h`` or ``1h30m`` in seconds."""
    total, rest = 0.0, value.strip()
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)", rest)
    if parts and "".join(n + u for n, u in parts) == rest:
        return sum(float(n) * _UNITS[u] for n, u in parts)
    m = _DURATION.match(rest)
    if not m:
        raise typer.BadParameter(f"not a duration: {value!r} (examples: 90, 90s, 5m, 1h30m)")
    total = float(m.group(1)) * _UNITS[m.group(2)]
    return total


def pipeline(
    file: Path = typer.Argument(..., help="StreamPipeline YAML file.", exists=True, dir_okay=False),
    local: bool = typer.Option(
        False, "--local", help="Run every part on this machine (the only mode of `run FILE` for now)."
    ),
    events: int | None = typer.Option(
        None,
        "--events",
        min=1,
        help="Stop after this many events are written (replay sources get this limit).",
    ),
    duration: str | None = typer.Option(None, "--duration", help="Stop after this long (90, 90s, 5m, 1h)."),
    keep: bool = typer.Option(False, "--keep", help="Keep the temporary data (Kafka, PostgreSQL, logs)."),
    workdir: Path | None = typer.Option(
        None, "--workdir", help="Working directory (default: a temporary one)."
    ),
    model: str | None = typer.Option(
        None, "--model", help="Serve this model directory or Hugging Face id instead of the pipeline's."
    ),
    tiny_model: bool = typer.Option(
        False, "--tiny-model", help="Serve a tiny random model: a quick smoke run, emotions are meaningless."
    ),
    train: bool = typer.Option(
        False,
        "--train",
        help="When the hub is unreachable and no model is trained yet: fine-tune one first (cached).",
    ),
    train_limit: int = typer.Option(
        8000, "--train-limit", help="--train: GoEmotions training rows (0: all)."
    ),
    train_epochs: float = typer.Option(1.0, "--train-epochs", help="--train: epochs."),
    pg_dsn: str | None = typer.Option(
        None, "--pg-dsn", help="Write to this PostgreSQL instead of starting one (libpq DSN)."
    ),
    summary_json: Path | None = typer.Option(
        None, "--summary-json", help="Also write the summary as JSON here."
    ),
    reports: Path | None = typer.Option(Path("reports"), "--reports", help="Folder of the report PNGs."),
    no_reports: bool = typer.Option(False, "--no-reports", help="Write no report PNGs."),
    drain_timeout: float = typer.Option(
        120.0, "--drain-timeout", help="Seconds without progress, after the sources end, before giving up."
    ),
    plain: bool = typer.Option(False, "--plain", help="Progress as plain lines, not a live display."),
    secure: bool = typer.Option(
        False,
        "--secure",
        help="A secure broker (mTLS, ACLs): each producer and the job under its own identity, as on a cluster.",
    ),
) -> None:
    """Run a pipeline on this machine: Kafka, producers, model, job and sinks, with live progress.

    Ends after --events or --duration, when every (finite) source is done and processed, or on
    Ctrl-C; then prints a summary and stops everything (temporary data removed unless --keep).
    """
    from streamotion.local.runner import Options
    from streamotion.local.session import execute

    if not local:
        typer.echo(
            "error: `streamotion run FILE` needs --local (on Kubernetes, `kubectl apply -f FILE` "
            "and the operator run it)",
            err=True,
        )
        raise typer.Exit(2)
    if model and tiny_model:
        typer.echo("error: --model and --tiny-model exclude each other", err=True)
        raise typer.Exit(2)
    opts = Options(
        file=file,
        events=events,
        duration_s=parse_duration(duration) if duration else None,
        keep=keep,
        workdir=workdir,
        model=model,
        tiny_model=tiny_model,
        train=train,
        train_limit=train_limit,
        train_epochs=train_epochs,
        pg_dsn=pg_dsn,
        summary_json=summary_json,
        reports_dir=None if no_reports else reports,
        drain_timeout_s=drain_timeout,
        live=False if plain else None,
        secure=secure,
    )
    raise typer.Exit(execute(opts))


def bench_all(
    only: list[str] = typer.Option(None, "--only", help="Run only these benchmarks (repeatable)."),
    summary_only: bool = typer.Option(
        False, "--summary-only", help="Do not run anything: rewrite SUMMARY.md from bench/results/*.json."
    ),
) -> None:
    """Run every registered benchmark (ingest, model, pipeline, operator) and write bench/results/SUMMARY.md."""
    from streamotion.local.benchall import run_all

    raise typer.Exit(run_all(only=only or None, run=not summary_only))


def register(app: typer.Typer) -> None:
    from streamotion.cli.bench import app as bench_app
    from streamotion.cli.run import app as run_app

    run_app.command("pipeline")(pipeline)
    bench_app.command("all")(bench_all)

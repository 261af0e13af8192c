"""Commands of the jobs component: ``streamotion job``, ``streamotion run backfill`` and
``streamotion bench pipeline`` (pyspark and the sinks' clients are imported inside the commands)."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def job_cmd(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", exists=True, help="StreamPipeline YAML file."),
    name: str | None = typer.Option(None, help="Pipeline name, when the file holds several."),
    checkpoint: str | None = typer.Option(
        None, help="Checkpoint directory or URI (default: spec.processing.checkpoint.uri)."
    ),
    master: str = typer.Option("local[*]", help="Spark master."),
    available_now: bool = typer.Option(False, help="Process what the topic holds now, then exit."),
    metrics_port: int = typer.Option(
        0, help="Serve the job's Prometheus metrics on 127.0.0.1:PORT (0: not served)."
    ),
) -> None:
    """Run the streaming job (Kafka -> validate -> classify -> aggregate -> sinks) on this machine.

    Addresses and credentials come from the environment: STREAMOTION_KAFKA_BOOTSTRAP,
    STREAMOTION_MODEL_URL, STREAMOTION_PG_DSN (or PGUSER/PGPASSWORD), GOOGLE_APPLICATION_CREDENTIALS.
    """
    from streamotion_jobs.main import main

    argv = ["--pipeline", str(pipeline), "--master", master, "--metrics-port", str(metrics_port)]
    argv += ["--metrics-host", "127.0.0.1"]
    if name:
        argv += ["--name", name]
    if checkpoint:
        argv += ["--checkpoint", checkpoint]
    if available_now:
        argv.append("--available-now")
    raise typer.Exit(main(argv))


def backfill_cmd(
    pipeline: Path = typer.Option(..., "--pipeline", "-p", exists=True, help="StreamPipeline YAML file."),
    start: str = typer.Option(..., "--from", help="Start of the event-time range (ISO 8601, UTC default)."),
    end: str = typer.Option("now", "--to", help="End of the range, exclusive (ISO 8601 or now)."),
    model: str | None = typer.Option(
        None,
        "--model",
        help="Model to re-score with: a Hugging Face id or path (served locally for the run) or the URL "
        "of a model service. Default: the pipeline's model service (STREAMOTION_MODEL_URL).",
    ),
    source: str = typer.Option("sink", help="Where events are re-read: sink (events table) or kafka."),
    name: str | None = typer.Option(None, help="Pipeline name, when the file holds several."),
    master: str = typer.Option("local[*]", help="Spark master."),
    kafka_lag: str | None = typer.Option(
        None,
        "--kafka-lag",
        help="With --source kafka: how long after --to an event of the range may have been published "
        "(a duration: 30m, 2h). Default: the pipeline's processing.watermark.",
    ),
) -> None:
    """Re-classify a time range and write the scores tagged with the model version (event_scores)."""
    from streamotion.api.validate import load_pipeline
    from streamotion_jobs.backfill import parse_time, run_backfill
    from streamotion_jobs.config import parse_duration

    result = run_backfill(
        load_pipeline(pipeline, name),
        parse_time(start),
        parse_time(end),
        model=model,
        source=source,
        master=master,
        log=lambda m: typer.echo(m, err=True),
        kafka_after_s=None if kafka_lag is None else parse_duration(kafka_lag),
    )
    typer.echo(json.dumps(result.as_dict()))


def register(app: typer.Typer) -> None:
    from streamotion.cli.bench import app as bench_app
    from streamotion.cli.run import app as run_app
    from streamotion_jobs.bench import bench_pipeline
    from streamotion_jobs.chaos import bench_chaos

    app.command("job")(job_cmd)
    run_app.command("backfill")(backfill_cmd)
    bench_app.command("pipeline")(bench_pipeline)
    bench_app.command("chaos")(bench_chaos)

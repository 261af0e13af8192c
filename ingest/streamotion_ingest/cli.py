"""CLI commands of the ingest component: ``streamotion produce`` and ``streamotion bench ingest``."""

from __future__ import annotations

from pathlib import Path

import typer


def produce(
    source: str = typer.Option(..., "--source", help="Name of the source in the pipeline."),
    pipeline: Path = typer.Option(
        Path("/etc/streamotion/pipeline.yaml"), "--pipeline", help="StreamPipeline YAML file."
    ),
    bootstrap: str | None = typer.Option(
        None,
        "--bootstrap",
        help="Kafka bootstrap servers (default: $STREAMOTION_KAFKA_BOOTSTRAP, spec.kafka.bootstrapServers, "
        "then <cluster>-kafka-bootstrap.<namespace>.svc:9092).",
    ),
    metrics_port: int | None = typer.Option(
        None, "--metrics-port", help="Port of /metrics (default 9108; 0 turns it off)."
    ),
    port: int | None = typer.Option(None, "--port", help="http sources: listen port (default: spec's port)."),
    host: str = typer.Option("0.0.0.0", "--host", help="http sources: listen address."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run one source of a pipeline: read the platform, publish events to Kafka (JSON logs on stderr)."""
    from streamotion.naming import METRICS_PORT
    from streamotion_ingest import logs
    from streamotion_ingest.run import load
    from streamotion_ingest.run import produce as run

    try:
        p = load(pipeline)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    logs.setup(log_level, pipeline=p.name, source=source)
    if metrics_port is None:
        metrics_port = METRICS_PORT
    try:
        code = run(p, source, bootstrap=bootstrap, metrics_port=metrics_port or None, host=host, port=port)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


def bench_ingest(
    events: int = typer.Option(200_000, help="Replay events to publish."),
    http_seconds: float = typer.Option(10.0, help="Seconds of load per HTTP scenario."),
    concurrency: int = typer.Option(32, help="Concurrent HTTP connections of the load generator."),
) -> None:
    """Events/s into a real Kafka: replay, HTTP batches of 100, single-event HTTP requests; p99 ack latency;
    replay and HTTP batches again on a secure broker (mTLS, ACLs) and their ratio to plaintext."""
    from streamotion_ingest.bench import run

    run(events=events, http_seconds=http_seconds, concurrency=concurrency)


def register(app: typer.Typer) -> None:
    app.command("produce")(produce)
    from streamotion.cli.bench import app as bench_app

    bench_app.command("ingest")(bench_ingest)

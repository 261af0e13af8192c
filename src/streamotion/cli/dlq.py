"""`streamotion dlq list|count|republish`: a pipeline's dead letters (see streamotion.dlq)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(
    help="Dead letters: list them, count them by reason, re-publish them to the raw topic once their "
    "cause is fixed (re-published events keep their identity: the sinks store each once).",
    no_args_is_help=True,
)

PIPELINE = typer.Option(
    Path("/etc/streamotion/pipeline.yaml"), "--pipeline", "-p", help="StreamPipeline YAML file."
)
BOOTSTRAP = typer.Option(
    None,
    "--bootstrap",
    help="Kafka bootstrap servers (default: $STREAMOTION_KAFKA_BOOTSTRAP, spec.kafka.bootstrapServers, "
    "then <cluster>-kafka-bootstrap.<namespace>.svc:9092).",
)
REASON = typer.Option(
    None, "--reason", help="Only dead letters whose reason contains this (case-insensitive)."
)
STAGE = typer.Option(None, "--stage", help="Only dead letters of this stage: producer or job.")
PARTITION = typer.Option(None, "--partition", help="Only this partition of the dead-letter topic.")
FROM_OFFSET = typer.Option(None, "--from-offset", min=0, help="First offset (inclusive).")
TO_OFFSET = typer.Option(None, "--to-offset", min=0, help="Last offset (inclusive).")


def _open(pipeline: Path, bootstrap: str | None):
    from streamotion.api.validate import load_pipeline
    from streamotion.naming import topic_names

    try:
        p = load_pipeline(pipeline)
    except Exception as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    from streamotion.components import ComponentMissing, component

    try:
        bootstrap_servers = component("kafka_bootstrap")
    except ComponentMissing:
        typer.echo(
            "error: streamotion dlq needs the ingest component (pip install 'streamotion[ingest]')", err=True
        )
        raise typer.Exit(2) from None
    return p, bootstrap_servers(p, bootstrap), topic_names(p)["deadLetter"]


def _read(pipeline, bootstrap, reason, stage, partition, from_offset, to_offset):
    from streamotion import dlq

    if stage not in (None, "producer", "job"):
        typer.echo("error: --stage is producer or job", err=True)
        raise typer.Exit(2)
    p, servers, topic = _open(pipeline, bootstrap)
    selection = dlq.Selection(reason, stage, partition, from_offset, to_offset)
    try:
        return p, servers, topic, dlq.read(servers, topic, selection)
    except (ValueError, TimeoutError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command("list")
def list_(
    pipeline: Path = PIPELINE,
    bootstrap: str | None = BOOTSTRAP,
    reason: str | None = REASON,
    stage: str | None = STAGE,
    partition: int | None = PARTITION,
    from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET,
    limit: int = typer.Option(100, "--limit", min=0, help="Show at most this many (0: all)."),
    as_json: bool = typer.Option(
        False, "--json", help="One JSON document per dead letter, payload included."
    ),
) -> None:
    """List dead letters: partition:offset, stage, source, time and reason (oldest first)."""
    _, _, topic, letters = _read(pipeline, bootstrap, reason, stage, partition, from_offset, to_offset)
    shown = letters if not limit else letters[:limit]
    for x in shown:
        if as_json:
            typer.echo(json.dumps(x.as_dict(), ensure_ascii=False))
            continue
        source = (x.letter.source if x.letter else None) or "-"
        when = x.letter.failed_at.strftime("%Y-%m-%d %H:%M:%S") if x.letter else "-"
        typer.echo(f"{x.partition}:{x.offset}\t{x.stage}\t{source}\t{when}\t{x.reason[:200]}")
    if not as_json:
        more = f" (first {len(shown)} shown)" if len(shown) < len(letters) else ""
        typer.echo(f"{len(letters)} dead letter(s) in {topic}{more}", err=True)


@app.command("count")
def count(
    pipeline: Path = PIPELINE,
    bootstrap: str | None = BOOTSTRAP,
    reason: str | None = REASON,
    stage: str | None = STAGE,
    partition: int | None = PARTITION,
    from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET,
    as_json: bool = typer.Option(False, "--json", help="A JSON object {reason: count}."),
) -> None:
    """Count dead letters by reason (stage: reason, numbers shown as N), most frequent first."""
    from streamotion import dlq

    _, _, topic, letters = _read(pipeline, bootstrap, reason, stage, partition, from_offset, to_offset)
    groups = dlq.count(letters)
    if as_json:
        typer.echo(json.dumps(dict(groups), ensure_ascii=False))
        return
    for group, n in groups:
        typer.echo(f"{n}\t{group}")
    typer.echo(f"{len(letters)}\ttotal ({topic})")


@app.command("republish")
def republish(
    pipeline: Path = PIPELINE,
    bootstrap: str | None = BOOTSTRAP,
    all_: bool = typer.Option(False, "--all", help="Every dead letter."),
    reason: str | None = REASON,
    stage: str | None = STAGE,
    partition: int | None = PARTITION,
    from_offset: int | None = FROM_OFFSET,
    to_offset: int | None = TO_OFFSET,
    dry_run: bool = typer.Option(False, "--dry-run", help="Say what would be re-published; publish nothing."),
) -> None:
    """Re-publish dead letters to the raw topic (all, by reason, or by offset range) once their cause is
    fixed. Job dead letters go back as they were; producer dead letters go through their source's
    conversion again (still invalid ones are listed, not published)."""
    from streamotion import dlq

    if not (all_ or reason or from_offset is not None or to_offset is not None):
        typer.echo(
            "error: choose what to re-publish: --all, --reason TEXT or --from-offset/--to-offset", err=True
        )
        raise typer.Exit(2)
    p, servers, topic, letters = _read(pipeline, bootstrap, reason, stage, partition, from_offset, to_offset)
    try:
        result = dlq.republish(p, servers, letters, dead_letter_topic=topic, dry_run=dry_run)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    verb = "would re-publish" if dry_run else "re-published"
    typer.echo(f"{verb} {len(result.published)} of {len(letters)} dead letter(s) from {topic}")
    for letter, why in result.skipped[:50]:
        typer.echo(f"skipped {letter.partition}:{letter.offset}: {why}")
    if len(result.skipped) > 50:
        typer.echo(f"... and {len(result.skipped) - 50} more skipped")

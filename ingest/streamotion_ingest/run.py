"""Run one pipeline source as a producer: ``streamotion produce --source NAME --pipeline FILE``."""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from streamotion.api.models import StreamPipeline
from streamotion.naming import METRICS_PORT, topic_names
from streamotion_ingest.context import Context, Shutdown, bootstrap_servers, find_source
from streamotion_ingest.publisher import Filters, Publisher

log = logging.getLogger("streamotion.ingest")


def make_publisher(p: StreamPipeline, source_name: str, bootstrap: str | None = None, **kw) -> Publisher:
    source = find_source(p, source_name)
    topics = topic_names(p)
    return Publisher(
        bootstrap_servers(p, bootstrap),
        topics["raw"],
        topics["deadLetter"],
        pipeline=p.name,
        source=source.name,
        filters=Filters.of(source),
        **kw,
    )


def pump(ctx: Context, publisher: Publisher) -> int:
    """Publish everything the source yields until it ends or ctx.stop; returns events handled."""
    from streamotion_ingest import sources
    from streamotion_ingest.resume import last_cursors

    if ctx.recover is None:
        ctx.recover = lambda: last_cursors(publisher.bootstrap, publisher.topic, ctx.source.name)
    counted = ctx.handled
    try:
        for item in sources.load(ctx.source.type)(ctx):
            ctx.busy = True
            try:
                publisher.publish(item)
                ctx.handled += 1
            finally:
                ctx.busy = False
            if ctx.handled - counted >= 256:
                ctx.metrics.received.inc(ctx.handled - counted)
                counted = ctx.handled
            if ctx.stop.is_set():
                break
    finally:
        ctx.metrics.received.inc(ctx.handled - counted)
    return ctx.handled


def produce(
    pipeline: StreamPipeline,
    source_name: str,
    *,
    bootstrap: str | None = None,
    metrics_port: int | None = METRICS_PORT,
    host: str = "0.0.0.0",
    port: int | None = None,
) -> int:
    """Run until the source ends (replay with a limit) or SIGTERM/SIGINT; flush, then return an exit code."""
    source = find_source(pipeline, source_name)
    if source.type == "http":
        from streamotion_ingest.http import serve

        return serve(
            pipeline, source_name, bootstrap=bootstrap, metrics_port=metrics_port, host=host, port=port
        )
    if source.type == "cdc":
        from streamotion_ingest.cdc import serve as serve_cdc

        return serve_cdc(pipeline, source_name, bootstrap=bootstrap, metrics_port=metrics_port)

    publisher = make_publisher(pipeline, source_name, bootstrap)
    if metrics_port:
        from streamotion_ingest.metrics import serve as serve_metrics

        serve_metrics(metrics_port, ready=publisher.ready)  # /readyz: the pod's readiness probe
    ctx = Context(pipeline=pipeline.name, source=source, metrics=publisher.metrics)

    def on_signal(signum, _frame):
        log.info("stopping", extra={"signal": signal.Signals(signum).name})
        first = not ctx.stop.is_set()
        ctx.stop.set()
        if first and not ctx.busy and threading.current_thread() is threading.main_thread():
            raise Shutdown

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    log.info(
        "producer started",
        extra={
            "pipeline": pipeline.name,
            "source": source.name,
            "type": source.type,
            "topic": publisher.topic,
        },
    )
    code = 0
    try:
        pump(ctx, publisher)
    except Shutdown:
        pass
    except Exception:
        log.exception("source failed")
        code = 1
    finally:
        ctx.stop.set()
        # Flush with signals ignored so a second SIGTERM cannot cut the flush short.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
        left = publisher.close(timeout=60)
        for s, h in previous.items():
            signal.signal(s, h)
    log.info("producer stopped", extra={"handled": ctx.handled, "unacknowledged": left})
    return 2 if left else code


def load(pipeline_file: str | Path):
    from streamotion.api.validate import load_pipeline

    return load_pipeline(pipeline_file)

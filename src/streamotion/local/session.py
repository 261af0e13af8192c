"""Drive a local run: start, live progress, end condition, summary, clean stop."""

from __future__ import annotations

import json
import signal
import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from streamotion.local.runner import ComponentFailed, LocalRun, Options, Stopped
from streamotion.local.stats import KafkaCounter, PostgresCounter, Rates, Snapshot, now

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _fmt_emotions(per_emotion: dict[str, int], limit: int = 8) -> str:
    if not per_emotion:
        return "-"
    items = sorted(per_emotion.items(), key=lambda kv: -kv[1])[:limit]
    return "  ".join(f"{e} {n}" for e, n in items)


def progress_table(run: LocalRun, snap: Snapshot, rate_in: float, rate_out: float, elapsed: float) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="bold")
    t.add_column()
    t.add_row("elapsed", f"{elapsed:,.0f} s")
    t.add_row("events in", f"{snap.events_in:,}  ({rate_in:,.1f}/s)")
    out = f"{snap.events_out:,}  ({rate_out:,.1f}/s)" if run.pg_dsn else "- (no PostgreSQL sink)"
    t.add_row("events out", out)
    t.add_row("lag", f"{snap.lag:,} events" if run.has_job() else "- (no job)")
    t.add_row("dead letters", f"{snap.dead_letters:,}")
    t.add_row("emotions", _fmt_emotions(snap.per_emotion))
    states = []
    for c in run.components:
        if c.done:
            states.append(f"[dim]{c.name} done[/]")
        elif c.process is None or c.process.alive():
            states.append(f"[green]{c.name}[/]")
        else:
            states.append(f"[red]{c.name} exited[/]")
    t.add_row("components", Text.from_markup(" ".join(states)))
    return t


def plain_line(snap: Snapshot, rate_in: float, rate_out: float, elapsed: float) -> str:
    return (
        f"[{elapsed:6.0f}s] in {snap.events_in} ({rate_in:.1f}/s)  out {snap.events_out} ({rate_out:.1f}/s)  "
        f"lag {snap.lag}  dead letters {snap.dead_letters}  emotions: {_fmt_emotions(snap.per_emotion, 4)}"
    )


def summary_table(summary: dict[str, Any]) -> Group:
    per_source: dict[str, dict[str, int]] = summary.get("per_source") or {}
    emotions = list(summary.get("per_emotion") or {})
    t = Table(title=f"Summary: {summary['pipeline']}", show_footer=True)
    t.add_column("emotion", footer="total")
    for source in per_source:
        t.add_column(source, justify="right", footer=str(sum(per_source[source].values())))
    t.add_column("all sources", justify="right", footer=str(summary["events_out"]))
    for e in emotions:
        t.add_row(e, *[str(per_source[s].get(e, 0)) for s in per_source], str(summary["per_emotion"][e]))

    def fmt(v: float | None, unit: str) -> str:
        return "-" if v is None else f"{v:,.2f} {unit}"

    k = Table.grid(padding=(0, 2))
    k.add_column(style="bold")
    k.add_column()
    k.add_row("events in (Kafka)", f"{summary['events_in']:,}")
    k.add_row("events out (sink)", f"{summary['events_out']:,}")
    k.add_row(
        "dead letters",
        f"{summary['dead_letters']:,} (producers {summary['producer_dead_letters']}, job {summary['job_dead_letters']})",
    )
    k.add_row("throughput", fmt(summary["events_per_s"], "events/s"))
    k.add_row(
        "latency p50 / p99", f"{fmt(summary['p50_latency_s'], 's')} / {fmt(summary['p99_latency_s'], 's')}"
    )
    k.add_row("model", summary.get("model") or "-")
    k.add_row("ended", summary.get("stop_reason") or "-")
    parts: list[Any] = [t, k]
    for note in summary.get("notes") or []:
        parts.append(Text(f"note: {note}", style="yellow"))
    return Group(*parts)


class Watcher:
    def __init__(self, run: LocalRun) -> None:
        self.run = run
        admin = run.kafka.admin_config() if run.opts.secure and run.kafka is not None else None
        self.kafka = KafkaCounter(run.bootstrap or "", run.topics["raw"], run.topics["deadLetter"], admin)
        self.pg = PostgresCounter(run.pg_dsn, run.pg_schema, run.started_at) if run.pg_dsn else None
        self.snap = Snapshot(at=now())

    def poll(self) -> Snapshot:
        s = Snapshot(at=now())
        try:
            s.events_in = self.kafka.end_offsets(self.run.topics["raw"])
            s.dead_letter_topic = self.kafka.end_offsets(self.run.topics["deadLetter"])
        except Exception:  # a transient broker hiccup: keep the last numbers (a dead broker fails check())
            s.events_in, s.dead_letter_topic = self.snap.events_in, self.snap.dead_letter_topic
        if self.pg is not None:
            try:
                s.events_out, s.job_dead_letters, s.per_emotion = self.pg.counts()
            except Exception:
                s.events_out, s.job_dead_letters, s.per_emotion = (
                    self.snap.events_out,
                    self.snap.job_dead_letters,
                    self.snap.per_emotion,
                )
        self.snap = s
        return s

    def close(self) -> None:
        self.kafka.close()
        if self.pg is not None:
            self.pg.close()


def watch(run: LocalRun, watcher: Watcher, console: Console, live: bool) -> str:
    """Until the end condition; returns why it ended."""
    opts = run.opts
    rates = Rates()
    start = now()
    last_change = start
    last_done = -1
    producers_done_at: float | None = None
    last_plain = 0.0
    display = Live(console=console, refresh_per_second=4, transient=False) if live else None
    if display:
        display.start()
    try:
        while True:
            run.check()
            snap = watcher.poll()
            rate_in, rate_out = rates.add(snap)
            elapsed = now() - start
            if display:
                display.update(
                    Panel(progress_table(run, snap, rate_in, rate_out, elapsed), title="streamotion local")
                )
            elif now() - last_plain >= 5:
                console.print(plain_line(snap, rate_in, rate_out, elapsed), highlight=False)
                last_plain = now()
            processed = snap.events_out + snap.job_dead_letters
            if processed != last_done:
                last_done, last_change = processed, now()
            if opts.duration_s is not None and elapsed >= opts.duration_s:
                return f"--duration reached ({opts.duration_s:g} s)"
            if opts.events is not None and run.pg_dsn and snap.events_out >= opts.events:
                return f"--events reached ({snap.events_out} events written)"
            if run.producers_done():
                if producers_done_at is None:
                    producers_done_at = now()
                if not run.has_job() or not run.pg_dsn:
                    return "every source finished"
                if processed >= snap.events_in:
                    return "every source finished and every event was processed"
                if now() - max(last_change, producers_done_at) > opts.drain_timeout_s:
                    missing = snap.events_in - processed
                    run.notes.append(
                        f"{missing} events in Kafka were not written after {opts.drain_timeout_s:g} s"
                    )
                    return f"sources finished; the job made no progress for {opts.drain_timeout_s:g} s"
            time.sleep(opts.poll_s)
    finally:
        if display:
            display.stop()


def build_summary(
    run: LocalRun, watcher: Watcher, reason: str, elapsed: float
) -> tuple[dict[str, Any], dict]:
    snap = watcher.poll()
    details: dict[str, Any] = {}
    if watcher.pg is not None:
        try:
            details = watcher.pg.details()
        except Exception as exc:
            run.notes.append(f"could not read the summary details from PostgreSQL: {exc}")
    span = details.get("span_s")
    rate = snap.events_out / span if span and span > 0 and snap.events_out else None
    summary = {
        "pipeline": run.pipeline.name,
        "run_id": run.run_id,
        "events_in": snap.events_in,
        "events_out": snap.events_out,
        "dead_letters": snap.dead_letters,
        "producer_dead_letters": snap.producer_dead_letters,
        "job_dead_letters": snap.job_dead_letters,
        "per_emotion": snap.per_emotion,
        "per_source": details.get("per_source", {}),
        "events_per_s": round(rate, 3) if rate else None,
        "p50_latency_s": details.get("p50_latency_s"),
        "p99_latency_s": details.get("p99_latency_s"),
        "duration_s": round(elapsed, 1),
        "model": run.model_choice,
        "stop_reason": reason,
        "notes": list(run.notes),
    }
    return summary, details


def execute(opts: Options, console: Console | None = None) -> int:
    from streamotion.api.validate import load_pipeline

    if console is None:
        console = Console()
        console.soft_wrap = not console.is_terminal  # plain log lines stay one line each
    live = console.is_terminal if opts.live is None else opts.live
    try:
        pipeline = load_pipeline(opts.file)
    except Exception as exc:
        console.print(f"[red]error:[/] {exc}")
        return EXIT_USAGE

    t0 = now()

    def say(msg: str) -> None:
        console.print(f"[cyan][{now() - t0:6.1f}s][/] {msg}", highlight=False)

    run = LocalRun(opts, pipeline, say=say)

    def on_term(signum, _frame):
        raise Stopped(signal.Signals(signum).name)

    def on_int(_signum, _frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    # Explicitly: a shell starting us in the background may have left SIGINT ignored.
    signal.signal(signal.SIGINT, on_int)
    code = EXIT_OK
    watcher: Watcher | None = None
    started = now()
    try:
        run.start()
        watcher = Watcher(run)
        say(f"running; {'Ctrl-C stops everything' if live else 'SIGINT/SIGTERM stop everything'}")
        try:
            reason = watch(run, watcher, console, live)
        except (KeyboardInterrupt, Stopped) as exc:
            reason = f"stopped ({'Ctrl-C' if isinstance(exc, KeyboardInterrupt) else exc})"
        say(f"{reason}: stopping")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        run.stop_producers()
        summary, details = build_summary(run, watcher, reason, now() - started)
        console.print(summary_table(summary))
        if opts.summary_json:
            opts.summary_json.parent.mkdir(parents=True, exist_ok=True)
            opts.summary_json.write_text(json.dumps(summary, indent=2, default=str) + "\n")
            say(f"summary written to {opts.summary_json}")
        if opts.reports_dir is not None and watcher.pg is not None:
            try:
                from streamotion.local.report import write_reports

                paths = write_reports(summary, details, opts.reports_dir)
                say("reports: " + ", ".join(str(p) for p in paths))
            except Exception as exc:
                console.print(f"[yellow]could not write the report PNGs: {exc}[/]")
    except ComponentFailed as exc:
        console.print(Panel(Text(str(exc)), title=f"[bold red]FAILED: {exc.component}", border_style="red"))
        code = EXIT_FAILED
    except (KeyboardInterrupt, Stopped):
        say("stopped while starting")
        code = 130
    except Exception as exc:  # a bug or an unexpected error: still stop everything
        console.print(f"[bold red]error:[/] {type(exc).__name__}: {exc}")
        code = EXIT_FAILED
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if watcher is not None:
            watcher.close()
        say("stopping every component...")
        run.shutdown()
        say("stopped" + ("" if code else " cleanly"))
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, previous)
    return code

"""Replay a labelled data set at a fixed rate: GoEmotions-style TSV (text, labels, id) or JSONL.

``dataset``: "goemotions" (the bundled 1,000-row sample), a path, or an http(s) URL.

Pass 0 publishes the data set's ids as they are; with ``loop``, pass N > 0 appends ``~N`` so every
pass is new data. The pass number travels with each event (the ``streamotion-cursor`` header), so a
restarted looping replay starts a new pass after the last one on the raw topic instead of colliding
with itself; a restarted finite replay (``loop: false``) publishes the same ids again, which the
sinks store once.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

from streamotion.events import Event, hash_author, utcnow
from streamotion_ingest.context import Context
from streamotion_ingest.publisher import Malformed, Positioned, make_event

DATA = Path(__file__).resolve().parent.parent / "data"
BUNDLED = {"goemotions": DATA / "goemotions-sample.tsv"}


def _lines(dataset: str) -> Iterator[str]:
    if dataset.startswith(("http://", "https://")):
        import httpx

        with httpx.stream("GET", dataset, follow_redirects=True, timeout=60) as r:
            r.raise_for_status()
            yield from r.iter_lines()
        return
    path = BUNDLED.get(dataset) or Path(dataset.removeprefix("file://"))
    if path.suffix == ".gz":
        import gzip

        with gzip.open(path, "rt", encoding="utf-8", errors="replace") as fh:
            yield from fh
        return
    with open(path, encoding="utf-8", errors="replace") as fh:
        yield from fh


def _format(dataset: str, first: str) -> str:
    name = dataset.lower().removesuffix(".gz")
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    if name.endswith((".tsv", ".txt")) or dataset in BUNDLED:
        return "tsv"
    return "jsonl" if first.lstrip().startswith("{") else "tsv"


def _channel(dataset: str) -> str:
    if dataset in BUNDLED:
        return dataset
    return Path(dataset.split("?")[0]).name.split(".")[0][:256] or "replay"


def parse_tsv(line: str, lineno: int, source: str, channel: str, suffix: str) -> Event | Malformed:
    cols = line.rstrip("\r\n").split("\t")
    if len(cols) < 3:
        return Malformed(f"line {lineno}: expected text<TAB>labels<TAB>id, got {len(cols)} column(s)", line)
    text, rid = cols[0], cols[2].strip()
    if not rid:
        return Malformed(f"line {lineno}: empty id", line)
    now = utcnow()
    return make_event(
        line,
        id=rid + suffix,
        source=source,
        platform="replay",
        channel=channel,
        text=text,
        created_at=now,
        ingested_at=now,
    )


def parse_jsonl(line: str, lineno: int, source: str, channel: str, suffix: str) -> Event | Malformed:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return Malformed(f"line {lineno}: invalid JSON: {exc}", line)
    if not isinstance(obj, dict):
        return Malformed(f"line {lineno}: expected a JSON object, got {type(obj).__name__}", line)
    rid = obj.get("id")
    if rid is None or rid == "":
        return Malformed(f"line {lineno}: id: field required", line)
    return make_event(
        line,
        id=f"{rid}{suffix}",
        source=source,
        platform="replay",
        channel=obj.get("channel") or channel,
        author=hash_author(obj.get("author")) if obj.get("author") else None,
        text=obj.get("text"),
        lang=obj.get("lang"),
        created_at=obj.get("created_at") or utcnow(),
        url=obj.get("url"),
    )


def events(ctx: Context) -> Iterator[Event | Malformed]:
    spec = ctx.source.replay
    assert spec is not None
    rate, limit = spec.rate_per_second, spec.limit
    channel = _channel(spec.dataset)
    emitted = 0
    start = time.monotonic()
    pass_no = 0
    if spec.loop:
        passes = [int(c) for c in ctx.last_cursors() if c.isdigit()]
        if passes:
            pass_no = max(passes) + 1
            ctx.log.info("replay resumes with a new pass", extra={"pass": pass_no})
    while not ctx.stop.is_set():
        suffix = f"~{pass_no}" if pass_no else ""  # ids stay unique across loops
        fmt = None
        parse = None
        seen_rows = 0
        for lineno, raw in enumerate(_lines(spec.dataset), 1):
            line = raw.rstrip("\r\n")
            if not line.strip():
                continue
            if fmt is None:
                fmt = _format(spec.dataset, line)
                parse = parse_jsonl if fmt == "jsonl" else parse_tsv
            seen_rows += 1
            target = start + emitted / rate
            ahead = target - time.monotonic()
            if ahead > 0.002 and ctx.wait(ahead):
                return
            item = parse(line, lineno, ctx.source.name, channel, suffix)
            yield Positioned(item, str(pass_no)) if spec.loop and isinstance(item, Event) else item
            emitted += 1
            if limit is not None and emitted >= limit:
                return
            if ctx.stop.is_set():
                return
        if not spec.loop or seen_rows == 0:
            return
        pass_no += 1

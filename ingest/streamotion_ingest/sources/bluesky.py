"""Bluesky posts through a Jetstream WebSocket (public, no credentials).

Subscribes with ``wantedCollections=app.bsky.feed.post`` and keeps only commit/create events of
posts. On a dropped connection it reconnects with backoff and resumes from the last cursor
(``time_us``) minus a small overlap, as Jetstream recommends; the overlap's duplicates are skipped.

Across restarts: every published post carries its ``time_us`` (header ``streamotion-cursor``), and a
new pod starts from the newest one found on the raw topic (minus the overlap), so what was posted
while it was down is replayed by Jetstream, not lost (Jetstream keeps a window of past events; a
cursor older than that window starts at its oldest event). Re-sent posts have the same identity,
and the sinks store each identity once.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from streamotion.events import Event, hash_author
from streamotion_ingest.context import Context
from streamotion_ingest.filters import normalise_lang
from streamotion_ingest.publisher import Malformed, Positioned, make_event
from streamotion_ingest.sources._common import convert, obj, text_or_none

POST = "app.bsky.feed.post"
REWIND_US = 2_000_000  # resume 2 s before the last event seen (gapless playback)


def subscribe_url(endpoint: str, cursor: int | None) -> str:
    parts = urlsplit(endpoint)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("wantedCollections", "cursor")]
    query.append(("wantedCollections", POST))
    if cursor is not None:
        query.append(("cursor", str(cursor)))
    return urlunsplit(parts._replace(query=urlencode(query)))


def _time(time_us: object) -> datetime | None:
    if not isinstance(time_us, int) or isinstance(time_us, bool):
        return None
    try:
        return datetime.fromtimestamp(time_us / 1e6, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def to_event(msg: dict, raw: str, source: str) -> Event | Malformed | None:
    """None for anything that is not a post creation."""
    if msg.get("kind") != "commit":
        return None
    commit = obj(msg.get("commit"))
    if commit.get("collection") != POST or commit.get("operation") != "create":
        return None
    record = commit.get("record")
    did, rkey = text_or_none(msg.get("did")), text_or_none(commit.get("rkey"))
    if not isinstance(record, dict) or not did or not rkey:
        return Malformed("bluesky commit without record, did or rkey", raw)
    text = record.get("text")
    if not text:  # image-only posts
        return None
    langs = record.get("langs")
    return make_event(
        raw,
        id=f"at://{did}/{POST}/{rkey}",
        source=source,
        platform="bluesky",
        author=hash_author(did),
        text=text,
        lang=normalise_lang(langs[0]) if isinstance(langs, list) and langs else None,
        created_at=record.get("createdAt") or _time(msg.get("time_us")),
        url=f"https://bsky.app/profile/{did}/post/{rkey}",
    )


def events(ctx: Context) -> Iterator[Event | Malformed]:
    from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
    from websockets.sync.client import connect

    spec = ctx.source.bluesky
    assert spec is not None
    recovered = [int(c) for c in ctx.last_cursors() if c.isdigit()]
    cursor: int | None = max(recovered) if recovered else None
    if cursor is not None:
        ctx.log.info("jetstream resumes from the raw topic's last cursor", extra={"cursor": cursor})
    seen: OrderedDict[str, None] = OrderedDict()
    backoff = ctx.backoff(1.0, 60.0)
    while not ctx.stop.is_set():
        resume = cursor - REWIND_US if cursor is not None else None
        url = subscribe_url(spec.endpoint, resume)
        try:
            with connect(url, open_timeout=15, close_timeout=2, max_size=2**22) as ws:
                ctx.log.info("jetstream connected", extra={"url": url})
                while not ctx.stop.is_set():
                    try:
                        raw = ws.recv(timeout=1.0)
                    except TimeoutError:
                        continue
                    backoff.reset()
                    raw = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
                    try:
                        msg = json.loads(raw)
                    except json.JSONDecodeError as exc:
                        yield Malformed(f"jetstream message is not JSON: {exc}", raw)
                        continue
                    if not isinstance(msg, dict):
                        yield Malformed("jetstream message is not an object", raw)
                        continue
                    time_us = msg.get("time_us")
                    if isinstance(time_us, int) and not isinstance(time_us, bool):
                        cursor = max(cursor or 0, time_us)
                    item = convert(to_event, raw, msg, raw, ctx.source.name)
                    if item is None:
                        continue
                    if isinstance(item, Event):
                        if item.id in seen:
                            ctx.metrics.filtered("duplicate").inc()
                            continue
                        seen[item.id] = None
                        if len(seen) > 50_000:
                            seen.popitem(last=False)
                        if cursor is not None:
                            item = Positioned(item, str(cursor))
                    yield item
                    if ctx.stop.is_set():
                        return
            reason = "closed"
        except InvalidStatus as exc:
            reason = f"http {exc.response.status_code}"
        except (ConnectionClosed, WebSocketException, OSError, TimeoutError) as exc:
            reason = type(exc).__name__
        if ctx.stop.is_set():
            return
        delay = backoff.next()
        if reason.startswith("http 429"):
            delay = max(delay, 5 * ctx.backoff_scale)
        ctx.metrics.reconnect(reason.split()[0]).inc()
        ctx.log.warning(
            "jetstream disconnected; reconnecting",
            extra={"reason": reason, "in_s": round(delay, 3), "cursor": cursor},
        )
        if ctx.wait(delay):
            return

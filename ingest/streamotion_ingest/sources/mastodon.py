"""A Mastodon instance's streaming timeline (public, local or hashtags) through Mastodon.py.

Each stream runs in its own thread and reconnects with backoff when it drops or is refused
(429 included). Status HTML becomes text; boosts are unwrapped and de-duplicated (a boost of a
status already published, or the same status on two hashtag streams, is skipped).

Mastodon's streaming API has no resume point, so gaps are filled over REST: once a stream is open
(and still before reading it), the matching timeline (``/api/v1/timelines/public`` or
``/api/v1/timelines/tag/:hashtag``) is read forward with ``min_id`` from the last status id of that
stream, up to CATCH_UP_PAGES pages of 40. The last id comes from this process after a dropped
connection, and from the raw topic after a restart (each event carries ``<stream> <status id>`` in
its ``streamotion-cursor`` header; a stream none of the last records came from starts at the oldest
of those ids). Statuses seen on both paths are published once.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator
from typing import Any

from streamotion.events import Event, hash_author
from streamotion_ingest.context import Context
from streamotion_ingest.filters import normalise_lang
from streamotion_ingest.publisher import Malformed, Positioned, make_event
from streamotion_ingest.sources._common import Seen, convert, html_to_text, obj


def to_event(status, source: str, channel: str | None) -> Event | Malformed:
    raw = json.dumps(status, default=str)
    account = obj(status.get("account"))
    return make_event(
        raw,
        id=str(status.get("uri") or status.get("id") or ""),
        source=source,
        platform="mastodon",
        channel=channel,
        author=hash_author(account.get("acct") or account.get("url")),
        text=html_to_text(status.get("content")) or (status.get("spoiler_text") or None),
        lang=normalise_lang(status.get("language")),
        created_at=status.get("created_at"),
        url=status.get("url") or status.get("uri"),
    )


CATCH_UP_PAGES = 50  # x 40 statuses per stream and (re)connection
PAGE = 40  # the timelines' maximum limit


def _order(status_id: Any) -> tuple[int, str]:
    """Mastodon ids are numeric strings (time-based): compare by length, then text."""
    text = str(status_id)
    return (len(text), text)


class Cursors:
    """The last status id of each stream, shared by the stream threads and the publishing loop."""

    def __init__(self, recovered: list[str]) -> None:
        self.lock = threading.Lock()
        self.last: dict[str, str] = {}
        for value in recovered:
            key, _, status_id = value.rpartition(" ")
            if (
                key
                and status_id.isdigit()
                and (key not in self.last or _order(status_id) > _order(self.last[key]))
            ):
                self.last[key] = status_id
        # a stream that none of the last records came from: the oldest of those ids
        self.fallback = min(self.last.values(), key=_order) if self.last else None

    def get(self, key: str) -> str | None:
        with self.lock:
            return self.last.get(key, self.fallback)

    def advance(self, key: str, status_id: str) -> None:
        with self.lock:
            if key not in self.last or _order(status_id) > _order(self.last[key]):
                self.last[key] = status_id


def stream_key(stream: str, tag: str | None) -> str:
    return f"tag:{tag.lower()}" if tag else stream


def catch_up(ctx: Context, api, stream: str, tag: str | None, since: str, out: queue.Queue) -> int:
    """Queue the timeline's statuses newer than ``since``, oldest first; returns how many."""
    cursor, count = since, 0
    for _ in range(CATCH_UP_PAGES):
        if stream == "hashtag":
            page = api.timeline_hashtag(tag, min_id=cursor, limit=PAGE)
        else:
            page = api.timeline_public(min_id=cursor, limit=PAGE, local=stream == "local")
        if not page:
            return count
        for status in sorted(page, key=lambda s: _order(s.get("id"))):
            out.put((stream, tag, status))
            count += 1
        cursor = str(max((s.get("id") for s in page), key=_order))
    ctx.log.warning(
        "mastodon catch-up stopped at its page limit", extra={"stream": stream, "tag": tag, "statuses": count}
    )
    return count


def _streamer(ctx: Context, api, stream: str, tag: str | None, out: queue.Queue, cursors: Cursors) -> None:
    from mastodon import MastodonError, StreamListener

    key = stream_key(stream, tag)

    class Listener(StreamListener):
        def handle_stream(self, response):
            # The stream is open (its events wait in the socket): fill the gap before it over REST.
            since = cursors.get(key)
            if since is not None:
                try:
                    n = catch_up(ctx, api, stream, tag, since, out)
                    ctx.log.info("mastodon catch-up", extra={"stream": key, "since": since, "statuses": n})
                except Exception as exc:  # the stream still runs; the gap is logged
                    ctx.log.warning("mastodon catch-up failed", extra={"stream": key, "error": str(exc)})
            return super().handle_stream(response)

        def on_update(self, status):
            out.put((stream, tag, status))

        def on_status_update(self, status):  # edits are not new events
            pass

        def on_unknown_event(self, name, unknown_event=None):
            pass

    backoff = ctx.backoff(1.0, 120.0)
    listener = Listener()
    while not ctx.stop.is_set():
        try:
            ctx.log.info("mastodon stream connecting", extra={"stream": stream, "tag": tag})
            if stream == "hashtag":
                api.stream_hashtag(tag, listener)
            else:
                api.stream_public(listener, local=stream == "local")
            reason = "closed"
        except MastodonError as exc:
            reason = type(exc).__name__
            if "Too Many Requests" in str(exc) or "429" in str(exc):
                reason = "rate_limited"
        except Exception as exc:
            reason = type(exc).__name__
        else:
            backoff.reset()
        if ctx.stop.is_set():
            return
        delay = backoff.next()
        if reason == "rate_limited":
            delay = max(delay, 30 * ctx.backoff_scale)
        ctx.metrics.reconnect(reason).inc()
        ctx.log.warning(
            "mastodon stream dropped; reconnecting", extra={"reason": reason, "in_s": round(delay, 3)}
        )
        if ctx.wait(delay):
            return


def events(ctx: Context) -> Iterator[Event | Malformed]:
    from mastodon import Mastodon

    spec = ctx.source.mastodon
    assert spec is not None
    api = Mastodon(
        access_token=ctx.env.get("MASTODON_ACCESS_TOKEN") or None,
        api_base_url=spec.instance.rstrip("/"),
        request_timeout=30,
        ratelimit_method="wait",
        version_check_mode="none",
        user_agent="streamotion-ingest",
    )
    out: queue.Queue = queue.Queue(maxsize=10_000)
    streams = (
        [("hashtag", t) for t in spec.hashtags] if spec.timeline == "hashtag" else [(spec.timeline, None)]
    )
    cursors = Cursors(ctx.last_cursors())
    for stream, tag in streams:
        threading.Thread(
            target=_streamer,
            args=(ctx, api, stream, tag, out, cursors),
            name=f"mastodon-{tag or stream}",
            daemon=True,
        ).start()
    seen = Seen()
    while not ctx.stop.is_set():
        try:
            stream, tag, status = out.get(timeout=0.5)
        except queue.Empty:
            continue
        key = stream_key(stream, tag)
        status_id = str(status.get("id") or "")
        if status_id.isdigit():
            cursors.advance(key, status_id)
        original = status.get("reblog") or status
        uri = str(original.get("uri") or original.get("id"))
        if not seen.add(uri):
            ctx.metrics.filtered("duplicate").inc()
            continue
        item = convert(to_event, original, original, ctx.source.name, f"#{tag}" if tag else spec.timeline)
        yield Positioned(item, f"{key} {status_id}") if status_id.isdigit() else item

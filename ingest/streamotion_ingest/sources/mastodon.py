"""A Mastodon instance's streaming timeline (public, local or hashtags) through Mastodon.py.

Each stream runs in its own thread and reconnects with backoff when it drops or is refused
(429 included). Status HTML becomes text; boosts are unwrapped and de-duplicated (a boost of a
status already published, or the same status on two hashtag streams, is skipped).
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

from streamotion.events import Event, hash_author
from streamotion_ingest.context import Context
from streamotion_ingest.filters import normalise_lang
from streamotion_ingest.publisher import Malformed, make_event
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


def _streamer(ctx: Context, api, stream: str, tag: str | None, out: queue.Queue) -> None:
    from mastodon import MastodonError, StreamListener

    class Listener(StreamListener):
        def on_update(self, status):
            out.put((tag, status))

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
    for stream, tag in streams:
        threading.Thread(
            target=_streamer, args=(ctx, api, stream, tag, out), name=f"mastodon-{tag or stream}", daemon=True
        ).start()
    seen = Seen()
    while not ctx.stop.is_set():
        try:
            tag, status = out.get(timeout=0.5)
        except queue.Empty:
            continue
        original = status.get("reblog") or status
        key = str(original.get("uri") or original.get("id"))
        if not seen.add(key):
            ctx.metrics.filtered("duplicate").inc()
            continue
        yield convert(to_event, original, original, ctx.source.name, f"#{tag}" if tag else spec.timeline)

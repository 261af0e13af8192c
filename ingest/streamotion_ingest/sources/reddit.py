"""Reddit comments over subreddits through PRAW (application-only OAuth, read-only).

Credentials from REDDIT_CLIENT_ID / REDDIT_CLIENT_SECRET / REDDIT_USER_AGENT. PRAW follows
Reddit's rate-limit headers; a 429 or a dropped connection ends the stream, which is
restarted after a backoff (honouring Retry-After / x-ratelimit-reset). Deleted and removed
comments are skipped; comments seen before a restart are not published twice.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

from streamotion.events import Event, hash_author
from streamotion_ingest.context import Context
from streamotion_ingest.publisher import Malformed, make_event
from streamotion_ingest.sources._common import Seen

# Test/dev overrides of PRAW's endpoints (PRAW config names oauth_url and reddit_url).
OAUTH_URL_ENV = "STREAMOTION_REDDIT_OAUTH_URL"
REDDIT_URL_ENV = "STREAMOTION_REDDIT_URL"
DELETED = {"[deleted]", "[removed]"}


def to_event(comment, source: str) -> Event | Malformed | None:
    """None for deleted or removed comments."""
    body = getattr(comment, "body", None)
    author = getattr(comment, "author", None)
    if body in DELETED or author is None or getattr(author, "name", None) in DELETED:
        return None
    raw = json.dumps(
        {
            k: v
            for k, v in vars(comment).items()
            if not k.startswith("_") and isinstance(v, str | int | float | bool)
        },
        default=str,
    )
    created = getattr(comment, "created_utc", None)
    return make_event(
        raw,
        id=str(comment.id),
        source=source,
        platform="reddit",
        channel=str(getattr(comment.subreddit, "display_name", comment.subreddit)),
        author=hash_author(author.name),
        text=body,
        created_at=datetime.fromtimestamp(created, UTC) if isinstance(created, int | float) else created,
        url=f"https://www.reddit.com{comment.permalink}" if getattr(comment, "permalink", None) else None,
    )


def _retry_after(exc) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    for name in ("retry-after", "x-ratelimit-reset"):
        value = headers.get(name)
        if value:
            try:
                return float(value)
            except ValueError:
                pass
    return None


def events(ctx: Context) -> Iterator[Event | Malformed]:
    import praw
    import prawcore

    spec = ctx.source.reddit
    assert spec is not None
    missing = [
        k for k in ("REDDIT_CLIENT_ID", "REDDIT_CLIENT_SECRET", "REDDIT_USER_AGENT") if not ctx.env.get(k)
    ]
    if missing:
        raise ValueError(
            f"{', '.join(missing)} not set (the Secret's keys client_id, client_secret, user_agent)"
        )
    overrides = {}
    if ctx.env.get(OAUTH_URL_ENV):
        overrides["oauth_url"] = ctx.env[OAUTH_URL_ENV]
    if ctx.env.get(REDDIT_URL_ENV):
        overrides["reddit_url"] = ctx.env[REDDIT_URL_ENV]
    reddit = praw.Reddit(
        client_id=ctx.env["REDDIT_CLIENT_ID"],
        client_secret=ctx.env["REDDIT_CLIENT_SECRET"],
        user_agent=ctx.env["REDDIT_USER_AGENT"],
        check_for_async=False,
        ratelimit_seconds=300,
        **overrides,
    )
    subreddit = reddit.subreddit("+".join(spec.subreddits))
    seen = Seen()
    backoff = ctx.backoff(2.0, 300.0)
    while not ctx.stop.is_set():
        try:
            ctx.log.info("reddit stream starting", extra={"subreddits": spec.subreddits})
            for comment in subreddit.stream.comments(pause_after=0):
                if ctx.stop.is_set():
                    return
                if comment is None:  # no new comments in this round
                    continue
                backoff.reset()
                if not seen.add(comment.id):
                    continue
                item = to_event(comment, ctx.source.name)
                if item is None:
                    ctx.metrics.filtered("deleted").inc()
                    continue
                yield item
            reason, delay = "closed", backoff.next()
        except prawcore.exceptions.TooManyRequests as exc:
            reason, delay = "rate_limited", max(backoff.next(), (_retry_after(exc) or 10) * ctx.backoff_scale)
        except (prawcore.exceptions.ServerError, prawcore.exceptions.RequestException) as exc:
            reason, delay = type(exc).__name__, backoff.next()
        except prawcore.exceptions.ResponseException as exc:
            if exc.response.status_code in (401, 403):
                raise
            reason, delay = f"http_{exc.response.status_code}", backoff.next()
        if ctx.stop.is_set():
            return
        ctx.metrics.reconnect(reason).inc()
        ctx.log.warning(
            "reddit stream interrupted; restarting", extra={"reason": reason, "in_s": round(delay, 3)}
        )
        if ctx.wait(delay):
            return

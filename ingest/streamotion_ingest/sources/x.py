"""X (Twitter) API v2 filtered stream, with an app bearer token (``X_BEARER_TOKEN``).

Rules are synchronised first through ``/2/tweets/search/stream/rules`` (rules of the spec added,
others deleted). Reconnects follow X's guidance: network errors back off linearly from 250 ms
to 16 s, HTTP errors exponentially from 5 s to 320 s, HTTP 429 exponentially from 1 minute
(or until ``x-rate-limit-reset``).

Gaps: the filtered stream itself resumes only with Enterprise access (``backfill_minutes`` up to 5
minutes, or the recovery stream), which this source does not assume. Instead, once a stream is
connected (before reading it), each rule is run through recent search (``/2/tweets/search/recent``,
the last 7 days) with ``since_id`` set to the newest post id seen: after a dropped connection from
this process, after a restart from the raw topic (each event carries its post id in the
``streamotion-cursor`` header). Posts seen on both paths are published once. An app without recent
search access (403) or a rule search refuses (400) keeps streaming; the gap is logged.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx

from streamotion.events import Event, hash_author
from streamotion_ingest.context import Context
from streamotion_ingest.filters import normalise_lang
from streamotion_ingest.publisher import Malformed, Positioned, make_event
from streamotion_ingest.sources._common import Seen, convert, obj, objs, text_or_none

API_URL_ENV = "STREAMOTION_X_API_URL"  # default https://api.x.com (tests point it at a fake)
DEFAULT_API_URL = "https://api.x.com"
STREAM_PARAMS = {
    "tweet.fields": "created_at,lang,author_id",
    "expansions": "author_id",
    "user.fields": "username",
}


class XError(RuntimeError):
    def __init__(self, status: int, detail: str, reset: float | None = None) -> None:
        super().__init__(f"X API {status}: {detail}")
        self.status, self.reset = status, reset


def _check(r: httpx.Response) -> None:
    if r.status_code >= 400:
        reset = r.headers.get("x-rate-limit-reset")
        raise XError(r.status_code, r.text[:500], float(reset) if reset and reset.isdigit() else None)


def sync_rules(client: httpx.Client, rules: list[str], tag: str) -> dict[str, list]:
    """Make the stream's rules exactly ``rules``; returns what was added and deleted."""
    r = client.get("/2/tweets/search/stream/rules")
    _check(r)
    current = {x["value"]: x["id"] for x in (r.json().get("data") or [])}
    delete = [rid for value, rid in current.items() if value not in rules]
    add = [value for value in rules if value not in current]
    if delete:
        _check(client.post("/2/tweets/search/stream/rules", json={"delete": {"ids": delete}}))
    if add:
        r = client.post(
            "/2/tweets/search/stream/rules", json={"add": [{"value": v, "tag": tag} for v in add]}
        )
        _check(r)
        errors = r.json().get("errors") or []
        if errors:
            raise ValueError(f"X refused rules: {errors}")
    return {"added": add, "deleted": delete}


SEARCH_PAGES = 20  # x 100 posts per rule and (re)connection


def _newer(a: str | None, b: str) -> bool:
    """Post ids are numeric strings (time-ordered snowflakes)."""
    return a is None or (len(b), b) > (len(a), a)


def catch_up(client: httpx.Client, rules: list[str], tag: str, since_id: str) -> list[dict]:
    """Stream-shaped documents of the posts newer than ``since_id`` matching each rule, oldest first."""
    docs: dict[str, dict] = {}
    for rule in rules:
        params = {**STREAM_PARAMS, "query": rule, "since_id": since_id, "max_results": 100}
        for _ in range(SEARCH_PAGES):
            r = client.get("/2/tweets/search/recent", params=params)
            _check(r)
            body = r.json()
            users = (body.get("includes") or {}).get("users") or []
            for post in body.get("data") or []:
                docs.setdefault(
                    str(post.get("id")),
                    {"data": post, "includes": {"users": users}, "matching_rules": [{"tag": tag}]},
                )
            token = (body.get("meta") or {}).get("next_token")
            if not token:
                break
            params["next_token"] = token
    return [docs[k] for k in sorted(docs, key=lambda k: (len(k), k))]


def to_event(doc: dict, raw: str, source: str) -> Event | Malformed:
    data = doc.get("data")
    if not isinstance(data, dict) or not isinstance(data.get("id"), str | int) or not data.get("id"):
        return Malformed("X stream message without data.id", raw)
    users = {str(u.get("id")): u for u in objs(obj(doc.get("includes")).get("users"))}
    author_id = text_or_none(data.get("author_id"))
    handle = text_or_none(users.get(str(author_id), {}).get("username"))
    url = (
        f"https://x.com/{handle}/status/{data['id']}"
        if handle
        else f"https://x.com/i/web/status/{data['id']}"
    )
    rules = [m.get("tag") or m.get("id") for m in objs(doc.get("matching_rules"))]
    lang = data.get("lang")
    return make_event(
        raw,
        id=str(data["id"]),
        source=source,
        platform="x",
        channel=",".join(str(r) for r in rules if r)[:256] or None,
        author=hash_author(handle or author_id),
        text=data.get("text"),
        lang=normalise_lang(lang) if lang not in ("und", "zxx", "qme") else None,
        created_at=data.get("created_at"),
        url=url,
    )


def events(ctx: Context) -> Iterator[Event | Malformed]:
    spec = ctx.source.x
    assert spec is not None
    token = ctx.env.get("X_BEARER_TOKEN")
    if not token:
        raise ValueError("X_BEARER_TOKEN is not set (the Secret's key bearer_token)")
    base = ctx.env.get(API_URL_ENV, DEFAULT_API_URL).rstrip("/")
    net = ctx.backoff(0.25, 16, linear=True)
    http = ctx.backoff(5, 320)
    limited = ctx.backoff(60, 15 * 60)
    timeout = httpx.Timeout(30, read=30)  # X sends a keep-alive every 20 s
    recovered = [c for c in ctx.last_cursors() if c.isdigit()]
    newest: str | None = max(recovered, key=lambda c: (len(c), c)) if recovered else None
    seen = Seen()
    search = True  # until X refuses recent search to this app

    def publishable(doc: dict, raw: str):
        nonlocal newest
        data = doc.get("data")
        post_id = str(data.get("id")) if isinstance(data, dict) and data.get("id") else None
        if post_id is not None and not seen.add(post_id):
            ctx.metrics.filtered("duplicate").inc()
            return None
        item = convert(to_event, raw, doc, raw, ctx.source.name)
        if post_id is not None and post_id.isdigit():
            if _newer(newest, post_id):
                newest = post_id
            return Positioned(item, post_id)
        return item

    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=timeout) as client:
        synced = False
        while not ctx.stop.is_set():
            try:
                if not synced:
                    result = sync_rules(client, list(spec.rules), ctx.source.name)
                    ctx.log.info("x rules synchronised", extra=result)
                    synced = True
                with client.stream("GET", "/2/tweets/search/stream", params=STREAM_PARAMS) as r:
                    _check(r)
                    ctx.log.info("x stream connected")
                    if search and newest is not None:
                        try:
                            found = catch_up(client, list(spec.rules), ctx.source.name, newest)
                            ctx.log.info("x catch-up", extra={"since_id": newest, "posts": len(found)})
                        except (XError, httpx.HTTPError, ValueError) as exc:
                            found = []
                            search = not (isinstance(exc, XError) and exc.status in (401, 403))
                            ctx.log.warning("x catch-up failed; streaming on", extra={"error": str(exc)})
                        for doc in found:
                            item = publishable(doc, json.dumps(doc))
                            if item is not None:
                                yield item
                    for line in r.iter_lines():
                        net.reset()
                        http.reset()
                        limited.reset()
                        if ctx.stop.is_set():
                            return
                        if not line.strip():
                            continue  # keep-alive
                        try:
                            doc = json.loads(line)
                        except json.JSONDecodeError as exc:
                            yield Malformed(f"X stream line is not JSON: {exc}", line)
                            continue
                        if not isinstance(doc, dict):
                            yield Malformed("X stream line is not an object", line)
                            continue
                        if "data" not in doc and "errors" in doc:
                            ctx.log.warning("x stream error message", extra={"errors": doc["errors"]})
                            continue
                        item = publishable(doc, line)
                        if item is not None:
                            yield item
                        if ctx.stop.is_set():
                            return
                delay, reason = net.next(), "closed"
            except XError as exc:
                if exc.status in (401, 403) and not synced:
                    raise
                if exc.status == 429:
                    delay, reason = limited.next(), "rate_limited"
                    if exc.reset:
                        delay = max(delay, min(exc.reset - time.time(), 15 * 60) * ctx.backoff_scale)
                else:
                    delay, reason = http.next(), f"http_{exc.status}"
            except (httpx.TransportError, httpx.StreamError) as exc:
                delay, reason = net.next(), type(exc).__name__
            if ctx.stop.is_set():
                return
            ctx.metrics.reconnect(reason).inc()
            ctx.log.warning(
                "x stream disconnected; reconnecting", extra={"reason": reason, "in_s": round(delay, 3)}
            )
            if ctx.wait(delay):
                return

"""Mastodon: ``/api/v1/instance``, the server-sent-events streaming API and the REST timelines.

https://docs.joinmastodon.org/methods/streaming/ (mastodon/documentation
content/en/methods/streaming.md: ``update`` events carry a Status; no resume point) and
https://docs.joinmastodon.org/methods/timelines/ (content/en/methods/timelines.md:
``GET /api/v1/timelines/public`` and ``/api/v1/timelines/tag/:hashtag``, newest first; ``max_id``
upper bound, ``since_id`` lower bound, ``min_id`` "results immediately newer than this ID", ``limit``
default 20, max 40).

Two modes. Scripted (default): the first stream request is refused (429), the second sends
``drop_after`` statuses and drops, later ones send the rest and heartbeats. Live (``live=True``):
``post()`` adds statuses to the server's timeline at any time; a stream connection gets the
statuses posted while it is connected (and matching it), nothing from before; the REST timelines
serve everything posted.
"""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


def _tags(status: dict) -> set[str]:
    return {str(t.get("name", "")).lower() for t in status.get("tags") or []}


class FakeMastodon:
    def __init__(
        self, statuses: list[dict] = (), token: str | None = None, drop_after: int = 2, live: bool = False
    ) -> None:
        self.statuses = list(statuses)
        self.token = token
        self.drop_after = drop_after
        self.live = live
        self.timeline: list[dict] = list(statuses) if live else []  # oldest first
        self.lock = threading.Lock()
        self.requests: list[str] = []
        self.timeline_requests: list[str] = []
        self.app = FastAPI()
        self.app.get("/api/v1/instance")(self.instance)
        self.app.get("/api/v1/streaming/public")(self.public)
        self.app.get("/api/v1/streaming/public/local")(self.public)
        self.app.get("/api/v1/streaming/hashtag")(self.public)
        self.app.get("/api/v1/timelines/public")(self.timeline_public)
        self.app.get("/api/v1/timelines/tag/{hashtag}")(self.timeline_tag)
        self.base = ""

    def post(self, *statuses: dict) -> None:
        with self.lock:
            self.timeline.extend(statuses)

    def _unauthorized(self, request: Request) -> JSONResponse | None:
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "The access token is invalid"}, 401)
        return None

    async def instance(self, request: Request):
        base = str(request.base_url).rstrip("/")
        return {
            "uri": "fake.social",
            "title": "Fake",
            "version": "4.3.0",
            "urls": {"streaming_api": base.replace("http://", "ws://")},
            "stats": {"user_count": 1, "status_count": 1, "domain_count": 1},
            "languages": ["en"],
            "registrations": False,
        }

    # ------------------------------------------------------------------------------- REST timelines
    def _page(self, request: Request, tag: str | None) -> list[dict]:
        q = request.query_params
        limit = min(int(q.get("limit", 20)), 40)
        with self.lock:
            statuses = [s for s in self.timeline if tag is None or tag.lower() in _tags(s)]
        if q.get("local") in ("true", "1", "True"):
            statuses = [s for s in statuses if "@" not in s["account"]["acct"]]
        ids = sorted(statuses, key=lambda s: int(s["id"]))
        if q.get("max_id"):
            ids = [s for s in ids if int(s["id"]) < int(q["max_id"])]
        if q.get("since_id"):
            ids = [s for s in ids if int(s["id"]) > int(q["since_id"])]
        if q.get("min_id"):  # the page immediately newer than min_id
            ids = [s for s in ids if int(s["id"]) > int(q["min_id"])]
            return list(reversed(ids[:limit]))  # newest first
        return list(reversed(ids[-limit:]))  # the newest page

    async def timeline_public(self, request: Request):
        if err := self._unauthorized(request):
            return err
        self.timeline_requests.append(str(request.url.path) + "?" + request.url.query)
        return self._page(request, None)

    async def timeline_tag(self, hashtag: str, request: Request):
        if err := self._unauthorized(request):
            return err
        self.timeline_requests.append(str(request.url.path) + "?" + request.url.query)
        return self._page(request, hashtag)

    # ------------------------------------------------------------------------------- streaming
    async def public(self, request: Request):
        self.requests.append(str(request.url.path) + ("?" + request.url.query if request.url.query else ""))
        n = len(self.requests)
        if err := self._unauthorized(request):
            return err
        if self.live:
            return self._live(request)
        if n == 1:
            return JSONResponse(
                {"error": "Too many requests"}, 429, headers={"X-RateLimit-Reset": "2030-01-01T00:00:00Z"}
            )

        async def body():
            yield b":)\n"  # heartbeat comment
            items = self.statuses[: self.drop_after] if n == 2 else self.statuses[self.drop_after :]
            for s in items:
                yield f"event: update\ndata: {json.dumps(s)}\n\n".encode()
                yield b"event: delete\ndata: 12345\n\n"
            if n == 2:
                raise ConnectionResetError("fake: connection dropped")
            while True:
                await asyncio.sleep(0.5)
                yield b":thump\n"

        return StreamingResponse(body(), media_type="text/event-stream")

    def _live(self, request: Request) -> StreamingResponse:
        tag = request.query_params.get("tag") if request.url.path.endswith("/hashtag") else None
        local = request.url.path.endswith("/local")
        with self.lock:
            pos = len(self.timeline)  # no resume: only what is posted from now on

        async def body():
            nonlocal pos
            yield b":)\n"
            idle = 0
            while True:
                with self.lock:
                    new, pos = self.timeline[pos:], len(self.timeline)
                for s in new:
                    if tag is not None and tag.lower() not in _tags(s):
                        continue
                    if local and "@" in s["account"]["acct"]:
                        continue
                    yield f"event: update\ndata: {json.dumps(s)}\n\n".encode()
                await asyncio.sleep(0.05)
                idle += 1
                if idle % 40 == 0:
                    yield b":thump\n"

        return StreamingResponse(body(), media_type="text/event-stream")

"""Mastodon: ``/api/v1/instance`` and the server-sent-events streaming API.

https://docs.joinmastodon.org/methods/streaming/
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


class FakeMastodon:
    def __init__(self, statuses: list[dict], token: str | None = None, drop_after: int = 2) -> None:
        self.statuses = statuses
        self.token = token
        self.drop_after = drop_after
        self.requests: list[str] = []
        self.app = FastAPI()
        self.app.get("/api/v1/instance")(self.instance)
        self.app.get("/api/v1/streaming/public")(self.public)
        self.app.get("/api/v1/streaming/public/local")(self.public)
        self.app.get("/api/v1/streaming/hashtag")(self.public)
        self.base = ""

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

    async def public(self, request: Request):
        self.requests.append(str(request.url.path) + ("?" + request.url.query if request.url.query else ""))
        n = len(self.requests)
        if self.token and request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse({"error": "The access token is invalid"}, 401)
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

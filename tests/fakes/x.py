"""X API v2 filtered stream: ``/2/tweets/search/stream`` and ``/2/tweets/search/stream/rules``.

https://docs.x.com/x-api/posts/filtered-stream/introduction
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


class FakeX:
    def __init__(
        self, token: str, tweets: list[dict], existing_rules: list[str], drop_after: int = 2
    ) -> None:
        self.token = token
        self.tweets = tweets
        self.rules = {
            str(i + 100): {"id": str(i + 100), "value": v, "tag": "old"} for i, v in enumerate(existing_rules)
        }
        self.drop_after = drop_after
        self.rule_requests: list[dict] = []
        self.stream_calls = 0
        self.app = FastAPI()
        self.app.get("/2/tweets/search/stream/rules")(self.get_rules)
        self.app.post("/2/tweets/search/stream/rules")(self.post_rules)
        self.app.get("/2/tweets/search/stream")(self.stream)

    def _auth(self, request: Request) -> JSONResponse | None:
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return JSONResponse(
                {"title": "Unauthorized", "type": "about:blank", "status": 401, "detail": "Unauthorized"}, 401
            )
        return None

    async def get_rules(self, request: Request):
        if err := self._auth(request):
            return err
        data = list(self.rules.values())
        return (
            {"data": data, "meta": {"sent": "now", "result_count": len(data)}}
            if data
            else {"meta": {"result_count": 0}}
        )

    async def post_rules(self, request: Request):
        if err := self._auth(request):
            return err
        body = await request.json()
        self.rule_requests.append(body)
        if "delete" in body:
            for rid in body["delete"]["ids"]:
                self.rules.pop(rid, None)
            return {"meta": {"summary": {"deleted": len(body["delete"]["ids"]), "not_deleted": 0}}}
        created = []
        for r in body.get("add", []):
            rid = str(len(self.rules) + 1000)
            self.rules[rid] = {"id": rid, "value": r["value"], "tag": r.get("tag")}
            created.append(self.rules[rid])
        return JSONResponse({"data": created, "meta": {"summary": {"created": len(created)}}}, 201)

    async def stream(self, request: Request):
        if err := self._auth(request):
            return err
        self.stream_calls += 1
        call = self.stream_calls
        if call == 1:  # "Too Many Requests" with the reset time, as X answers
            return JSONResponse(
                {
                    "title": "ConnectionException",
                    "detail": "This stream is currently at the maximum allowed connection limit.",
                },
                429,
                headers={"x-rate-limit-reset": str(int(time.time()) + 1), "x-rate-limit-remaining": "0"},
            )
        rule = next(iter(self.rules.values()), {"id": "0", "tag": None})

        async def body():
            items = self.tweets[: self.drop_after] if call == 2 else self.tweets[self.drop_after :]
            yield b"\r\n"  # keep-alive
            for t in items:
                doc = {
                    "data": {k: t[k] for k in ("id", "text", "created_at", "lang", "author_id") if k in t},
                    "includes": {"users": [{"id": t["author_id"], "username": t["username"], "name": "N"}]},
                    "matching_rules": [{"id": rule["id"], "tag": rule["tag"]}],
                }
                yield (t["raw"] if "raw" in t else json.dumps(doc)).encode() + b"\r\n"
                yield b"\r\n"
            if call == 2:
                raise ConnectionResetError("fake: connection dropped")  # mid-stream drop
            while True:
                await asyncio.sleep(0.5)
                yield b"\r\n"

        return StreamingResponse(body(), media_type="application/json")

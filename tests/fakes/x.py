"""X API v2 filtered stream: ``/2/tweets/search/stream`` and ``/2/tweets/search/stream/rules``, and
recent search ``/2/tweets/search/recent``.

https://docs.x.com/x-api/posts/filtered-stream/introduction;
https://docs.x.com/x-api/fundamentals/recovery-and-redundancy (backfill and recovery of the stream
need Enterprise access: without them, a stream only carries posts made while connected);
https://docs.x.com/x-api/posts/search/integrate/paginate (recent search: posts of the last 7 days,
newest first, ``since_id`` for polling, ``max_results`` 10-100, ``meta.next_token`` for the next page).

Scripted (default): the first stream request is refused (429), the second sends ``drop_after`` posts
and drops, later ones send the rest. Live (``live=True``): ``post()`` adds posts at any time; a
stream connection carries the posts made while it is connected; recent search serves them all.
A post matches a search query when the query is one of the rule values in its ``rules`` list.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse


class FakeX:
    def __init__(
        self,
        token: str,
        tweets: list[dict],
        existing_rules: list[str],
        drop_after: int = 2,
        live: bool = False,
    ) -> None:
        self.token = token
        self.tweets = tweets
        self.live = live
        self.posted: list[dict] = list(tweets) if live else []
        self.lock = threading.Lock()
        self.search_requests: list[dict] = []
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
        self.app.get("/2/tweets/search/recent")(self.search)

    def post(self, *tweets: dict) -> None:
        with self.lock:
            self.posted.extend(tweets)

    def _doc(self, t: dict, rule: dict) -> bytes:
        if "raw" in t:
            return t["raw"].encode()
        doc = {
            "data": {k: t[k] for k in ("id", "text", "created_at", "lang", "author_id") if k in t},
            "includes": {"users": [{"id": t["author_id"], "username": t["username"], "name": "N"}]},
            "matching_rules": [{"id": rule["id"], "tag": rule["tag"]}],
        }
        return json.dumps(doc).encode()

    async def search(self, request: Request):
        if err := self._auth(request):
            return err
        q = request.query_params
        self.search_requests.append(dict(q))
        limit = int(q.get("max_results", 10))
        if not 10 <= limit <= 100:
            return JSONResponse({"title": "Invalid Request", "detail": "max_results: 10 to 100"}, 400)
        with self.lock:
            found = [t for t in self.posted if q["query"] in t.get("rules", ())]
        found.sort(key=lambda t: int(t["id"]), reverse=True)  # newest first
        if q.get("since_id"):
            found = [t for t in found if int(t["id"]) > int(q["since_id"])]
        start = int(q.get("next_token", "0"))
        page = found[start : start + limit]
        if not page:
            return {"meta": {"result_count": 0}}
        meta = {"newest_id": page[0]["id"], "oldest_id": page[-1]["id"], "result_count": len(page)}
        if start + limit < len(found):
            meta["next_token"] = str(start + limit)
        fields = ("id", "text", "created_at", "lang", "author_id")
        return {
            "data": [{k: t[k] for k in fields if k in t} for t in page],
            "includes": {
                "users": [{"id": t["author_id"], "username": t["username"], "name": "N"} for t in page]
            },
            "meta": meta,
        }

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
        if self.live:
            return self._live()
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

    def _live(self) -> StreamingResponse:
        rule = next(iter(self.rules.values()), {"id": "0", "tag": None})
        with self.lock:
            pos = len(self.posted)  # no backfill without Enterprise access: from now on

        async def body():
            nonlocal pos
            yield b"\r\n"
            while True:
                with self.lock:
                    new, pos = self.posted[pos:], len(self.posted)
                for t in new:
                    yield self._doc(t, rule) + b"\r\n"
                await asyncio.sleep(0.05)
                yield b"\r\n"  # keep-alive

        return StreamingResponse(body(), media_type="application/json")

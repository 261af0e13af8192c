"""Bluesky Jetstream: ``GET /subscribe`` WebSocket (wantedCollections, cursor in microseconds).

https://github.com/bluesky-social/jetstream#consuming-jetstream (README at b5b059c, "Consuming
Jetstream"): ``cursor`` is a unix-microseconds time to begin playback from; an absent cursor (or one
from the future) is live-tail operation; clients resume with the ``time_us`` of their last event.

The fake keeps a log of posted messages ordered by ``time_us``. A connection with a cursor gets the
log from that time on, then the live tail; one without gets only what is posted after it connected.
``messages`` given at construction are posted when the first subscriber is accepted; ``post()``
adds messages at any time (also while no client is connected), as the network keeps posting.
"""

from __future__ import annotations

import asyncio
import json
import threading

from fastapi import FastAPI, WebSocket


class FakeJetstream:
    def __init__(
        self, messages: list[dict] = (), drop_after: int | None = None, refuse_first: bool = False
    ) -> None:
        self.initial = sorted(messages, key=lambda m: m["time_us"])
        self.log: list[dict] = []
        self.lock = threading.Lock()
        self.drop_after = drop_after  # close the first connection after this many messages
        self.refuse_first = refuse_first  # answer the first handshake with 429
        self.connections: list[dict] = []
        self.accepted = 0
        self.app = FastAPI()
        self.app.add_api_websocket_route("/subscribe", self.subscribe)

    def post(self, *messages: dict) -> None:
        with self.lock:
            for m in messages:
                if self.log and m["time_us"] < self.log[-1]["time_us"]:
                    raise ValueError("Jetstream's time_us only grows")
                self.log.append(m)

    async def subscribe(self, ws: WebSocket) -> None:
        params = dict(ws.query_params)
        params["wantedCollections"] = ws.query_params.getlist("wantedCollections")
        self.connections.append(params)
        if self.refuse_first and len(self.connections) == 1:
            from starlette.responses import Response

            await ws.send_denial_response(Response("rate limited", status_code=429))
            return
        await ws.accept()
        self.accepted += 1
        first = self.accepted == 1
        cursor = int(params["cursor"]) if params.get("cursor") else None
        with self.lock:
            if cursor is None:
                pos = len(self.log)  # live tail
            else:
                pos = next((i for i, m in enumerate(self.log) if m["time_us"] >= cursor), len(self.log))
        if first and self.initial:
            self.post(*self.initial)
        wanted = set(params["wantedCollections"])
        sent = 0
        while True:
            with self.lock:
                batch, pos = self.log[pos:], len(self.log)
            if not batch:
                await asyncio.sleep(0.02)
                continue
            for m in batch:
                coll = (m.get("commit") or {}).get("collection")
                if m["kind"] == "commit" and wanted and coll not in wanted:
                    continue
                await ws.send_text(m["raw"] if "raw" in m else json.dumps(m))
                sent += 1
                if first and self.drop_after is not None and sent >= self.drop_after:
                    await ws.close(code=1011)  # server error: client must reconnect
                    return

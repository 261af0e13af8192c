"""Bluesky Jetstream: ``GET /subscribe`` WebSocket (wantedCollections, cursor in microseconds).

https://github.com/bluesky-social/jetstream#consuming-jetstream
"""

from __future__ import annotations

import asyncio
import json

from fastapi import FastAPI, WebSocket


class FakeJetstream:
    def __init__(
        self, messages: list[dict], drop_after: int | None = None, refuse_first: bool = False
    ) -> None:
        self.messages = sorted(messages, key=lambda m: m["time_us"])
        self.drop_after = drop_after  # close the first connection after this many messages
        self.refuse_first = refuse_first  # answer the first handshake with 429
        self.connections: list[dict] = []
        self.accepted = 0
        self.app = FastAPI()
        self.app.add_api_websocket_route("/subscribe", self.subscribe)

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
        wanted = set(params["wantedCollections"])
        sent = 0
        for m in self.messages:
            if cursor is not None and m["time_us"] < cursor:
                continue
            coll = (m.get("commit") or {}).get("collection")
            if m["kind"] == "commit" and wanted and coll not in wanted:
                continue
            await ws.send_text(m["raw"] if "raw" in m else json.dumps(m))
            sent += 1
            if first and self.drop_after is not None and sent >= self.drop_after:
                await ws.close(code=1011)  # server error: client must reconnect
                return
        while True:  # live tail: nothing more
            await asyncio.sleep(3600)

"""Reddit: ``POST /api/v1/access_token`` (client credentials) and ``GET /r/{subs}/comments`` listings.

https://github.com/reddit-archive/reddit/wiki/OAuth2 and https://www.reddit.com/dev/api#GET_comments
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse


class FakeReddit:
    def __init__(self, client_id: str, secret: str, comments: list[dict], per_request: int = 3) -> None:
        self.client_id, self.secret = client_id, secret
        self.comments = comments  # oldest first
        self.per_request = per_request
        self.revealed = 0
        self.listing_calls = 0
        self.paths: list[str] = []
        self.app = FastAPI()
        self.app.post("/api/v1/access_token")(self.token)
        self.app.get("/r/{subs}/comments")(self.listing)
        self.app.get("/r/{subs}/comments/")(self.listing)

    async def token(self, request: Request):
        expected = base64.b64encode(f"{self.client_id}:{self.secret}".encode()).decode()
        if request.headers.get("authorization") != f"Basic {expected}":
            return JSONResponse({"message": "Unauthorized", "error": 401}, 401)
        form = parse_qs((await request.body()).decode())
        if form.get("grant_type") != ["client_credentials"]:
            return JSONResponse({"error": "unsupported_grant_type"}, 400)
        return {
            "access_token": "fake-access-token",
            "token_type": "bearer",
            "expires_in": 86400,
            "scope": "*",
        }

    async def listing(self, subs: str, request: Request):
        if request.headers.get("authorization") != "bearer fake-access-token":
            return JSONResponse({"message": "Unauthorized", "error": 401}, 401)
        self.listing_calls += 1
        self.paths.append(f"/r/{subs}/comments")
        headers = {
            "x-ratelimit-remaining": "99",
            "x-ratelimit-used": str(self.listing_calls),
            "x-ratelimit-reset": "60",
        }
        if self.listing_calls == 2:
            return JSONResponse(
                {"message": "Too Many Requests", "error": 429}, 429, headers={**headers, "retry-after": "1"}
            )
        self.revealed = min(len(self.comments), self.revealed + self.per_request)
        newest_first = list(reversed(self.comments[: self.revealed]))[
            : int(request.query_params.get("limit", 100))
        ]
        children = [{"kind": "t1", "data": c} for c in newest_first]
        return JSONResponse(
            {
                "kind": "Listing",
                "data": {"after": None, "before": None, "dist": len(children), "children": children},
            },
            headers=headers,
        )

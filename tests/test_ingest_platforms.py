"""Reddit, Mastodon, Bluesky and X producers: the real client code against local fakes of each API,
including rate-limit answers and dropped connections, publishing to the real broker."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime

import pytest
from streamotion_ingest.context import Context, find_source
from streamotion_ingest.run import make_publisher, pump

from streamotion.events import Event
from tests.fakes.server import Served
from tests.ingest_helpers import make_pipeline, read_all, values


def _acked(p, name: str, metric: str = "produced") -> float:
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value(
        f"streamotion_producer_events_{metric}_total", {"pipeline": p.name, "source": name}
    )
    return value or 0.0


def _run_until(p, name, kafka, env: dict[str, str], until, timeout: float = 90):
    """Run the source in a thread until ``until()`` holds (or timeout), then stop and flush."""
    publisher = make_publisher(p, name, kafka.bootstrap)
    ctx = Context(
        pipeline=p.name, source=find_source(p, name), metrics=publisher.metrics, backoff_scale=0.02, env=env
    )
    errors: list[BaseException] = []

    def target():
        try:
            pump(ctx, publisher)
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not until() and t.is_alive():
        time.sleep(0.1)
    ctx.stop.set()
    t.join(30)
    assert publisher.close(30) == 0
    if errors:
        raise errors[0]
    return ctx


def _reconnects(ctx) -> float:
    from prometheus_client import REGISTRY

    total = 0.0
    for metric in REGISTRY.collect():
        if metric.name == "streamotion_producer_reconnects":
            for s in metric.samples:
                if (
                    s.name.endswith("_total")
                    and s.labels["source"] == ctx.source.name
                    and s.labels["pipeline"] == ctx.pipeline
                ):
                    total += s.value
    return total


# ---------------------------------------------------------------------------------------------- bluesky
def _post(i: int, text: str, did: str = "did:plc:abc", langs=("en",)) -> dict:
    return {
        "did": did,
        "time_us": 1_700_000_000_000_000 + i * 1_000_000,
        "kind": "commit",
        "commit": {
            "rev": f"r{i}",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"rk{i}",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": text,
                "createdAt": "2024-05-01T12:00:00.000Z",
                "langs": list(langs),
            },
            "cid": f"c{i}",
        },
    }


def test_bluesky_jetstream_resumes_from_cursor(kafka, tmp_path):
    from tests.fakes.jetstream import FakeJetstream

    msgs = [_post(i, f"post number {i}") for i in range(1, 9)]
    msgs.append({"did": "did:plc:x", "time_us": 1_700_000_000_500_000, "kind": "identity", "identity": {}})
    like = _post(20, "ignored")
    like["commit"]["collection"] = "app.bsky.feed.like"
    delete = _post(21, "gone")
    delete["commit"]["operation"] = "delete"
    msgs += [like, delete, {"time_us": 1_700_000_030_000_000, "kind": "garbage", "raw": "{broken json"}]
    msgs.append(_post(30, "", langs=()))  # image-only post: nothing to classify
    fake = FakeJetstream(msgs, drop_after=4, refuse_first=True)
    with Served(fake.app) as srv:
        p, _, topics = make_pipeline(
            kafka,
            tmp_path,
            [
                {
                    "name": "sky",
                    "type": "bluesky",
                    "bluesky": {"endpoint": srv.url.replace("http", "ws") + "/subscribe"},
                }
            ],
        )
        _run_until(
            p,
            "sky",
            kafka,
            {},
            until=lambda: _acked(p, "sky") >= 8 and _acked(p, "sky", "dead_lettered") >= 1,
        )
    evs = values(read_all(kafka.bootstrap, topics["raw"]))
    assert sorted(e["text"] for e in evs) == sorted(
        f"post number {i}" for i in range(1, 9)
    )  # no loss, no duplicates
    e1 = next(e for e in evs if e["text"] == "post number 1")
    assert e1["id"] == "at://did:plc:abc/app.bsky.feed.post/rk1" and e1["lang"] == "en"
    assert e1["url"] == "https://bsky.app/profile/did:plc:abc/post/rk1"
    assert fake.connections[0]["wantedCollections"] == ["app.bsky.feed.post"]
    # after the drop, it resumed from (just before) the last cursor it had seen
    assert "cursor" not in fake.connections[1]
    resumed = int(fake.connections[2]["cursor"])
    assert 1_700_000_000_000_000 < resumed <= 1_700_000_004_000_000
    dead = values(read_all(kafka.bootstrap, topics["deadLetter"]))
    assert [d["payload"] for d in dead] == ["{broken json"] and "not JSON" in dead[0]["reason"]


# ---------------------------------------------------------------------------------------------- x
def test_x_filtered_stream_syncs_rules_and_reconnects(kafka, tmp_path):
    from tests.fakes.x import FakeX

    tweets = [
        {
            "id": str(1000 + i),
            "text": f"tweet {i} about covid",
            "created_at": "2024-05-01T12:00:00.000Z",
            "lang": "en",
            "author_id": f"u{i}",
            "username": f"user{i}",
        }
        for i in range(5)
    ]
    tweets.insert(3, {"raw": '{"data": {"text": "no id"}}', "author_id": "u", "username": "u"})
    fake = FakeX("x-test-token", tweets, existing_rules=["old rule", "covid lang:en"], drop_after=2)
    with Served(fake.app) as srv:
        p, _, topics = make_pipeline(
            kafka,
            tmp_path,
            [{"name": "tw", "type": "x", "x": {"rules": ["covid lang:en", "flu"], "bearerTokenSecret": "x"}}],
        )
        env = {"X_BEARER_TOKEN": "x-test-token", "STREAMOTION_X_API_URL": srv.url}
        ctx = _run_until(
            p, "tw", kafka, env, until=lambda: _acked(p, "tw") >= 5 and _acked(p, "tw", "dead_lettered") >= 1
        )
    evs = values(read_all(kafka.bootstrap, topics["raw"]))
    assert sorted(e["id"] for e in evs) == [str(1000 + i) for i in range(5)]
    e = next(e for e in evs if e["id"] == "1000")
    Event.model_validate(e)
    assert e["url"] == "https://x.com/user0/status/1000" and e["author"] != "user0" and e["lang"] == "en"
    assert sorted(r["value"] for r in fake.rules.values()) == ["covid lang:en", "flu"]
    assert fake.rule_requests[0] == {"delete": {"ids": ["100"]}}
    assert fake.stream_calls >= 3  # 429, then a dropped stream, then a healthy one
    assert _reconnects(ctx) >= 2
    dead = values(read_all(kafka.bootstrap, topics["deadLetter"]))
    assert len(dead) == 1 and "data.id" in dead[0]["reason"]


def test_x_wrong_token_fails_clearly(kafka, tmp_path):
    from tests.fakes.x import FakeX

    fake = FakeX("right", [], existing_rules=[])
    with Served(fake.app) as srv:
        p, _, _ = make_pipeline(
            kafka, tmp_path, [{"name": "tw", "type": "x", "x": {"rules": ["a"], "bearerTokenSecret": "x"}}]
        )
        with pytest.raises(Exception, match="401"):
            _run_until(
                p,
                "tw",
                kafka,
                {"X_BEARER_TOKEN": "wrong", "STREAMOTION_X_API_URL": srv.url},
                until=lambda: False,
                timeout=20,
            )


# ---------------------------------------------------------------------------------------------- mastodon
def _status(i: int, html: str, **kw) -> dict:
    return {
        "id": str(i),
        "uri": f"https://fake.social/users/a/statuses/{i}",
        "url": f"https://fake.social/@a/{i}",
        "created_at": "2024-05-01T12:00:00.000Z",
        "content": html,
        "language": "en",
        "spoiler_text": "",
        "visibility": "public",
        "reblog": None,
        "account": {
            "id": "1",
            "acct": f"user{i}@fake.social",
            "username": f"user{i}",
            "url": "https://fake.social/@a",
        },
        **kw,
    }


def test_mastodon_stream_html_boosts_and_reconnects(kafka, tmp_path):
    from tests.fakes.mastodon import FakeMastodon

    s1 = _status(
        1, "<p>Hello <a href='https://fake.social/tags/joy'>#<span>joy</span></a><br>world</p><p>second</p>"
    )
    s2 = _status(2, "<p>I am so happy today</p>")
    boost = _status(3, "", reblog=s1)  # a boost of s1: published once
    s4 = _status(4, '<p>Boosted <span class="invisible">https://</span>original</p>')
    boost_new = _status(5, "", reblog=_status(6, "<p>seen first as a boost</p>"))
    fake = FakeMastodon([s1, s2, boost, s4, boost_new], token="m-token", drop_after=2)
    with Served(fake.app) as srv:
        p, _, topics = make_pipeline(
            kafka,
            tmp_path,
            [
                {
                    "name": "masto",
                    "type": "mastodon",
                    "mastodon": {
                        "instance": srv.url,
                        "timeline": "hashtag",
                        "hashtags": ["joy"],
                        "accessTokenSecret": "m",
                    },
                }
            ],
        )
        ctx = _run_until(
            p, "masto", kafka, {"MASTODON_ACCESS_TOKEN": "m-token"}, until=lambda: _acked(p, "masto") >= 4
        )
    evs = {e["id"]: e for e in values(read_all(kafka.bootstrap, topics["raw"]))}
    assert set(evs) == {f"https://fake.social/users/a/statuses/{i}" for i in (1, 2, 4, 6)}
    assert evs["https://fake.social/users/a/statuses/1"]["text"] == "Hello #joy\nworld\n\nsecond"
    assert evs["https://fake.social/users/a/statuses/4"]["text"] == "Boosted original"
    assert evs["https://fake.social/users/a/statuses/1"]["channel"] == "#joy"
    assert all(r.startswith("/api/v1/streaming/hashtag?tag=joy") for r in fake.requests)
    assert len(fake.requests) >= 3  # 429, dropped, healthy
    assert _reconnects(ctx) >= 2


# ---------------------------------------------------------------------------------------------- reddit
def _comment(i: int, body: str, author: str | None = "someone", sub: str = "python") -> dict:
    return {
        "id": f"c{i}",
        "name": f"t1_c{i}",
        "body": body,
        "author": author if author is not None else "[deleted]",
        "subreddit": sub,
        "subreddit_id": "t5_x",
        "created_utc": 1_714_564_800 + i,
        "permalink": f"/r/{sub}/comments/p1/t/c{i}/",
        "link_id": "t3_p1",
        "parent_id": "t3_p1",
    }


def test_reddit_praw_stream_skips_deleted_and_survives_429(kafka, tmp_path):
    from tests.fakes.reddit import FakeReddit

    comments = [
        _comment(1, "first comment"),
        _comment(2, "[deleted]", author=None),
        _comment(3, "second comment", sub="learnpython"),
        _comment(4, "[removed]"),
        _comment(5, "third comment"),
        _comment(6, "fourth comment"),
        _comment(7, "fifth comment"),
    ]
    fake = FakeReddit("cid", "csecret", comments, per_request=3)
    with Served(fake.app) as srv:
        p, _, topics = make_pipeline(
            kafka,
            tmp_path,
            [
                {
                    "name": "rd",
                    "type": "reddit",
                    "reddit": {"subreddits": ["python", "learnpython"], "credentialsSecret": "r"},
                }
            ],
        )
        env = {
            "REDDIT_CLIENT_ID": "cid",
            "REDDIT_CLIENT_SECRET": "csecret",
            "REDDIT_USER_AGENT": "streamotion-test/1.0",
            "STREAMOTION_REDDIT_URL": srv.url,
            "STREAMOTION_REDDIT_OAUTH_URL": srv.url,
        }
        ctx = _run_until(p, "rd", kafka, env, until=lambda: _acked(p, "rd") >= 5)
    evs = {e["id"]: e for e in values(read_all(kafka.bootstrap, topics["raw"]))}
    assert set(evs) == {"c1", "c3", "c5", "c6", "c7"}  # deleted and removed skipped, no duplicates
    assert (
        evs["c3"]["channel"] == "learnpython"
        and evs["c1"]["url"] == "https://www.reddit.com/r/python/comments/p1/t/c1/"
    )
    assert datetime.fromisoformat(evs["c1"]["created_at"]) == datetime.fromtimestamp(1_714_564_801, UTC)
    assert fake.paths[0] == "/r/python+learnpython/comments"
    assert fake.listing_calls >= 3 and _reconnects(ctx) >= 1  # the 429 restarted the stream
    assert json.loads(json.dumps(evs["c1"]))["author"] != "someone"

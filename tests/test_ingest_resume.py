"""Restart gaps at the sources: a producer process is killed (SIGKILL: nothing local survives) while
the platform keeps posting, then started again; everything posted while it was down still reaches
the raw topic. Real `streamotion produce` processes, the real broker, and local fakes that follow each
platform's documented API (tests/fakes/).

- Bluesky: Jetstream's ``cursor`` (unix microseconds; bluesky-social/jetstream README "Consuming
  Jetstream"), recovered from the raw topic's last records of the source.
- Mastodon: streaming has no resume point; the gap is read over REST (timelines with ``min_id``).
- X: the filtered stream resumes only with Enterprise access; the gap is read with recent search
  (``since_id``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

from streamotion.events import Event
from tests.fakes.server import Served
from tests.ingest_helpers import make_pipeline, read_all

BASE_US = 1_760_000_000_000_000


def _start(kafka, path, source: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "streamotion",
            "produce",
            "--source",
            source,
            "--pipeline",
            str(path),
            "--metrics-port",
            "0",
        ],
        env={
            **os.environ,
            "STREAMOTION_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "STREAMOTION_BACKOFF_SCALE": "0.02",
            **env,
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait(predicate, what: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"producer exited ({proc.returncode}) waiting for {what}: {proc.stderr.read()[-3000:]}"
            )
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ids(kafka, topic: str) -> list[str]:
    return [Event.model_validate_json(m.value()).id for m in read_all(kafka.bootstrap, topic, timeout=10)]


def _wait_ids(kafka, topic: str, expected: set[str], proc: subprocess.Popen, timeout: float = 90) -> set[str]:
    got: set[str] = set()

    def enough() -> bool:
        got.clear()
        got.update(_ids(kafka, topic))
        return expected <= got

    try:
        _wait(enough, f"{len(expected)} events", proc, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; missing {sorted(expected - got)}") from None
    return got


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)


def _stop(proc: subprocess.Popen) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.stderr.read()


# ---------------------------------------------------------------------------------------------- bluesky
def _post(i: int) -> dict:
    return {
        "did": "did:plc:abc",
        "time_us": BASE_US + i * 1_000_000,
        "kind": "commit",
        "commit": {
            "rev": f"r{i}",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": f"rk{i}",
            "record": {
                "$type": "app.bsky.feed.post",
                "text": f"post {i}",
                "createdAt": "2025-10-09T09:00:00Z",
            },
            "cid": f"c{i}",
        },
    }


def test_bluesky_restart_resumes_from_the_raw_topic_cursor(kafka, tmp_path):
    from tests.fakes.jetstream import FakeJetstream

    fake = FakeJetstream()
    with Served(fake.app) as srv:
        endpoint = srv.url.replace("http", "ws") + "/subscribe"
        _p, path, topics = make_pipeline(
            kafka, tmp_path, [{"name": "sky", "type": "bluesky", "bluesky": {"endpoint": endpoint}}]
        )
        uri = "at://did:plc:abc/app.bsky.feed.post/rk{}".format
        expect = {uri(i) for i in range(1, 11)}
        first = _start(kafka, path, "sky", {})
        try:
            _wait(lambda: fake.accepted >= 1, "the first subscription", first)
            fake.post(*(_post(i) for i in range(1, 4)))
            _wait_ids(kafka, topics["raw"], {uri(1), uri(2), uri(3)}, first)
        finally:
            _kill(first)
        fake.post(*(_post(i) for i in range(4, 8)))  # while the producer is down
        second = _start(kafka, path, "sky", {})
        try:
            _wait(lambda: fake.accepted >= 2, "the second subscription", second)
            fake.post(*(_post(i) for i in range(8, 11)))
            got = _wait_ids(kafka, topics["raw"], expect, second)
        finally:
            logs = _stop(second)
    assert got == expect, logs[-2000:]
    assert "cursor" not in fake.connections[0]  # a first start: live tail
    resumed = int(fake.connections[1]["cursor"])  # after the restart: the last published post, rewound
    assert BASE_US + 1_000_000 <= resumed <= BASE_US + 3_000_000


# ---------------------------------------------------------------------------------------------- mastodon
def _status(i: int, tag: str = "joy") -> dict:
    return {
        "id": str(110_000_000_000_000_000 + i),
        "uri": f"https://fake.social/users/a/statuses/{i}",
        "url": f"https://fake.social/@a/{i}",
        "created_at": "2025-10-09T09:00:00.000Z",
        "content": f"<p>status {i} #{tag}</p>",
        "language": "en",
        "spoiler_text": "",
        "visibility": "public",
        "reblog": None,
        "tags": [{"name": tag, "url": f"https://fake.social/tags/{tag}"}],
        "account": {"id": "1", "acct": "a", "username": "a", "url": "https://fake.social/@a"},
    }


def test_mastodon_restart_catches_up_over_rest(kafka, tmp_path):
    from tests.fakes.mastodon import FakeMastodon

    fake = FakeMastodon(token="m-token", live=True)
    fake.post(_status(0))  # before the pipeline existed: not ours to collect
    with Served(fake.app) as srv:
        _p, path, topics = make_pipeline(
            kafka,
            tmp_path,
            [
                {
                    "name": "masto",
                    "type": "mastodon",
                    "mastodon": {
                        "instance": srv.url,
                        "timeline": "hashtag",
                        "hashtags": ["joy", "sad"],
                        "accessTokenSecret": "m",
                    },
                }
            ],
        )
        env = {"MASTODON_ACCESS_TOKEN": "m-token"}
        uri = "https://fake.social/users/a/statuses/{}".format
        first = _start(kafka, path, "masto", env)
        try:
            _wait(lambda: len(fake.requests) >= 2, "both hashtag streams", first)
            time.sleep(0.5)
            fake.post(_status(1), _status(2, "sad"), _status(3))
            _wait_ids(kafka, topics["raw"], {uri(1), uri(2), uri(3)}, first)
        finally:
            _kill(first)
        # while the producer is down: 45 statuses (more than one page of 40) and one on #sad
        fake.post(*(_status(i) for i in range(4, 49)), _status(49, "sad"))
        second = _start(kafka, path, "masto", env)
        try:
            _wait(lambda: len(fake.requests) >= 4, "the streams of the new producer", second)
            time.sleep(0.5)
            fake.post(_status(50), _status(51, "sad"))
            expect = {uri(i) for i in range(1, 52)}
            got = _wait_ids(kafka, topics["raw"], expect, second)
        finally:
            logs = _stop(second)
    assert got == expect, logs[-2000:]  # status 0 predates the pipeline: not fetched
    caught_up = [r for r in fake.timeline_requests if "min_id=" in r]
    assert any(r.startswith("/api/v1/timelines/tag/joy") for r in caught_up)
    assert any(r.startswith("/api/v1/timelines/tag/sad") for r in caught_up)
    assert all("limit=40" in r for r in caught_up)


# ---------------------------------------------------------------------------------------------- x
def _tweet(i: int) -> dict:
    return {
        "id": str(1_900_000_000_000_000_000 + i),
        "text": f"tweet {i} about covid",
        "created_at": "2025-10-09T09:00:00.000Z",
        "lang": "en",
        "author_id": f"u{i}",
        "username": f"user{i}",
        "rules": ["covid lang:en"],
    }


def test_x_restart_catches_up_with_recent_search(kafka, tmp_path):
    from tests.fakes.x import FakeX

    fake = FakeX("x-token", [], existing_rules=[], live=True)
    with Served(fake.app) as srv:
        _p, path, topics = make_pipeline(
            kafka,
            tmp_path,
            [{"name": "tw", "type": "x", "x": {"rules": ["covid lang:en"], "bearerTokenSecret": "x"}}],
        )
        env = {"X_BEARER_TOKEN": "x-token", "STREAMOTION_X_API_URL": srv.url}
        first = _start(kafka, path, "tw", env)
        try:
            _wait(lambda: fake.stream_calls >= 1, "the stream", first)
            time.sleep(0.3)
            fake.post(*(_tweet(i) for i in range(1, 4)))
            _wait_ids(kafka, topics["raw"], {_tweet(i)["id"] for i in range(1, 4)}, first)
        finally:
            _kill(first)
        fake.post(*(_tweet(i) for i in range(4, 130)))  # while down: more than one page of 100
        second = _start(kafka, path, "tw", env)
        try:
            _wait(lambda: fake.stream_calls >= 2, "the new stream", second)
            time.sleep(0.3)
            fake.post(_tweet(130), _tweet(131))
            expect = {_tweet(i)["id"] for i in range(1, 132)}
            got = _wait_ids(kafka, topics["raw"], expect, second)
        finally:
            logs = _stop(second)
    assert got == expect, logs[-2000:]
    searches = fake.search_requests
    assert searches and searches[0]["since_id"] == _tweet(3)["id"] and searches[0]["query"] == "covid lang:en"
    assert any("next_token" in s for s in searches)  # paginated


def test_resume_reads_only_its_own_source(kafka, tmp_path):
    """The tail reader skips other sources' records and looks further back when needed."""
    from streamotion_ingest.publisher import Positioned, Publisher
    from streamotion_ingest.resume import last_cursors

    p, _, topics = make_pipeline(
        kafka, tmp_path, [{"name": "a", "type": "replay", "replay": {}}], partitions=2
    )
    pub = Publisher(kafka.bootstrap, topics["raw"], topics["deadLetter"], pipeline=p.name, source="x")

    def ev(source: str, i: int) -> Event:
        return Event(id=str(i), source=source, platform="http", text="t", created_at="2025-01-01T00:00:00Z")

    for i in range(5):
        pub.publish(Positioned(ev("mine", i), str(i)))
    for i in range(2000):  # a busy neighbour: the tail holds only its records
        pub.publish(ev("other", i), cursor="999")
    assert pub.close(30) == 0
    cursors = last_cursors(kafka.bootstrap, topics["raw"], "mine", first_window=16)
    assert cursors and max(int(c) for c in cursors) == 4
    assert last_cursors(kafka.bootstrap, topics["raw"], "nobody", first_window=16, max_scan=500) == []
    assert json.loads(json.dumps(cursors))  # plain strings


def test_resume_waits_for_kafka_instead_of_starting_without_a_cursor():
    """Starting without a cursor would silently skip the gap: an unreadable raw topic is retried."""
    from streamotion_ingest.context import Context
    from streamotion_ingest.metrics import SourceMetrics
    from streamotion_ingest.resume import ResumeUnavailable

    from streamotion.api.validate import parse
    from tests.ingest_helpers import pipeline_doc

    p = parse(pipeline_doc([{"name": "sky", "type": "bluesky", "bluesky": {}}]))
    calls = []

    def recover():
        calls.append(1)
        if len(calls) < 3:
            raise ResumeUnavailable("all brokers down")
        return ["1760000000000000"]

    ctx = Context(
        pipeline=p.name, source=p.spec.sources[0], metrics=SourceMetrics(p.name, "sky"), backoff_scale=0.01
    )
    ctx.recover = recover
    assert ctx.last_cursors() == ["1760000000000000"] and len(calls) == 3
    ctx.recover = lambda: (_ for _ in ()).throw(ResumeUnavailable("down"))
    ctx.stop.set()
    assert ctx.last_cursors() == []  # stopping while Kafka is down: nothing to resume, no hang

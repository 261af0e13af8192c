"""The job's pieces without Spark: text preparation, parsing, sentiment, the watermark policy, the
model client's retries (against a real local HTTP server) and the sinks' idempotence on a real
PostgreSQL and bqemulator."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd
import pytest
from streamotion_jobs.classify import ModelClient, ModelUnavailable
from streamotion_jobs.config import JobConfig, checkpoint_location, parse_duration
from streamotion_jobs.sinks import US, Batch, next_watermark, with_windows
from streamotion_jobs.text import clean_text, hashtags, terms
from streamotion_jobs.transform import enrich, parse_frame, parse_one, sentiment_index

from streamotion.events import Event
from streamotion.labels import EKMAN

BASE = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


# ---------------------------------------------------------------------------------------- text
def test_clean_text_unescapes_entities_drops_urls_mentions_and_whitespace_keeping_hashtag_words():
    raw = "I &amp; you  love it!! @bob @alice@mastodon.social see https://x.co/a?b=1 www.y.org #Happy\n\nok"
    assert clean_text(raw) == "I & you love it!! see Happy ok"


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("I <3 you so much >.< really", "I <3 you so much >.< really"),
        ("I &lt;3 you &gt;:( so much", "I <3 you >:( so much"),  # X and Reddit send entities
        ("love it <3 <3 :) :-( ;P xD", "love it <3 <3 :) :-( ;P xD"),
        ("so happy 😂😂 🎉 ❤️ #party", "so happy 😂😂 🎉 ❤️ party"),
        ("a < b and c > d, 1<2>3", "a < b and c > d, 1<2>3"),
        ("<3 <333 </3 >_< <(^_^)> >:-)", "<3 <333 </3 >_< <(^_^)> >:-)"),
    ],
)
def test_clean_text_keeps_angle_brackets_emoticons_and_emoji(raw, clean):
    """The producers convert HTML to text (Mastodon's ``html_to_text``): the job must not strip
    "tags" again, which would eat everything between a ``<3`` and a later ``>``."""
    assert clean_text(raw) == clean


def test_hashtags_are_distinct_lowercase_in_order():
    assert hashtags("#Happy day #sad #happy &#39; C#sharp a#b #été") == ["happy", "sad", "été"]


def test_terms_drop_stopwords_of_the_language_and_short_words():
    assert terms("I really love the new phone, it is great", "en") == ["love", "new", "phone", "great"]
    assert terms("Das ist wirklich sehr schön", "de") == ["wirklich", "schön"]
    assert terms("le chat est très content", "fr") == ["chat", "content"]
    assert terms("unknown language the words", None) == ["unknown", "language", "words"]


# ------------------------------------------------------------------------------------- parsing
def _event(**kw) -> Event:
    base = dict(id="1", source="s", platform="http", text="hello #x", created_at=BASE)
    return Event(**{**base, **kw})


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (None, "empty message"),
        (b"\xff\xfe", "not UTF-8"),
        (b"{not json", "not JSON"),
        (b'"a string"', "not a JSON object"),
        (b'{"id": "1"}', "source: Field required"),
        (
            json.dumps(
                {"id": "1", "source": "s", "platform": "http", "text": "x", "created_at": "nope"}
            ).encode(),
            "created_at:",
        ),
    ],
)
def test_parse_one_names_the_reason(payload, reason):
    event, error, _ = parse_one(payload)
    assert event is None and reason in error


def test_parse_frame_keeps_position_payload_and_derived_fields():
    good = _event(text="Great news @x #Win https://a.b", lang="en").to_json()
    raw = pd.DataFrame({"value": [good, b"oops"], "topic": ["t", "t"], "partition": [1, 1], "offset": [7, 8]})
    out = parse_frame(raw)
    ok, bad = out.iloc[0], out.iloc[1]
    assert ok["event_id"] == "s:http:1" and ok["error"] is None
    assert ok["clean_text"] == "Great news Win" and list(ok["hashtags"]) == ["win"]
    assert ok["created_at_us"] == int(BASE.timestamp() * US)
    assert bad["error"].startswith("not JSON") and bad["payload"] == "oops" and bad["kafka_offset"] == 8


def _raw(*values: bytes) -> pd.DataFrame:
    n = len(values)
    return pd.DataFrame({"value": list(values), "topic": ["t"] * n, "partition": [0] * n, "offset": range(n)})


@pytest.mark.parametrize(
    "text", ["   ", "\n\t \u3000", "https://x.co/a @bob", "@alice@mastodon.social  www.y.org"]
)
def test_text_empty_after_cleaning_is_a_dead_letter_with_its_own_reason(text):
    from streamotion_jobs.transform import EMPTY_TEXT_REASON

    empty = _event(text=text).to_json()
    out = parse_frame(_raw(empty, _event(id="2", text="fine :)").to_json()))
    assert out["error"].tolist() == [EMPTY_TEXT_REASON, None]
    assert out["payload"][0] == empty.decode()  # the original, to re-publish
    assert out["clean_text"][1] == "fine :)"


def test_event_time_more_than_max_future_skew_ahead_is_a_dead_letter():
    now = datetime.now(UTC)
    cases = {
        "ok-9m": _event(id="a", created_at=now + timedelta(minutes=9), ingested_at=now),
        "ahead-11m": _event(id="b", created_at=now + timedelta(minutes=11), ingested_at=now),
        "2099": _event(id="c", created_at=datetime(2099, 1, 1, tzinfo=UTC), ingested_at=now),
        # a forged ingested_at does not carry it: the job's own clock bounds it too
        "forged": _event(
            id="d", created_at=datetime(2099, 1, 1, tzinfo=UTC), ingested_at=datetime(2099, 1, 1, tzinfo=UTC)
        ),
        "past": _event(id="e", created_at=BASE, ingested_at=now),
    }
    out = parse_frame(_raw(*(e.to_json() for e in cases.values())), max_future_skew_s=600)
    errors = dict(zip(cases, out["error"], strict=True))
    assert errors["ok-9m"] is None and errors["past"] is None
    for name in ("ahead-11m", "2099"):
        assert "ahead of ingested_at" in errors[name] and "processing.maxFutureSkew (600s)" in errors[name]
    assert "ahead of the job's clock" in errors["forged"]
    assert "2099-01-01" in errors["2099"]
    # without a bound (backfills read a fixed time range) every one is an event
    assert parse_frame(_raw(*(e.to_json() for e in cases.values())))["error"].isna().all()


def test_newer_contract_versions_are_read_and_unknown_fields_dropped():
    from streamotion.events import MAX_READ_VERSION

    base = json.loads(_event(text="hello there").to_json())
    newer = {**base, "id": "n", "schema_version": 2, "reply_to": "x:1", "moderation": {"nsfw": False}}
    oldest = {k: v for k, v in base.items() if k != "schema_version"} | {"id": "o"}
    beyond = {**base, "id": "b", "schema_version": MAX_READ_VERSION + 1}
    typo = {**base, "id": "t", "schema_version": "two"}
    out = parse_frame(_raw(*(json.dumps(d).encode() for d in (newer, oldest, beyond, typo))))
    assert (
        out["error"][0] is None and out["event_id"][0] == "s:http:n" and out["clean_text"][0] == "hello there"
    )
    assert list(out["dropped_fields"][0]) == ["moderation", "reply_to"]
    assert out["error"][1] is None and list(out["dropped_fields"][1]) == []
    assert f"schema_version {MAX_READ_VERSION + 1} is not readable by this job" in out["error"][2]
    assert f"reads contract versions 1 to {MAX_READ_VERSION}" in out["error"][2]
    assert "schema_version" in out["error"][3]


def _classified(*results: dict, threshold: float = 0.15) -> list[dict]:
    pdf = parse_frame(_raw(*(_event(id=str(i)).to_json() for i in range(len(results)))))
    out = enrich(pdf, list(results), threshold=threshold)
    return out[["emotion", "score", "labels", "sentiment", "sentiment_index"]].to_dict("records")


def test_single_label_result_stores_its_top_label_and_sentiment_follows_it():
    joy = dict.fromkeys(EKMAN, 0.0) | {"joy": 0.6, "anger": 0.2, "neutral": 0.2}
    # the top label is neutral; the negative ones together outweigh it, but they were not chosen
    calm = dict.fromkeys(EKMAN, 0.0) | {
        "neutral": 0.4,
        "anger": 0.2,
        "sadness": 0.15,
        "fear": 0.15,
        "joy": 0.1,
    }
    a, b = _classified(
        {"label": "joy", "score": 0.6, "scores": joy, "model_version": "m1"},
        {"label": "neutral", "score": 0.4, "scores": calm, "model_version": "m1"},
    )
    assert (a["emotion"], list(a["labels"]), a["sentiment"]) == ("joy", ["joy"], "positive")
    assert a["sentiment_index"] == pytest.approx(0.4)  # softmax: P(joy) - P(any negative), summed
    assert (b["emotion"], list(b["labels"]), b["sentiment"]) == ("neutral", ["neutral"], "neutral")
    assert sentiment_index(joy) == pytest.approx(0.4)


def test_multi_label_result_stores_serving_rule_labels_and_unbiased_sentiment():
    """Serving's rule (``streamotion_serving.model.EmotionModel.results``): every label over its
    threshold, strongest first, else the top label; ``emotion`` is the first of them."""
    sig = dict.fromkeys(EKMAN, 0.1)
    happy = sig | {"joy": 0.7, "anger": 0.3, "disgust": 0.3, "fear": 0.3, "sadness": 0.3}
    # the top score (neutral) is under its threshold, sadness and fear are over theirs; an older
    # service answered the arg-max as label: the labels decide
    sad = sig | {"neutral": 0.8, "sadness": 0.6, "fear": 0.55}
    mixed = sig | {"joy": 0.9, "anger": 0.6}
    a, b, c = _classified(
        {"label": "joy", "score": 0.7, "scores": happy, "labels": ["joy"], "model_version": "m"},
        {
            "label": "neutral",
            "score": 0.8,
            "scores": sad,
            "labels": ["sadness", "fear"],
            "model_version": "m",
        },
        {"label": "joy", "score": 0.9, "scores": mixed, "labels": ["joy", "anger"], "model_version": "m"},
    )
    # summing four negative sigmoid scores against one positive made this text negative (-0.5)
    assert a["sentiment"] == "positive" and a["sentiment_index"] == pytest.approx(0.4)
    assert (b["emotion"], list(b["labels"]), b["sentiment"]) == ("sadness", ["sadness", "fear"], "negative")
    assert b["score"] == pytest.approx(0.6)
    assert list(c["labels"]) == ["joy", "anger"] and c["sentiment_index"] == pytest.approx(0.3)
    assert c["sentiment"] == "positive"  # a mixed set follows the index beyond the threshold
    (c_strict,) = _classified(
        {"label": "joy", "score": 0.9, "scores": mixed, "labels": ["joy", "anger"], "model_version": "m"},
        threshold=0.5,
    )
    assert c_strict["sentiment"] == "neutral"


# ------------------------------------------------------------------------------------ watermark
def test_windows_and_late_flags_follow_the_watermark():
    ev = pd.DataFrame(
        {"created_at_us": [int((BASE + timedelta(seconds=s)).timestamp() * US) for s in (30, 90, 200)]}
    )
    wm = int((BASE + timedelta(minutes=2)).timestamp() * US)  # windows ending at or before 12:02 are final
    out = with_windows(ev, 60, wm)
    assert out["late"].tolist() == [True, True, False]
    assert (out["window_end_us"] - out["window_start_us"]).eq(60 * US).all()
    assert with_windows(ev, 60, None)["late"].tolist() == [False, False, False]
    assert next_watermark(None, ev, 120) == int((BASE + timedelta(seconds=80)).timestamp() * US)
    assert next_watermark(wm, ev, 120) == wm  # never moves back
    # never past the batch's processing time (a created_at in 2099 cannot push it there)
    future = pd.DataFrame({"created_at_us": [int(datetime(2099, 1, 1, tzinfo=UTC).timestamp() * US)]})
    now = int((BASE + timedelta(minutes=10)).timestamp() * US)
    assert next_watermark(None, future, 120, now_us=now) == now - 120 * US


def test_durations_and_checkpoint_location(tmp_path, monkeypatch):
    from streamotion.api.validate import parse

    assert parse_duration("500ms") == 0.5 and parse_duration("1h30m") == 5400
    with pytest.raises(ValueError):
        parse_duration("5 s")
    body = {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": "demo"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}}],
        },
    }
    p = parse(body)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(ValueError, match="--checkpoint"):
        checkpoint_location(p)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    assert checkpoint_location(p) == "/checkpoint"
    body["spec"]["processing"] = {"checkpoint": {"uri": "gs://b/ckpt"}}
    assert checkpoint_location(parse(body), str(tmp_path)) == "gs://b/ckpt"
    monkeypatch.delenv("STREAMOTION_MODEL_URL", raising=False)
    monkeypatch.delenv("STREAMOTION_KAFKA_BOOTSTRAP", raising=False)
    cfg = JobConfig.from_pipeline(p)
    assert cfg.model_url == "http://demo-model-serve-svc.default.svc:8000"
    assert cfg.bootstrap == "streamotion-kafka-bootstrap.kafka.svc:9092"
    assert cfg.topics["raw"] == "streamotion.default.demo.raw" and cfg.trigger_s == 5


# --------------------------------------------------------------------------------- model client
class _Flaky(BaseHTTPRequestHandler):
    failures = 0
    calls = 0

    def do_POST(self):
        type(self).calls += 1
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).failures > 0:
            type(self).failures -= 1
            self.send_response(503)
            self.end_headers()
            return
        results = [
            {"label": "joy", "score": 0.9, "scores": {"joy": 0.9, "neutral": 0.1}, "model_version": "v"}
            for _ in body["texts"]
        ]
        data = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Flaky.failures, _Flaky.calls = 0, 0
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_model_client_batches_and_retries_with_backoff(flaky_server):
    _Flaky.failures = 2
    client = ModelClient(flaky_server, batch_size=4, backoff_initial_s=0.05)
    out = client.classify([f"t{i}" for i in range(10)])
    assert len(out) == 10 and all(r["label"] == "joy" for r in out)
    assert _Flaky.calls == 2 + 3  # two failures, then three batches of at most 4


def test_model_client_gives_up_after_its_deadline(flaky_server):
    _Flaky.failures = 10_000
    client = ModelClient(flaky_server, deadline_s=0.5, backoff_initial_s=0.05)
    with pytest.raises(ModelUnavailable, match="unavailable"):
        client.classify(["x"])
    refused = ModelClient("http://127.0.0.1:9", deadline_s=0.3, backoff_initial_s=0.05)
    with pytest.raises(ModelUnavailable):
        refused.classify(["x"])


class _Picky(BaseHTTPRequestHandler):
    """Refuses (422, serving's message format) any request holding a text with POISON in it."""

    calls = 0

    def do_POST(self):
        type(self).calls += 1
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
        bad = [i for i, t in enumerate(texts) if "POISON" in t]
        if bad:
            body = {"message": f"body.texts.{bad[0]}: not classifiable", "detail": []}
            status = 422
        else:
            status = 200
            body = {
                "results": [
                    {"label": "joy", "score": 1.0, "scores": {"joy": 1.0}, "model_version": t} for t in texts
                ]
            }
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_model_client_isolates_refused_texts_by_bisecting():
    from streamotion_jobs.classify import ModelRefused, Refusal

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Picky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        texts = [f"t{i}" for i in range(100)]
        texts[37], texts[38], texts[90] = "POISON a", "POISON b", "POISON c"
        _Picky.calls = 0
        out = ModelClient(url, batch_size=64).classify(texts, isolate=True)
        assert len(out) == 100
        refused = {i: r for i, r in enumerate(out) if isinstance(r, Refusal)}
        assert sorted(refused) == [37, 38, 90]
        assert refused[37].reason == "model service refused the text (422): body.texts.0: not classifiable"
        assert [r["model_version"] for i, r in enumerate(out) if i not in refused] == [
            t for i, t in enumerate(texts) if i not in refused
        ]  # every other result in its text's place
        assert _Picky.calls < 40  # bisecting, not one request per text
        with pytest.raises(ModelRefused, match="422"):  # without isolate, as before: the caller decides
            ModelClient(url).classify(["POISON"])
    finally:
        server.shutdown()


class _Gated(BaseHTTPRequestHandler):
    """Holds the FIRST request until ``gate`` is set (at most 3 s); records every request's texts."""

    texts: list[list[str]] = []
    held = threading.Event()  # the first request is waiting for the gate
    answered = threading.Event()  # ... and has been answered
    gate = threading.Event()

    def do_POST(self):
        texts = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["texts"]
        cls = type(self)
        first = not cls.texts
        cls.texts.append(texts)
        if first:
            cls.held.set()
            cls.gate.wait(3)
        results = [{"label": "joy", "score": 1.0, "scores": {"joy": 1.0}, "model_version": t} for t in texts]
        data = json.dumps({"results": results}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        if first:
            cls.answered.set()

    def log_message(self, *args):
        pass


@pytest.fixture
def gated_server():
    _Gated.texts = []
    for e in (_Gated.held, _Gated.answered, _Gated.gate):
        e.clear()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Gated)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_processor_parses_the_next_arrow_batch_while_the_model_classifies_this_one(gated_server):
    """Within a partition, batch k's model call is in flight while batch k+1 is read and parsed
    (ModelClient.submit); the output stays in input order."""
    from streamotion_jobs.transform import processor

    seen: dict[str, bool] = {}

    def batches():
        yield _raw(*(_event(id=f"a{i}", text=f"first {i}").to_json() for i in range(3)))
        # asked for batch 1: batch 0's request must be at the service and not answered yet
        seen["overlap"] = _Gated.held.wait(3) and not _Gated.answered.is_set()
        _Gated.gate.set()
        yield _raw(b"oops", *(_event(id=f"b{i}", text=f"second {i}").to_json() for i in range(2)))

    out = pd.concat(list(processor(gated_server, 0.15, batch_size=64)(batches())), ignore_index=True)
    assert seen["overlap"] is True
    assert out["id"].tolist() == ["a0", "a1", "a2", "b0", "b1", None]  # batch by batch, in order
    assert out["model_version"].tolist()[:5] == ["first 0", "first 1", "first 2", "second 0", "second 1"]
    assert out["error"].tolist()[5].startswith("not JSON")
    assert _Gated.texts == [["first 0", "first 1", "first 2"], ["second 0", "second 1"]]


def test_the_model_client_cuts_texts_to_the_pipelines_max_length(gated_server, tmp_path):
    """spec.model.maxLength reaches the job's model client: a long text is cut on the client
    (streamotion.model_api.truncate_text: at most 16 * maxLength + 256 characters)."""
    from streamotion_jobs.transform import processor

    from streamotion.api.validate import parse

    body = {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": "short", "namespace": "ns1"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}}],
            "model": {"maxLength": 16},
        },
    }
    cfg = JobConfig.from_pipeline(parse(body), checkpoint=str(tmp_path / "ckpt"))
    assert cfg.model_max_length == 16
    _Gated.gate.set()
    long_text = " ".join(f"word{i}" for i in range(2000))  # ~17,000 characters
    fn = processor(gated_server, 0.15, max_length=cfg.model_max_length)
    out = pd.concat(list(fn(iter([_raw(_event(text=long_text).to_json())]))))
    assert out["error"].isna().all() and out["text"].tolist() == [long_text]  # stored whole
    (sent,) = _Gated.texts
    assert long_text.startswith(sent[0]) and 16 <= len(sent[0]) <= 16 * 16 + 256


# ------------------------------------------------------------------------------------- sinks
def _batch(batch_id: int, ids: range, minutes: float = 0, dead: int = 0, query: str = "q1") -> Batch:
    events = [
        _event(
            id=f"u{i}",
            text=f"so happy #tag{i % 2} wonderful day",
            author=f"a{i % 3}",
            lang="en",
            created_at=BASE + timedelta(minutes=minutes, seconds=i),
        ).to_json()
        for i in ids
    ]
    values = events + [b"broken"] * dead
    raw = pd.DataFrame(
        {
            "value": values,
            "topic": "t",
            "partition": 0,
            "offset": [batch_id * 1000 + k for k in range(len(values))],
        }
    )
    parsed = parse_frame(raw)
    ok = parsed[parsed["error"].isna()].reset_index(drop=True)
    bad = parsed[parsed["error"].notna()].reset_index(drop=True)
    scores = dict.fromkeys(EKMAN, 0.0) | {"joy": 0.8, "neutral": 0.2}
    results = [{"label": "joy", "score": 0.8, "scores": scores, "model_version": "m"}] * len(ok)
    return Batch(query, batch_id, enrich(ok, results, 0.15), bad, window_s=60, watermark_s=60)


def test_postgres_sink_is_idempotent_per_batch_and_per_event(postgres, pg_schema):
    from streamotion_jobs.sinks.postgres import PostgresSink

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    sink.open()  # migrations apply once
    assert sink.write(_batch(0, range(0, 20), dead=2)) is True
    assert sink.write(_batch(0, range(0, 20), dead=2)) is False  # the ledger skips a replay
    # a replay whose ledger row is gone (or a new query over old offsets) still adds nothing
    assert sink.write(_batch(0, range(0, 20), dead=2, query="q2")) is True
    assert sink.write(_batch(1, range(10, 30), minutes=1)) is True  # overlapping ids
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        n, distinct = conn.execute("SELECT count(*), count(DISTINCT event_id) FROM events").fetchone()
        assert (n, distinct) == (30, 30)
        assert conn.execute("SELECT count(*) FROM dead_letters").fetchone()[0] == 2
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 2
        stored = conn.execute("SELECT sum(events) FROM emotion_window").fetchone()[0]
        assert stored == conn.execute("SELECT count(*) FROM events WHERE NOT late").fetchone()[0]
        tags = conn.execute(
            "SELECT hashtag, sum(events) FROM hashtag_window GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert tags == [("tag0", 15), ("tag1", 15)]
        # the chosen label set beside the emotion (migration 0003)
        assert conn.execute("SELECT DISTINCT labels FROM events").fetchall() == [(["joy"],)]
    sink.close()


def test_postgres_migration_0003_adds_labels_to_rows_of_an_older_release(postgres, pg_schema):
    from psycopg import sql
    from streamotion_jobs.sinks.postgres import PostgresSink, migrations

    with postgres.connect() as conn:  # the schema as the release before 0003 left it, with a row
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(pg_schema)))
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(pg_schema)))
        conn.execute(
            "CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, "
            "applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for version, name, text in migrations():
            if version < 3:
                conn.execute(text)
                conn.execute("INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (version, name))
        conn.execute(
            "INSERT INTO events (event_id, id, source, platform, text, clean_text, created_at, text_length, emotion, "
            "score, scores, sentiment, sentiment_index, model_version, window_start, window_end) VALUES "
            "('http:old', 'old', 's', 'http', 'hi', 'hi', now(), 2, 'joy', 0.9, '{}', 'positive', 0.9, 'm', now(), now())"
        )
    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    assert sink.write(_batch(0, range(0, 3))) is True
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        rows = dict(conn.execute("SELECT event_id, labels FROM events").fetchall())
        # 0004 too: the older row's identity is source:platform:id now
        assert rows == {"s:http:old": [], "s:http:u0": ["joy"], "s:http:u1": ["joy"], "s:http:u2": ["joy"]}
    sink.close()


def _poison_ledger(execute) -> None:
    """A ledger as the job wrote it before event time was bounded: one future-dated event moved the
    watermark to 2099 (the batch was committed now)."""
    execute(
        "INSERT INTO {batches} (query_id, batch_id, events, late_events, dead_letters, watermark, committed_at) "
        "VALUES ('old', 0, 1, 0, 0, TIMESTAMP '2099-01-01 00:00:00+00', CURRENT_TIMESTAMP)"
    )


def test_postgres_sink_bounds_a_watermark_logged_from_a_future_event(postgres, pg_schema):
    from streamotion_jobs.sinks.postgres import PostgresSink

    sink = PostgresSink(postgres.dsn, schema=pg_schema, log=lambda *_: None)
    sink.open()
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        _poison_ledger(lambda sql: conn.execute(sql.format(batches="batches")))
    # today's traffic (window 1m, watermark 1m): on time, counted in the aggregates
    now = datetime.now(UTC).replace(microsecond=0)
    batch = _batch(1, range(0, 10), minutes=0)
    batch.events["created_at_us"] = int(now.timestamp() * US) + batch.events.index * US
    assert sink.write(batch) is True
    with postgres.connect(options=f"-c search_path={pg_schema}") as conn:
        assert conn.execute("SELECT count(*) FROM events WHERE late").fetchone()[0] == 0
        assert conn.execute("SELECT sum(events) FROM emotion_window").fetchone()[0] == 10
        (wm,) = conn.execute("SELECT watermark FROM batches WHERE query_id = 'q1'").fetchone()
        assert wm < now + timedelta(minutes=11)
    sink.close()


def test_bigquery_sink_is_idempotent_per_batch_and_per_event(bigquery_emulator):
    import uuid

    from streamotion_jobs.sinks.bigquery import BigQuerySink

    dataset = "u_" + uuid.uuid4().hex[:8]
    sink = BigQuerySink(
        bigquery_emulator.project, dataset, client=bigquery_emulator.client(), log=lambda *_: None
    )
    sink.open()
    assert sink.write(_batch(0, range(0, 20), dead=2)) is True
    assert sink.write(_batch(0, range(0, 20), dead=2)) is False
    assert sink.write(_batch(0, range(0, 20), dead=2, query="q2")) is True
    assert sink.write(_batch(1, range(10, 30), minutes=1)) is True
    client = bigquery_emulator.client()
    ds = f"{bigquery_emulator.project}.{dataset}"

    def one(sql):
        return next(iter(client.query(sql.format(ds=ds)).result()))[0]

    assert one("SELECT COUNT(*) FROM `{ds}.events`") == 30
    assert one("SELECT COUNT(DISTINCT event_id) FROM `{ds}.events`") == 30
    assert one("SELECT COUNT(*) FROM `{ds}.dead_letters`") == 2
    assert one("SELECT SUM(events) FROM `{ds}.emotion_window`") == one(
        "SELECT COUNT(*) FROM `{ds}.events` WHERE NOT late"
    )
    assert one("SELECT SUM(events) FROM `{ds}.hashtag_window`") == 30
    tables = {t.table_id for t in client.list_tables(ds)}
    assert not any(t.startswith("_staging") for t in tables)
    sink.close()


def test_bigquery_sink_adds_the_labels_column_to_tables_an_older_release_created(bigquery_emulator):
    import uuid

    from google.cloud import bigquery
    from streamotion_jobs.sinks.bigquery import BigQuerySink, _schema

    dataset = "l_" + uuid.uuid4().hex[:8]
    client = bigquery_emulator.client()
    ds = f"{bigquery_emulator.project}.{dataset}"
    client.create_dataset(ds)
    old = [f for f in _schema()["events"][0] if f.name != "labels"]
    client.create_table(bigquery.Table(f"{ds}.events", schema=old))
    sink = BigQuerySink(bigquery_emulator.project, dataset, client=client, log=lambda *_: None)
    sink.open()
    sink.open()  # IF NOT EXISTS: opening again changes nothing
    assert sink.write(_batch(0, range(0, 4))) is True
    rows = list(client.query(f"SELECT event_id, labels FROM `{ds}.events` ORDER BY event_id").result())
    assert [(r[0], list(r[1])) for r in rows] == [(f"s:http:u{i}", ["joy"]) for i in range(4)]
    sink.close()


def test_bigquery_sink_bounds_a_watermark_logged_from_a_future_event(bigquery_emulator):
    import uuid

    from streamotion_jobs.sinks.bigquery import BigQuerySink

    dataset = "w_" + uuid.uuid4().hex[:8]
    client = bigquery_emulator.client()
    sink = BigQuerySink(bigquery_emulator.project, dataset, client=client, log=lambda *_: None)
    sink.open()
    ds = f"{bigquery_emulator.project}.{dataset}"
    _poison_ledger(lambda sql: client.query(sql.format(batches=f"`{ds}.batches`")).result())
    now = datetime.now(UTC).replace(microsecond=0)
    batch = _batch(1, range(0, 10), minutes=0)
    batch.events["created_at_us"] = int(now.timestamp() * US) + batch.events.index * US
    assert sink.write(batch) is True

    def one(sql):
        return next(iter(client.query(sql.format(ds=ds)).result()))[0]

    assert one("SELECT COUNT(*) FROM `{ds}.events` WHERE late") == 0
    assert one("SELECT SUM(events) FROM `{ds}.emotion_window`") == 10
    assert one("SELECT MAX(watermark) FROM `{ds}.batches` WHERE query_id = 'q1'") < now + timedelta(
        minutes=11
    )
    sink.close()


# ------------------------------------------------------------------------------------- metrics
def _job_cfg(tmp_path):
    from streamotion.api.validate import parse

    body = {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": "metrics", "namespace": "ns1"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [{"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}}],
        },
    }
    return JobConfig.from_pipeline(parse(body), checkpoint=str(tmp_path / "ckpt"))


def test_job_metrics_latency_per_event_and_never_raising():
    from streamotion_jobs.metrics import JobMetrics

    logged: list[str] = []
    m = JobMetrics("ns1", "p1", log=logged.append)
    labels = {"namespace": "ns1", "pipeline": "p1"}
    events = _batch(0, range(0, 4)).events
    now = events["ingested_at_us"].max() / US + 3.0
    m.batch_written(events, 2, now=now)
    reg = m.registry
    assert reg.get_sample_value("streamotion_job_events_total", labels) == 4
    assert reg.get_sample_value("streamotion_job_dead_letters_total", labels) == 2
    assert reg.get_sample_value("streamotion_job_end_to_end_latency_seconds_count", labels) == 4
    # from ingestion (not the platform's created_at, hours earlier here) to the write
    total = sum(now - us / US for us in events["ingested_at_us"])
    assert reg.get_sample_value("streamotion_job_end_to_end_latency_seconds_sum", labels) == pytest.approx(
        total
    )
    # a metrics problem is logged, never raised into the micro-batch
    m.batch_written(pd.DataFrame({"unexpected": [1]}), 0)
    assert logged and "not recorded" in logged[-1]
    # a busy port: the job runs without /metrics
    first = m.serve(0)
    try:
        assert first is not None
        other = JobMetrics("ns1", "p2", log=logged.append)
        assert other.serve(first) is None
        assert "not served" in logged[-1]
    finally:
        m.close()


def test_consumer_lag_from_progress_end_offsets_and_watermarks():
    from streamotion_jobs.metrics import lag, progress_offsets

    progress = {"sources": [{"endOffset": {"raw": {"0": 10, "1": 7}}}]}
    assert progress_offsets(progress, "raw") == {0: 10, 1: 7}
    as_text = {"sources": [{"endOffset": json.dumps({"raw": {"0": 3}})}]}
    assert progress_offsets(as_text, "raw") == {0: 3}
    assert progress_offsets(progress, "other") is None and progress_offsets(None, "raw") is None
    # partition 2 is new (not in the position yet): everything from its low watermark is behind
    assert lag({0: (0, 15), 1: (0, 7), 2: (4, 9)}, {0: 10, 1: 7}) == 5 + 0 + 5


def test_job_metrics_port_and_host_defaults(monkeypatch):
    from streamotion_jobs.main import parse_args

    monkeypatch.delenv("STREAMOTION_METRICS_PORT", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    args = parse_args([])
    assert (args.metrics_port, args.metrics_host) == (9108, "127.0.0.1")
    monkeypatch.setenv("STREAMOTION_METRICS_PORT", "9200")
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")  # in a pod: Prometheus scrapes the pod IP
    args = parse_args([])
    assert (args.metrics_port, args.metrics_host) == (9200, "0.0.0.0")
    assert parse_args(["--metrics-port", "0"]).metrics_port == 0


# ------------------------------------------------------------------------- the job's report
class _Scripted:
    """A sink whose open() / commit() fail as many times as told (ConnectionRefusedError / OSError)."""

    def __init__(self, name: str, open_failures: int = 0, commit_failures: int = 0):
        self.name, self.open_failures, self.commit_failures = name, open_failures, commit_failures

    def open(self):
        if self.open_failures:
            self.open_failures -= 1
            raise ConnectionRefusedError(f"{self.name}:5432 refused")

    def stage(self, events, dead, info):
        pass

    def commit(self, info):
        if self.commit_failures:
            self.commit_failures -= 1
            raise OSError("quota exceeded\nstack...")
        return {}

    def close(self):
        pass


def _reported(written: list[dict]) -> list[list[tuple]]:
    from streamotion import naming

    return [
        [(e["index"], e["type"], e["ok"], e["message"]) for e in json.loads(d[naming.JOB_REPORT_KEY])]
        for d in written
    ]


def test_the_job_reports_each_sink_by_index_when_it_opens_and_commits(tmp_path):
    """What the operator's SinksReady reads (streamotion_jobs.report, <pipeline>-job-report): the job
    says, per sink index, when open() or a batch's stage+commit starts and stops failing."""
    from streamotion_jobs.job import StreamingJob
    from streamotion_jobs.sinks import BatchInfo

    pg, bq = _Scripted("postgres", open_failures=1), _Scripted("bigquery", commit_failures=1)
    job = StreamingJob(_job_cfg(tmp_path), None, sinks=[pg, bq], log=lambda *_: None, lag_interval_s=None)
    assert job.report.write is None  # outside a pod: nowhere to report
    written: list[dict] = []
    job.report.write = written.append
    job.open_sinks(backoff_max_s=1)
    refused = (0, "postgres", False, "ConnectionRefusedError: postgres:5432 refused")
    assert _reported(written) == [
        [refused],
        [(0, "postgres", True, "")],
        [(0, "postgres", True, ""), (1, "bigquery", True, "")],
    ]
    info = BatchInfo("ns1/metrics", "q1", 0, 60.0, 60.0, 0)
    assert job._write(pg, None, None, info) is True  # no change: nothing written
    with pytest.raises(OSError):
        job._write(bq, None, None, info)
    assert job._write(bq, None, None, info) is True
    assert _reported(written)[3:] == [
        [(0, "postgres", True, ""), (1, "bigquery", False, "OSError: quota exceeded")],
        [(0, "postgres", True, ""), (1, "bigquery", True, "")],
    ]


def test_the_job_reports_a_query_failing_on_a_recreated_topic_until_it_progresses(tmp_path):
    """run(): a StreamingQueryException saying a partition's offset went back (the topic was created
    again) is reported for TopicRecreated; a restarted query that reads rows again clears it."""
    from pyspark.errors import StreamingQueryException
    from streamotion_jobs.job import StreamingJob

    from streamotion import naming

    stop = threading.Event()

    class Query:
        id, isActive, lastProgress = "q", False, None

        def __init__(self, error=None):
            self.error, self.waits = error, 0

        def awaitTermination(self, timeout):
            self.waits += 1
            if self.error is not None:
                raise self.error
            self.lastProgress = {"numInputRows": 5}
            if self.waits > 1:
                stop.set()
            return False

        def stop(self):
            pass

    error = StreamingQueryException(
        message="[STREAM_FAILED] Query [id = 1] terminated with exception: [KAFKA_DATA_LOSS."
        "PARTITION_OFFSET_CHANGED] ... Reason: Partition raw-0 offset was changed from 1234 to 0."
    )
    queries = [Query(error), Query()]
    job = StreamingJob(
        _job_cfg(tmp_path), None, sinks=[_Scripted("postgres")], log=lambda *_: None, lag_interval_s=None
    )
    written: list[dict] = []
    job.report.write = written.append
    job.start = lambda available_now=False: queries.pop(0)
    assert job.run(stop) == 1
    states = [json.loads(d[naming.JOB_QUERY_KEY]) for d in written]
    assert [s.get("topicRecreated", False) for s in states] == [False, True, False]
    assert states[1]["message"] == "Partition raw-0 offset was changed from 1234 to 0"


def test_build_sinks_follows_spec_sinks_order_and_scopes_the_bigquery_ledger(tmp_path):
    """The job's report is by index in spec.sinks, so the sinks are built in that order; BigQuery's
    ledger offsets are read for this pipeline only (BigQuerySink(pipeline="<namespace>/<name>"))."""
    from streamotion_jobs.job import build_sinks

    from streamotion.api.validate import parse

    body = {
        "apiVersion": "streamotion.io/v1alpha2",
        "kind": "StreamPipeline",
        "metadata": {"name": "two", "namespace": "ns1"},
        "spec": {
            "sources": [{"name": "a", "type": "http", "http": {"tokenSecret": "t"}}],
            "sinks": [
                {"type": "bigquery", "bigquery": {"project": "p", "dataset": "d"}},
                {"type": "postgres", "postgres": {"host": "pg", "credentialsSecret": "c"}},
            ],
        },
    }
    sinks = build_sinks(JobConfig.from_pipeline(parse(body), checkpoint=str(tmp_path)), log=lambda *_: None)
    assert [s.name for s in sinks] == ["bigquery", "postgres"]
    assert sinks[0].pipeline == "ns1/two" and sinks[0].dataset == "d"


def test_local_driver_heap_holds_what_a_cluster_gives_driver_and_executor(monkeypatch):
    """local[*] runs the executor's tasks in the driver JVM: its heap is the spec's default driver plus
    one default executor (1g + 2g), not Spark's 1g for a driver alone; local-cluster keeps the driver's
    own (its executors are JVMs of their own); STREAMOTION_SPARK_DRIVER_MEMORY still decides."""
    from streamotion_jobs.spark import base_conf

    from streamotion.api.models import DriverSpec, ExecutorSpec

    monkeypatch.delenv("STREAMOTION_SPARK_DRIVER_MEMORY", raising=False)
    assert (DriverSpec().memory, ExecutorSpec().memory) == ("1g", "2g")
    assert base_conf("x", "local[*]")["spark.driver.memory"] == "3g"
    assert base_conf("x", "local[2]")["spark.driver.memory"] == "3g"
    assert base_conf("x", "local-cluster[2,1,1024]")["spark.driver.memory"] == "1g"
    assert "spark.driver.memory" not in base_conf("x", None)  # spark-submit's (the SparkApplication's)
    monkeypatch.setenv("STREAMOTION_SPARK_DRIVER_MEMORY", "768m")
    assert base_conf("x", "local[*]")["spark.driver.memory"] == "768m"

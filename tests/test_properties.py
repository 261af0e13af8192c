"""Property-based tests (hypothesis) over arbitrary Unicode: the event parser (the contract's
validation, the job's ``parse_one``, every producer's conversion of platform payloads), the job's
text cleaner and the PII redactor. Hostile input never raises; results keep their promises.

Deterministic (``derandomize``) so CI sees the same cases every run; sized so the whole module runs
in well under a minute.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.provisional import domains

from streamotion.events import DeadLetter, Event

MANY = settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

# Text: every code point class, lone surrogates and NUL included, plus pieces regexes trip on
# (placeholder-like NUL sequences, URL and mention starts, entities, tags).
tricky = st.sampled_from(
    [
        *"\x00\t\n\r @#<>&;:/.?=_-+()[]{}'\"\\\u200b\u202e\ufeff\u0301\ud800é😀",
        "\x000\x00",
        "\x009\x00",
        "https://",
        "www.",
        "&amp;",
        "&lt;",
        "<3",
        "<b>",
        "@a",
        "#tag",
        "2024-01-15",
        "+33 6 12 34 56 78",
    ]
)
texts = st.one_of(
    st.text(max_size=80),
    st.text(alphabet=st.characters(codec=None), max_size=80),
    st.lists(st.one_of(tricky, st.text(max_size=3)), max_size=30).map("".join),
)
json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), texts
)
# JSON of every type, shallow (each payload field is tried with every type; depth adds nothing).
json_values = st.one_of(
    json_scalars,
    st.lists(json_scalars, max_size=3),
    st.dictionaries(st.text(max_size=8), json_scalars, max_size=3),
)


def _strategy(value):
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


def maybe(value, other=json_values):
    """The well-formed value (half the time) or anything else, so parsers reach their deeper fields."""
    return st.one_of(_strategy(value), other)


def mostly(value, other=json_values):
    """The well-formed value three times in four: for the gates a payload must pass to go deeper."""
    good = _strategy(value)
    return st.one_of(good, good, good, other)


# ------------------------------------------------------------------------------------------ the contract
valid_events = st.builds(
    Event,
    id=st.text(min_size=1, max_size=256).filter(lambda s: not _surrogates(s)),
    source=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=63),
    platform=st.sampled_from(["reddit", "mastodon", "bluesky", "x", "http", "replay"]),
    channel=st.none() | st.text(max_size=256).filter(lambda s: not _surrogates(s)),
    text=st.text(min_size=1, max_size=2000).filter(lambda s: not _surrogates(s)),
    lang=st.none() | st.text(max_size=16).filter(lambda s: not _surrogates(s)),
    created_at=st.datetimes(
        min_value=datetime(1970, 1, 2), max_value=datetime(9998, 1, 1), timezones=st.just(UTC)
    ),
)


def _surrogates(s: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF for c in s)


@MANY
@given(st.one_of(st.binary(max_size=400), texts.map(lambda s: s.encode("utf-8", "surrogatepass"))))
def test_job_parser_never_raises_on_arbitrary_bytes(raw):
    from streamotion_jobs.transform import parse_one

    event, reason, payload = parse_one(raw)
    assert (event is None) != (reason is None)
    assert isinstance(payload, str)
    if event is not None:
        assert isinstance(event, Event)
    else:
        assert isinstance(reason, str) and reason


@MANY
@given(
    st.fixed_dictionaries(
        {
            "id": maybe("e1"),
            "source": maybe("src"),
            "platform": maybe("http"),
            "text": texts,
            "created_at": maybe("2024-01-15T10:00:00Z"),
        },
        optional={"channel": json_values, "lang": json_values, "url": json_values, "extra": json_values},
    )
)
def test_contract_validation_only_raises_validation_errors(doc):
    from pydantic import ValidationError
    from streamotion_jobs.transform import parse_one

    try:
        Event.model_validate(doc)
    except ValidationError:
        pass
    try:
        raw = json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass")
    except (TypeError, ValueError):
        return
    event, reason, _ = parse_one(raw)
    assert (event is None) != (reason is None)


@MANY
@given(valid_events)
def test_valid_events_round_trip_through_the_wire(event):
    from streamotion_jobs.transform import parse_one

    parsed, reason, _ = parse_one(event.to_json())
    assert reason is None
    assert parsed == event and parsed.key == event.key


# ------------------------------------------------------------------------------------------ producers
def _assert_publishable(item):
    """What a source yields is an Event, a Malformed (its dead letter must build) or None."""
    from streamotion_ingest.publisher import Malformed, payload_text

    if item is None or isinstance(item, Event):
        if isinstance(item, Event):
            item.to_json()
        return
    assert isinstance(item, Malformed) and isinstance(item.reason, str) and item.reason
    DeadLetter(reason=item.reason, stage="producer", source="s", payload=payload_text(item.payload))


@MANY
@given(texts, st.integers(min_value=1, max_value=10**6))
def test_replay_parsers_never_raise(line, lineno):
    from streamotion_ingest.sources.replay import parse_jsonl, parse_tsv

    _assert_publishable(parse_tsv(line, lineno, "src", "chan", ""))
    _assert_publishable(parse_jsonl(line, lineno, "src", "chan", ""))
    try:
        as_json = json.dumps({"id": line or "x", "text": line, "author": line, "lang": line[:20]})
    except ValueError:
        return
    _assert_publishable(parse_jsonl(as_json, lineno, "src", "chan", ""))


jetstream_messages = st.fixed_dictionaries(
    {
        "did": mostly("did:plc:abc"),
        "time_us": maybe(1_700_000_000_000_000, st.integers() | json_values),
        "kind": mostly("commit"),
        "commit": mostly(
            st.fixed_dictionaries(
                {
                    "collection": mostly("app.bsky.feed.post"),
                    "operation": mostly("create"),
                    "rkey": mostly("rk1"),
                    "record": mostly(
                        st.fixed_dictionaries(
                            {"text": texts | json_values},
                            optional={"createdAt": json_values, "langs": json_values},
                        ),
                    ),
                }
            ),
        ),
    }
)


@MANY
@given(jetstream_messages | st.dictionaries(texts, json_values, max_size=5))
def test_bluesky_conversion_never_raises(msg):
    from streamotion_ingest.sources.bluesky import to_event

    _assert_publishable(to_event(msg, json.dumps(msg, default=str), "src"))


x_documents = st.fixed_dictionaries(
    {
        "data": mostly(
            st.fixed_dictionaries(
                {"id": maybe("1"), "text": texts | json_values},
                optional={"created_at": json_values, "lang": json_values, "author_id": json_values},
            ),
        ),
    },
    optional={
        "includes": maybe({"users": [{"id": "u", "username": "n"}]}),
        "matching_rules": maybe([{"id": "1", "tag": "t"}]),
    },
)


@MANY
@given(x_documents | st.dictionaries(texts, json_values, max_size=5))
def test_x_conversion_never_raises(doc):
    from streamotion_ingest.sources.x import to_event

    _assert_publishable(to_event(doc, json.dumps(doc, default=str), "src"))


mastodon_statuses = st.fixed_dictionaries(
    {
        "id": maybe("1"),
        "uri": maybe("https://fake.social/users/a/statuses/1"),
        "content": texts | json_values,
        "created_at": maybe("2024-05-01T12:00:00.000Z"),
    },
    optional={
        "account": maybe({"acct": "a@fake.social"}),
        "language": json_values,
        "spoiler_text": json_values,
        "url": json_values,
    },
)


@MANY
@given(mastodon_statuses | st.dictionaries(texts, json_values, max_size=5))
def test_mastodon_conversion_never_raises(status):
    from streamotion_ingest.sources.mastodon import to_event

    _assert_publishable(to_event(status, "src", "public"))


# ------------------------------------------------------------------------------------------ cleaner
@MANY
@given(texts)
def test_cleaner_never_raises_and_normalises(text):
    import unicodedata

    from streamotion_jobs.text import clean_text, hashtags, terms

    out = clean_text(text)
    assert isinstance(out, str)
    assert out == out.strip() and not re.search(r"\s\s", out)
    assert unicodedata.is_normalized("NFC", out) or _surrogates(out)
    assert isinstance(hashtags(text), list) and isinstance(terms(out, None), list)


@MANY
@given(texts.filter(lambda s: "&" not in s))
def test_cleaner_is_idempotent_without_entities(text):
    """Cleaning cleaned text changes nothing (HTML entities aside: ``&amp;lt;`` unescapes twice)."""
    from streamotion_jobs.text import clean_text

    once = clean_text(text)
    assert clean_text(once) == once


# ------------------------------------------------------------------------------------------ redactor
# A reference for "an e-mail address" independent of the redactor: the WHATWG (HTML) valid e-mail
# address with a dotted domain and a letter TLD.
REFERENCE_EMAIL = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.[a-zA-Z]{2,}"
)
local_parts = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789.!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=20
)
emails = st.builds(
    lambda local, domain: f"{local}@{domain}", local_parts, domains().filter(lambda d: d[-1].isalpha())
)


@MANY
@given(texts)
def test_redactor_never_raises_and_leaves_no_email(text):
    from streamotion_ingest.filters import redact_pii

    out = redact_pii(text)
    assert isinstance(out, str)
    assert not REFERENCE_EMAIL.search(out)


@MANY
@given(texts, emails, texts, st.sampled_from(["", " ", "\x00", "\n", "https://x.io/?a=", "@", "mailto:"]))
def test_redactor_masks_every_email_in_any_context(before, email, after, glue):
    from streamotion_ingest.filters import redact_pii

    out = redact_pii(before + glue + email + " " + after)
    assert email not in out
    assert not REFERENCE_EMAIL.search(out)


@MANY
@given(st.dates(min_value=datetime(1900, 1, 1).date(), max_value=datetime(2100, 1, 1).date()), texts)
def test_redactor_keeps_dates(day, words):
    from streamotion_ingest.filters import redact_pii

    words = re.sub(r"[\d@:/]", "", words)
    for shown in (day.isoformat(), day.strftime("%d.%m.%Y"), day.strftime("%m/%d/%Y")):
        text = f"{words} on {shown} ok"
        assert shown in redact_pii(text)

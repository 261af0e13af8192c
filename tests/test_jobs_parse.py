"""Parsing in Spark (``streamotion_jobs.parse``) against the pydantic path it replaces
(``transform.parse_frame``): for hostile raw messages, the same valid rows, the same dead letters with
the same reasons. Both paths run in one SparkSession over one DataFrame of generated messages (one
Spark job per path, not one per example)."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamotion.events import Event

SKEW_S = 600.0


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    s = session("streamotion-parse-tests", master="local[*]")
    yield s
    s.stop()


# ------------------------------------------------------------------------------- hostile messages
NOW = datetime.now(UTC).replace(microsecond=0)


def _iso(dt: datetime, style: int) -> str:
    return [
        dt.strftime("%Y-%m-%dT%H:%M:%SZ"),
        dt.isoformat(),  # +00:00, microseconds when there are some
        dt.astimezone(UTC).replace(tzinfo=None).isoformat(),  # naive: read as UTC
        dt.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+05:30",
        dt.strftime("%Y-%m-%d %H:%M:%S"),  # space: pydantic's rules (the fallback)
    ][style]


moments = st.one_of(
    st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2030, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(
        [
            NOW + timedelta(minutes=9),  # within processing.maxFutureSkew
            NOW + timedelta(minutes=11, seconds=30),  # beyond it
            NOW + timedelta(days=3, microseconds=123_456),
            datetime(2099, 1, 1, tzinfo=UTC),
            datetime(2199, 12, 31, 23, 59, 59, tzinfo=UTC),
            datetime(2200, 1, 1, tzinfo=UTC),  # past the JVM's range: the fallback
            datetime(1000, 1, 1, tzinfo=UTC),
            datetime(999, 12, 31, tzinfo=UTC),
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(1970, 1, 1, tzinfo=UTC),
        ]
    ),
)
times = st.one_of(
    st.builds(_iso, moments, st.integers(0, 4)),
    st.sampled_from(
        [
            "2024-02-30T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00+19:00",
            "2024-01-01T00:00:00+23:59",
            "2024-01-01T00:00:00.1234567Z",
            "2024-01-01t00:00:00z",
            "2024-01-01",
            "0000-01-01T00:00:00Z",
            "9999-12-31T23:59:59-01:00",
            "1700000000",
            "",
            "yesterday",
        ]
    ),
    st.integers(-(10**12), 10**13),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.none(),
)
# big ones by index: their repr stays short in hypothesis's reports
HUGE = ["x" * 100_000, "é" * 100_001, "😀" * 50_000]  # at the limit, one over (200,002 bytes), 200 KB
huge = st.sampled_from(range(len(HUGE))).map(HUGE.__getitem__)
small_texts = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "nul\x00inside",
            "I &amp; you <3 #Happy @bob https://x.co/a 😀😀",
            "https://x.co/a @bob",
            "\u3000\n\t",
            "\ud800 lone surrogate",
            "😀 ok",
            "Check https://x.co/a?b=1 and WWW.y.org/p @bob @alice@mastodon.social #Happy #happy #sad it’s GREAT-ish",
            "don't stop--believing the and you are really #1 #_x a#b C#sharp x#y ##z #" + "w" * 120,
            " \x1c\x1d spaced\tout\nline \x0b ",
            "😀👍🏽 love it ❤️‍🔥 ✅ “quoted” ‘single’ ❶ ❷",
            "Das ist wirklich sehr schön und gut",
            "le chat est très content aussi",
            "'quoted' -dash- o'neil rock'n'roll a-b-c x--y",
        ]
    ),
)
texts = st.one_of(*[small_texts] * 7, huge)
scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8))
anything = st.one_of(
    scalars, st.lists(scalars, max_size=2), st.dictionaries(st.text(max_size=4), scalars, max_size=2)
)


def often(good, other=anything):
    good = good if isinstance(good, st.SearchStrategy) else st.just(good)
    return st.integers(0, 9).flatmap(lambda i: other if i == 9 else good)  # nine in ten good


documents = st.fixed_dictionaries(
    {
        "id": often(
            st.sampled_from(["1", "2", "3", "id:with:colons"]), st.sampled_from(["", "x" * 257]) | anything
        ),
        "source": often(st.sampled_from(["src", "other"]), st.just("s" * 64) | anything),
        "platform": often(
            st.sampled_from(["http", "x", "reddit"]), st.sampled_from(["X", "twitter", ""]) | anything
        ),
        "text": often(texts),
        "created_at": often(st.builds(_iso, moments, st.integers(0, 3)), times),
    },
    optional={
        "channel": often(st.text(max_size=10) | st.just("c" * 257)),
        "author": often(st.text(max_size=10) | st.just("a" * 129)),
        "lang": often(st.sampled_from(["en", "fr", "de", "pt-BR", "xx", "", "EN-us", "e" * 17, "İ"])),
        "url": often(st.just("https://x.co/" + "u" * 3000) | st.just("https://x.co/a")),
        "ingested_at": often(st.builds(_iso, moments, st.integers(0, 3)), times),
        "schema_version": st.sampled_from([1, 2, 9, 10, 0, -1, 10**30, True, "1", 1.0, 1.5, None]),
        "future_field": anything,
        "ID": anything,  # not "id": the contract's names are case-sensitive
        "nested": st.just({"a": [{"b": [{"c": [{"d": [{"e": [1]}]}]}]}]}),  # deeper than NESTING
    },
)


def _serialise(doc: dict, how: int, drop: str | None) -> bytes | None:
    doc = {k: v for k, v in doc.items() if k != drop}
    text = json.dumps(doc, ensure_ascii=how == 1)
    raw = text.encode("utf-8", "surrogatepass")
    return [
        raw,
        raw,  # ASCII escapes: surrogate pairs for emoji
        raw + b" x",  # trailing garbage: from_json ignores it, Python does not
        raw + b"\n" + raw,
        b"[" + raw + b"]",
        raw[: max(1, len(raw) // 2)],  # truncated
        text.replace('"', "'").encode("utf-8", "surrogatepass"),  # single quotes
        b"\xef\xbb\xbf" + raw,  # BOM
        b" \t\r\n" + raw + b"\n ",
        raw.replace(b'"id"', b'"id": "dup", "id"', 1),  # duplicate key: the last wins
        raw[:-1] + b', "n": NaN}',
        raw[:-1] + b', "n": 1e400}',
        raw[:-1] + b', "zz": "\\x"}',  # invalid escape in an unknown field
        raw.replace(b'"', b"\xff", 1),  # invalid UTF-8
        raw + b"\xed\xa0\x80",  # an encoded surrogate: not UTF-8 for Python
        None,
        b"",
        b"null",
        b'"a string"',
        b"42",
    ][how]


messages = st.one_of(
    st.builds(
        _serialise,
        documents,
        st.sampled_from([0] * 12 + [1] * 4 + list(range(2, 20))),
        st.sampled_from([None] * 10 + ["id", "source", "platform", "text", "created_at"]),
    ),
    st.binary(max_size=40).filter(lambda b: len(b) % 4 == 0),  # a few
    st.builds(
        lambda e: e.to_json(),
        st.builds(
            Event,
            id=st.sampled_from(["1", "2"]),
            source=st.just("s"),
            platform=st.just("http"),
            text=st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=40),
            created_at=moments,
        ),
    ),
)

COLLECTED: list[bytes | None] = []


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)
@given(messages)
def _collect(message):
    COLLECTED.append(message)


def _messages() -> list[bytes | None]:
    if not COLLECTED:
        _collect()
    return COLLECTED


# ------------------------------------------------------------------------------------------ helpers
def _frame(spark, values):
    rows = [(v, "raw", i % 3, i) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, "value binary, topic string, partition int, offset long").repartition(
        3
    )


def _both(spark, values, skew=SKEW_S):
    """(Spark path, pydantic path) of the same records, as pandas sorted by offset."""
    from streamotion_jobs.parse import NATIVE_SCHEMA, native_parse  # noqa: F401
    from streamotion_jobs.transform import PARSED_SCHEMA, finish_frame, now_us, parse_frame

    now = now_us()
    df = _frame(spark, values)

    def finish(batches):
        for pdf in batches:
            yield finish_frame(pdf, skew, now).drop(columns=["raw_payload"])

    def old(batches):
        for pdf in batches:
            yield parse_frame(pdf, skew, now)

    new = native_parse(df, skew, now).mapInPandas(finish, PARSED_SCHEMA).toPandas()
    before = df.mapInPandas(old, PARSED_SCHEMA).toPandas()
    after = now_us()
    key = ["kafka_offset"]
    return (
        new.sort_values(key).reset_index(drop=True),
        before.sort_values(key).reset_index(drop=True),
        now,
        after,
    )


def _norm(v):
    if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA:
        return None
    if hasattr(v, "tolist"):
        return v.tolist()
    return v


def _differences(new: pd.DataFrame, old: pd.DataFrame, values, now: int, after: int) -> list[str]:
    out = []
    assert len(new) == len(old) == len(values)
    for i in range(len(new)):
        a, b = new.iloc[i].to_dict(), old.iloc[i].to_dict()
        for col in old.columns:
            x, y = _norm(a[col]), _norm(b[col])
            if (
                col == "ingested_at_us"
                and x != y
                and all(v is not None and now <= v <= after for v in (x, y))
            ):
                continue  # ingested_at absent: the batch's clock (Spark) or the parse time (pydantic)
            if x != y:
                out.append(f"offset {a['kafka_offset']} {col}: spark {x!r:.300} != pydantic {y!r:.300}")
        if len(out) > 20:
            break
    return out


# ------------------------------------------------------------------------------------------- tests
def test_contract_schema_is_derived_from_the_pydantic_model():
    from pyspark.sql.types import LongType, StringType, TimestampType, VariantType
    from streamotion_jobs.parse import CORRUPT, contract_fields, contract_schema, read_schema

    schema = contract_schema()
    assert schema.fieldNames() == list(Event.model_fields)
    types = {f.name: f.dataType for f in schema.fields}
    assert types["text"] == StringType() and types["created_at"] == TimestampType()
    assert types["schema_version"] == LongType()
    assert not schema["id"].nullable and schema["channel"].nullable
    read = read_schema()
    assert read.fieldNames() == [*Event.model_fields, CORRUPT]
    assert all(isinstance(f.dataType, VariantType) for f in read.fields[:-1])
    fields = {f.name: f for f in contract_fields()}
    assert fields["platform"].choices == ("reddit", "mastodon", "bluesky", "x", "http", "replay", "cdc")
    assert fields["text"].max_length == 100_000 and fields["text"].too_long_msg.endswith("100000 characters")
    assert fields["id"].missing_msg == "Field required"


def test_spark_decides_producer_output_without_python(spark):
    """What producers write (``Event.to_json``) is parsed and validated in the JVM: no record of a
    well-formed batch falls back to the pydantic path, and the columns are the pydantic path's."""
    from streamotion_jobs.parse import native_parse
    from streamotion_jobs.transform import now_us

    base = datetime(2026, 3, 1, 12, 0, 0, 123_456, tzinfo=UTC)
    events = [
        Event(id=str(i), source="s", platform="http", text=f"héllo 😀 {i} #x", created_at=base, lang="en")
        for i in range(50)
    ]
    values = [e.to_json() for e in events] + [json.dumps({"id": "1"}).encode(), None]
    rows = native_parse(_frame(spark, values), SKEW_S, now_us()).toPandas().sort_values("kafka_offset")
    assert not rows["fallback"].any()
    ok = rows[rows["error"].isna()]
    assert len(ok) == 50 and set(ok["event_id"]) == {f"s:http:{i}" for i in range(50)}
    assert (ok["created_at_us"] == int(base.timestamp() * 1_000_000)).all()
    assert rows["error"].iloc[50] == (
        "invalid event: source: Field required; platform: Field required; text: Field required; "
        "created_at: Field required"
    )
    assert rows["error"].iloc[51] == "empty message (null value)"


def test_spark_path_gives_the_pydantic_paths_rows_and_reasons_for_hostile_messages(spark):
    """Generated hostile messages (unknown fields, NULs, emoji, huge and empty texts, wrong types,
    future and past times, invalid JSON and UTF-8, colliding ids, trailing garbage that Spark's
    ``from_json`` would accept): every column of every row equal, dead letters with the same reason."""
    values = _messages()
    new, old, now, after = _both(spark, values)
    assert not _differences(new, old, values, now, after)
    # the generated batch reaches every outcome
    reasons = old["error"].dropna()
    assert old["error"].isna().sum() > 20  # some valid rows (about 15% of a generated batch)
    for part in (
        "not JSON",
        "not UTF-8",
        "Field required",
        "at most 100000",
        "Input should be 'reddit'",
        "event time in the future",
        "is not readable",
        "no text to classify",
        "valid string",
        "not a JSON object",
        "empty message",
    ):
        assert reasons.str.contains(part, regex=False).any(), part


def test_spark_json_and_time_rules_the_parse_relies_on(spark):
    """Spark 4.0.0 behaviours ``streamotion_jobs.parse`` is built on (read at v4.0.0, the
    spark-catalyst / spark-sql-api 4.0.0 sources jars):

    * ``from_json`` turns any JSON token into its text for a ``StringType`` field ("always tries to
      convert the data as string"), so the read schema's fields are ``VARIANT``, which keep the type:
      sql/catalyst/src/main/scala/org/apache/spark/sql/catalyst/json/JacksonParser.scala (makeConverter);
    * it reads the first JSON value of the text and ignores what follows: JacksonParser.parse (one
      ``rootConverter`` call, no trailing-token check), hence ``_single_object``;
    * PERMISSIVE (the default ``mode``) keeps a malformed record in ``columnNameOfCorruptRecord`` with
      the other fields null; FAILFAST fails the query:
      sql/catalyst/src/main/scala/org/apache/spark/sql/catalyst/util/FailureSafeParser.scala,
      .../catalyst/json/JSONOptions.scala (``parseMode``, ``columnNameOfCorruptRecord``);
    * ``allowSingleQuotes`` and ``allowNonNumericNumbers`` default to true (JSONOptions.scala), which
      Python's json refuses ('single quotes', ``+INF``), so the job turns them off;
    * ``try_to_timestamp`` returns null rather than failing (TryToTimestampExpressionBuilder,
      ``failOnError = false``, .../catalyst/expressions/datetimeExpressions.scala) and parses with
      ``ResolverStyle.STRICT`` (sql/api/src/main/scala/org/apache/spark/sql/catalyst/util/
      DateTimeFormatterHelper.scala), so 30 February is null;
    * ANSI mode is on by default (``spark.sql.ansi.enabled``, .../sql/internal/SQLConf.scala): a cast
      of a malformed string raises, so the parse uses ``try_cast``."""
    from pyspark.sql import functions as F
    from streamotion_jobs.parse import CORRUPT, JSON_OPTIONS

    rows = ['{"id": 123}', '{"id": "a"} trailing', "{'id': 'a'}", "{not json"]
    df = spark.createDataFrame([(r,) for r in rows], "v string")
    schema = f"id string, {CORRUPT} string"
    lenient = df.select(F.from_json("v", schema, {"columnNameOfCorruptRecord": CORRUPT}).alias("d"))
    got = [(r.d["id"], r.d[CORRUPT]) for r in lenient.collect()]
    assert got[0] == ("123", None)  # a number read as a string
    assert got[1] == ("a", None)  # the trailing text ignored
    assert got[2] == ("a", None)  # single quotes accepted by default
    assert got[3] == (None, "{not json")  # PERMISSIVE: the record kept, the fields null
    strict = df.select(F.from_json("v", schema, JSON_OPTIONS).alias("d")).collect()
    assert strict[2].d[CORRUPT] == "{'id': 'a'}"
    typed = df.select(F.from_json("v", f"id variant, {CORRUPT} string").alias("d"))
    assert typed.select(F.schema_of_variant("d.id")).first()[0] == "BIGINT"
    with pytest.raises(Exception, match="MALFORMED_RECORD_IN_PARSING"):
        df.select(F.from_json("v", schema, {"mode": "FAILFAST"})).collect()
    times = spark.createDataFrame(
        [("2024-02-30T00:00:00.000000+00:00",), ("2024-02-29T00:00:00.000000+00:00",)], "t string"
    )
    parsed = times.select(
        F.try_to_timestamp("t", F.lit("yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX")).alias("ts")
    ).collect()
    assert parsed[0].ts is None and parsed[1].ts is not None
    assert spark.conf.get("spark.sql.ansi.enabled") == "true"
    with pytest.raises(Exception, match="CAST_INVALID_INPUT"):
        spark.createDataFrame([("",)], "s string").select(F.col("s").cast("int")).collect()
    assert spark.createDataFrame([("",)], "s string").select(F.col("s").try_cast("int")).first()[0] is None

"""Parsing and validating Kafka records with Spark's own expressions, from the event contract.

Not yet switched on in the streaming job (``StreamingJob.process_batch`` still parses in the Python
worker): on the 2-core development machine it measured slower than the pydantic path
(``bench pipeline``'s parse_spark_vs_python below 1).

:func:`native_parse` turns the raw topic's records into the contract's columns in the JVM:
``from_json`` with a schema derived from :class:`streamotion.events.Event` (:func:`read_schema`),
then column expressions for what pydantic checks (required fields, JSON types, lengths, the
platform's values, the readable contract versions, ISO 8601 times) and for the job's own bound
(``processing.maxFutureSkew``). Every row comes out in one of three states:

* valid: the event's columns are set (``error`` null);
* a dead letter: ``error`` holds the reason, word for word the one the pydantic path
  (:func:`streamotion_jobs.transform.read_one`) gives; the messages are pydantic's own, taken from
  the model at import (:func:`contract_fields`);
* ``fallback``: a record Spark cannot decide exactly like pydantic (invalid UTF-8 or JSON, whose
  reasons quote Python's decoder; a number where a time or a string is expected, which pydantic
  reads or refuses by its own rules; lone surrogates, which the JVM cannot hold; times outside
  1000-2199). Those keep their ``value`` and go through the pydantic path in the Python worker.

Why the read schema's fields are ``VARIANT`` rather than the contract's ``STRING``: Spark's JSON
reader turns any token into a string for a ``StringType`` field (apache/spark v4.0.0
sql/catalyst/src/main/scala/org/apache/spark/sql/catalyst/json/JacksonParser.scala, ``case _:
StringType`` "always tries to convert the data as string"), so ``{"id": 123}`` would pass, where
the contract (pydantic) refuses it. A ``VARIANT`` field keeps the JSON type (``schema_of_variant``).
:func:`contract_schema` is the typed schema the valid rows have.

Cleaning, hashtags and terms run in Spark too for texts of ASCII (without ``&``), emoji, dingbats
and typographic quotes (:func:`safe_text_re`), where Java's regex classes and Python's agree and NFC
changes nothing. What stays in Python (:func:`streamotion_jobs.transform.finish_frame`): cleaning
the other texts (``html.unescape``'s HTML5 entity table, Unicode ``\\w``/``\\s`` classes and NFC
normalisation have no exact Spark equivalent), the model call, and the fallback records.
"""

from __future__ import annotations

import functools
import types
import typing
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from streamotion.events import MAX_READ_VERSION, MIN_READ_VERSION, Event, UnreadableVersion, read_event

MAX_PAYLOAD_CHARS = 100_000
CORRUPT = "_corrupt_record"
# from_json options: PERMISSIVE (a malformed record becomes a row whose corrupt-record column holds
# the text, never a failed task); Spark's JSON leniencies Python's json module lacks are off.
JSON_OPTIONS = {
    "mode": "PERMISSIVE",
    "columnNameOfCorruptRecord": CORRUPT,
    "allowSingleQuotes": "false",
    "allowNonNumericNumbers": "false",
}
# Times the JVM decides: an ISO 8601 date-time with 'T', seconds, up to 6 fraction digits and an
# optional Z or +hh:mm offset, years 1000-2199 (microseconds below 2^53: the double arithmetic of
# transform.to_us is exact there); anything else goes to pydantic.
TIME_RE = (
    r"^([12][0-9]{3})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
MIN_YEAR, MAX_YEAR = 1000, 2199
# \ud800-\udfff escapes: a lone surrogate is kept by Python but replaced by the JVM
SURROGATE_ESCAPE_RE = r"\\[uU][dD][89a-fA-F]"
NESTING = 6  # deeper payloads (unknown fields) go to the fallback (see _single_object)


@dataclass(frozen=True)
class ContractField:
    """One field of the contract, as pydantic declares it, with pydantic's own error messages."""

    name: str
    kind: str  # "string", "choice", "datetime", "int"
    required: bool
    nullable: bool
    min_length: int | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    missing_msg: str = ""
    too_short_msg: str = ""
    too_long_msg: str = ""
    choice_msg: str = ""


def _kind(annotation: Any) -> tuple[str, bool, tuple[str, ...]]:
    args = typing.get_args(annotation)
    nullable = False
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        nullable = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            raise TypeError(f"unsupported contract annotation {annotation!r}")
        annotation = rest[0]
    if typing.get_origin(annotation) is Literal:
        return "choice", nullable, tuple(str(a) for a in typing.get_args(annotation))
    if annotation is str:
        return "string", nullable, ()
    if annotation is datetime:
        return "datetime", nullable, ()
    if annotation is int:
        return "int", nullable, ()
    raise TypeError(f"unsupported contract annotation {annotation!r}")


def _message(model: type[BaseModel], doc: dict, name: str) -> str:
    try:
        model.model_validate(doc)
    except ValidationError as exc:
        for err in exc.errors():
            if tuple(err.get("loc", ())) == (name,):
                return str(err["msg"])
    raise AssertionError(f"the contract accepted a probe for {name}")  # pragma: no cover


@functools.cache
def contract_fields(model: type[BaseModel] = Event) -> tuple[ContractField, ...]:
    """The contract's fields in declaration order (pydantic's error order), with the messages
    pydantic gives for a missing, too short, too long or unknown value (probed on the model)."""
    specs = []
    for name, info in model.model_fields.items():
        kind, nullable, choices = _kind(info.annotation)
        lengths = {type(m).__name__: m for m in info.metadata}
        lo = getattr(lengths.get("MinLen"), "min_length", None)
        hi = getattr(lengths.get("MaxLen"), "max_length", None)
        specs.append((name, kind, info.is_required(), nullable, lo, hi, choices))
    base: dict[str, Any] = {}
    for name, kind, required, _, lo, _, choices in specs:
        if required:
            base[name] = {"string": "x" * (lo or 1), "choice": choices[0] if choices else "x"}.get(
                kind, "2000-01-01T00:00:00Z" if kind == "datetime" else 1
            )
    out = []
    for name, kind, required, nullable, lo, hi, choices in specs:
        without = {k: v for k, v in base.items() if k != name}
        out.append(
            ContractField(
                name=name,
                kind=kind,
                required=required,
                nullable=nullable,
                min_length=lo,
                max_length=hi,
                choices=choices,
                missing_msg=_message(model, without, name) if required else "",
                too_short_msg=_message(model, {**base, name: ""}, name) if lo else "",
                too_long_msg=_message(model, {**base, name: "x" * (hi + 1)}, name) if hi else "",
                choice_msg=_message(model, {**base, name: "\x00"}, name) if choices else "",
            )
        )
    return tuple(out)


def contract_schema():
    """The contract as a Spark ``StructType`` (what a valid event's fields are), derived from the model."""
    from pyspark.sql.types import LongType, StringType, StructField, StructType, TimestampType

    spark_type = {
        "string": StringType(),
        "choice": StringType(),
        "datetime": TimestampType(),
        "int": LongType(),
    }
    return StructType(
        [
            StructField(f.name, spark_type[f.kind], nullable=f.nullable or not f.required)
            for f in contract_fields()
        ]
    )


def read_schema():
    """``from_json``'s schema: the contract's fields as ``VARIANT`` (their JSON types kept) and the
    corrupt-record column."""
    from pyspark.sql.types import StringType, StructField, StructType, VariantType

    return StructType(
        [StructField(f.name, VariantType()) for f in contract_fields()] + [StructField(CORRUPT, StringType())]
    )


def unreadable_prefix() -> str:
    """The start of :class:`UnreadableVersion`'s message, up to the version number."""
    try:
        read_event({"schema_version": MAX_READ_VERSION + 1})
    except UnreadableVersion as exc:
        text = str(exc)
        return text[: text.index(str(MAX_READ_VERSION + 1))]
    raise AssertionError("read_event read an unreadable version")  # pragma: no cover


def unreadable_suffix() -> str:
    try:
        read_event({"schema_version": MAX_READ_VERSION + 1})
    except UnreadableVersion as exc:
        text = str(exc)
        return text[text.index(str(MAX_READ_VERSION + 1)) + len(str(MAX_READ_VERSION + 1)) :]
    raise AssertionError("read_event read an unreadable version")  # pragma: no cover


def _single_object(raw):
    """Whether the text is one JSON value and nothing after it (but whitespace): ``from_json``
    reads the first value and ignores what follows (``{"id": "1"} x``), which Python refuses.
    Escapes, then strings, then innermost brackets are replaced by ``0``; one ``0`` must remain.
    Each regex is a plain character-class loop (no recursion in java.util.regex)."""
    from pyspark.sql import functions as F

    s = F.regexp_replace(raw, r"(?s)\\.", "_")
    s = F.regexp_replace(s, r'"[^"]*"', "0")
    for _ in range(NESTING):
        s = F.regexp_replace(s, r"[\[{][^\[\]{}]*[\]}]", "0")
    return s.rlike(r"^[ \t\n\r]*0[ \t\n\r]*$")


def _python_us(us):
    """``transform.to_us`` (``int(dt.timestamp() * 1e6)``, double arithmetic) of exact microseconds."""
    from pyspark.sql import functions as F

    return ((us.cast("double") / F.lit(1_000_000.0)) * F.lit(1_000_000.0)).cast("long")


def _time_columns(name: str, text) -> list:
    """Stage columns of a time field: its ISO 8601 parts (``TIME_RE``) and the timestamp."""
    from pyspark.sql import functions as F

    return [
        F.regexp_extract(text, TIME_RE, 0).alias(f"_m_{name}"),
        F.regexp_extract(text, TIME_RE, 1).try_cast("int").alias(f"_y_{name}"),
        F.regexp_extract(text, TIME_RE, 2).alias(f"_f_{name}"),
        F.regexp_extract(text, TIME_RE, 3).alias(f"_z_{name}"),
    ]


def _time_us(name: str):
    """Microseconds as transform.to_us gives them, or null when the JVM does not decide."""
    from pyspark.sql import functions as F

    text, frac, zone = F.col(f"_s_{name}"), F.col(f"_f_{name}"), F.col(f"_z_{name}")
    norm = F.concat(
        F.substring(text, 1, 19),
        F.lit("."),
        F.rpad(F.when(frac == "", F.lit("0")).otherwise(F.substring(frac, 2, 6)), 6, "0"),
        F.when((zone == "") | (zone == "Z"), F.lit("+00:00")).otherwise(zone),
    )
    ts = F.try_to_timestamp(norm, F.lit("yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX"))
    us = F.unix_micros(ts)
    # years by microseconds: MIN_YEAR-01-01 and (MAX_YEAR+1)-01-01 UTC
    lo, hi = _year_start_us(MIN_YEAR), _year_start_us(MAX_YEAR + 1)
    decided = (
        (F.col(f"_m_{name}") != "") & F.col(f"_y_{name}").between(MIN_YEAR, MAX_YEAR) & (us >= lo) & (us < hi)
    )
    return F.when(decided, _python_us(us))


def _year_start_us(year: int) -> int:
    from datetime import UTC

    return (
        int((datetime(year, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds()) * 1_000_000
    )


# Cleaning, hashtags and terms in the JVM for texts whose every character is one where Java's
# regex classes, Python's and NFC agree: ASCII, and symbols that are neither word characters nor
# whitespace for Python, never composed by NFC (emoji, dingbats, typographic quotes). Texts with
# "&" (HTML entities: html.unescape) and other characters go to the Python worker.
_SYMBOL_RANGES = [(0x2018, 0x201F), (0x2600, 0x27BF), (0x1F000, 0x1FAFF), (0x200D, 0x200D), (0xFE0F, 0xFE0F)]
# Python's \s over the safe characters (str.isspace: ASCII ones only there)
_PY_SPACE = r"\t\n\x0b\x0c\r\x1c-\x1f "


def _symbol_is_safe(c: str) -> bool:
    import unicodedata

    cat = unicodedata.category(c)
    return (
        not c.isalnum()
        and not c.isspace()
        and c != "_"
        and unicodedata.normalize("NFC", c) == c
        and (cat[0] != "M" or c == "\ufe0f")
        and cat != "Cs"
        and c.lower() == c == c.upper()
    )


@functools.cache
def safe_text_re() -> str:
    """A Java regex matching the texts the JVM cleans exactly as :func:`streamotion_jobs.text.clean_text`."""
    runs: list[list[int]] = []
    for lo, hi in _SYMBOL_RANGES:
        for o in range(lo, hi + 1):
            if _symbol_is_safe(chr(o)):
                if runs and runs[-1][1] == o - 1:
                    runs[-1][1] = o
                else:
                    runs.append([o, o])
    ranges = "".join(f"\\x{{{a:X}}}-\\x{{{b:X}}}" for a, b in runs)
    return f"^[\\x00-\\x25\\x27-\\x7F{ranges}]*$"  # no "&" (0x26)


@functools.cache
def _stopword_lists() -> dict[str, list[str]]:
    from streamotion_jobs.text import SPARK_STOPWORD_LANGUAGES, stopwords

    return {code: sorted(stopwords(code)) for code in SPARK_STOPWORD_LANGUAGES}


def _clean_columns(text, lang):
    """(clean_text, hashtags, terms) as :mod:`streamotion_jobs.text` computes them, for safe texts."""
    from pyspark.sql import functions as F

    from streamotion_jobs.text import MAX_HASHTAGS

    hashtag = r"(?<![A-Za-z0-9_#&])#([A-Za-z0-9_]{1,100})"
    out = F.regexp_replace(text, rf"(?i)(?:https?://|www\.)[^{_PY_SPACE}]+", " ")
    out = F.regexp_replace(out, r"(?<![A-Za-z0-9_@])@[A-Za-z0-9_.\-]+(?:@[A-Za-z0-9_.\-]+)?", " ")
    out = F.regexp_replace(out, hashtag, "$1")
    clean = F.trim(F.regexp_replace(out, f"[{_PY_SPACE}]+", " "))
    # lower-casing ASCII first changes no match (no higher-order function: they run interpreted)
    tags = F.slice(F.array_distinct(F.regexp_extract_all(F.lower(text), F.lit(hashtag), 1)), 1, MAX_HASHTAGS)
    code = F.lower(
        F.substring_index(F.when(F.coalesce(lang, F.lit("")) == "", F.lit("en")).otherwise(lang), "-", 1)
    )
    code = F.when(code.isin(*_stopword_lists()), code).otherwise(F.lit("en"))
    return clean, tags, code


def _terms(clean, code):
    """The terms of a cleaned safe text; ``code``: a key of the stopword lists, which stay one
    literal map in the plan (looked up once per row), never copied into the rows."""
    from pyspark.sql import functions as F

    from streamotion_jobs.text import MAX_TERMS, MIN_TERM_LENGTH

    # a separator counts only between two letters; then every other non-letter splits words
    words = F.regexp_replace(F.lower(clean), r"(?<![a-z])['’-]|['’-](?![a-z])", " ")
    words = F.translate(F.regexp_replace(words, r"[^a-z'’-]+", " "), "’", "'")
    stop_map = F.create_map(
        *(x for c, ws in _stopword_lists().items() for x in (F.lit(c), F.array(*map(F.lit, ws))))
    )
    # words are the space-separated runs now; array_except keeps the first of each, in order
    found = F.regexp_extract_all(words, F.lit(f"[a-z'-]{{{MIN_TERM_LENGTH},}}"), 0)
    return F.slice(F.array_except(found, F.try_element_at(stop_map, code)), 1, MAX_TERMS)


def native_parse(df, max_future_skew_s: float | None, now_us: int):
    """Kafka records (``value``, ``topic``, ``partition``, ``offset``) -> :data:`NATIVE_SCHEMA`'s rows.

    ``now_us``: the job's clock for this batch (the default ``ingested_at`` and the future bound).
    Built in stages (one projection each) so that no expression is repeated in the plan."""
    from pyspark.sql import functions as F

    from streamotion_jobs.transform import EMPTY_TEXT_REASON

    fields = contract_fields()
    value = F.col("value")
    raw = value.cast("string")
    utf8 = value.isNotNull() & F.is_valid_utf8(raw)
    # stage 1: the text and from_json (only of valid UTF-8: Python reports the others)
    s1 = df.select(
        "value",
        raw.alias("_raw"),
        utf8.alias("_utf8"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").cast("int").alias("kafka_partition"),
        F.col("offset").cast("long").alias("kafka_offset"),
        F.when(utf8, F.from_json(raw, read_schema(), JSON_OPTIONS)).alias("_doc"),
    )
    raw, doc = F.col("_raw"), F.col("_doc")
    json_ok = (
        F.col("_utf8")
        & doc.isNotNull()
        & doc[CORRUPT].isNull()
        & ~raw.rlike(SURROGATE_ESCAPE_RE)
        & raw.rlike(r"^[ \t\n\r]*\{")
        & _single_object(raw)
    )
    # stage 2: each field's JSON type and text
    per_field = []
    for f in fields:
        v = doc[f.name]
        kind = F.schema_of_variant(v)
        per_field += [v.isNull().alias(f"_n_{f.name}"), kind.alias(f"_k_{f.name}")]
    s2 = s1.select(
        "value",
        "_raw",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "_doc",
        F.coalesce(json_ok, F.lit(False)).alias("_json_ok"),
        *per_field,
    )
    texts = []
    for f in fields:
        kind = F.col(f"_k_{f.name}")
        if f.kind == "int":
            texts.append(
                F.when(kind == "BIGINT", F.try_variant_get(doc[f.name], "$", "bigint")).alias(f"_s_{f.name}")
            )
        else:
            texts.append(F.when(kind == "STRING", doc[f.name].cast("string")).alias(f"_s_{f.name}"))
    keep = ["value", "_raw", "kafka_topic", "kafka_partition", "kafka_offset", "_json_ok"]
    keep += [f"_n_{f.name}" for f in fields] + [f"_k_{f.name}" for f in fields]
    s3 = s2.select(*keep, *texts)
    times = [f for f in fields if f.kind == "datetime"]
    s4 = s3.select("*", *(c for f in times for c in _time_columns(f.name, F.col(f"_s_{f.name}"))))
    s5 = s4.select("*", *(_time_us(f.name).alias(f"_us_{f.name}") for f in times))

    errors, undecided, values = [], [], {}
    for f in fields:
        missing, kind = F.col(f"_n_{f.name}"), F.col(f"_k_{f.name}")
        null, is_string, text = kind == "VOID", kind == "STRING", F.col(f"_s_{f.name}")
        if f.kind == "int":  # schema_version: read_event's own check, then pydantic's bounds
            values[f.name] = text
            undecided.append(~missing & (kind != "BIGINT"))
            continue
        err = F.when(missing & F.lit(f.required), F.lit(f.missing_msg))
        if f.kind == "datetime":
            us = F.col(f"_us_{f.name}")
            values[f.name] = us
            undecided.append(~missing & ~(is_string & us.isNotNull()))
        else:
            values[f.name] = text
            length = F.char_length(text)
            if f.choices:
                err = err.when(is_string & ~text.isin(*f.choices), F.lit(f.choice_msg))
            if f.min_length:
                err = err.when(is_string & (length < f.min_length), F.lit(f.too_short_msg))
            if f.max_length:
                err = err.when(is_string & (length > f.max_length), F.lit(f.too_long_msg))
            undecided.append((null & ~F.lit(f.nullable)) | (~missing & ~null & ~is_string))
        errors.append(F.when(err.isNotNull(), F.concat(F.lit(f"{f.name}: "), err)))
    value, json_ok = F.col("value"), F.col("_json_ok")
    version = values.pop("schema_version")
    unreadable = F.coalesce(~version.between(MIN_READ_VERSION, MAX_READ_VERSION), F.lit(False))
    fallback = ~json_ok | F.coalesce(F.greatest(*undecided), F.lit(True))
    # read_event's version check comes first; a null value has its own reason
    fallback = value.isNotNull() & fallback & ~(json_ok & unreadable)
    found = F.filter(F.array(*errors), lambda e: e.isNotNull())
    s6 = s5.select(
        "*",
        fallback.alias("_fallback"),
        F.when(unreadable, version).alias("_unreadable"),
        found.alias("_found"),
    )
    version = F.col("_unreadable")
    found = F.col("_found")
    fallback = F.col("_fallback")
    error = (
        F.when(value.isNull(), F.lit("empty message (null value)"))
        .when(fallback, F.lit(None))
        .when(
            version.isNotNull(),
            F.concat(F.lit(unreadable_prefix()), version.cast("string"), F.lit(unreadable_suffix())),
        )
        .when(
            F.size(found) > 0, F.concat(F.lit("invalid event: "), F.array_join(F.slice(found, 1, 10), "; "))
        )
    )
    s7 = s6.select("*", error.alias("error"))
    error = F.col("error")
    created = values["created_at"]
    ingested_given = ~F.col("_n_ingested_at")
    ingested = F.coalesce(values["ingested_at"], F.lit(now_us))
    future = F.lit(None).cast("string")
    if max_future_skew_s is not None:
        reference = F.least(ingested, F.lit(now_us))
        ahead = created - reference
        which = F.when(ingested_given & (ingested <= F.lit(now_us)), "ingested_at").otherwise(
            "the job's clock"
        )
        whole = F.floor(created / 1_000_000)
        frac = created - whole * 1_000_000
        iso = F.concat(
            F.date_format(F.timestamp_seconds(whole), "yyyy-MM-dd'T'HH:mm:ss"),
            F.when(frac != 0, F.concat(F.lit("."), F.lpad(frac.cast("string"), 6, "0"))).otherwise(""),
            F.lit("+00:00"),
        )
        seconds = F.bround(ahead.cast("double") / F.lit(1_000_000.0), 0).cast("long").cast("string")
        future = F.when(
            ahead > F.lit(max_future_skew_s * 1_000_000),
            F.concat(
                F.lit("event time in the future: created_at "),
                iso,
                F.lit(" is "),
                seconds,
                F.lit("s ahead of "),
                which,
                F.lit(
                    f", more than processing.maxFutureSkew ({max_future_skew_s:g}s): a wrong clock at the "
                    "platform or producer (stored, it would move the watermark past every later event)"
                ),
            ),
        )
    known = F.array(*(F.lit(f.name) for f in fields))
    keys = F.json_object_keys(raw)
    dropped = F.array_sort(F.array_except(keys, known))
    ok = ~fallback & error.isNull()
    payload = F.substring(raw, 1, MAX_PAYLOAD_CHARS)
    text, lang = values["text"], values["lang"]
    safe = ok & text.rlike(safe_text_re()) & F.coalesce(lang.rlike(r"^[\x00-\x7F]*$"), F.lit(True))
    clean, tags, code = _clean_columns(text, lang)
    s7 = s7.select(
        "*",
        F.coalesce(safe, F.lit(False)).alias("_safe"),
        F.when(safe, clean).alias("_clean"),
        F.when(safe, tags).alias("_tags"),
        F.when(safe, code).alias("_code"),
        F.when(ok, future).alias("_future"),
    )
    cleaned, clean = F.col("_safe"), F.col("_clean")
    empty = cleaned & (clean == "")
    final_error = F.when(empty, F.lit(EMPTY_TEXT_REASON)).when(cleaned, F.col("_future")).otherwise(error)
    good = ok & ~(cleaned & F.col("_future").isNotNull()) & ~empty
    return s7.select(
        F.when(ok, F.concat_ws(":", values["source"], values["platform"], values["id"])).alias("event_id"),
        *(
            F.when(ok, values[n]).alias(n)
            for n in ("id", "source", "platform", "channel", "author", "text", "lang")
        ),
        F.when(ok, created).alias("created_at_us"),
        F.when(ok, ingested).alias("ingested_at_us"),
        F.when(ok, values["url"]).alias("url"),
        F.when(ok, F.char_length(values["text"])).cast("int").alias("text_length"),
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        final_error.alias("error"),
        F.when(value.isNull(), F.lit("")).when(~fallback, payload).alias("payload"),
        F.when(good, dropped).otherwise(F.array().cast("array<string>")).alias("dropped_fields"),
        F.col("_future").alias("future_error"),
        F.when(fallback, value).alias("value"),
        fallback.alias("fallback"),
        F.when(good & cleaned, clean).alias("clean_text"),
        F.when(good & cleaned, F.col("_tags")).otherwise(F.array().cast("array<string>")).alias("hashtags"),
        F.when(good & cleaned, _terms(clean, F.col("_code")))
        .otherwise(F.array().cast("array<string>"))
        .alias("terms"),
        cleaned.alias("cleaned"),
    )


NATIVE_SCHEMA = (
    "event_id string, id string, source string, platform string, channel string, author string, "
    "text string, lang string, created_at_us long, ingested_at_us long, url string, text_length int, "
    "kafka_topic string, kafka_partition int, kafka_offset long, error string, payload string, "
    "dropped_fields array<string>, future_error string, value binary, fallback boolean, "
    "clean_text string, hashtags array<string>, terms array<string>, cleaned boolean"
)

"""Text preparation: cleaning for the model, hashtags and terms (as the ancestors' top-hashtag and
top-unigram views had). Pure Python, used inside the Spark job's pandas functions."""

from __future__ import annotations

import functools
import html
import importlib.util
import os
import re
import unicodedata
import zipfile
from pathlib import Path

_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MENTION = re.compile(r"(?<![\w@])@[\w.\-]+(?:@[\w.\-]+)?")  # @user and @user@instance
_HASHTAG = re.compile(r"(?<![\w#&])#(\w{1,100})", re.UNICODE)
_WS = re.compile(r"\s+")
_WORD = re.compile(r"[^\W\d_](?:[^\W\d_]|['’-][^\W\d_])*", re.UNICODE)

MIN_TERM_LENGTH = 3
MAX_TERMS = 64
MAX_HASHTAGS = 32

# Stopwords: the words that would otherwise top every term view. The lists are Spark's own
# (``StopWordsRemover.loadDefaultStopWords``: the Snowball lists, English augmented from NLTK), read
# from the spark-mllib jar without a JVM, so Python workers and non-Spark callers need no
# SparkContext. Keys: ISO 639-1 codes of the languages Spark ships a list for.
SPARK_STOPWORD_LANGUAGES = {
    "da": "danish",
    "de": "german",
    "en": "english",
    "es": "spanish",
    "fi": "finnish",
    "fr": "french",
    "hu": "hungarian",
    "it": "italian",
    "nb": "norwegian",
    "nl": "dutch",
    "nn": "norwegian",
    "no": "norwegian",
    "pt": "portuguese",
    "ru": "russian",
    "sv": "swedish",
    "tr": "turkish",
}
_STOPWORDS_DIR = "org/apache/spark/ml/feature/stopwords"
# Social-media extras, in every language: "amp" is what a doubly escaped "&amp;amp;" leaves after
# one unescape, "via" the attribution left once "via @user" loses its mention, "lol" the laugh
# typed in every language. ("rt" and "gt"/"lt" need no entry: terms are at least three letters.)
SOCIAL_STOPWORDS = frozenset({"amp", "via", "lol"})
# Informal words the Snowball lists (written for edited prose) lack and posts are full of:
# contractions typed without their apostrophe, fillers, intensifiers.
INFORMAL_STOPWORDS: dict[str, frozenset[str]] = {
    "en": frozenset({"cant", "dont", "im", "ive", "thats", "youre", "yeah", "yes", "really", "much", "even"})
    | {"also", "ever", "every", "get", "gets", "got", "like", "one", "still", "us"},
    "fr": frozenset({"aussi", "avoir", "être", "faire", "fait", "bien", "très", "plus", "comme", "si"})
    | {"cet", "cette", "elles", "ils", "où", "tous", "tout"},
    "de": frozenset({"dass", "ja", "schon"}),
    "es": frozenset({"ser", "si"}),
    "it": frozenset({"molto", "quando"}),
    "pt": frozenset({"é"}),
    "nl": frozenset({"den", "we", "wel", "wij", "zei"}),
}


def spark_stopwords_jar() -> Path:
    """The spark-mllib jar: under $SPARK_HOME/jars (the job image), else the one pyspark ships."""
    dirs = [Path(os.environ["SPARK_HOME"], "jars")] if os.environ.get("SPARK_HOME") else []
    spec = importlib.util.find_spec("pyspark")  # found, not imported
    if spec and spec.submodule_search_locations:
        dirs += [Path(d, "jars") for d in spec.submodule_search_locations]
    for d in dirs:
        jars = sorted(d.glob("spark-mllib_*.jar"))
        if jars:
            return jars[-1]
    raise FileNotFoundError(
        "no spark-mllib_*.jar (Spark's stopword lists) in "
        + (", ".join(map(str, dirs)) or "no SPARK_HOME/pyspark")
    )


@functools.cache
def spark_stopwords() -> dict[str, frozenset[str]]:
    """Spark's default stopword lists by Spark language name, read once per process."""
    with zipfile.ZipFile(spark_stopwords_jar()) as jar:
        return {
            name: frozenset(w for w in jar.read(f"{_STOPWORDS_DIR}/{name}.txt").decode().splitlines() if w)
            for name in set(SPARK_STOPWORD_LANGUAGES.values())
        }


def clean_text(text: str) -> str:
    """The text the model sees: HTML entities unescaped (X and Reddit send ``&lt;3``), URLs and
    @mentions removed, whitespace collapsed. Hashtag words stay (``#happy`` becomes ``happy``): they
    carry the emotion. Angle brackets stay too: the producers already turned HTML into text, and
    emoticons (``<3``, ``>.<``) and emoji are signal for the model."""
    out = html.unescape(text)
    out = _URL.sub(" ", out)
    out = _MENTION.sub(" ", out)
    out = _HASHTAG.sub(r"\1", out)
    out = unicodedata.normalize("NFC", out)
    return _WS.sub(" ", out).strip()


def hashtags(text: str) -> list[str]:
    """Distinct hashtags, lower-cased, without '#', in order of appearance."""
    seen: dict[str, None] = {}
    for match in _HASHTAG.finditer(html.unescape(text)):
        seen.setdefault(match.group(1).lower(), None)
    return list(seen)[:MAX_HASHTAGS]


@functools.lru_cache(maxsize=256)  # language tags come from the events
def stopwords(lang: str | None) -> frozenset[str]:
    """Stopwords of a language tag ("pt-BR" is "pt"): Spark's list with our extras; English when
    Spark has no list for it."""
    code = (lang or "en").split("-")[0].lower()
    if code not in SPARK_STOPWORD_LANGUAGES:
        code = "en"
    spark = spark_stopwords()[SPARK_STOPWORD_LANGUAGES[code]]
    return spark | SOCIAL_STOPWORDS | INFORMAL_STOPWORDS.get(code, frozenset())


def terms(clean: str, lang: str | None) -> list[str]:
    """Distinct unigrams of the cleaned text: lower-cased words of at least three letters that are
    not stopwords of the event's language (English when unknown)."""
    stop = stopwords(lang)
    seen: dict[str, None] = {}
    for match in _WORD.finditer(clean.lower()):
        word = match.group(0).replace("’", "'")
        if len(word) >= MIN_TERM_LENGTH and word not in stop:
            seen.setdefault(word, None)
    return list(seen)[:MAX_TERMS]

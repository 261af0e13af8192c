"""Stopwords of the term views: Spark's default lists, read from the spark-mllib jar without a JVM,
plus our short social-media and informal extras."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys

import pytest
from streamotion_jobs import text


@pytest.fixture(scope="module")
def spark():
    from streamotion_jobs.spark import session

    s = session("streamotion-stopwords", master="local[1]")
    yield s
    s.stop()


def test_lists_are_sparks_default_stopwords(spark):
    """The lists are exactly what Spark's own ``StopWordsRemover.loadDefaultStopWords(language)``
    returns, for every language Spark supports: apache/spark v4.0.0
    mllib/src/main/scala/org/apache/spark/ml/feature/StopWordsRemover.scala (``supportedLanguages``;
    ``loadDefaultStopWords`` reads the resource ``/org/apache/spark/ml/feature/stopwords/$language.txt``,
    one word a line, UTF-8), the files of mllib/src/main/resources/org/apache/spark/ml/feature/stopwords/."""
    from pyspark.ml.feature import StopWordsRemover

    # Spark names its supported languages when it refuses another one
    with pytest.raises(Exception, match="is not in the supported language list: ") as refused:
        StopWordsRemover.loadDefaultStopWords("klingon")
    listed = str(refused.value).split("supported language list: ", 1)[1].split(".", 1)[0]
    supported = set(listed.split(", "))
    assert set(text.SPARK_STOPWORD_LANGUAGES.values()) == supported
    ours = text.spark_stopwords()
    for language in sorted(supported):
        assert ours[language] == set(StopWordsRemover.loadDefaultStopWords(language)), language


def test_stopwords_come_from_the_jar_fall_back_to_english_and_carry_the_extras():
    assert "yourselves" in text.stopwords("en")  # in Spark's English list, never in ours
    assert {"и", "через"} <= text.stopwords("ru")  # a language the hand-typed lists lacked
    assert text.stopwords("pt-BR") == text.stopwords("pt")
    assert text.stopwords("nb") == text.stopwords("no") != text.stopwords("en")
    for unknown in (None, "", "xx", "zh-Hans"):
        assert text.stopwords(unknown) == text.stopwords("en")
    for lang in (*text.SPARK_STOPWORD_LANGUAGES, None):
        assert text.stopwords(lang) >= text.SOCIAL_STOPWORDS
    assert text.terms("lol this via the amp really great", "en") == ["great"]
    assert text.terms("и это было через неделю, прекрасно", "ru") == ["это", "неделю", "прекрасно"]


def test_the_job_images_spark_home_jar_is_read_first_and_a_missing_jar_is_a_clear_error(
    tmp_path, monkeypatch
):
    """The job image has no pip pyspark: its Spark, spark-mllib jar included, is under $SPARK_HOME/jars
    (apache/spark-docker 4.0.0/scala2.13-java17-ubuntu/Dockerfile, the base of our job image's
    apache/spark:4.0.0-scala2.13-java17-python3-ubuntu: the binary distribution's ``jars`` moved to
    /opt/spark/jars, ``ENV SPARK_HOME=/opt/spark``)."""
    shipped = text.spark_stopwords_jar()
    (tmp_path / "spark" / "jars").mkdir(parents=True)
    shutil.copy(shipped, tmp_path / "spark" / "jars" / shipped.name)
    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "spark"))
    assert text.spark_stopwords_jar() == tmp_path / "spark" / "jars" / shipped.name

    monkeypatch.setenv("SPARK_HOME", str(tmp_path / "empty"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match=r"spark-mllib_\*\.jar.*empty/jars"):
        text.spark_stopwords_jar()


def test_stopwords_start_no_jvm_and_import_no_pyspark():
    """Python workers and non-Spark callers (the local runner) read the lists without a SparkContext."""
    code = (
        "import sys; from streamotion_jobs import text; assert 'yourselves' in text.stopwords('en'); "
        "print(sorted(m for m in ('pyspark', 'py4j') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

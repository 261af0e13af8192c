"""The local runner's pure parts: the local pipeline document, durations, model choice, bench summary."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import typer

from streamotion.api.validate import load_pipeline, parse
from streamotion.local.benchall import check_target, load_results, summary_markdown
from streamotion.local.cli import parse_duration
from streamotion.local.runner import local_pipeline, source_is_finite


def _pipeline(sources):
    return parse(
        {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": "p"},
            "spec": {
                "sources": sources,
                "sinks": [{"type": "postgres", "postgres": {"host": "db", "credentialsSecret": "pg"}}],
            },
        }
    )


def test_local_pipeline_points_at_the_local_broker_and_splits_the_event_limit():
    p = _pipeline(
        [
            {"name": "a", "type": "replay", "replay": {}},
            {"name": "b", "type": "replay", "replay": {"limit": 5}},
            {"name": "off", "type": "replay", "replicas": 0, "replay": {}},
            {"name": "web", "type": "http", "http": {"tokenSecret": "t"}},
        ]
    )
    doc = local_pipeline(p, "127.0.0.1:1234", events=7)
    assert doc["spec"]["kafka"]["bootstrapServers"] == "127.0.0.1:1234"
    limits = {s["name"]: s.get("replay", {}).get("limit") for s in doc["spec"]["sources"]}
    assert limits == {"a": 4, "b": 3, "off": None, "web": None}
    assert "status" not in doc
    parse(doc)  # still a valid pipeline the children can load
    assert [source_is_finite(s) for s in doc["spec"]["sources"]] == [True, True, False, False]

    untouched = local_pipeline(p, "127.0.0.1:1234", events=None)
    assert [s.get("replay", {}).get("limit") for s in untouched["spec"]["sources"]] == [None, 5, None, None]
    assert not source_is_finite(untouched["spec"]["sources"][0])  # loops forever by default


def test_the_example_is_a_finite_valid_pipeline(root):
    p = load_pipeline(root / "examples" / "local.yaml")
    doc = local_pipeline(p, "127.0.0.1:1", events=None)
    assert all(source_is_finite(s) for s in doc["spec"]["sources"])
    assert any(s.postgres for s in p.spec.sinks)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), ("2.5", 2.5)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "5x", "m5", "-3"])
def test_bad_durations_are_refused(text):
    with pytest.raises(typer.BadParameter):
        parse_duration(text)


def test_without_hub_or_trained_model_the_choice_explains_the_options(tmp_path, monkeypatch):
    from streamotion.local.model import NoModel, choose

    monkeypatch.setenv("STREAMOTION_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(NoModel) as err:
        choose("j-hartmann/emotion-english-distilroberta-base", "ekman", log=lambda _: None)
    for option in ("--train", "--model DIR", "--tiny-model", "streamotion model train"):
        assert option in str(err.value)

    assert choose("x", "ekman", model=str(tmp_path)).path == str(tmp_path)
    spec_dir = tmp_path / "mine"
    spec_dir.mkdir()
    assert choose(str(spec_dir), "ekman").path == str(spec_dir)
    tiny = choose("x", "original", tiny=True)
    assert "meaningless" in tiny.why
    labels = json.loads((tmp_path / "tiny-models" / "original" / "config.json").read_text())["id2label"]
    assert len(labels) == 28


def test_targets():
    assert check_target(2.5, ">= 2") is True
    assert check_target(1.5, ">= 2") is False
    assert check_target(10, "< 20") is True
    assert check_target(1, "fast") is None


def test_bench_summary_lists_each_ratio_against_its_limit(tmp_path):
    machine = {"cpu": "Test CPU", "cores": 2, "memory_gib": 24, "gpu": None, "python": "3.11"}
    docs = {
        "model": {
            "benchmark": "model",
            "machine": machine,
            "date": "2026-11-22T00:00:00+00:00",
            "results": [
                {"name": "serve_texts_per_s", "value": 300.0, "unit": "texts/s"},
                {"name": "serve_vs_naive", "value": 4.2, "unit": "x"},
                {"name": "serve_vs_raw", "value": 0.5, "unit": "x"},
            ],
            "targets": {"serve_vs_raw": ">= 0.8", "serve_vs_naive": ">= 2"},
            "ancestor": {"serve_vs_naive": "one HTTP request per text"},
        },
        "ingest": {
            "benchmark": "ingest",
            "machine": machine,
            "results": [{"name": "replay_events_per_s", "value": 50000.0, "unit": "events/s"}],
        },
    }
    for name, doc in docs.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(doc))
    (tmp_path / "garbage.json").write_text("{not json")
    loaded = load_results(tmp_path)
    assert [d["benchmark"] for d in loaded] == ["ingest", "model"]
    md = summary_markdown(loaded, {"pipeline": "exit code 1 after 3 s"})
    assert "| model | `serve_vs_naive` | 4.2 | >= 2 | yes | one HTTP request per text |" in md
    assert "| model | `serve_vs_raw` | 0.5 | >= 0.8 | **NO** | - |" in md
    assert "Test CPU, 2 cores" in md
    assert "`pipeline`: exit code 1 after 3 s" in md
    assert "| `replay_events_per_s` | 50,000 | events/s |" in md


def test_bench_all_summary_only_writes_the_summary(tmp_path):
    (tmp_path / "ingest.json").write_text(
        json.dumps(
            {"benchmark": "ingest", "machine": {}, "results": [{"name": "r", "value": 1, "unit": "x"}]}
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "streamotion", "bench", "all", "--summary-only"],
        env={**__import__("os").environ, "STREAMOTION_BENCH_DIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "## ingest" in text
    assert "| ingest | `r` | 1 | - | - | - |" in text


def test_run_without_local_is_refused(root):
    result = subprocess.run(
        [sys.executable, "-m", "streamotion", "run", str(root / "examples" / "local.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "--local" in result.stderr

"""Label mapping, training, evaluation and ONNX export of the emotion model (tiny local models)."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from streamotion_serving.model import EmotionModel, LabelMappingError, ModelConfig, label_mapping

from streamotion.labels import EKMAN, GOEMOTIONS, GOEMOTIONS_TO_EKMAN

TEXTS = ["I love this so much!", "this is awful and I am angry", "wow, really?", "ok", "so sad " * 300]


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_seven_label_head_maps_by_name_not_position(tmp_path):
    from streamotion_serving.tiny import build_tiny_model

    shuffled = ["surprise", "joy", "Anger", "neutral", "fear", "sadness", "disgust"]
    m = EmotionModel(ModelConfig(model=str(build_tiny_model(tmp_path / "m", shuffled)), taxonomy="ekman"))
    assert m.labels == list(EKMAN)
    probs = _softmax(m.logits(TEXTS))
    scores = m.scores(TEXTS)
    for j, name in enumerate(shuffled):
        assert np.allclose(scores[:, EKMAN.index(name.lower())], probs[:, j], atol=1e-5)
    for res, row in zip(m.classify(TEXTS), scores, strict=True):
        assert res["label"] == EKMAN[int(row.argmax())] and res.get("labels") is None


def test_28_label_head_folds_into_ekman(tiny_models):
    m = EmotionModel(ModelConfig(model=str(tiny_models["original"]), taxonomy="ekman"))
    probs = _softmax(m.logits(TEXTS))
    scores = m.scores(TEXTS)
    expected = np.zeros_like(scores)
    for j, name in enumerate(GOEMOTIONS):
        expected[:, EKMAN.index(GOEMOTIONS_TO_EKMAN[name])] += probs[:, j]
    assert np.allclose(scores, expected, atol=1e-5)
    assert np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    # the same head served as the 28 GoEmotions labels is the plain softmax
    m28 = EmotionModel(ModelConfig(model=str(tiny_models["original"]), taxonomy="original"))
    assert m28.labels == list(GOEMOTIONS)
    assert np.allclose(m28.scores(TEXTS), probs, atol=1e-5)


def test_multi_label_28_head(tiny_models):
    m = EmotionModel(ModelConfig(model=str(tiny_models["original-multi"]), taxonomy="ekman", threshold=0.5))
    assert m.multi_label
    sig = 1 / (1 + np.exp(-m.logits(TEXTS)))
    scores = m.scores(TEXTS)
    for k, label in enumerate(EKMAN):
        members = [j for j, g in enumerate(GOEMOTIONS) if GOEMOTIONS_TO_EKMAN[g] == label]
        assert np.allclose(scores[:, k], sig[:, members].max(axis=1), atol=1e-5)
    for res, row in zip(m.classify(TEXTS), scores, strict=True):
        above = {EKMAN[k] for k in np.flatnonzero(row >= 0.5)}
        assert set(res["labels"]) == (above or {res["label"]})


def test_multi_label_label_is_the_strongest_over_its_threshold(tiny_models):
    """The documented rule (``streamotion.model_api.Classification``): ``labels`` every label over its
    threshold, strongest first, else the top label; ``label`` (and ``score``) the first of them."""
    m = EmotionModel(ModelConfig(model=str(tiny_models["original-multi"]), taxonomy="ekman"))
    m.thresholds = np.array([0.9 if label == "neutral" else 0.5 for label in EKMAN], dtype=np.float32)
    row = np.full(len(EKMAN), 0.1, dtype=np.float32)
    row[EKMAN.index("neutral")], row[EKMAN.index("sadness")], row[EKMAN.index("fear")] = 0.8, 0.6, 0.55
    quiet = np.full(len(EKMAN), 0.1, dtype=np.float32)
    quiet[EKMAN.index("surprise")] = 0.3
    over, none_over = m.results(np.stack([row, quiet]))
    assert over["labels"] == ["sadness", "fear"] and over["label"] == "sadness"
    assert over["score"] == pytest.approx(0.6)
    assert none_over["labels"] == ["surprise"] and none_over["label"] == "surprise"


def test_label_mapping_errors_and_overrides():
    with pytest.raises(LabelMappingError, match="no place in the original taxonomy"):
        label_mapping((*EKMAN[:-1], "happy"), "original")
    with pytest.raises(LabelMappingError, match=r"no label for \['surprise'\]"):
        label_mapping(EKMAN[:-1], "ekman")
    names = [f"LABEL_{i}" for i in range(7)]
    assert label_mapping(names, "ekman", dict(zip(names, EKMAN, strict=True))) == list(EKMAN)


@pytest.fixture(scope="module")
def trained(tiny_models, shared, tmp_path_factory):
    """A short fine-tune of the tiny model on a GoEmotions subset."""
    from streamotion_serving.train import TrainConfig, train

    out = tmp_path_factory.mktemp("trained") / "model"
    result = train(
        TrainConfig(
            data_dir=shared / "data" / "goemotions" / "ekman",
            base=str(tiny_models["ekman"]),
            out=out,
            epochs=1,
            limit=256,
            dev_limit=128,
            batch_size=32,
            lr=1e-3,
        ),
        progress=False,
    )
    return out, result


def test_training_writes_a_standard_model_dir_with_a_card(trained):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    out, result = trained
    config = AutoConfig.from_pretrained(out)
    assert [config.id2label[i] for i in range(7)] == list(EKMAN)
    AutoModelForSequenceClassification.from_pretrained(out)
    meta = json.loads((out / "streamotion.json").read_text())
    assert meta["taxonomy"] == "ekman" and meta["train_rows"] == 256 and meta["dev_rows"] == 128
    assert 0.0 <= result["dev_macro_f1"] <= 1.0 and meta["dev"]["macro_f1"] == result["dev_macro_f1"]
    card = (out / "README.md").read_text()
    assert "macro-F1" in card and "anger" in card and "256 training rows" in card


def test_28_label_multi_label_training_also_serves_ekman(tiny_models, shared, tmp_path, monkeypatch):
    """A 28-label multi-label model is calibrated for both taxonomies: its Ekman thresholds and dev
    figures are recorded, serving Ekman uses them, and it is the latest model for either taxonomy."""
    from streamotion_serving.model import latest_model
    from streamotion_serving.train import TrainConfig, train

    monkeypatch.setenv("STREAMOTION_CACHE", str(tmp_path / "cache"))
    assert latest_model("ekman") is None
    result = train(
        TrainConfig(
            data_dir=shared / "data" / "goemotions" / "original",
            taxonomy="original",
            multi_label=True,
            base=str(tiny_models["original"]),
            epochs=1,
            limit=256,
            dev_limit=128,
            lr=1e-3,
        ),
        progress=False,
    )
    out = latest_model("ekman")
    assert out is not None and str(out) == result["model"] and latest_model("original") == out
    meta = json.loads((out / "streamotion.json").read_text())
    assert set(meta["thresholds_by_taxonomy"]) == {"original", "ekman"}
    assert set(meta["thresholds_by_taxonomy"]["ekman"]) == set(EKMAN)
    assert meta["thresholds"] == meta["thresholds_by_taxonomy"]["original"]
    by_tax = result["dev_macro_f1_by_taxonomy"]
    assert set(by_tax) == {"original", "ekman"}
    assert meta["dev_by_taxonomy"]["ekman"]["macro_f1"] == by_tax["ekman"]
    assert meta["dev_by_taxonomy"]["ekman"]["data"].endswith("ekman/dev.tsv")
    for taxonomy in ("original", "ekman"):  # what the thresholds give on dev rows not tuned on
        assert 0 <= meta["dev_by_taxonomy"][taxonomy]["macro_f1_heldout"] <= 1
        # tuned on the scores serving computes: texts truncated to serving's max_length, not training's
        assert meta["max_length"] == 64 and ModelConfig.max_length == 128
        assert meta["dev_by_taxonomy"][taxonomy]["max_length"] == ModelConfig.max_length
        report = json.loads(Path(meta["dev_by_taxonomy"][taxonomy]["eval"]).read_text())
        assert report["max_length"] == ModelConfig.max_length
    assert meta["dev"]["macro_f1"] == by_tax["original"] == result["dev_macro_f1"]
    served = EmotionModel(ModelConfig(model=str(out), taxonomy="ekman"))
    expected = [meta["thresholds_by_taxonomy"]["ekman"][label] for label in EKMAN]
    assert np.allclose(served.thresholds, expected)
    card = (out / "README.md").read_text()
    assert "### original" in card and "### ekman (the original labels folded into ekman" in card
    assert "tuned on one half of dev" in card
    assert "texts truncated to 128 tokens, as served" in card


def test_eval_writes_json_and_confusion_png(trained, shared, tmp_path):
    from streamotion_serving.evaluate import evaluate

    out, _ = trained
    report = evaluate(
        out, shared / "data" / "goemotions" / "ekman" / "dev.tsv", out_dir=tmp_path, limit=100, progress=False
    )
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["macro_f1"] == report["macro_f1"] and saved["rows"] == 100
    assert set(saved["per_label"]) == set(EKMAN)
    assert (tmp_path / "confusion.png").read_bytes()[:4] == b"\x89PNG"
    assert np.array(saved["confusion_matrix"]["matrix"]).shape == (7, 7)
    assert saved["throughput_texts_per_s"] > 0
    # the 28-label dev file scored against the Ekman model: gold labels fold onto Ekman
    r28 = evaluate(
        out,
        shared / "data" / "goemotions" / "original" / "dev.tsv",
        out_dir=tmp_path / "o",
        limit=50,
        progress=False,
    )
    assert set(r28["per_label"]) == set(EKMAN)


def test_trained_model_exports_to_onnx_and_serves(trained, tmp_path):
    from streamotion_serving.export import export_onnx
    from streamotion_serving.server import ServeProcess

    out, _ = trained
    paths = export_onnx(out, quantize=True)
    assert paths["onnx"].is_file() and paths["onnx_int8"].is_file()
    torch_scores = EmotionModel(ModelConfig(model=str(out))).scores(TEXTS)
    onnx_scores = EmotionModel(ModelConfig(model=str(out), backend="onnx")).scores(TEXTS)
    assert np.allclose(torch_scores, onnx_scores, atol=1e-4)

    with ServeProcess(
        {"model": str(out), "backend": "onnx", "num_replicas": 1}, num_cpus=2, log_path=tmp_path / "s.log"
    ) as srv:
        info = httpx.get(f"{srv.url}/v1/model", timeout=30).json()
        assert (
            info["backend"] == "onnx"
            and info["version"] == json.loads((out / "streamotion.json").read_text())["version"]
        )
        r = httpx.post(f"{srv.url}/v1/classify", json={"texts": TEXTS}, timeout=60)
        assert r.status_code == 200, r.text
        served = [[res["scores"][label] for label in EKMAN] for res in r.json()["results"]]
        assert np.allclose(served, onnx_scores, atol=1e-4)


def test_bad_training_data_names_the_line(tmp_path):
    from streamotion_serving.data import DataError, read_tsv

    f = tmp_path / "train.tsv"
    f.write_text("fine text\t3\tid1\nbroken text\t9\tid2\n")
    with pytest.raises(DataError, match=r"train.tsv:2: label indices \[9\]"):
        read_tsv(f, 7)


def test_cli_commands_and_build_app_args():
    from streamotion_serving.app import build_app
    from typer.testing import CliRunner

    from streamotion.cli import app

    runner = CliRunner()
    for cmd in (["model", "--help"], ["bench", "model", "--help"]):
        r = runner.invoke(app, cmd)
        assert r.exit_code == 0, r.output
    assert all(
        c in runner.invoke(app, ["model", "--help"]).output
        for c in ("serve", "train", "calibrate", "eval", "export")
    )
    with pytest.raises(ValueError, match=r"unknown build_app args \['batchSize'\]"):
        build_app({"batchSize": 4})


def _synthetic(n: int, k: int, signal: float, seed: int):
    rng = np.random.default_rng(seed)
    gold = rng.random((n, k)) < np.linspace(0.05, 0.4, k)  # rare to common labels
    gold[np.arange(n), rng.integers(0, k, n)] |= ~gold.any(axis=1)  # every row has a label
    logits = signal * (gold - 0.5) + rng.normal(0, 1, (n, k)) - np.linspace(1.5, 0, k)
    return 1 / (1 + np.exp(-logits)), gold.astype(np.int8)


def test_tuned_thresholds_maximise_macro_f1_of_the_served_rule():
    from sklearn.metrics import f1_score
    from streamotion_serving.evaluate import THRESHOLD_GRID, predicted_matrix, tune_thresholds

    scores, gold = _synthetic(3000, 7, 2.0, seed=1)

    def macro(th):
        return f1_score(gold, predicted_matrix(scores, True, th), average="macro", zero_division=0)

    tuned = tune_thresholds(scores, gold)
    assert set(tuned) <= set(THRESHOLD_GRID)
    # each label alone at its own best threshold (what tuning starts from), one shared threshold
    independent = tune_thresholds(scores, gold, rounds=0)
    assert macro(tuned) >= macro(independent) - 1e-12
    assert macro(tuned) > max(macro(np.full(7, t)) for t in (0.3, 0.5))
    # no single threshold move improves it (a coordinate-wise optimum of the whole rule)
    for j in range(7):
        for t in THRESHOLD_GRID:
            moved = tuned.copy()
            moved[j] = t
            assert macro(moved) <= macro(tuned) + 1e-9


def test_heldout_estimate_shows_what_tuning_on_dev_overstates():
    from sklearn.metrics import f1_score
    from streamotion_serving.evaluate import heldout_macro_f1, predicted_matrix, tune_thresholds

    # no signal at all: thresholds tuned on these rows still look better than chance on them
    scores, gold = _synthetic(1200, 7, 0.0, seed=2)
    in_sample = f1_score(
        gold, predicted_matrix(scores, True, tune_thresholds(scores, gold)), average="macro", zero_division=0
    )
    assert heldout_macro_f1(scores, gold, repeats=3) < in_sample
    # with signal, the held-out figure stays close to the in-sample one
    scores, gold = _synthetic(4000, 7, 3.0, seed=3)
    in_sample = f1_score(
        gold, predicted_matrix(scores, True, tune_thresholds(scores, gold)), average="macro", zero_division=0
    )
    assert in_sample - 0.03 < heldout_macro_f1(scores, gold, repeats=2) <= in_sample


def test_the_benchmarks_raw_limit_tries_overlapped_tokenizing_and_gets_the_same_results(tiny_models):
    """``bench pipeline``'s raw limit must be the best in-process configuration of the model: the
    service tokenizes the next batch while the model runs this one, so the raw grid tries that too
    (else the service could beat its own "limit"); overlapped or not, the results are the same."""
    from streamotion_jobs.bench import _overlapped
    from streamotion_serving.model import load_model

    local = load_model(ModelConfig(model=str(tiny_models["ekman"]), bucket_size=8))
    texts = [f"{t} {i}" for i, t in enumerate(TEXTS * 30)]
    assert _overlapped(local, texts, 64) == local.classify(texts)

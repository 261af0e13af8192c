"""The linear model (TF-IDF + logistic regression): trained on a GoEmotions sample by
``streamotion model train --arch linear``, served by the same Ray Serve app and HTTP API as the
transformer (a real ``streamotion model serve`` child process), called by the streaming job's client."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from streamotion.labels import EKMAN
from streamotion.model_api import ClassifyResponse, ModelInfo

TEXTS = [
    "I love this so much, what a wonderful day, thank you!",
    "This is awful and I hate it, so angry right now",
    "I am so scared and worried about tomorrow",
    "Wow I did not expect that at all!",
    "So sad and lonely today, I want to cry",
    "ok",
]


@pytest.fixture(scope="module")
def linear_model(shared, tmp_path_factory) -> Path:
    """A multi-label Ekman linear model trained on 4,000 GoEmotions rows through the CLI."""
    from typer.testing import CliRunner

    from streamotion.cli import app

    out = tmp_path_factory.mktemp("linear") / "model"
    data = shared / "data" / "goemotions" / "ekman"
    r = CliRunner().invoke(
        app,
        [
            "model",
            "train",
            "--arch",
            "linear",
            "--multi-label",
            "--data",
            str(data),
            "--out",
            str(out),
            "--limit",
            "4000",
            "--dev-limit",
            "800",
        ],
    )
    assert r.exit_code == 0, r.output
    result = json.loads(r.output.strip().splitlines()[-1])
    assert result["arch"] == "linear" and result["model"] == str(out)
    return out


@pytest.fixture(scope="module")
def linear_server(linear_model, tmp_path_factory):
    from streamotion_serving.server import ServeProcess

    server = ServeProcess(
        {"model": str(linear_model), "arch": "linear", "taxonomy": "ekman", "max_batch_size": 64},
        num_cpus=1,
        log_path=tmp_path_factory.mktemp("linear-serve") / "serve.log",
    )
    server.start()
    yield server
    server.stop()


def test_training_writes_a_linear_model_dir_without_pickle(linear_model):
    from streamotion_serving.model import model_arch

    meta = json.loads((linear_model / "streamotion.json").read_text())
    assert meta["arch"] == "linear" and meta["taxonomy"] == "ekman" and meta["multi_label"]
    assert model_arch(linear_model) == "linear"
    # plain arrays and JSON: nothing to unpickle
    files = {p.name for p in linear_model.iterdir()}
    assert {"vocabulary.json", "linear.npz", "streamotion.json", "README.md"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".joblib", ".pickle"))]
    import numpy as np

    with np.load(linear_model / "linear.npz", allow_pickle=False) as arrays:
        assert arrays["coef"].shape == (len(EKMAN), meta["features"]["n_features"])
    # thresholds tuned on dev and a dev macro-F1 well above chance, recorded like the transformer's
    assert set(meta["thresholds"]) == set(EKMAN)
    assert meta["dev"]["rows"] == 800 and meta["dev"]["macro_f1"] > 0.3
    assert "linear" in (linear_model / "README.md").read_text()


def test_in_process_model_matches_scikit_learn(linear_model):
    """The saved arrays reproduce what scikit-learn computes: TF-IDF of the vocabulary, then the
    logistic regressions' sigmoid."""
    import numpy as np
    from sklearn.feature_extraction.text import TfidfVectorizer
    from streamotion_serving.linear import TOKEN_PATTERN, LinearEmotionModel
    from streamotion_serving.model import ModelConfig, load_model

    model = load_model(ModelConfig(model=str(linear_model)))
    assert isinstance(model, LinearEmotionModel)
    vocab = json.loads((linear_model / "vocabulary.json").read_text())
    with np.load(linear_model / "linear.npz") as a:
        idf, coef, intercept = a["idf"], a["coef"], a["intercept"]
    vec = TfidfVectorizer(
        token_pattern=TOKEN_PATTERN, ngram_range=(1, 2), sublinear_tf=True, vocabulary=vocab
    )
    vec.idf_ = idf
    expected = 1 / (1 + np.exp(-(vec.transform(TEXTS) @ coef.T + intercept)))
    np.testing.assert_allclose(model.scores(TEXTS), expected, rtol=1e-4, atol=1e-6)
    results = model.classify(TEXTS)
    assert [r["label"] for r in results[:2]] == ["joy", "anger"]


def test_declared_arch_must_be_the_models(linear_model, tiny_models):
    from streamotion_serving.export import export_onnx
    from streamotion_serving.model import ModelConfig, load_model

    with pytest.raises(ValueError, match="is a linear model: it has no ONNX export"):
        export_onnx(linear_model)

    with pytest.raises(ValueError, match="is a linear model, but arch 'transformer' was declared"):
        load_model(ModelConfig(model=str(linear_model), arch="transformer"))
    with pytest.raises(ValueError, match="is a transformer model, but arch 'linear' was declared"):
        load_model(ModelConfig(model=str(tiny_models["ekman"]), arch="linear"))


def test_served_by_the_same_app_and_http_api(linear_server, linear_model):
    from streamotion_serving.model import ModelConfig, load_model

    local = load_model(ModelConfig(model=str(linear_model)))
    r = httpx.post(f"{linear_server.url}/v1/classify", json={"texts": TEXTS}, timeout=60)
    assert r.status_code == 200, r.text
    results = ClassifyResponse.model_validate(r.json()).results
    info = ModelInfo.model_validate(httpx.get(f"{linear_server.url}/v1/model", timeout=30).json())
    assert info.arch == "linear" and info.backend == "linear" and info.labels == list(EKMAN)
    for res, expected in zip(results, local.classify(TEXTS), strict=True):
        assert res.label == expected["label"] and res.labels == expected["labels"]
        assert res.scores == pytest.approx(expected["scores"], abs=1e-5)
        assert res.model_version == info.version
    # bad input is still a clear 422
    assert httpx.post(f"{linear_server.url}/v1/classify", json={"texts": []}, timeout=30).status_code == 422


def test_the_jobs_client_classifies_with_it(linear_server, linear_model):
    """Many chunks, several in flight, results in order; a text past what the model reads is cut,
    so one over the service's limit (100,000 characters) is classified as the model reads it (the
    client used to send it whole, and the service refused it)."""
    from streamotion_jobs.classify import ModelClient
    from streamotion_serving.model import ModelConfig, load_model

    from streamotion.model_api import MAX_TEXT_CHARS, truncate_text

    huge = "so happy " * 12_000
    assert len(huge) > MAX_TEXT_CHARS
    assert (
        httpx.post(f"{linear_server.url}/v1/classify", json={"texts": [huge]}, timeout=60).status_code == 422
    )
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(1000)] + [huge]
    client = ModelClient(linear_server.url, batch_size=64, concurrency=4)
    try:
        results = client.classify(texts)
    finally:
        client.close()
    local = load_model(ModelConfig(model=str(linear_model)))
    expected = local.classify([truncate_text(t, 128) for t in texts])
    assert [r["label"] for r in results] == [e["label"] for e in expected]
    assert results[-1]["scores"] == pytest.approx(expected[-1]["scores"], abs=1e-5)


def test_a_linear_pipeline_sends_the_largest_requests_the_service_takes(linear_server, linear_model):
    """A linear model classifies a whole request in milliseconds, so per-request overhead (HTTP, Ray
    Serve's proxy, JSON) dominates: the job sends ``MAX_TEXTS`` texts a request to it, and a
    transformer keeps four model batches a request. The service answers such a request in order."""
    from streamotion_jobs.classify import ModelClient
    from streamotion_jobs.config import JobConfig

    from streamotion.api.validate import parse
    from streamotion.model_api import MAX_TEXTS

    def job_config(model: dict) -> JobConfig:
        doc = {
            "apiVersion": "streamotion.io/v1alpha2",
            "kind": "StreamPipeline",
            "metadata": {"name": "chunks", "namespace": "t"},
            "spec": {
                "sources": [{"name": "h", "type": "http", "http": {"tokenSecret": "t"}}],
                "sinks": [{"type": "postgres", "postgres": {"host": "h", "credentialsSecret": "pg"}}],
                "model": model,
            },
        }
        return JobConfig.from_pipeline(parse(doc), need_checkpoint=False)

    assert job_config({"arch": "linear"}).model_batch_size == MAX_TEXTS
    assert job_config({}).model_batch_size == 4 * 64  # the default maxBatchSize
    assert job_config({"maxBatchSize": 512}).model_batch_size == MAX_TEXTS  # never over the API's limit
    texts = [f"{TEXTS[i % len(TEXTS)]} #{i}" for i in range(MAX_TEXTS)]
    client = ModelClient(linear_server.url, batch_size=job_config({"arch": "linear"}).model_batch_size)
    try:
        results = client.classify(texts)
    finally:
        client.close()
    from streamotion_serving.model import ModelConfig, load_model

    expected = load_model(ModelConfig(model=str(linear_model))).classify(texts)
    assert [r["label"] for r in results] == [e["label"] for e in expected]

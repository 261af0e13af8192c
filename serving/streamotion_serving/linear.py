"""The linear emotion model: TF-IDF features (word uni- and bigrams) and logistic regression
(scikit-learn), trained by ``streamotion model train --arch linear`` on the same GoEmotions data as the
transformer, and served by the same Ray Serve app and HTTP API.

It classifies tens of thousands of texts per second on one CPU core, at a lower macro-F1 than MiniLM:
the choice for throughput over accuracy on CPUs, and the model that measures the platform's own
capacity (``streamotion bench pipeline``).

Model directory (no pickle: plain arrays and JSON, loadable by any scikit-learn version):
- ``streamotion.json``: ``"arch": "linear"``, taxonomy, labels, multi_label, feature settings,
  thresholds and dev metrics (as for the transformer);
- ``vocabulary.json``: the terms, in feature order;
- ``linear.npz``: ``idf`` (features), ``coef`` (labels x features), ``intercept`` (labels).

Multi-label (``--multi-label``): one-vs-rest logistic regressions (sigmoid scores, per-label thresholds
tuned on dev like the transformer's); single-label: one multinomial logistic regression (softmax), a
row with k gold labels counted once per label with weight 1/k.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamotion.labels import TAXONOMIES
from streamotion.model_api import truncate_text
from streamotion_serving.model import (
    META_FILE,
    EmotionModel,
    ModelConfig,
    label_mapping,
    model_version,
    read_meta,
)

ARCH = "linear"
VOCAB_FILE = "vocabulary.json"
WEIGHTS_FILE = "linear.npz"
# words of 1+ characters and the punctuation that carries emotion; lowercase
TOKEN_PATTERN = r"(?u)\b\w+\b|[!?]"


@dataclass
class LinearTrainConfig:
    data_dir: Path
    taxonomy: str = "ekman"
    out: Path | None = None
    multi_label: bool = False
    limit: int = 0
    dev_limit: int = 0
    seed: int = 0
    c: float = 2.0  # inverse regularisation strength (best of 1, 2, 4, 8 on GoEmotions Ekman dev)
    min_df: int = 2  # a term must occur in this many training texts
    ngram_max: int = 2  # word n-grams 1..ngram_max
    max_features: int = 200_000


def _vectorizer(vocabulary: dict[str, int] | None, ngram_max: int, min_df: int = 1, max_features=None):
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(
        lowercase=True,
        token_pattern=TOKEN_PATTERN,
        ngram_range=(1, ngram_max),
        min_df=min_df,
        max_features=max_features,
        sublinear_tf=True,
        dtype=np.float32,
        vocabulary=vocabulary,
    )


def train_linear(cfg: LinearTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Fit TF-IDF + logistic regression on ``cfg.data_dir``'s train.tsv; save the model directory;
    tune thresholds (multi-label) and evaluate on dev through the serving code path."""
    from rich.console import Console
    from sklearn.linear_model import LogisticRegression

    from streamotion_serving.data import read_labels, read_tsv
    from streamotion_serving.evaluate import gold_matrix
    from streamotion_serving.train import SERVING_MAX_LENGTH, calibrate, checked_data_dir, dev_file

    console = Console(stderr=True, quiet=not progress)
    data_dir = checked_data_dir(cfg)
    data_labels = read_labels(data_dir / "labels.txt")
    rows = read_tsv(data_dir / "train.tsv", len(data_labels), limit=cfg.limit)
    labels = list(TAXONOMIES[cfg.taxonomy])
    y = gold_matrix(rows, data_labels, labels, cfg.taxonomy)
    # what serving reads of a text (the client truncates to the same)
    texts = [truncate_text(ex.text, SERVING_MAX_LENGTH) for ex in rows]
    console.print(
        f"[bold]training[/] TF-IDF + logistic regression on {data_dir} ({len(rows)} train rows), "
        f"{cfg.taxonomy} {'multi' if cfg.multi_label else 'single'}-label"
    )
    start = time.perf_counter()
    vec = _vectorizer(None, cfg.ngram_max, cfg.min_df, cfg.max_features)
    x = vec.fit_transform(texts)
    n_labels = len(labels)
    if cfg.multi_label:
        coef = np.zeros((n_labels, x.shape[1]), dtype=np.float32)
        intercept = np.zeros(n_labels, dtype=np.float32)
        for j in range(n_labels):
            if y[:, j].min() == y[:, j].max():  # a label absent from (a small) training sample
                intercept[j] = 10.0 if y[0, j] else -10.0
                continue
            clf = LogisticRegression(
                C=cfg.c, class_weight="balanced", solver="liblinear", random_state=cfg.seed
            ).fit(x, y[:, j])
            coef[j] = clf.coef_[0]
            intercept[j] = clf.intercept_[0]
    else:
        # a row with k gold labels: k rows of weight 1/k (soft targets, as the transformer's loss)
        row_idx, label_idx = np.nonzero(y)
        weights = 1.0 / y.sum(axis=1)[row_idx]
        present = sorted(set(label_idx.tolist()))
        freq = np.bincount(label_idx, weights=weights, minlength=n_labels)
        balance = freq.sum() / (len(present) * np.maximum(freq, 1e-9))  # class_weight="balanced"
        clf = LogisticRegression(C=cfg.c, max_iter=1000, random_state=cfg.seed).fit(
            x[row_idx], label_idx, sample_weight=weights * balance[label_idx]
        )
        coef = np.full((n_labels, x.shape[1]), 0.0, dtype=np.float32)
        intercept = np.full(n_labels, -30.0, dtype=np.float32)  # a label never seen: never predicted
        if len(present) == 2:  # scikit-learn's binary case: one row for the second class
            coef[present[1]] = clf.coef_[0]
            intercept[present[1]] = clf.intercept_[0]
            intercept[present[0]] = 0.0
        else:
            coef[present] = clf.coef_
            intercept[present] = clf.intercept_
    train_seconds = time.perf_counter() - start

    created = datetime.now(UTC)
    name = f"emotion-linear-{cfg.taxonomy}-{'multi' if cfg.multi_label else 'single'}-{created:%Y%m%d-%H%M%S}"
    from streamotion_serving.model import models_dir

    out = Path(cfg.out) if cfg.out else models_dir() / name
    out.mkdir(parents=True, exist_ok=True)
    vocabulary = [""] * len(vec.vocabulary_)
    for term, i in vec.vocabulary_.items():
        vocabulary[i] = term
    (out / VOCAB_FILE).write_text(json.dumps(vocabulary, ensure_ascii=False))
    np.savez_compressed(out / WEIGHTS_FILE, idf=vec.idf_.astype(np.float32), coef=coef, intercept=intercept)
    meta: dict[str, Any] = {
        "arch": ARCH,
        "name": name,
        "version": name,
        "created": created.isoformat(timespec="seconds"),
        "taxonomy": cfg.taxonomy,
        "labels": labels,
        "multi_label": cfg.multi_label,
        "base": "TF-IDF word 1-2-grams + logistic regression (scikit-learn)",
        "features": {
            "token_pattern": TOKEN_PATTERN,
            "ngram_max": cfg.ngram_max,
            "min_df": cfg.min_df,
            "sublinear_tf": True,
            "n_features": len(vocabulary),
        },
        "c": cfg.c,
        "data": str(data_dir),
        "train_rows": len(rows),
        "dev_rows": 0,
        "epochs": "n/a",
        "batch_size": "n/a",
        "lr": "n/a",
        "max_length": SERVING_MAX_LENGTH,
        "train_seconds": round(train_seconds, 1),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    taxonomies = [cfg.taxonomy] + (["ekman"] if cfg.taxonomy == "original" else [])
    for taxonomy in taxonomies:
        meta = calibrate(out, dev_file(data_dir, taxonomy), taxonomy, limit=cfg.dev_limit, progress=progress)
    meta["dev_rows"] = meta["dev"].get("rows", 0)
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    dev = meta["dev"]
    console.print(f"[bold green]saved[/] {out}  dev macro-F1 {dev['macro_f1']:.4f}")
    return {
        "model": str(out),
        "arch": ARCH,
        "dev_macro_f1": dev["macro_f1"],
        "dev_macro_f1_by_taxonomy": {t: meta["dev_by_taxonomy"][t]["macro_f1"] for t in taxonomies},
        "train_seconds": round(train_seconds, 1),
    }


class LinearEmotionModel(EmotionModel):
    """The linear model behind the same interface as :class:`EmotionModel` (``scores``,
    ``classify``, ``info``...): texts are truncated as the client truncates them for ``max_length``
    tokens, vectorised in one sparse matrix and scored in one product."""

    def __init__(self, cfg: ModelConfig):  # not the transformer's __init__: nothing of it applies
        self.cfg = cfg
        path = Path(cfg.model)
        self.path = str(path)
        self.meta = read_meta(path)
        if self.meta.get("arch") != ARCH:
            raise ValueError(f"{path}: not a linear model directory (streamotion.json has no arch: linear)")
        for name in (VOCAB_FILE, WEIGHTS_FILE):
            if not (path / name).is_file():
                raise FileNotFoundError(f"{path / name} not found: an incomplete linear model directory")
        features = self.meta.get("features") or {}
        vocabulary = json.loads((path / VOCAB_FILE).read_text(encoding="utf-8"))
        with np.load(path / WEIGHTS_FILE) as arrays:
            idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
        self.vectorizer = _vectorizer(
            {t: i for i, t in enumerate(vocabulary)}, int(features.get("ngram_max", 2))
        )
        self.vectorizer.idf_ = idf  # fitted: vocabulary and idf are all TfidfVectorizer.transform reads
        self.coef_t = np.ascontiguousarray(coef.T)  # features x labels: (sparse x dense) in one product
        self.intercept = intercept
        self.threads = 1
        self.device = "cpu"
        self.dtype = "float32"
        self.backend = ARCH
        self.session = None
        self.model = None
        self.model_labels = list(self.meta["labels"])
        self.multi_label = bool(self.meta.get("multi_label"))
        self.taxonomy = cfg.taxonomy
        self.labels = list(TAXONOMIES[cfg.taxonomy])
        self._init_labels(
            label_mapping(self.model_labels, cfg.taxonomy, cfg.label_map or self.meta.get("label_map"))
        )
        self.name = str(self.meta.get("name") or path.name)
        self.version = model_version(path, self.meta)
        self.max_length = cfg.max_length

    def encode(self, texts) -> Any:
        """TF-IDF features of the texts (a sparse matrix), as read for ``max_length`` tokens."""
        return self.vectorizer.transform([truncate_text(t, self.max_length) for t in texts])

    def infer(self, n: int, encoded: Any) -> np.ndarray:
        if n == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        return self._fold(np.asarray(encoded @ self.coef_t) + self.intercept[None, :])

    def logits(self, texts) -> np.ndarray:
        return np.asarray(self.encode(texts) @ self.coef_t) + self.intercept[None, :]

    def scores(self, texts) -> np.ndarray:
        return self.infer(len(texts), self.encode(texts))

    def info(self) -> dict[str, Any]:
        return {**super().info(), "backend": ARCH, "arch": ARCH}

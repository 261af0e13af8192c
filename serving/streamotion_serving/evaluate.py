"""`streamotion model eval`: macro-F1, per-label precision/recall/F1, a confusion matrix, throughput.

Gold labels are sets (GoEmotions is multi-label); a single-label model predicts the set of its top
label, a multi-label model every label over its threshold. Macro-F1 averages the per-label F1.
The confusion matrix uses the rows with exactly one gold label: gold label x top predicted label.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from streamotion_serving.data import labels_for, read_tsv
from streamotion_serving.model import EmotionModel, ModelConfig, label_mapping


def gold_matrix(examples, data_labels: Sequence[str], labels: Sequence[str], taxonomy: str) -> np.ndarray:
    """Gold label sets (as data-label indices) -> 0/1 matrix over the canonical ``labels``."""
    targets = label_mapping(data_labels, taxonomy)
    y = np.zeros((len(examples), len(labels)), dtype=np.int8)
    for row, ex in enumerate(examples):
        for i in ex.labels:
            y[row, labels.index(targets[i])] = 1
    return y


def predicted_matrix(
    scores: np.ndarray, multi_label: bool, thresholds: np.ndarray | None = None
) -> np.ndarray:
    pred = np.zeros(scores.shape, dtype=np.int8)
    top = scores.argmax(axis=1)
    if multi_label:
        th = thresholds if thresholds is not None else np.full(scores.shape[1], 0.5)
        pred[:] = scores >= th[None, :]
        empty = pred.sum(axis=1) == 0
        pred[np.flatnonzero(empty), top[empty]] = 1
    else:
        pred[np.arange(len(top)), top] = 1
    return pred


def tune_thresholds(scores: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """Per-label threshold maximising that label's F1 on dev (multi-label heads)."""
    from sklearn.metrics import f1_score

    grid = np.round(np.arange(0.05, 0.96, 0.05), 2)
    best = np.full(scores.shape[1], 0.5)
    for j in range(scores.shape[1]):
        if gold[:, j].sum() == 0:
            continue
        f1s = [f1_score(gold[:, j], scores[:, j] >= t, zero_division=0) for t in grid]
        best[j] = grid[int(np.argmax(f1s))]
    return best


def metrics(gold: np.ndarray, pred: np.ndarray, labels: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    p, r, f, support = precision_recall_fscore_support(gold, pred, average=None, zero_division=0)
    return {
        "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
        "micro_f1": float(f1_score(gold, pred, average="micro", zero_division=0)),
        "per_label": {
            label: {
                "precision": float(p[i]),
                "recall": float(r[i]),
                "f1": float(f[i]),
                "support": int(support[i]),
            }
            for i, label in enumerate(labels)
        },
    }


def confusion(gold: np.ndarray, scores: np.ndarray, labels: Sequence[str]) -> np.ndarray:
    from sklearn.metrics import confusion_matrix

    single = gold.sum(axis=1) == 1
    return confusion_matrix(
        gold[single].argmax(axis=1), scores[single].argmax(axis=1), labels=list(range(len(labels)))
    )


def plot_confusion(matrix: np.ndarray, labels: Sequence[str], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(6, 0.45 * len(labels))
    fig, ax = plt.subplots(figsize=(size, size))
    norm = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    ConfusionMatrixDisplay(np.round(norm, 2), display_labels=list(labels)).plot(
        ax=ax, cmap="Blues", colorbar=False, xticks_rotation=90, include_values=len(labels) <= 10
    )
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def evaluate(
    model_dir: str | Path,
    data_file: str | Path,
    taxonomy: str = "ekman",
    labels_file: str | Path | None = None,
    out_dir: str | Path | None = None,
    max_length: int = 128,
    batch_size: int = 64,
    limit: int = 0,
    backend: str = "torch",
    progress: bool = True,
    scores: _Scores | None = None,
) -> dict[str, Any]:
    """Evaluate a model directory on a GoEmotions-format TSV; writes eval.json and confusion.png.

    ``scores``: this model's scores of these rows when already computed (training's dev pass)."""
    data_labels = labels_for(data_file, labels_file)
    examples = read_tsv(data_file, len(data_labels), limit=limit)
    model = EmotionModel(
        ModelConfig(model=str(model_dir), taxonomy=taxonomy, max_length=max_length, backend=backend)
    )
    labels = model.labels
    gold = gold_matrix(examples, data_labels, labels, taxonomy)
    texts = [ex.text for ex in examples]
    if scores is None or scores.values.shape != (len(texts), len(labels)):
        scores = score_texts(model, texts, batch_size, progress=progress)
    elapsed = scores.elapsed
    pred = predicted_matrix(scores.values, model.multi_label, model.thresholds)
    report: dict[str, Any] = {
        "model": str(model_dir),
        "model_version": model.version,
        "data": str(data_file),
        "taxonomy": taxonomy,
        "multi_label": model.multi_label,
        "rows": len(examples),
        **metrics(gold, pred, labels),
        "throughput_texts_per_s": len(texts) / elapsed if elapsed > 0 else None,
        "backend": backend,
        "max_length": max_length,
    }
    out = (
        Path(out_dir)
        if out_dir
        else Path(model_dir) / "eval" / f"{Path(data_file).parent.name}-{Path(data_file).stem}"
    )
    out.mkdir(parents=True, exist_ok=True)
    matrix = confusion(gold, scores.values, labels)
    png = out / "confusion.png"
    plot_confusion(
        matrix,
        labels,
        png,
        f"{model.name}\n{Path(data_file).parent.name}/{Path(data_file).name}: macro-F1 {report['macro_f1']:.3f}",
    )
    report["confusion_matrix"] = {"labels": labels, "matrix": matrix.tolist(), "png": str(png)}
    (out / "eval.json").write_text(json.dumps(report, indent=2) + "\n")
    report["json"] = str(out / "eval.json")
    return report


class _Scores:
    def __init__(self, values: np.ndarray, elapsed: float):
        self.values = values
        self.elapsed = elapsed


def score_texts(
    model: EmotionModel, texts: Sequence[str], batch_size: int = 64, progress: bool = True
) -> _Scores:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    out = np.zeros((len(texts), len(model.labels)), dtype=np.float32)
    # sort by length once, so each chunk pads little
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    start = time.perf_counter()
    with Progress(
        TextColumn("evaluating"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        disable=not progress,
    ) as bar:
        task = bar.add_task("eval", total=len(texts))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            out[idx] = model.scores([texts[j] for j in idx])
            bar.advance(task, len(idx))
    return _Scores(out, time.perf_counter() - start)

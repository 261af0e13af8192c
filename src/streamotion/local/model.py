"""Which model a local run serves, said out loud.

In order: ``--model`` (a directory or Hugging Face id); ``--tiny-model`` (a tiny random model
built here, for smoke runs: its emotions mean nothing); the pipeline's ``spec.model.name`` when
it is a local directory; that Hugging Face id when it is in the local Hugging Face cache or the
hub answers; the latest model trained with ``streamotion model train`` (cache); else, with
``--train``, a quick fine-tune on the GoEmotions data first; else a clear error with the options.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from streamotion.components import component

HUB_PROBE_URL = "https://huggingface.co/api/models/{name}"


class NoModel(RuntimeError):
    pass


@dataclass
class ModelChoice:
    path: str  # directory or Hugging Face id, as build_app's ``model``
    why: str  # one line for the user


def cache_root() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def tiny_model_dir(taxonomy: str) -> Path:
    """Built once per taxonomy, outside ``models/`` so it is never taken for a trained model."""
    from streamotion.labels import EKMAN, GOEMOTIONS

    out = cache_root() / "tiny-models" / taxonomy
    if not (out / "config.json").is_file():
        build_tiny_model = component("tiny_model")
        build_tiny_model(out, labels=EKMAN if taxonomy == "ekman" else GOEMOTIONS, name=f"tiny-{taxonomy}")
    return out


def in_hf_cache(name: str) -> bool:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:
        return False
    return isinstance(found, str)


def hub_reachable(name: str, timeout: float = 4.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE") in ("1", "true", "True"):
        return False
    import httpx

    try:
        return httpx.get(HUB_PROBE_URL.format(name=name), timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def train_quick(taxonomy: str, limit: int, epochs: float, log: Callable[[str], None]) -> Path:
    """``streamotion model train`` on the GoEmotions data (first ``limit`` rows), output shown as it goes."""
    argv = [
        sys.executable,
        "-m",
        "streamotion",
        "model",
        "train",
        "--taxonomy",
        taxonomy,
        "--epochs",
        str(epochs),
        "--dev-limit",
        "1000",
    ]
    if limit:
        argv += ["--limit", str(limit)]
    log(f"training: {' '.join(argv[2:])}")
    result = subprocess.run(argv, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise NoModel(f"`streamotion model train` failed with exit code {result.returncode}")
    found = component("latest_model")(taxonomy)
    if found is None:
        raise NoModel("`streamotion model train` finished but no model is in the cache")
    return found


def choose(
    spec_name: str,
    taxonomy: str,
    *,
    model: str | None = None,
    tiny: bool = False,
    train: bool = False,
    train_limit: int = 0,
    train_epochs: float = 1.0,
    log: Callable[[str], None] = print,
) -> ModelChoice:
    if model:
        return ModelChoice(model, f"model: {model} (--model)")
    if tiny:
        path = tiny_model_dir(taxonomy)
        return ModelChoice(
            str(path),
            f"model: tiny random {taxonomy} model (--tiny-model; a smoke test, emotions are meaningless)",
        )
    if Path(spec_name).is_dir():
        return ModelChoice(spec_name, f"model: {spec_name} (spec.model.name, a local directory)")
    if in_hf_cache(spec_name):
        return ModelChoice(
            spec_name, f"model: {spec_name} (spec.model.name, from the local Hugging Face cache)"
        )
    log(f"checking whether the Hugging Face hub has {spec_name}...")
    if hub_reachable(spec_name):
        return ModelChoice(
            spec_name, f"model: {spec_name} (spec.model.name, downloaded from the Hugging Face hub)"
        )
    models_dir = component("models_dir")
    found = component("latest_model")(taxonomy)
    if found is not None:
        return ModelChoice(
            str(found),
            f"model: {found.name} (the hub is not reachable: latest model trained locally, {found})",
        )
    if train:
        log(
            f"the Hugging Face hub is not reachable and no {taxonomy} model is trained yet in {models_dir()}: "
            f"fine-tuning one on GoEmotions now ({train_limit or 'all'} rows, {train_epochs} epoch(s); "
            "done once, later runs reuse it)"
        )
        path = train_quick(taxonomy, train_limit, train_epochs, log)
        return ModelChoice(str(path), f"model: {path.name} (trained just now, {path})")
    raise NoModel(
        f"no model to serve: the Hugging Face hub is not reachable for {spec_name!r} and no {taxonomy} model "
        f"is trained yet in {models_dir()}. Choose one:\n"
        "  --train        fine-tune one on the GoEmotions data first (minutes on 2 cores; cached for later runs)\n"
        "  --model DIR    serve a model directory (or a Hugging Face id) you have\n"
        "  --tiny-model   a tiny random model: a quick smoke run, the emotions are meaningless\n"
        "or run `streamotion model train` yourself (the full data takes long on few cores)."
    )

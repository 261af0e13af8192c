"""The Ray Serve application of the emotion model (``streamotion_serving.app:build_app``).

HTTP API (see ``streamotion.model_api``): ``POST /v1/classify``, ``GET /v1/model``, ``GET /healthz``,
``GET /docs`` and ``GET /openapi.json``. Metrics (``streamotion_serving.metrics``) go through Ray's
metrics agent, which exports every replica's (``--metrics-export-port``).

Every text of every request goes through one ``@serve.batch`` queue, so concurrent requests share
model batches; inside a batch, texts run in buckets of similar length. The model runs in a worker
thread of its own, so the replica keeps accepting requests (and filling the next batch) while a
batch runs; tokenization and the results' formatting run on another thread, and two batches may be in
flight, so the next batch is tokenized while the model runs this one. A linear model (``arch:
linear``) classifies each request whole on the model thread: its cost is per text, batching across
requests would only add waiting.

Back-pressure: ``max_queued_requests`` bounds the requests each caller (the HTTP proxy) queues for
busy replicas; past it the proxy answers 503 at once and the job's client backs off and retries.
Autoscaling (``autoscaling``) follows the texts in flight on each replica (``autoscaling.py``).
"""

# No `from __future__ import annotations`: FastAPI must see the real types through Ray Serve's ingress.

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve

from streamotion.model_api import MAX_TEXT_CHARS, MAX_TEXTS, ClassifyRequest, ClassifyResponse, ModelInfo
from streamotion_serving import metrics
from streamotion_serving.autoscaling import TEXTS_METRIC, autoscaling_config
from streamotion_serving.model import ModelConfig, load_model

log = logging.getLogger("streamotion.serving")

APP_NAME = "streamotion-model"
DEPLOYMENT_NAME = "EmotionClassifier"


@dataclass
class ServeConfig(ModelConfig):
    """Model settings plus dynamic batching."""

    max_batch_size: int = 64  # texts per model batch
    batch_wait_ms: float = 5.0  # how long a batch waits to fill
    max_text_chars: int = MAX_TEXT_CHARS  # a longer text is refused (422 naming it)


api = FastAPI(
    title="Streamotion emotion model",
    version="1",
    description="Classifies texts into emotions (Ekman 7 or the 28 GoEmotions labels), batched across requests.",
)


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    metrics.replica().error(_endpoint(request.url.path), "invalid_request")
    errors = [
        {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse(status_code=422, content={"detail": errors, "message": summary})


def _endpoint(path: str) -> str:
    return path if path in ("/v1/classify", "/v1/model", "/healthz") else "other"


@api.middleware("http")
async def _observe(request: Request, call_next):
    start = time.perf_counter()
    endpoint = _endpoint(request.url.path)
    recorder = metrics.replica()
    try:
        response = await call_next(request)
    except Exception:
        recorder.request(endpoint, 500, None)
        recorder.error(endpoint, "internal")
        raise
    recorder.request(endpoint, response.status_code, time.perf_counter() - start)
    return response


@serve.deployment(name=DEPLOYMENT_NAME, max_ongoing_requests=256, health_check_period_s=10)
@serve.ingress(api)
class EmotionClassifier:
    def __init__(self, config: dict[str, Any]):
        cfg = ServeConfig(**config)
        self.cfg = cfg
        self.model = load_model(cfg)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="model")
        self.prep = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tokenize")
        self.whole_requests = self.model.info().get("arch") == "linear"
        self.texts_in_flight = 0
        self._classify_batch.set_max_batch_size(cfg.max_batch_size)
        self._classify_batch.set_batch_wait_timeout_s(cfg.batch_wait_ms / 1000.0)
        info = self.model.info()
        self.metrics = metrics.replica()
        self._report_model()
        self.model.classify(["warm up"])  # first call allocates; keep it out of the first request
        log.info(
            "serving %s (%s, %s, %d threads)",
            info["name"],
            info["backend"],
            info["device"],
            self.model.threads,
        )

    # two batches in flight: the next one is tokenized while the model runs this one
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005, max_concurrent_batches=2)
    async def _classify_batch(self, texts: list[str]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        loop = asyncio.get_running_loop()
        encoded = await loop.run_in_executor(self.prep, self.model.encode, texts)
        scores = await loop.run_in_executor(self.pool, self.model.infer, len(texts), encoded)
        results = await loop.run_in_executor(self.prep, self.model.results, scores)
        self.metrics.batch(len(texts), time.perf_counter() - start)
        return results

    async def _classify_whole(self, texts: list[str]) -> list[dict[str, Any]]:
        start = time.perf_counter()
        results = await asyncio.get_running_loop().run_in_executor(self.pool, self.model.classify, texts)
        self.metrics.batch(len(texts), time.perf_counter() - start)
        return results

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Ray Serve's custom autoscaling metric (``autoscaling.TextsInFlight`` reads it)."""
        return {TEXTS_METRIC: float(self.texts_in_flight)}

    @api.post(
        "/v1/classify",
        response_model=ClassifyResponse,
        summary=f"Classify 1 to {MAX_TEXTS} texts; one result per text, in order",
    )
    async def classify(self, body: ClassifyRequest) -> Any:
        limit = self.cfg.max_text_chars
        too_long = [(i, len(t)) for i, t in enumerate(body.texts) if len(t) > limit] if limit > 0 else []
        if too_long:
            self.metrics.error("/v1/classify", "invalid_request")
            errors = [
                {
                    "loc": ["body", "texts", i],
                    "msg": f"text of {n} characters, over this service's limit of {limit} (max_text_chars)",
                    "type": "string_too_long",
                }
                for i, n in too_long
            ]
            summary = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors)
            return JSONResponse(status_code=422, content={"detail": errors, "message": summary})
        self.texts_in_flight += len(body.texts)
        try:
            if self.whole_requests:
                results = await self._classify_whole(body.texts)
            else:
                results = await asyncio.gather(*(self._classify_batch(t) for t in body.texts))
        finally:
            self.texts_in_flight -= len(body.texts)
        self.metrics.texts(len(results))
        # the results already have ClassifyResponse's shape: serialised as they are, without
        # FastAPI's per-field validation (most of a linear model's request time)
        for r in results:
            r.setdefault("labels", None)
        return Response(
            json.dumps({"results": results}, separators=(",", ":")), media_type="application/json"
        )

    @api.get("/v1/model", response_model=ModelInfo, summary="The model being served")
    async def model_info(self) -> dict[str, Any]:
        return self.model.info()

    @api.get("/healthz", summary="200 when the model can classify")
    async def healthz(self) -> dict[str, str]:
        return {"status": "ok", "version": self.model.version}

    def _report_model(self) -> None:
        info = self.model.info()
        self.metrics.model(info["name"], info["version"], info["backend"], info["device"])

    def check_health(self) -> None:
        if self.model is None:
            raise RuntimeError("model not loaded")
        # Ray drops a gauge its replica stopped reporting: keep the info gauge alive while healthy
        self._report_model()


DEPLOYMENT_ARGS = (
    "num_replicas",
    "autoscaling",
    "max_ongoing_requests",
    "max_queued_requests",
    "num_cpus",
    "num_gpus",
)
DEFAULT_MAX_QUEUED_REQUESTS = 64  # per caller (the HTTP proxy): past it, a 503 at once


def build_app(args: dict[str, Any] | None = None) -> serve.Application:
    """Ray Serve application builder (RayService ``serveConfigV2``: ``import_path:
    streamotion_serving.app:build_app`` and these ``args``, all optional, snake_case):

    Model:
      - ``model``: local model directory or Hugging Face id (default: latest trained model in
        ``~/.cache/streamotion/models``)
      - ``taxonomy``: ``ekman`` (default) or ``original`` (28 GoEmotions labels)
      - ``label_map``: ``{model_label: canonical_label}`` for models with other label names
      - ``arch``: ``auto`` (default: what the model directory is), ``transformer`` or ``linear``
        (``streamotion model train --arch linear``); a declared arch the model is not is an error
      - ``max_length``: tokens per text, longer texts are truncated (default 128)
      - ``backend``: ``torch`` (default) or ``onnx`` (needs ``streamotion model export``)
      - ``dtype``: ``auto`` (default: bfloat16/float16 weights on CUDA, float32 on CPU),
        ``float32``, ``float16``, ``bfloat16`` (torch backend)
      - ``quantized``: onnx backend, use the dynamic int8 model (default false)
      - ``device``: ``auto`` (default: GPU when present), ``cpu``, ``cuda``
      - ``num_threads``: CPU threads per replica (default: the replica's ``num_cpus``); on CPU
        more replicas of 1 thread each beat one replica of many threads, above all on busy nodes
      - ``bucket_size``: texts per length bucket inside a batch (default 0: 8 on CPU, where padding
        costs compute; the whole batch, ``max_batch_size``, on a GPU)
      - ``threshold``: multi-label default threshold (default 0.5; tuned ones from training win)
      - ``max_text_chars``: longest text accepted (default 100,000, the event contract's limit; a
        longer one is a 422 naming it; 0: no limit)
    Batching:
      - ``max_batch_size``: texts per model batch (default 64)
      - ``batch_wait_ms``: how long a batch waits to fill (default 5)
    Deployment:
      - ``num_replicas``: int (default 1) or ``"auto"``
      - ``autoscaling``: ``{min_replicas, max_replicas, target_texts_per_replica, ...}`` (Ray Serve
        autoscaling_config, replaces num_replicas; ``target_texts_per_replica``, default 4 x
        max_batch_size, drives the texts-in-flight policy of ``autoscaling.py`` unless a Ray
        ``policy`` is given)
      - ``max_ongoing_requests``: per replica (default 256, high so batches fill)
      - ``max_queued_requests``: requests the HTTP proxy queues for busy replicas before it answers
        503 (default 64; -1: no limit)
      - ``num_cpus``: CPUs per replica (default 1), ``num_gpus``: GPUs per replica (default 0)
    """
    args = dict(args or {})
    known = {f.name for f in fields(ServeConfig)} | set(DEPLOYMENT_ARGS)
    unknown = sorted(set(args) - known)
    if unknown:
        raise ValueError(f"unknown build_app args {unknown}; known: {sorted(known)}")
    options: dict[str, Any] = {
        "max_ongoing_requests": int(args.pop("max_ongoing_requests", 256)),
        "max_queued_requests": int(args.pop("max_queued_requests", DEFAULT_MAX_QUEUED_REQUESTS)),
        "ray_actor_options": {
            "num_cpus": float(args.pop("num_cpus", 1)),
            "num_gpus": float(args.pop("num_gpus", 0)),
        },
    }
    autoscaling = args.pop("autoscaling", None)
    replicas = args.pop("num_replicas", None)
    if autoscaling:
        batch = int(args.get("max_batch_size", ServeConfig.max_batch_size))
        options["autoscaling_config"] = autoscaling_config(autoscaling, default_target=4 * batch)
        options["num_replicas"] = "auto" if replicas == "auto" else None
        if options["num_replicas"] is None:
            del options["num_replicas"]
    elif replicas is not None:
        options["num_replicas"] = replicas if replicas == "auto" else int(replicas)
    if not args.get("num_threads"):  # one intra-op thread per CPU given to the replica
        args["num_threads"] = max(1, int(options["ray_actor_options"]["num_cpus"]))
    cfg = ServeConfig(**args)
    return EmotionClassifier.options(**options).bind(asdict(cfg))

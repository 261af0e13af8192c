"""The ancestors' pattern, kept only as a benchmark baseline: a plain FastAPI endpoint that
classifies one text per HTTP request (no batching, no Ray).

``python -m streamotion_serving.naive --model DIR --port PORT``
"""

from __future__ import annotations

import argparse

from fastapi import FastAPI
from pydantic import BaseModel


class One(BaseModel):
    text: str


def make_app(model_dir: str, max_length: int = 128) -> FastAPI:
    from streamotion_serving.model import EmotionModel, ModelConfig

    # 1 intra-op thread: requests run side by side in FastAPI's thread pool (its best setting)
    model = EmotionModel(ModelConfig(model=model_dir, max_length=max_length, num_threads=1))
    app = FastAPI()

    @app.post("/classify")
    def classify(body: One) -> dict:
        return model.classify([body.text])[0]

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok"}

    return app


def main() -> None:
    import uvicorn

    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--max-length", type=int, default=128)
    a = p.parse_args()
    uvicorn.run(make_app(a.model, a.max_length), host="127.0.0.1", port=a.port, log_level="warning")


if __name__ == "__main__":
    main()

"""Calling the model service (contract: :mod:`streamotion.model_api`) in batches, with timeouts and
retries with exponential backoff. When the service stays unavailable past ``deadline_s`` the call
raises :class:`ModelUnavailable`: the Spark task, and so the micro-batch, fails and is retried from
the checkpoint — never a row without an emotion, never a dropped row.

A client error (400, 413, 422) says the request is wrong, so retrying it cannot help: with
``isolate=True`` the chunk is split in halves until each refused text stands alone, and that text's
result is a :class:`Refusal` carrying the service's message (the job dead-letters it); the other
texts are classified as usual."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamotion.model_api import MAX_TEXTS


class ModelUnavailable(RuntimeError):
    pass


class ModelRefused(ModelUnavailable):
    """The service refused the request (400, 413 or 422): retrying the same request cannot help."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"model service refused the request ({status}): {message}")


@dataclass(frozen=True)
class Refusal:
    """The result of a text the service refused on its own (``isolate=True``)."""

    status: int
    message: str

    @property
    def reason(self) -> str:
        return f"model service refused the text ({self.status}): {self.message}"


@dataclass
class ModelClient:
    url: str
    batch_size: int = 256
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    deadline_s: float = 120.0  # total time one chunk may keep retrying
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.batch_size = max(1, min(self.batch_size, MAX_TEXTS))
        self._session = None

    @property
    def session(self):
        if self._session is None:
            import requests

            self._session = requests.Session()
        return self._session

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def classify(self, texts: Sequence[str], isolate: bool = False) -> list[Any]:
        """One result per text, in order (each {label, score, scores, model_version, ...}); with
        ``isolate``, a :class:`Refusal` for each text the service refuses (else the refusal raises
        :class:`ModelRefused`)."""
        out: list[Any] = []
        for start in range(0, len(texts), self.batch_size):
            chunk = list(texts[start : start + self.batch_size])
            out.extend(self._isolating(chunk) if isolate else self._chunk(chunk))
        return out

    def _isolating(self, texts: list[str]) -> list[Any]:
        """Bisect on a client error: about 2·log2(n) extra requests per refused text."""
        try:
            return self._chunk(texts)
        except ModelRefused as exc:
            if len(texts) == 1:
                return [Refusal(exc.status, exc.message)]
            mid = len(texts) // 2
            return self._isolating(texts[:mid]) + self._isolating(texts[mid:])

    def _chunk(self, texts: list[str]) -> list[dict[str, Any]]:
        import requests

        deadline = time.monotonic() + self.deadline_s
        delay = self.backoff_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self.session.post(
                    f"{self.url}/v1/classify",
                    json={"texts": texts},
                    timeout=(self.connect_timeout_s, self.read_timeout_s),
                )
                if resp.status_code == 200:
                    results = resp.json()["results"]
                    if len(results) != len(texts):
                        raise ModelUnavailable(
                            f"model service answered {len(results)} results for {len(texts)} texts"
                        )
                    return results
                if resp.status_code in (400, 413, 422):  # our request is wrong: retrying cannot help
                    raise ModelRefused(resp.status_code, _message(resp))
                error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            except requests.RequestException as exc:
                error = f"{type(exc).__name__}: {exc}"
                self.close()  # a fresh connection next time
            if time.monotonic() + delay > deadline:
                raise ModelUnavailable(
                    f"model service {self.url} unavailable after {attempt} attempts ({self.deadline_s:.0f}s): {error}"
                )
            time.sleep(delay * (0.75 + random.random() / 2))
            delay = min(delay * 2, self.backoff_max_s)


def _message(resp) -> str:
    """The service's own message (serving answers ``{"message": ...}``), else the body's start."""
    try:
        doc = resp.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str) and doc["message"]:
        return doc["message"][:500]
    if isinstance(doc, dict) and isinstance(doc.get("detail"), str):
        return doc["detail"][:500]
    return resp.text[:500]

"""Calling the model service (contract: :mod:`streamotion.model_api`) in batches, with timeouts and
retries with exponential backoff. When the service stays unavailable past ``deadline_s`` the call
raises :class:`ModelUnavailable`: the Spark task, and so the micro-batch, fails and is retried from
the checkpoint — never a row without an emotion, never a dropped row."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from streamotion.model_api import MAX_TEXTS


class ModelUnavailable(RuntimeError):
    pass


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

    def classify(self, texts: Sequence[str]) -> list[dict[str, Any]]:
        """One result per text, in order (each {label, score, scores, model_version, ...})."""
        out: list[dict[str, Any]] = []
        for start in range(0, len(texts), self.batch_size):
            out.extend(self._chunk(list(texts[start : start + self.batch_size])))
        return out

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
                    raise ModelUnavailable(
                        f"model service refused the request ({resp.status_code}): {resp.text[:500]}"
                    )
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

"""Calling the model service (contract: :mod:`streamotion.model_api`) in batches, with timeouts and
retries with exponential backoff. When the service stays unavailable past ``deadline_s`` the call
raises :class:`ModelUnavailable`: the Spark task, and so the micro-batch, fails and is retried from
the checkpoint — never a row without an emotion, never a dropped row.

A client error (400, 413, 422) says the request is wrong, so retrying it cannot help: with
``isolate=True`` the chunk is split in halves until each refused text stands alone, and that text's
result is a :class:`Refusal` carrying the service's message (the job dead-letters it); the other
texts are classified as usual.

Keeping a GPU busy: texts are cut on the client to what the model reads (``max_length`` tokens:
:func:`streamotion.model_api.truncate_text`, about 2,300 characters for 128 tokens, instead of up to
100,000), and ``concurrency`` chunks are in flight at once (a small thread pool, one HTTP connection
per thread), so the service batches one chunk while the next travels. :meth:`ModelClient.submit`
returns at once, so a caller can prepare its next batch while this one is classified."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from streamotion.model_api import MAX_TEXTS, truncate_text


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


class Pending:
    """Results of :meth:`ModelClient.submit`: ``result()`` waits for every chunk, in order."""

    def __init__(self, futures: list[Future]):
        self._futures = futures

    def done(self) -> bool:
        return all(f.done() for f in self._futures)

    def result(self) -> list[Any]:
        out: list[Any] = []
        try:
            for f in self._futures:
                out.extend(f.result())
        except BaseException:
            for f in self._futures:  # the batch fails: chunks not yet sent are not sent
                f.cancel()
            raise
        return out


@dataclass
class ModelClient:
    url: str
    batch_size: int = 256
    connect_timeout_s: float = 3.0
    read_timeout_s: float = 60.0
    deadline_s: float = 120.0  # total time one chunk may keep retrying
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 8.0
    max_length: int = 128  # tokens the model reads (spec.model.maxLength); 0: send texts whole
    concurrency: int = 4  # chunks in flight at once
    _local: threading.local = field(default_factory=threading.local, init=False, repr=False)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.batch_size = max(1, min(self.batch_size, MAX_TEXTS))
        self.concurrency = max(1, self.concurrency)
        self._sessions: list[Any] = []
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def session(self):
        """This thread's HTTP session (a requests.Session is not shared between threads)."""
        s = getattr(self._local, "session", None)
        if s is None:
            import requests

            s = self._local.session = requests.Session()
            with self._lock:
                self._sessions.append(s)
        return s

    def _drop_session(self) -> None:
        s = getattr(self._local, "session", None)
        if s is not None:
            self._local.session = None
            with self._lock:
                if s in self._sessions:
                    self._sessions.remove(s)
            s.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()
        self._local = threading.local()

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The texts as sent: each cut to what a model of ``max_length`` tokens reads."""
        if self.max_length <= 0:
            return list(texts)
        return [truncate_text(t, self.max_length) for t in texts]

    def submit(self, texts: Sequence[str], isolate: bool = False) -> Pending:
        """Send the texts' chunks (``concurrency`` at a time) and return at once; ``.result()``
        is what :meth:`classify` returns."""
        texts = self.prepare(texts)
        call = self._isolating if isolate else self._chunk
        chunks = [texts[s : s + self.batch_size] for s in range(0, len(texts), self.batch_size)]
        if self.concurrency == 1:
            done: list[Future] = []
            for chunk in chunks:  # in this thread, one at a time
                f: Future = Future()
                try:
                    f.set_result(call(chunk))
                except Exception as exc:
                    f.set_exception(exc)
                    done.append(f)
                    break
                done.append(f)
            return Pending(done)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="model-client")
        return Pending([self._pool.submit(call, chunk) for chunk in chunks])

    def classify(self, texts: Sequence[str], isolate: bool = False) -> list[Any]:
        """One result per text, in order (each {label, score, scores, model_version, ...}); with
        ``isolate``, a :class:`Refusal` for each text the service refuses (else the refusal raises
        :class:`ModelRefused`)."""
        return self.submit(texts, isolate).result()

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
                self._drop_session()  # a fresh connection next time
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

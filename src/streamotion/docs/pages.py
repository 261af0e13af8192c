"""Every generated page of the site, by path under docs/: write them, or tell which are stale."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from streamotion.api.docs import api_reference
from streamotion.docs.benchmarks import benchmarks_page
from streamotion.docs.cli_reference import cli_reference
from streamotion.docs.helm_values import helm_values_reference
from streamotion.docs.metrics import metrics_reference

GENERATED: dict[str, Callable[[Path], str]] = {
    "api.md": lambda root: api_reference(),
    "reference/cli.md": lambda root: cli_reference(),
    "reference/metrics.md": metrics_reference,
    "reference/helm-values.md": helm_values_reference,
    "benchmarks.md": benchmarks_page,
}


def render(root: Path) -> dict[Path, str]:
    """``{path: text}`` of every generated page, rendered now from the code in ``root``."""
    return {root / "docs" / rel: make(root) for rel, make in GENERATED.items()}


def stale(root: Path) -> list[Path]:
    """Generated pages whose committed text differs from what the code renders now."""
    return [p for p, text in render(root).items() if not p.is_file() or p.read_text() != text]


def generate(root: Path) -> list[Path]:
    """Write every generated page that changed; returns those written."""
    written = []
    for path, text in render(root).items():
        if not path.is_file() or path.read_text() != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            written.append(path)
    return written

"""Shared fixtures. Servers are real and started here: see tests/fixtures/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("STREAMOTION_SHARED", ROOT.parent / "shared"))
UPSTREAM_CRDS = SHARED / "crds"

# Every module in tests/fixtures/ is a fixture plugin (k8s, kafka, postgres, model, ...).
pytest_plugins = sorted(
    f"tests.fixtures.{p.stem}" for p in (ROOT / "tests" / "fixtures").glob("*.py") if p.stem != "__init__"
)


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared() -> Path:
    if not SHARED.exists():
        pytest.fail(f"../shared not found at {SHARED} (set STREAMOTION_SHARED)")
    return SHARED

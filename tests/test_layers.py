"""The ground floor (src/streamotion) depends on nothing above it: it reaches serving, ingest and
jobs only through the entry points they register (streamotion.components)."""

from __future__ import annotations

import ast
import importlib
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from streamotion import components
from streamotion.components import COMPONENTS, GROUP, ComponentMissing, ModelService, component

ROOT = Path(__file__).resolve().parent.parent
ABOVE = ("streamotion_serving", "streamotion_jobs", "streamotion_operator", "streamotion_ingest")


def registered() -> dict[str, str]:
    """The group as pyproject.toml declares it (the installed metadata may predate a change)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return project["entry-points"][GROUP]


def test_the_ground_floor_imports_no_component_above_it():
    found = []
    for path in sorted((ROOT / "src" / "streamotion").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            found += [
                f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in ABOVE
            ]
    assert found == []


def test_every_component_is_registered_by_the_package_that_provides_it():
    eps = registered()
    assert set(eps) == set(COMPONENTS)
    for name, target in eps.items():
        package = COMPONENTS[name][0]
        assert target.split(".")[0] == f"streamotion_{package}", (name, target)
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), name


def test_the_serving_package_provides_a_model_service():
    module, _, attr = registered()["model_service"].partition(":")
    factory = getattr(importlib.import_module(module), attr)
    service = factory({"model": "unused"}, port=None, num_cpus=1, log_path=None, startup_timeout=1)
    assert isinstance(service, ModelService)
    assert service.url.startswith("http://127.0.0.1:") and service.proc is None


def test_a_missing_component_is_a_clear_error(monkeypatch):
    with pytest.raises(ComponentMissing, match=r"no entry point 'nothing' in group streamotion\.components"):
        component("nothing")
    gone = EntryPoint("model_service", "streamotion_gone.server:ServeProcess", GROUP)
    monkeypatch.setattr(components, "entry_points", lambda **kw: [gone])
    with pytest.raises(ComponentMissing) as err:
        component("model_service")
    assert err.value.missing == "streamotion_gone"
    assert "model_service needs the serving component (streamotion_gone is missing" in str(err.value)
    assert "pip install 'streamotion[serving]'" in str(err.value)

"""Helm, built once from its pinned upstream Go module into ``~/.cache/streamotion/helm/<version>``.

The chart tests (``tests/test_chart*.py``) lint and render ``charts/streamotion`` with it, and
``make up`` uses it when no ``helm`` is on PATH. ``kube_version`` is passed to every lint and
template call so Helm does not assume its built-in default Kubernetes version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from streamotion.dev.controlplane import K8S_VERSION, cache_dir

HELM_MODULE = "helm.sh/helm/v4"
HELM_VERSION = "v4.3.1"
# The Kubernetes version lint/template render for (the control plane the tests run).
KUBE_VERSION = f"v{K8S_VERSION}"


def helm_path() -> Path:
    return cache_dir() / "helm" / HELM_VERSION / "helm"


def ensure_helm(log=print) -> Path:
    """Build the pinned helm (``go build`` of ``cmd/helm`` in a temporary module) if not cached."""
    out = helm_path()
    if out.exists():
        return out
    go = shutil.which("go")
    if not go:
        raise RuntimeError("Go is needed once to build helm (https://go.dev/dl); none on PATH")
    out.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -trimpath"}
    log(f"Building helm {HELM_VERSION} from {HELM_MODULE} (once, a few minutes)...")
    partial = out.with_name(f"helm.{os.getpid()}.tmp")  # concurrent builds each rename atomically
    with tempfile.TemporaryDirectory(prefix="streamotion-helm-") as tmp:
        ldflags = (
            f"-s -w -X {HELM_MODULE}/internal/version.version={HELM_VERSION}"
            f" -X {HELM_MODULE}/internal/version.gitTreeState=clean"
        )
        steps = [
            [go, "mod", "init", "streamotion.local/helm"],
            [go, "get", f"{HELM_MODULE}@{HELM_VERSION}"],
            [go, "build", "-ldflags", ldflags, "-o", str(partial), f"{HELM_MODULE}/cmd/helm"],
        ]
        for step in steps:
            log("  $ go " + " ".join(step[1:]))
            result = subprocess.run(step, cwd=tmp, env=env, capture_output=True, text=True)
            if result.returncode != 0:
                raise RuntimeError(f"building helm failed:\n{result.stderr[-4000:]}")
    os.replace(partial, out)
    return out


def helm(*args: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    """Run the pinned helm with isolated config/cache dirs (no user repositories leak in)."""
    home = cache_dir() / "helm" / "home"
    env = {
        **os.environ,
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_DATA_HOME": str(home / "data"),
        **kwargs.pop("env", {}),
    }
    result = subprocess.run([str(ensure_helm()), *args], capture_output=True, text=True, env=env, **kwargs)
    if check and result.returncode != 0:
        raise RuntimeError(f"helm {' '.join(args)} failed:\n{result.stderr.strip()}")
    return result


if __name__ == "__main__":
    print(ensure_helm())

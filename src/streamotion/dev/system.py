"""Debian packages the tests need (PostgreSQL, Prometheus, ...), installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess

_updated = False


def ensure_apt(packages: dict[str, str]) -> str:
    """Install Debian packages whose marker file or command is missing. ``{package: path-or-command}``."""
    global _updated
    missing = [pkg for pkg, probe in packages.items() if not (os.path.exists(probe) or shutil.which(probe))]
    if not missing:
        return "already installed"
    if os.geteuid() != 0:
        raise RuntimeError(
            f"missing Debian packages {missing}: run `sudo apt-get install -y {' '.join(missing)}`"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if not _updated:
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        _updated = True
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], check=True, env=env
    )
    return f"installed {', '.join(missing)}"

"""The cluster path: `make up` on kind, the chart's values for kind and GKE, host sizing.

`make up` runs for real here with stand-ins for docker, kind, kubectl and helm on PATH that record
their arguments (there is no Docker on the test machine); the values files are checked as Helm
merges them with values.yaml, against the upstream charts' keys and templates at their pinned tags.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# ----------------------------------------------------------------------------------- make up on kind
STUB = textwrap.dedent(
    """\
    #!/bin/bash
    # Records its arguments (one shell-quoted line per call) and plays the part `make up` needs.
    tool=$(basename "$0")
    printf '%s' "$tool" >> "$STUB_LOG"; printf ' %q' "$@" >> "$STUB_LOG"; echo >> "$STUB_LOG"
    case "$tool $1 $2" in
      "docker image inspect") echo "$STUB_PLATFORM" ;;
      "docker image save") [ "$3" = --help ] && echo "$STUB_SAVE_HELP" ;;
      "docker save "*)
        out=""; while [ $# -gt 0 ]; do [ "$1" = -o ] && { out=$2; shift; }; shift; done
        # The archive lists what was saved, so that kind's stand-in can report what it loaded.
        grep '^docker save ' "$STUB_LOG" | tail -1 > "$out" ;;
      "kind load image-archive")
        for a in "$@"; do [ -f "$a" ] && { printf 'archive %s: ' "$a"; cat "$a"; } >> "$STUB_LOG"; done ;;
    esac
    exit 0
    """
)


def run_make_up(tmp_path: Path, *, save_help: str, platform: str = "linux/arm64") -> list[list[str]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("docker", "kind", "kubectl", "helm"):
        (bin_dir / tool).write_text(STUB)
        (bin_dir / tool).chmod(0o755)
    log = tmp_path / "calls.log"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "STUB_LOG": str(log),
        "STUB_PLATFORM": platform,
        "STUB_SAVE_HELP": save_help,
    }
    result = subprocess.run(
        ["make", "-C", str(ROOT), "up", "IMAGE_TAG=t1", f"HELM={bin_dir / 'helm'}"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = log.read_text().splitlines()
    return [shlex.split(line) for line in lines if not line.startswith("archive ")] + [
        ["archive", *shlex.split(line.split(": ", 1)[1])] for line in lines if line.startswith("archive ")
    ]


IMAGES = [f"streamotion/{c}:t1" for c in ("operator", "ingest", "jobs", "serving")]


def test_make_up_loads_images_as_a_single_platform_archive(tmp_path):
    """`kind load docker-image` fails with Docker's containerd image store, the default of Docker 29:
    `docker save` then writes the whole multi-platform index while only the host platform's blobs
    exist, and kind imports with `ctr images import --all-platforms`
    (kubernetes-sigs/kind v0.32.0 pkg/cluster/nodeutils/util.go LoadImageArchive; issue
    kubernetes-sigs/kind#3795, workaround documented by kubernetes-sigs/kind#4247). `make up` saves
    every image for one platform (that of the built images) and loads that file with
    `kind load image-archive`, which opens the path once per node (v0.32.0
    pkg/cmd/kind/load/image-archive/image-archive.go loadImage: os.Open per node, concurrently), so a
    file, not a pipe."""
    calls = run_make_up(tmp_path, save_help="      --platform string   Save only the given platform")
    kind_loads = [c for c in calls if c[:2] == ["kind", "load"]]
    assert kind_loads and all(c[2] == "image-archive" for c in kind_loads), kind_loads
    assert not [c for c in calls if "docker-image" in c]
    (load,) = kind_loads
    assert load[3:5] == ["--name", "streamotion"]
    saves = [c for c in calls if c[:2] == ["docker", "save"]]
    assert len(saves) == 1
    save = saves[0]
    assert save[save.index("--platform") + 1] == "linux/arm64"  # what `docker image inspect` reported
    assert sorted(a for a in save if a.startswith("streamotion/")) == sorted(IMAGES)
    # kind loaded the file `docker save` wrote, and it held every image; the file is gone afterwards.
    (archive,) = [c for c in calls if c[0] == "archive"]
    assert archive[1:] == save
    assert load[-1] == save[save.index("-o") + 1] and not Path(load[-1]).exists()
    # The load happens after the images are built and before Helm installs anything.
    order = [c[:2] for c in calls]
    assert order.index(["kind", "load"]) > max(i for i, c in enumerate(order) if c == ["docker", "build"])
    assert order.index(["kind", "load"]) < order.index(["helm", "repo"])


def test_make_up_without_docker_save_platform(tmp_path):
    """Docker clients before 28.0 have no `docker save --platform` (and no containerd store by default):
    `make up` then saves without it, still through one archive."""
    calls = run_make_up(tmp_path, save_help="  -o, --output string   Write to a file")
    (save,) = [c for c in calls if c[:2] == ["docker", "save"]]
    assert "--platform" not in save and sorted(a for a in save if a.startswith("streamotion/")) == sorted(
        IMAGES
    )
    assert [c[2] for c in calls if c[:2] == ["kind", "load"]] == ["image-archive"]


@pytest.fixture(autouse=True)
def _no_make_flags(monkeypatch):
    monkeypatch.delenv("MAKEFLAGS", raising=False)
    monkeypatch.delenv("MFLAGS", raising=False)

"""`streamotion dev control-plane` as a person uses it: start, kubectl apply/explain, Ctrl-C, nothing left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from streamotion.dev.controlplane import bin_dir

ROOT = Path(__file__).resolve().parents[1]


def _children_of(pid: int) -> set[int]:
    """Every process whose ancestry includes ``pid`` (from /proc)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                parents[int(entry.name)] = int(fields[1])
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_dev_control_plane_serves_kubectl_and_stops_cleanly(tmp_path, shared):
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamotion", "dev", "control-plane", "--kubeconfig", str(kubeconfig),
         "--crds", str(shared / "crds" / "strimzi-1.2.0")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        line = proc.stdout.readline()  # printed once the API server is ready and CRDs are installed
        assert line.strip() == str(kubeconfig), proc.stderr.read() if proc.poll() is not None else line
        children = _children_of(proc.pid)
        names = {Path(f"/proc/{p}/exe").resolve().name for p in children if _alive(p)}
        assert {"etcd", "kube-apiserver", "kube-controller-manager"} <= names

        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        kubectl = str(bin_dir() / "kubectl")

        def run(*args):
            return subprocess.run(
                [kubectl, *args], env=env, capture_output=True, text=True, check=True
            ).stdout

        run("apply", "-f", str(ROOT / "examples"))
        import yaml

        expected = sorted(
            f"streampipeline.streamotion.io/{doc['metadata']['name']}"
            for f in (ROOT / "examples").glob("*.yaml")
            for doc in yaml.safe_load_all(f.read_text())
            if isinstance(doc, dict) and doc.get("kind") == "StreamPipeline"
        )
        assert len(expected) >= 3
        assert sorted(run("get", "sp", "-o", "name").split()) == expected
        assert "kafkatopics" in run("api-resources", "--api-group=kafka.strimzi.io")
        explain = run("explain", "streampipeline.spec")
        for field in ("sources", "sinks", "processing", "model", "kafka", "suspend"):
            assert field in explain
        # the controller manager runs: a Deployment gets its ReplicaSet
        run("create", "deployment", "web", "--image=registry.k8s.io/pause:3.10")
        deadline = time.monotonic() + 60
        while "web-" not in run("get", "replicasets", "-o", "name"):
            assert time.monotonic() < deadline, "no ReplicaSet: kube-controller-manager is not working"
            time.sleep(0.5)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(60)
    deadline = time.monotonic() + 20
    while any(_alive(p) for p in children) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in children if _alive(p)], "processes left behind after Ctrl-C"
    assert proc.returncode == 0

"""``streamotion bench operator``: the operator (``streamotion operator`` in a subprocess) against a
real control plane with the upstream CRDs.

* apply_to_children_1_s / apply_to_children_N_s: from applying 1 (N) StreamPipelines at once to
  every child of every one of them existing;
* reconcile_per_s: steady-state full reconciles per second of unchanged pipelines (the same
  Controller code, in this process: reads only, no writes);
* operator_rss_mb: resident memory of the operator process once it manages N pipelines.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from streamotion.api.models import StreamPipeline
from streamotion.bench import Result, emit
from streamotion.dev.controlplane import ControlPlane
from streamotion.dev.procs import Process, free_port
from streamotion_operator import builders
from streamotion_operator.config import OperatorConfig
from streamotion_operator.controller import Controller
from streamotion_operator.kube import Kube
from streamotion_operator.testing import apply_pipeline, create_secrets, pipeline


def _default_crds() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parents[2]):
        d = base.parent / "shared" / "crds"
        if d.exists():
            return d
    raise SystemExit("upstream CRDs not found: pass --crds DIR (../shared/crds)")


def _expected(name: str, namespace: str, cfg: OperatorConfig) -> set[tuple[str, str, str]]:
    p = StreamPipeline.model_validate(pipeline(name, namespace))
    return {builders.key(o) for o in builders.build(p, cfg)}


def _live(kube: Kube) -> set[tuple[str, str, str]]:
    sel = {"app.kubernetes.io/managed-by": "streamotion-operator"}
    out = set()
    for kind in builders.KINDS.values():
        for item in kube.list(kind, None, sel):
            m = item["metadata"]
            out.add((kind.kind, m["namespace"], m["name"]))
    return out


def _apply_and_wait(kube: Kube, names: list[str], namespace: str, cfg: OperatorConfig, timeout=600) -> float:
    want: set[tuple[str, str, str]] = set()
    for n in names:
        want |= _expected(n, namespace, cfg)
    started = time.perf_counter()
    threads = [threading.Thread(target=apply_pipeline, args=(kube, pipeline(n, namespace))) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    while not want <= _live(kube):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"children of {len(names)} pipelines not created after {timeout}s")
        time.sleep(0.05)
    return time.perf_counter() - started


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run(pipelines: int = 50, crds: Path | None = None, seconds: float = 10.0) -> dict:
    crds = Path(crds) if crds else _default_crds()
    say = lambda msg: print(f"[bench operator] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="streamotion-bench-operator-"))
    cp = ControlPlane(workdir=work / "k8s", crd_dirs=[crds], log=say)
    say("starting the control plane")
    cp.start()
    op = None
    kube = None
    try:
        for ns in ("kafka", "monitoring", "bench"):
            cp.kubectl("create", "namespace", ns)
        kube = Kube.from_kubeconfig(cp.kubeconfig_path)
        create_secrets(kube, "bench")
        cfg = OperatorConfig(kafka_namespace="kafka")
        env = {**os.environ, "STREAMOTION_KAFKA_NAMESPACE": "kafka", "STREAMOTION_RESYNC_SECONDS": "30"}
        argv = [
            sys.executable, "-m", "streamotion", "operator", "--kubeconfig", str(cp.kubeconfig_path),
            "--metrics-port", str(free_port()), "--health-port", str(free_port()), "--log-format", "plain",
        ]  # fmt: skip
        say("starting `streamotion operator`")
        op = Process.start("operator", argv, work / "operator.log", env=env)
        # warm-up: the operator is up once it has handled a first pipeline
        _apply_and_wait(kube, ["warmup"], "bench", cfg, timeout=120)
        op.check_alive()
        one = _apply_and_wait(kube, ["single"], "bench", cfg)
        say(f"1 pipeline: children in {one:.2f}s")
        names = [f"p{i:03d}" for i in range(pipelines)]
        many = _apply_and_wait(kube, names, "bench", cfg)
        say(f"{pipelines} pipelines: children in {many:.2f}s")
        time.sleep(3)
        op.check_alive()
        rss = _rss_mb(op.pid)
        controller = Controller(Kube.from_kubeconfig(cp.kubeconfig_path), cfg)
        for n in names:  # settle: nothing left to write
            controller.reconcile("bench", n)
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            out = controller.reconcile("bench", names[count % len(names)])
            if out.created or out.updated or out.deleted:
                raise RuntimeError(f"steady state expected, yet the reconcile wrote: {out}")
            count += 1
        rate = count / (time.perf_counter() - started)
        say(f"steady state: {rate:.1f} reconciles/s ({controller.kube.requests} API requests)")
        results = [
            Result("apply_to_children_1_s", one, "s"),
            Result(f"apply_to_children_{pipelines}_s", many, "s"),
            Result("reconcile_per_s", rate, "1/s"),
            Result("operator_rss_mb", rss, "MiB"),
        ]
        notes = {
            "apply_to_children_1_s": "apply of one StreamPipeline until all its children exist "
            "(the operator already running, one pipeline handled before)",
            f"apply_to_children_{pipelines}_s": f"{pipelines} StreamPipelines applied at once until every "
            "child of every one exists",
            "reconcile_per_s": f"full no-op reconciles of {pipelines} unchanged pipelines, one at a time "
            "(the operator's Controller code: lists, secret checks, status compare; no writes)",
            "operator_rss_mb": f"VmRSS of the `streamotion operator` process managing {pipelines + 2} pipelines",
        }
        return emit("operator", results, pipelines=pipelines, notes=notes)
    finally:
        if op:
            op.stop()
        if kube:
            kube.close()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)

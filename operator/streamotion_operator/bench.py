"""``streamotion bench operator``: the operator (``streamotion operator`` in a subprocess) against a
real API server with the upstream CRDs, measured by the API server's own metrics.

The control plane runs etcd and kube-apiserver only (no kube-controller-manager), so every request
the API server counts in ``apiserver_request_total`` comes from the operator or from the benchmark,
and the benchmark makes none while it measures.

* apply_to_children_1_s / apply_to_children_N_s: from applying 1 (N) StreamPipelines at once to
  every child of every one of them existing;
* api_requests_per_pipeline_per_min: requests the API server served (long-running watches and its
  own lease heartbeats left out) per pipeline and minute over a steady-state window of the N
  pipelines, nothing changing (each is resynced every ``--resync`` seconds);
* reconcile_after_child_change_p99_s: a child changed by someone else (a producer Deployment's
  replicas patched) until the operator has put it back, p99 over ``--samples`` changes;
* operator_rss_mb_N: resident memory of the operator process managing the N pipelines;
* the same three with ``--unrelated`` Deployments and as many ConfigMaps (not the operator's) added
  to the cluster (``*_unrelated``): they must not move.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from streamotion.api.models import StreamPipeline
from streamotion.bench import Result, emit
from streamotion.dev.controlplane import ControlPlane
from streamotion.dev.procs import Process, free_port
from streamotion_operator import builders
from streamotion_operator.builders import KINDS
from streamotion_operator.config import OperatorConfig
from streamotion_operator.kube import Kube
from streamotion_operator.testing import (
    api_requests,
    apply_pipeline,
    create_secrets,
    pipeline,
    requests_between,
)

NS = "bench"


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
    for kind in KINDS.values():
        for item in kube.list(kind, None, sel):
            m = item["metadata"]
            out.add((kind.kind, m["namespace"], m["name"]))
    return out


def _apply_and_wait(kube: Kube, names: list[str], cfg: OperatorConfig, timeout=900) -> float:
    want: set[tuple[str, str, str]] = set()
    for n in names:
        want |= _expected(n, NS, cfg)
    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda n: apply_pipeline(kube, pipeline(n, NS)), names))
    poll = max(0.05, len(names) / 100)  # listing every child is itself load: less often when many
    while not want <= _live(kube):
        if time.perf_counter() - started > timeout:
            raise TimeoutError(f"children of {len(names)} pipelines not created after {timeout}s")
        time.sleep(poll)
    return time.perf_counter() - started


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _steady_requests(kube: Kube, pipelines: int, seconds: float) -> tuple[float, dict]:
    """Requests per pipeline and minute over ``seconds`` of nothing changing."""
    before = api_requests(kube)
    time.sleep(seconds)
    delta = requests_between(before, api_requests(kube))
    return sum(delta.values()) / pipelines / (seconds / 60), delta


def _child_change_latency(kube: Kube, names: list[str], samples: int) -> list[float]:
    """Patch a producer Deployment's replicas (drift) and wait until the operator has reverted it."""
    deploy = KINDS["Deployment"]
    out = []
    for i in range(samples):
        name = f"{names[(i * 7919) % len(names)]}-src-demo"
        want = kube.get(deploy, NS, name)["spec"]["replicas"]
        started = time.perf_counter()
        kube.request(
            "PATCH",
            deploy.path(NS, name),
            body={"spec": {"replicas": want + 3}},
            content_type="application/merge-patch+json",
        )
        while kube.get(deploy, NS, name)["spec"]["replicas"] != want:
            if time.perf_counter() - started > 120:
                raise TimeoutError(f"Deployment {name} not repaired after 120s")
            time.sleep(0.01)
        out.append(time.perf_counter() - started)
    return out


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def _unrelated(kube: Kube, count: int) -> None:
    """``count`` Deployments and ``count`` ConfigMaps the operator has nothing to do with."""

    def make(i: int) -> None:
        kube.request(
            "POST",
            KINDS["ConfigMap"].path("unrelated"),
            body={"metadata": {"name": f"cm-{i}", "labels": {"app": "other"}}, "data": {"k": "v" * 1024}},
        )
        kube.request(
            "POST",
            KINDS["Deployment"].path("unrelated"),
            body={
                "metadata": {"name": f"d-{i}", "labels": {"app": "other"}},
                "spec": {
                    "selector": {"matchLabels": {"app": f"d-{i}"}},
                    "template": {
                        "metadata": {"labels": {"app": f"d-{i}"}},
                        "spec": {"containers": [{"name": "c", "image": "registry.example/other:1"}]},
                    },
                },
            },
        )

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(make, range(count)))


def run(
    pipelines: int = 500,
    crds: Path | None = None,
    seconds: float = 45.0,
    resync: float = 30.0,
    samples: int = 40,
    unrelated: int = 5000,
) -> dict:
    crds = Path(crds) if crds else _default_crds()
    say = lambda msg: print(f"[bench operator] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    work = Path(tempfile.mkdtemp(prefix="streamotion-bench-operator-"))
    cp = ControlPlane(workdir=work / "k8s", crd_dirs=[crds], log=say, controller_manager=False)
    say("starting the control plane (etcd, kube-apiserver)")
    began = time.perf_counter()
    cp.start()
    op = None
    kube = None
    try:
        for ns in ("kafka", "monitoring", NS, "unrelated"):
            cp.kubectl("create", "namespace", ns)
        kube = Kube.from_kubeconfig(cp.kubeconfig_path)
        create_secrets(kube, NS)
        cfg = OperatorConfig(kafka_namespace="kafka")
        env = {
            **os.environ,
            "STREAMOTION_KAFKA_NAMESPACE": "kafka",
            "STREAMOTION_RESYNC_SECONDS": str(resync),
        }
        argv = [
            sys.executable, "-m", "streamotion", "operator", "--kubeconfig", str(cp.kubeconfig_path),
            "--metrics-port", str(free_port()), "--health-port", str(free_port()), "--log-format", "plain",
        ]  # fmt: skip
        say("starting `streamotion operator`")
        op = Process.start("operator", argv, work / "operator.log", env=env)
        # warm-up: the operator is up once it has handled a first pipeline
        _apply_and_wait(kube, ["warmup"], cfg, timeout=120)
        op.check_alive()
        one = _apply_and_wait(kube, ["single"], cfg)
        say(f"1 pipeline: children in {one:.2f}s")
        names = [f"p{i:04d}" for i in range(pipelines)]
        many = _apply_and_wait(kube, names, cfg)
        say(f"{pipelines} pipelines: children in {many:.2f}s")
        total = pipelines + 2

        def measure(suffix: str, settle: float) -> list[Result]:
            time.sleep(settle)  # the last status writes of the creation reach the watches
            op.check_alive()
            rate, delta = _steady_requests(kube, total, seconds)
            say(f"steady state{suffix}: {rate:.3f} requests/pipeline/min over {seconds:g}s: {delta}")
            lat = _child_change_latency(kube, names, samples)
            p99 = _p99(lat)
            say(f"child change{suffix}: p50 {statistics.median(lat):.3f}s p99 {p99:.3f}s")
            rss = _rss_mb(op.pid)
            say(f"operator RSS{suffix}: {rss:.1f} MiB")
            return [
                Result(f"api_requests_per_pipeline_per_min{suffix}", rate, "1/min"),
                Result(f"reconcile_after_child_change_p99_s{suffix}", p99, "s"),
                Result(f"operator_rss_mb_{pipelines}{suffix}", rss, "MiB"),
            ]

        results = [
            Result("apply_to_children_1_s", one, "s"),
            Result(f"apply_to_children_{pipelines}_s", many, "s"),
        ]
        results += measure("", 10)
        if unrelated:
            t = time.perf_counter()
            _unrelated(kube, unrelated)
            say(f"{unrelated} unrelated Deployments and ConfigMaps created in {time.perf_counter() - t:.1f}s")
            results += measure("_unrelated", 5)
        op.check_alive()
        say(f"done in {time.perf_counter() - began:.0f}s")
        notes = {
            "apply_to_children_1_s": "apply of one StreamPipeline until all its children exist "
            "(the operator already running, one pipeline handled before)",
            f"apply_to_children_{pipelines}_s": f"{pipelines} StreamPipelines applied at once until every "
            "child of every one exists",
            "api_requests_per_pipeline_per_min": f"apiserver_request_total (all verbs but WATCH/CONNECT, "
            f"leases left out) over {seconds:g}s of {total} unchanged pipelines resynced every {resync:g}s, "
            "per pipeline and minute (etcd and kube-apiserver only: no other client)",
            "reconcile_after_child_change_p99_s": f"p99 over {samples} changes of a producer Deployment's "
            "replicas by another client until the operator has reverted it",
            f"operator_rss_mb_{pipelines}": f"VmRSS of the `streamotion operator` process managing {total} "
            "pipelines",
            "_unrelated": f"the same with {unrelated} Deployments and {unrelated} ConfigMaps of no pipeline "
            "in the cluster",
        }
        return emit(
            "operator",
            results,
            pipelines=pipelines,
            unrelated=unrelated,
            resync_seconds=resync,
            took_seconds=round(time.perf_counter() - began),
            targets={
                **{f"api_requests_per_pipeline_per_min{x}": "<= 2" for x in ("", "_unrelated")},
                **{f"reconcile_after_child_change_p99_s{x}": "<= 2" for x in ("", "_unrelated")},
                **{f"operator_rss_mb_{pipelines}{x}": "<= 300" for x in ("", "_unrelated")},
            },
            ancestor={
                "api_requests_per_pipeline_per_min": "about 26: 11 cluster-wide LISTs, a GET of the pipeline "
                "and one per Secret every 30 s (each reconcile read everything)",
            },
            notes=notes,
        )
    finally:
        if op:
            op.stop()
        if kube:
            kube.close()
        cp.stop()
        shutil.rmtree(work, ignore_errors=True)

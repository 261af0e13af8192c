"""`streamotion dev ...`: real servers on this machine for development and tests."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Start real servers on loopback for development (Kubernetes API, Kafka, ...).", no_args_is_help=True
)
console = Console(stderr=True)


def wait_for_signal() -> None:
    """Block until Ctrl-C or SIGTERM."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


@app.command("control-plane")
def control_plane(
    kubeconfig: Path = typer.Option(
        Path(".streamotion/kubeconfig"), help="Where to write the admin kubeconfig."
    ),
    crds: list[Path] = typer.Option(
        [], "--crds", help="Also install every CRD file under these directories."
    ),
    no_controller_manager: bool = typer.Option(False, help="Run only etcd and kube-apiserver."),
) -> None:
    """Run etcd, kube-apiserver and kube-controller-manager on loopback until Ctrl-C."""
    from streamotion.dev.controlplane import ControlPlane, bin_dir

    cp = ControlPlane(
        kubeconfig_path=kubeconfig.resolve(),
        crd_dirs=crds,
        controller_manager=not no_controller_manager,
        log=console.print,
    )
    with console.status("Starting etcd, kube-apiserver and kube-controller-manager..."):
        cp.start()
    try:
        console.print(f"[green]Kubernetes API ready[/] at {cp.server}")
        console.print(f"  export KUBECONFIG={cp.kubeconfig_path}")
        console.print(f"  export PATH={bin_dir()}:$PATH   # kubectl of the same version")
        console.print("  kubectl apply -f examples/ && kubectl get sp")
        console.print("Ctrl-C stops everything.")
        typer.echo(str(cp.kubeconfig_path))
        wait_for_signal()
    finally:
        console.print("Stopping...")
        cp.stop()


@app.command("kafka")
def kafka(
    workdir: Path | None = typer.Option(
        None, help="Data and logs directory (default: a temporary one, removed on exit)."
    ),
    topic: list[str] = typer.Option([], "--topic", help="Create these topics (name or name:partitions)."),
    heap: str = typer.Option("512m", help="Broker JVM heap (-Xmx)."),
) -> None:
    """Run a single-node Apache Kafka broker (KRaft) on loopback until Ctrl-C; prints its bootstrap address."""
    from streamotion.dev.kafka import KAFKA_VERSION, KafkaBroker

    broker = KafkaBroker(workdir=workdir.resolve() if workdir else None, heap=heap, log=console.print)
    try:
        with console.status(f"Starting Apache Kafka {KAFKA_VERSION} (KRaft, single node)..."):
            broker.start()
        for spec in topic:
            name, _, parts = spec.partition(":")
            broker.create_topic(name, partitions=int(parts or 1))
            console.print(f"  topic {name} ({parts or 1} partition(s))")
        console.print(f"[green]Kafka ready[/] at {broker.bootstrap} (logs: {broker.log_path})")
        console.print(f"  export STREAMOTION_KAFKA_BOOTSTRAP={broker.bootstrap}")
        console.print("Ctrl-C stops it.")
        typer.echo(broker.bootstrap)
        wait_for_signal()
    finally:
        console.print("Stopping Kafka...")
        broker.stop()

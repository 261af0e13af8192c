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
    secure: bool = typer.Option(
        False,
        "--secure",
        help="mTLS and SCRAM-SHA-512 listeners, ACLs enforced (StandardAuthorizer), a generated CA.",
    ),
    pipeline: list[Path] = typer.Option(
        [],
        "--pipeline",
        help="--secure: create this StreamPipeline's topics, apply its components' ACLs and issue each "
        "a certificate (an env file per component). Repeatable.",
        exists=True,
        dir_okay=False,
    ),
) -> None:
    """Run a single-node Apache Kafka broker (KRaft) on loopback until Ctrl-C; prints its bootstrap address."""
    from streamotion.dev.kafka import KAFKA_VERSION, KafkaBroker

    if pipeline and not secure:
        raise typer.BadParameter("--pipeline needs --secure (a plaintext broker has no ACLs)")
    broker = KafkaBroker(
        workdir=workdir.resolve() if workdir else None, heap=heap, log=console.print, secure=secure
    )
    try:
        mode = ", mTLS + SCRAM-SHA-512, ACLs" if secure else ""
        with console.status(f"Starting Apache Kafka {KAFKA_VERSION} (KRaft, single node{mode})..."):
            broker.start()
        for spec in topic:
            name, _, parts = spec.partition(":")
            broker.create_topic(name, partitions=int(parts or 1))
            console.print(f"  topic {name} ({parts or 1} partition(s))")
        console.print(f"[green]Kafka ready[/] at {broker.bootstrap} (logs: {broker.log_path})")
        if secure:
            _secure_identities(broker, pipeline)
        else:
            console.print(f"  export STREAMOTION_KAFKA_BOOTSTRAP={broker.bootstrap}")
        console.print("Ctrl-C stops it.")
        typer.echo(broker.bootstrap)
        wait_for_signal()
    finally:
        console.print("Stopping Kafka...")
        broker.stop()


def _secure_identities(broker, pipelines: list[Path]) -> None:
    """Env files (STREAMOTION_KAFKA_*) of the administrator and of each pipeline component: its
    certificate (``<user>.env``) and a SCRAM-SHA-512 user with a random password (``<user>-scram.env``)."""
    import secrets

    import yaml

    from streamotion.api.validate import parse
    from streamotion.naming import topic_names

    envs = broker.workdir / "env"
    envs.mkdir(exist_ok=True)

    def write(name: str, env: dict[str, str]) -> Path:
        path = envs / f"{name}.env"
        path.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
        path.chmod(0o600)
        return path

    console.print(f"  SCRAM-SHA-512 listener: {broker.scram_bootstrap}; CA: {broker.ca.cert_path}")
    admin = write("admin", broker.client_env(broker.admin_identity))
    console.print(f"  administrator (super user): source {admin}")
    for file in pipelines:
        p = parse(yaml.safe_load(file.read_text()))
        topics = topic_names(p)
        broker.create_topic(topics["raw"], partitions=p.spec.kafka.partitions)
        broker.create_topic(topics["deadLetter"])
        broker.apply_acls(p, "scram-sha-512")
        for ident in broker.apply_acls(p, "tls"):
            env = broker.client_env(broker.issue(ident.user))
            password = secrets.token_urlsafe(24)
            broker.add_scram_user(ident.user, password)
            scram = write(f"{ident.user}-scram", broker.client_env(scram=(ident.user, password)))
            console.print(
                f"  {p.name} {ident.component} {ident.source or ''}: source {write(ident.user, env)} "
                f"(SCRAM: {scram.name})"
            )

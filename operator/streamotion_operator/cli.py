"""``streamotion render``, ``streamotion operator`` and ``streamotion bench operator``."""

from __future__ import annotations

from pathlib import Path

import typer

from streamotion_operator.config import OperatorConfig


def render(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="A StreamPipeline YAML file."),
    namespace: str = typer.Option(None, "--namespace", "-n", help="Namespace when the file names none."),
    kafka_namespace: str = typer.Option(
        None, envvar="STREAMOTION_KAFKA_NAMESPACE", help="Kafka's namespace when the pipeline names none."
    ),
    kafka_replicas: int = typer.Option(
        None,
        envvar="STREAMOTION_KAFKA_REPLICAS",
        min=1,
        help="Topics' replication factor when the pipeline sets none (1; the chart: min(brokers, 3)).",
    ),
) -> None:
    """Print the objects the operator would create for FILE (multi-document YAML, same builder code)."""
    from streamotion_operator.render import render_file

    cfg = OperatorConfig.from_env(kafka_namespace=kafka_namespace, kafka_replicas=kafka_replicas)
    try:
        docs = render_file(file, cfg, namespace=namespace)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(dump_yaml(docs), nl=False)


def dump_yaml(docs: list[dict]) -> str:
    """Multi-document YAML a person can read and diff: multi-line strings (pipeline file, serve config)
    as literal blocks, and no anchors or aliases (``&id001``/``*id001``) where children share a dict."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data):
            return True

    def text(dumper, value):
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    return yaml.dump_all(docs, Dumper=Dumper, sort_keys=False, width=120)


def operator(
    kubeconfig: Path = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig (default: in-cluster)."),
    producer_image: str = typer.Option(None, envvar="STREAMOTION_PRODUCER_IMAGE", help="Producer image."),
    job_image: str = typer.Option(None, envvar="STREAMOTION_JOB_IMAGE", help="Spark job image."),
    model_image: str = typer.Option(None, envvar="STREAMOTION_MODEL_IMAGE", help="Ray Serve model image."),
    kafka_namespace: str = typer.Option(
        None,
        envvar="STREAMOTION_KAFKA_NAMESPACE",
        help="Kafka's namespace when a pipeline names none (kafka).",
    ),
    kafka_replicas: int = typer.Option(
        None,
        envvar="STREAMOTION_KAFKA_REPLICAS",
        min=1,
        help="Topics' replication factor when a pipeline sets none (1; the chart: min(brokers, 3)).",
    ),
    resync_seconds: float = typer.Option(
        None, envvar="STREAMOTION_RESYNC_SECONDS", help="Full reconcile at least this often (30)."
    ),
    metrics_port: int = typer.Option(
        None, envvar="STREAMOTION_METRICS_PORT", help="Prometheus metrics port (9108; 0: off)."
    ),
    health_port: int = typer.Option(
        None, envvar="STREAMOTION_HEALTH_PORT", help="Liveness endpoint /healthz port (8080; 0: off)."
    ),
    peering: str = typer.Option(
        None,
        envvar="STREAMOTION_PEERING",
        help="kopf peering name for several replicas (default: standalone).",
    ),
    priority: int = typer.Option(0, envvar="STREAMOTION_PRIORITY", help="Peering priority."),
    log_format: str = typer.Option("json", envvar="STREAMOTION_LOG_FORMAT", help="json or plain."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the StreamPipeline operator (kopf): reconciles every pipeline in the cluster."""
    import asyncio

    import kopf
    from prometheus_client import start_http_server

    from streamotion_operator.handlers import Runtime, make_registry, make_settings, quiet_logs

    cfg = OperatorConfig.from_env(
        producer_image=producer_image,
        job_image=job_image,
        model_image=model_image,
        kafka_namespace=kafka_namespace,
        kafka_replicas=kafka_replicas,
        resync_seconds=resync_seconds,
        metrics_port=metrics_port,
        health_port=health_port,
    )
    kopf.configure(
        verbose=verbose, log_format=kopf.LogFormat.JSON if log_format == "json" else kopf.LogFormat.PLAIN
    )
    if not verbose:
        quiet_logs()
    rt = Runtime(cfg, kubeconfig)
    if cfg.metrics_port:
        start_http_server(cfg.metrics_port, registry=rt.metrics.registry)
    asyncio.run(
        kopf.operator(
            registry=make_registry(rt),
            settings=make_settings(cfg, peering=peering),
            clusterwide=True,
            standalone=not peering,
            peering_name=peering,
            priority=priority,
            liveness_endpoint=f"http://0.0.0.0:{cfg.health_port}/healthz" if cfg.health_port else None,
        )
    )


def bench_operator(
    pipelines: int = typer.Option(
        500, help="Pipelines the operator manages (500 for the figures; fewer in dev)."
    ),
    unrelated: int = typer.Option(
        5000,
        help="Deployments and as many ConfigMaps of no pipeline added for the *_unrelated figures (0: skip).",
    ),
    seconds: float = typer.Option(
        45.0,
        help="Steady-state window the API requests are counted over (45 s: every pipeline resynced at least once).",
    ),
    resync: float = typer.Option(30.0, help="The operator's resync period (its default)."),
    samples: int = typer.Option(40, help="Child changes timed for reconcile_after_child_change_p99_s."),
    crds: Path = typer.Option(None, help="Upstream CRDs (default ../shared/crds)."),
) -> None:
    """API requests per pipeline and minute at steady state, reconcile latency after a child changes,
    operator memory (N pipelines, then with unrelated objects added), apply-to-children latency."""
    from streamotion_operator.bench import run

    run(pipelines=pipelines, crds=crds, seconds=seconds, resync=resync, samples=samples, unrelated=unrelated)


def migrate_storage(
    kubeconfig: Path = typer.Option(None, envvar="KUBECONFIG", help="Kubeconfig (default: in-cluster)."),
) -> None:
    """After a CRD upgrade: store every StreamPipeline again in the CRD's storage version and drop the
    older versions from its status.storedVersions (then they can be removed from the CRD)."""
    from streamotion_operator.kube import Kube
    from streamotion_operator.migrate import migrate_storage as run

    kube = Kube.from_kubeconfig(str(kubeconfig) if kubeconfig else None)
    try:
        out = run(kube)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    finally:
        kube.close()
    typer.echo(
        f"rewrote {len(out.rewritten)} StreamPipelines in {out.storage_version}"
        + (f" ({len(out.gone)} deleted meanwhile)" if out.gone else "")
        + f"; storedVersions {out.stored_before} -> {out.stored_after}"
    )


def rbac(
    output: Path = typer.Option(None, "-o", help="Write here instead of stdout."),
) -> None:
    """Print the operator's least-privilege RBAC rules (the chart's ClusterRole uses them)."""
    from streamotion_operator.rbac import rules_yaml

    text = rules_yaml()
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


def register(app: typer.Typer) -> None:
    from streamotion.cli.bench import app as bench_app

    app.command("render")(render)
    app.command("operator")(operator)
    app.command("operator-rbac", hidden=True)(rbac)
    app.command("migrate-storage")(migrate_storage)
    bench_app.command("operator")(bench_operator)

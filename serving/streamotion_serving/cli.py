"""`streamotion model serve|train|eval|export` and `streamotion bench model`.

Heavy imports (torch, transformers, ray) stay inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

model_app = typer.Typer(help="The emotion model: serve (Ray Serve), train, evaluate, export to ONNX.")

TaxonomyOpt = typer.Option("ekman", "--taxonomy", help="ekman (7 labels) or original (28 GoEmotions labels)")


def _data_dir() -> Path:
    from streamotion_serving.data import default_data_dir

    return default_data_dir()


@model_app.command("serve")
def serve_cmd(
    model: str = typer.Option(
        None, "--model", help="model directory or Hugging Face id (default: latest trained)"
    ),
    taxonomy: str = TaxonomyOpt,
    host: str = typer.Option("127.0.0.1", help="HTTP host of Ray Serve's proxy"),
    port: int = typer.Option(8000, help="HTTP port of Ray Serve's proxy"),
    max_length: int = typer.Option(128, help="tokens per text; longer texts are truncated"),
    backend: str = typer.Option("torch", help="torch or onnx"),
    quantized: bool = typer.Option(False, help="onnx backend: the int8 model"),
    device: str = typer.Option("auto", help="auto, cpu or cuda"),
    max_batch_size: int = typer.Option(64, help="texts per model batch"),
    batch_wait_ms: float = typer.Option(5.0, help="how long a batch waits to fill"),
    num_replicas: int = typer.Option(0, help="replicas (0: one per CPU core, 1 thread each)"),
    num_threads: int = typer.Option(0, help="CPU threads per replica (0: the replica's CPUs)"),
    num_cpus: int = typer.Option(None, help="CPUs given to the local Ray (default: all)"),
    metrics_port: int = typer.Option(8080, help="port of Ray's metrics export (Prometheus)"),
    num_gpus: int = typer.Option(None, help="GPUs per replica (default: 1 when a GPU is present)"),
    args_json: str = typer.Option(None, help="build_app args as JSON (override the options above)"),
    ready_file: str = typer.Option(None, hidden=True),
) -> None:
    """Serve the model with Ray Serve on this machine (the same application RayService runs)."""
    from streamotion_serving.server import serve_forever

    args = {
        "model": model,
        "taxonomy": taxonomy,
        "max_length": max_length,
        "backend": backend,
        "quantized": quantized,
        "device": device,
        "max_batch_size": max_batch_size,
        "batch_wait_ms": batch_wait_ms,
        "num_replicas": num_replicas,
        "num_threads": num_threads,
    }
    args["num_gpus"] = num_gpus if num_gpus is not None else int(device != "cpu" and _has_gpu())
    if not num_replicas:
        from streamotion_serving.model import cpu_budget

        args["num_replicas"] = cpu_budget() if device in ("auto", "cpu") and not _has_gpu() else 1
    if args_json:
        args.update(json.loads(args_json))
    serve_forever(
        args, host=host, port=port, num_cpus=num_cpus, ready_file=ready_file, metrics_port=metrics_port
    )


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


@model_app.command("train")
def train_cmd(
    data: Path = typer.Option(
        None, "--data", help="GoEmotions-format folder (train.tsv, dev.tsv, labels.txt)"
    ),
    taxonomy: str = TaxonomyOpt,
    base: str = typer.Option(
        None, "--base", help="HF checkpoint dir or id (default: packaged all-MiniLM-L6-v2)"
    ),
    out: Path = typer.Option(
        None, "--out", help="output directory (default: ~/.cache/streamotion/models/NAME)"
    ),
    multi_label: bool = typer.Option(False, "--multi-label/--single-label", help="head type"),
    epochs: float = typer.Option(2.0, help="epochs (fractions allowed)"),
    batch_size: int = typer.Option(32),
    lr: float = typer.Option(5e-5, "--lr"),
    max_length: int = typer.Option(64, help="tokens per text during training"),
    limit: int = typer.Option(0, help="use only the first N training rows (0: all)"),
    dev_limit: int = typer.Option(0, help="use only the first N dev rows (0: all)"),
    seed: int = typer.Option(0),
    threads: int = typer.Option(0, help="torch CPU threads (0: all)"),
    arch: str = typer.Option(
        "transformer",
        "--arch",
        help="transformer (fine-tune --base) or linear (TF-IDF + logistic regression, scikit-learn: "
        "fast on CPUs, lower macro-F1)",
    ),
) -> None:
    """Fine-tune a checkpoint on GoEmotions-format TSV (a standard HF model directory with a model
    card), or with --arch linear fit TF-IDF + logistic regression (served the same way)."""
    from streamotion_serving.train import TrainConfig, train

    data_dir = data or _data_dir() / taxonomy
    if arch == "linear":
        from streamotion_serving.linear import LinearTrainConfig, train_linear

        result = train_linear(
            LinearTrainConfig(
                data_dir=data_dir,
                taxonomy=taxonomy,
                out=out,
                multi_label=multi_label,
                limit=limit,
                dev_limit=dev_limit,
                seed=seed,
            )
        )
        typer.echo(json.dumps(result))
        return
    if arch != "transformer":
        raise typer.BadParameter(f"--arch must be transformer or linear, not {arch!r}", param_hint="--arch")
    cfg = TrainConfig(
        data_dir=data_dir,
        taxonomy=taxonomy,
        base=base,
        out=out,
        multi_label=multi_label,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        max_length=max_length,
        limit=limit,
        dev_limit=dev_limit,
        seed=seed,
        threads=threads,
    )
    result = train(cfg)
    typer.echo(json.dumps(result))


@model_app.command("calibrate")
def calibrate_cmd(
    model: str = typer.Option(None, "--model", help="model directory (default: latest trained)"),
    taxonomy: str = typer.Option(None, "--taxonomy", help="ekman or original (default: the model's)"),
    data: Path = typer.Option(None, "--data", help="dev TSV (default: GoEmotions dev.tsv of the taxonomy)"),
    max_length: int = typer.Option(
        128, help="tokens per text: what serving truncates to (spec.model.maxLength)"
    ),
    limit: int = typer.Option(0, help="use only the first N dev rows (0: all)"),
) -> None:
    """Tune a multi-label model's per-label thresholds on dev for a taxonomy (a 28-label model also
    serves Ekman) and record them with the dev metrics in streamotion.json and the model card."""
    from streamotion_serving.model import latest_model, read_meta, serves_taxonomy
    from streamotion_serving.train import calibrate

    found = Path(model) if model else latest_model(taxonomy)
    if found is None or not found.is_dir():
        raise typer.BadParameter(f"no model directory {model or '(none trained yet)'}", param_hint="--model")
    meta = read_meta(found)
    taxonomy = taxonomy or meta.get("taxonomy") or "ekman"
    if meta.get("taxonomy") and not serves_taxonomy(meta["taxonomy"], taxonomy):
        raise typer.BadParameter(
            f"a {meta['taxonomy']} model cannot serve the {taxonomy} taxonomy", param_hint="--taxonomy"
        )
    dev = data or _data_dir() / taxonomy / "dev.tsv"
    meta = calibrate(found, dev, taxonomy, max_length=max_length, limit=limit)
    result = meta["dev_by_taxonomy"][taxonomy]
    typer.echo(
        json.dumps(
            {
                "model": str(found),
                "taxonomy": taxonomy,
                "macro_f1": result["macro_f1"],
                "macro_f1_heldout": result.get("macro_f1_heldout"),
                "thresholds": (meta.get("thresholds_by_taxonomy") or {}).get(taxonomy),
            }
        )
    )


@model_app.command("eval")
def eval_cmd(
    model: str = typer.Option(None, "--model", help="model directory (default: latest trained)"),
    data: Path = typer.Option(None, "--data", help="TSV file (default: GoEmotions dev.tsv of the taxonomy)"),
    taxonomy: str = typer.Option(None, "--taxonomy", help="ekman or original (default: the model's)"),
    labels_file: Path = typer.Option(None, "--labels", help="labels.txt of the TSV (default: beside it)"),
    out: Path = typer.Option(None, "--out", help="output folder for eval.json and confusion.png"),
    max_length: int = typer.Option(128),
    batch_size: int = typer.Option(64),
    limit: int = typer.Option(0, help="evaluate only the first N rows"),
    backend: str = typer.Option("torch"),
) -> None:
    """Macro-F1, per-label P/R/F1, a confusion-matrix PNG and throughput; prints and writes JSON."""
    from streamotion_serving.evaluate import evaluate
    from streamotion_serving.model import read_meta, resolve_model_path

    path = resolve_model_path(model)
    tax = taxonomy or read_meta(path).get("taxonomy") or "ekman"
    data_file = data or _data_dir() / tax / "dev.tsv"
    report = evaluate(
        path,
        data_file,
        taxonomy=tax,
        labels_file=labels_file,
        out_dir=out,
        max_length=max_length,
        batch_size=batch_size,
        limit=limit,
        backend=backend,
    )
    _print_eval(report)
    typer.echo(json.dumps(report))


def _print_eval(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{report['model_version']} on {report['data']} ({report['rows']} rows)")
    for col in ("label", "precision", "recall", "F1", "support"):
        table.add_column(col, justify="left" if col == "label" else "right")
    for label, m in report["per_label"].items():
        table.add_row(
            label, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", str(m["support"])
        )
    console = Console(stderr=True)
    console.print(table)
    console.print(
        f"macro-F1 [bold]{report['macro_f1']:.4f}[/], micro-F1 {report['micro_f1']:.4f}, "
        f"{report['throughput_texts_per_s']:.0f} texts/s; confusion matrix {report['confusion_matrix']['png']}"
    )


@model_app.command("export")
def export_cmd(
    model: str = typer.Option(None, "--model", help="model directory (default: latest trained)"),
    quantize: bool = typer.Option(False, "--quantize", help="also write a dynamic int8 model"),
    opset: int = typer.Option(17),
) -> None:
    """Export to ONNX (MODEL/onnx/model.onnx, and model.int8.onnx with --quantize) for the onnx backend."""
    from streamotion_serving.export import export_onnx
    from streamotion_serving.model import resolve_model_path

    paths = export_onnx(resolve_model_path(model), quantize=quantize, opset=opset)
    typer.echo(json.dumps({k: str(v) for k, v in paths.items()}))


def bench_model(
    model: str = typer.Option(
        None, "--model", help="model directory (default: latest trained, else base MiniLM)"
    ),
    texts: int = typer.Option(1000, help="texts per measurement of (a) and (b)"),
    clients: int = typer.Option(16, help="concurrent HTTP clients for (b) and (c)"),
    texts_per_request: int = typer.Option(8, help="texts per request to the Ray Serve endpoint"),
    naive_texts: int = typer.Option(300, help="texts per measurement of the one-request-per-text baseline"),
    rounds: int = typer.Option(2, help="interleaved rounds; each figure is the best round"),
    replicas: int = typer.Option(0, help="Ray Serve replicas (0: one per core, 1 thread each)"),
    max_length: int = typer.Option(128),
    eval_limit: int = typer.Option(0, help="dev rows for the dev macro-F1 figures (0: all)"),
    backend: str = typer.Option("torch", help="backend of (a) and (b): torch or onnx; (c) is always torch"),
    quantized: bool = typer.Option(False, help="onnx backend: the dynamic int8 model"),
) -> None:
    """Raw batched inference vs our Ray Serve endpoint vs one HTTP request per text (same model, same run)."""
    from streamotion_serving.bench import run_bench

    run_bench(
        model=model,
        n_texts=texts,
        clients=clients,
        texts_per_request=texts_per_request,
        naive_texts=naive_texts,
        max_length=max_length,
        eval_limit=eval_limit,
        rounds=rounds,
        replicas=replicas,
        backend=backend,
        quantized=quantized,
    )


def register(app: typer.Typer) -> None:
    from streamotion.cli.bench import app as bench_app

    app.add_typer(model_app, name="model")
    bench_app.command("model")(bench_model)

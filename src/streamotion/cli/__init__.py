"""`streamotion`: the one command line for users, operators and developers.

Component packages add their commands through a ``register(app)`` function in their
``cli`` module; those modules import their heavy dependencies (kopf, pyspark, torch, ray)
inside the commands, so every image can run ``streamotion --help``.
"""

from __future__ import annotations

import importlib

import typer

from streamotion.cli import api, bench, dev, dlq, docs, lake, run

app = typer.Typer(
    name="streamotion",
    help="Real-time emotion analytics on social and customer text streams, on Kubernetes or one machine.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
api.register(app)
app.add_typer(dev.app, name="dev")
app.add_typer(bench.app, name="bench")
app.add_typer(run.app, name="run")
app.add_typer(dlq.app, name="dlq")
app.add_typer(docs.app, name="docs")
app.add_typer(lake.app, name="lake")

COMPONENT_CLIS = (
    "streamotion_operator.cli",
    "streamotion_ingest.cli",
    "streamotion_serving.cli",
    "streamotion_jobs.cli",
    "streamotion.local.cli",
    "streamotion.dashboards.cli",
)
for _name in COMPONENT_CLIS:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as exc:  # a component that is not part of this image
        if exc.name is None or not _name.startswith(exc.name):
            raise
        continue
    _module.register(app)


def main() -> None:
    app()

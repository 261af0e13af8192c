"""`streamotion run`: run a pipeline (or one of its batch jobs) outside Kubernetes.

``streamotion run FILE --local ...`` runs a whole pipeline on this machine; subcommands such as
``streamotion run backfill ...`` run batch jobs. A first argument that is not a subcommand is a
pipeline file, handled by the ``pipeline`` subcommand.
"""

from __future__ import annotations

import typer
from typer.core import TyperGroup


class _PipelineByDefault(TyperGroup):
    def parse_args(self, ctx, args):  # type: ignore[override]
        if args and not args[0].startswith("-") and args[0] not in self.commands:
            args = ["pipeline", *args]
        return super().parse_args(ctx, args)


app = typer.Typer(
    cls=_PipelineByDefault,
    help="Run a pipeline on this machine (`run FILE --local`) or a batch job (`run backfill`).",
    no_args_is_help=True,
)

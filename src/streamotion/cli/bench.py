"""`streamotion bench NAME`: reproducible performance figures (components add their benchmarks)."""

from __future__ import annotations

import typer

app = typer.Typer(
    help="Run a benchmark; the last line printed is its JSON result, also saved under bench/results/.",
    no_args_is_help=True,
)

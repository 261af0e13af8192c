"""The CLI reference page (docs/reference/cli.md): every command and option of the typer app."""

from __future__ import annotations

import os
from typing import Any

import typer.main

HEADER = """# Command line

Generated from the `streamotion` typer app (`streamotion docs generate`): every command, its
arguments and options, with the same help text `streamotion COMMAND --help` prints.
"""


def _clean(text: str | None) -> str:
    text = " ".join((text or "").split())
    home = os.path.expanduser("~")
    if home not in ("", "/"):
        text = text.replace(home, "~")
    return text.replace("|", "\\|")


def _commands(cmd: Any, ctx: Any, path: list[str]) -> list[tuple[list[str], Any, Any]]:
    out = [(path, cmd, ctx)]
    for name in sorted(getattr(cmd, "commands", {}) or {}):
        sub = cmd.commands[name]
        if getattr(sub, "hidden", False):
            continue
        out += _commands(sub, type(ctx)(sub, info_name=name, parent=ctx), [*path, name])
    return out


def cli_reference() -> str:
    from streamotion.cli import app

    root = typer.main.get_command(app)
    ctx_class = root.context_class
    lines = [HEADER]
    for path, cmd, ctx in _commands(root, ctx_class(root, info_name="streamotion"), ["streamotion"]):
        name = " ".join(path)
        lines += [f"## `{name}`", "", _clean(cmd.help) or "(no description)", ""]
        lines += ["```text", _clean(cmd.get_usage(ctx)), "```", ""]
        if getattr(cmd, "commands", None):
            shown = sorted(c for c, sub in cmd.commands.items() if not getattr(sub, "hidden", False))
            subs = ", ".join(f"[`{c}`](#{'-'.join([*path, c])})" for c in shown)
            lines += [f"Commands: {subs}.", ""]
        rows = []
        for param in cmd.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None or record[0].startswith("--help"):
                continue
            rows.append(f"| `{_clean(record[0])}` | {_clean(record[1])} |")
        if rows:
            lines += ["| argument or option | meaning |", "|---|---|", *rows, ""]
    return "\n".join(lines).rstrip("\n") + "\n"

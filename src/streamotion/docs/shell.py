"""The shell commands the documentation shows: every line of its ```bash/sh/shell/console blocks.

Continuation lines (ending in a backslash) are joined, comments and prompts (``$ ``) removed, and
each remaining line is one command as a reader would paste it. tests/test_docs.py checks that a test
runs each of them, or says why none can here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
_FENCE = re.compile(r"^(\s*)(`{3,}|~{3,})\s*([\w+-]*)")


@dataclass(frozen=True)
class Command:
    text: str
    where: str  # "path:line"


def _strip_comment(line: str) -> str:
    """The line without a trailing ``# comment`` (a # outside quotes, at the start or after a space)."""
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip()
    return line.rstrip()


def commands(path: Path, root: Path) -> list[Command]:
    out: list[Command] = []
    fence, lang, pending, start = "", "", "", 0
    rel = path.relative_to(root)
    for number, line in enumerate(path.read_text().splitlines(), 1):
        m = _FENCE.match(line)
        if not fence:
            if m:
                fence, lang = m.group(2), m.group(3).lower()
            continue
        if line.strip().startswith(fence):
            fence = ""
            continue
        if lang not in SHELL_LANGS:
            continue
        text = _strip_comment(line.strip())
        if text.startswith("$ "):
            text = text[2:]
        if not pending:
            start = number
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        text = (pending + text).strip()
        pending = ""
        if text:
            out.append(Command(" ".join(text.split()), f"{rel}:{start}"))
    return out


def documented_commands(root: Path) -> list[Command]:
    """Every command of README.md and the pages under docs/."""
    paths = [root / "README.md", *sorted((root / "docs").rglob("*.md"))]
    return [c for p in paths for c in commands(p, root)]

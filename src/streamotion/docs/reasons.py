"""The condition reasons the operator can report, read from its source (Troubleshooting documents each).

A reason is a string the operator writes into a StreamPipeline condition's ``reason``: the second
argument of every ``Problem(condition, reason, message)``, the second item of every
``(status, reason, message)`` condition tuple whose status is a literal ``"True"``/``"False"``/
``"Unknown"``, and the ``reason`` of every condition dict with a ``type``. Names are resolved through
module constants (``CHILD_CONFLICT``, ``tenancy.REASON``). ``testing.py`` (fake children for tests)
and ``bench.py`` are not the operator's reporting and are skipped. A ``Problem`` whose reason cannot be
read this way is an error, so that a new reason cannot slip past the docs.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path("operator/streamotion_operator")
SKIP = {"testing.py", "bench.py"}
STATUSES = {"True", "False", "Unknown"}


def _module_constants(files: dict[str, ast.Module]) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    for mod, tree in files.items():
        consts = out.setdefault(mod, {})
        for node in tree.body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, str)
            ):
                consts[node.targets[0].id] = node.value.value
    return out


def _imported(tree: ast.Module) -> dict[str, tuple[str, str]]:
    """Local name -> (module, name) for ``from ...x import NAME``; module aliases -> (module, "")."""
    out: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                mod = (node.module or "").split(".")[-1]
                out[a.asname or a.name] = (mod, a.name)  # a module (from pkg import tenancy) or a name
    return out


def operator_reasons(root: Path) -> dict[str, list[str]]:
    """``{reason: ["file.py:line", ...]}`` of every condition reason in the operator's code."""
    files: dict[str, ast.Module] = {}
    paths: dict[str, Path] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        if path.name in SKIP:
            continue
        mod = path.stem if path.stem != "__init__" else path.parent.name
        files[mod] = ast.parse(path.read_text(), filename=str(path))
        paths[mod] = path
    consts = _module_constants(files)
    found: dict[str, list[str]] = {}

    for mod, tree in files.items():
        imported = _imported(tree)

        def resolve(node: ast.AST | None, mod: str = mod, imported: dict = imported) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            if isinstance(node, ast.Name):
                if node.id in consts[mod]:
                    return consts[mod][node.id]
                src = imported.get(node.id)
                if src and src[0] in consts:
                    return consts[src[0]].get(src[1])
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                src = imported.get(node.value.id, (node.value.id, ""))
                module = src[1] if src[1] in consts else src[0]
                return consts.get(module, {}).get(node.attr)
            return None

        def add(reason: str, node: ast.AST, mod: str = mod) -> None:
            rel = paths[mod].relative_to(root)
            found.setdefault(reason, []).append(f"{rel}:{node.lineno}")

        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Problem":
                arg = next((k.value for k in node.keywords if k.arg == "reason"), None)
                if arg is None and len(node.args) > 1:
                    arg = node.args[1]
                reason = resolve(arg)
                if reason is None:
                    raise ValueError(
                        f"{paths[mod]}:{node.lineno}: cannot tell the reason of this Problem from the "
                        "code: use a string literal or a module constant (Troubleshooting documents each)"
                    )
                add(reason, node)
            elif isinstance(node, ast.Tuple) and len(node.elts) == 3:
                status = resolve(node.elts[0])
                reason = resolve(node.elts[1])
                if status in STATUSES and reason is not None:
                    add(reason, node)
            elif isinstance(node, ast.Dict):
                keys = [k.value if isinstance(k, ast.Constant) else None for k in node.keys]
                if "type" in keys and "reason" in keys:
                    reason = resolve(node.values[keys.index("reason")])
                    if reason is not None:
                        add(reason, node)
    return dict(sorted(found.items()))

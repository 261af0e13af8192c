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
    """Local name -> (module, name) for ``from x import NAME``; a module bound to a name -> (module, "")."""
    out: dict[str, tuple[str, str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                # ``from pkg import tenancy`` binds a module or a name: (pkg, tenancy) covers both
                out[a.asname or a.name] = (node.module or "", a.name)
        elif isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.split(".")[0]] = (a.name if a.asname else a.name.split(".")[0], "")
    return out


def operator_reasons(root: Path) -> dict[str, list[str]]:
    """``{reason: ["file.py:line", ...]}`` of every condition reason in the operator's code."""
    files: dict[str, ast.Module] = {}
    paths: dict[str, Path] = {}
    base = root / PACKAGE
    for path in sorted(base.rglob("*.py")):
        if path.name in SKIP:
            continue
        parts = path.relative_to(base).with_suffix("").parts
        key = ".".join(parts[:-1] if parts[-1] == "__init__" else parts) or base.name
        files[key] = ast.parse(path.read_text(), filename=str(path))
        paths[key] = path
    consts = _module_constants(files)
    imports = {key: _imported(tree) for key, tree in files.items()}
    found: dict[str, list[str]] = {}

    def modules(name: str) -> list[str]:
        """Our modules a dotted import name can mean (``streamotion_operator.tenancy``, ``.tenancy``)."""
        tail = name.removeprefix(base.name).strip(".")
        return [k for k in files if tail and (k == tail or k.endswith("." + tail) or tail.endswith("." + k))]

    def lookup(key: str, name: str, depth: int = 0) -> str | None:
        if name in consts[key]:
            return consts[key][name]
        src = imports[key].get(name)
        if src is None or depth > 3:
            return None
        for other in modules(src[0]):
            value = lookup(other, src[1], depth + 1) if src[1] else None
            if value is not None:
                return value
        return None

    for mod, tree in files.items():

        def resolve(node: ast.AST | None, mod: str = mod) -> str | None:
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                return node.value
            if isinstance(node, ast.Name):
                return lookup(mod, node.id)
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
                module, name = imports[mod].get(node.value.id, (node.value.id, ""))
                for other in modules(f"{module}.{name}" if name else module):
                    value = lookup(other, node.attr)
                    if value is not None:
                        return value
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

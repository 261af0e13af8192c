"""The metrics reference page (docs/reference/metrics.md): every series our code declares.

Read from the source, not from a running process: every ``Counter``/``Gauge``/``Histogram``/``Summary``
of ``prometheus_client`` in the packages (name, help and labels as literals, label tuples through
module constants), and the model service's ``Family`` declarations (recorded with Ray Serve's metrics
API, exported by Ray's agent and renamed back to their own names on scrape).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PACKAGES = (
    "src/streamotion",
    "operator/streamotion_operator",
    "ingest/streamotion_ingest",
    "jobs/streamotion_jobs",
    "serving/streamotion_serving",
)
KINDS = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}
COMPONENTS = (  # series prefix -> who serves it, where
    (
        "streamotion_producer_",
        "Producers (`streamotion produce`)",
        "`:9108/metrics` of each producer pod (`--metrics-port`)",
    ),
    ("streamotion_job_", "Streaming job", "`/metrics` of the Spark driver (`--metrics-port`, default 9108)"),
    (
        "streamotion_model_",
        "Model service",
        "Ray's metrics agent on each Ray pod (port 8080), renamed from `ray_streamotion_model_*` on scrape",
    ),
    ("streamotion_operator_", "Operator", "`/metrics` of the operator (`STREAMOTION_METRICS_PORT`, 9108)"),
)
HEADER = """# Metrics

Generated from the code that declares each series (`streamotion docs generate`). Counters are
exposed with the `_total` suffix, histograms as `_bucket`, `_sum` and `_count`. The operator's
PodMonitors add the `namespace` and `pipeline` labels to what they scrape (producers also carry
`source`); the dashboards and alert rules query these names.
"""


@dataclass(frozen=True)
class Series:
    name: str
    kind: str
    help: str
    labels: tuple[str, ...]
    where: str  # file it is declared in, relative to the repository root

    def exposed(self) -> str:
        if self.kind == "counter":
            return f"{self.name}_total"
        if self.kind in ("histogram", "summary"):
            return (
                f"{self.name}_bucket/_sum/_count" if self.kind == "histogram" else f"{self.name}_sum/_count"
            )
        return self.name


def _constants(tree: ast.Module) -> dict[str, object]:
    out: dict[str, object] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = _literal(node.value, out)
            except ValueError:
                pass
    return out


def _literal(node: ast.AST, consts: dict[str, object]) -> object:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name) and node.id in consts:
        return consts[node.id]
    if isinstance(node, ast.Tuple | ast.List):
        items: list[object] = []
        for elt in node.elts:
            if isinstance(elt, ast.Starred):
                items.extend(_literal(elt.value, consts))  # type: ignore[arg-type]
            else:
                items.append(_literal(elt, consts))
        return tuple(items)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal(node.left, consts) + _literal(node.right, consts)  # type: ignore[operator]
    raise ValueError(ast.dump(node))


def _arg(call: ast.Call, index: int, keyword: str) -> ast.AST | None:
    for kw in call.keywords:
        if kw.arg == keyword:
            return kw.value
    return call.args[index] if len(call.args) > index else None


def declared(root: Path) -> list[Series]:
    out: dict[str, Series] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text()
            if "prometheus_client" not in text and "Family(" not in text:
                continue
            tree = ast.parse(text)
            consts = _constants(tree)
            rel = str(path.relative_to(root))
            for call in ast.walk(tree):
                if not isinstance(call, ast.Call):
                    continue
                func = (
                    call.func.attr if isinstance(call.func, ast.Attribute) else getattr(call.func, "id", "")
                )
                if func in KINDS and "prometheus_client" in text:
                    name, kind = _arg(call, 0, "name"), KINDS[func]
                    doc, labels = _arg(call, 1, "documentation"), _arg(call, 2, "labelnames")
                elif func == "Family":
                    name, kind_node = _arg(call, 0, "name"), _arg(call, 1, "kind")
                    doc, labels = _arg(call, 2, "help"), _arg(call, 3, "tags")
                    if not isinstance(kind_node, ast.Constant):
                        continue
                    kind = kind_node.value
                else:
                    continue
                if not (isinstance(name, ast.Constant) and isinstance(name.value, str)):
                    continue  # e.g. a wrapper that re-declares Family objects by attribute
                series = Series(
                    name=name.value,
                    kind=kind,
                    help=str(_literal(doc, consts)) if doc is not None else "",
                    labels=tuple(_literal(labels, consts)) if labels is not None else (),  # type: ignore[arg-type]
                    where=rel,
                )
                out[series.name] = series
    return sorted(out.values(), key=lambda s: s.name)


def metrics_reference(root: Path) -> str:
    series = declared(root)
    lines = [HEADER]
    seen: set[str] = set()
    groups = [*COMPONENTS, ("", "Other", "")]
    for prefix, title, where in groups:
        mine = [s for s in series if s.name.startswith(prefix) and s.name not in seen]
        if not mine:
            continue
        seen |= {s.name for s in mine}
        lines += [f"## {title}", ""]
        if where:
            lines += [f"Served on {where}.", ""]
        lines += ["| series | type | labels | meaning | declared in |", "|---|---|---|---|---|"]
        for s in mine:
            labels = ", ".join(f"`{x}`" for x in s.labels) or "-"
            text = s.help.replace("|", "\\|")
            lines.append(f"| `{s.exposed()}` | {s.kind} | {labels} | {text} | `{s.where}` |")
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"

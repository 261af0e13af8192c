"""Grafana dashboards: the pipeline's ConfigMap of grafana/dashboards/*.json, each with its variables
preselected for this pipeline (picked up by Grafana's dashboard sidecar)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from streamotion import naming
from streamotion.api.models import StreamPipeline
from streamotion_operator.config import OperatorConfig

from .common import _meta


def dashboard_values(p: StreamPipeline) -> dict[str, str]:
    """Dashboard variables this pipeline fixes: itself, and its sinks' schema / project / dataset."""
    values = {"pipeline": p.name, "namespace": p.namespace}
    for sink in p.spec.sinks:
        if sink.postgres and "schema" not in values:
            values["schema"] = sink.postgres.schema_
        if sink.bigquery and "dataset" not in values:
            values["project"] = sink.bigquery.project
            values["dataset"] = sink.bigquery.dataset
    return values


def dashboards(p: StreamPipeline, cfg: OperatorConfig) -> dict[str, Any]:
    """The pipeline dashboards of grafana/dashboards/*.json (those with a ``pipeline`` variable whose
    other variables this pipeline can fill), with the variables preselected and a per-pipeline uid."""
    data: dict[str, str] = {}
    suffix = naming._short_hash(p.namespace, p.name)
    values = dashboard_values(p)
    for path in sorted(Path(cfg.dashboards_dir).glob("*.json")):
        board = _load_board(path)
        if board is None:
            continue
        names = {v.get("name") for v in (board.get("templating") or {}).get("list") or []}
        if "pipeline" not in names or any(n in names and n not in values for n in ("schema", "dataset")):
            continue
        board = preselect(board, values, suffix)
        data[naming.dashboard_file_prefix(p) + path.name] = json.dumps(board, indent=1, sort_keys=True)
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(
            p,
            naming.dashboard_config_map_name(p),
            "dashboards",
            namespace=p.spec.dashboards.namespace,
            grafana_dashboard="1",
        ),
        "data": data,
    }


_BOARDS: dict[Path, tuple[float, dict[str, Any] | None]] = {}


def _load_board(path: Path) -> dict[str, Any] | None:
    """A dashboard file, parsed once per modification (reconciles run often)."""
    try:
        mtime = path.stat().st_mtime
    except OSError:
        return None
    hit = _BOARDS.get(path)
    if hit and hit[0] == mtime:
        return hit[1]
    try:
        board = json.loads(path.read_text())
    except (OSError, ValueError):
        board = None
    _BOARDS[path] = (mtime, board)
    return board


def preselect(board: dict[str, Any], values: dict[str, str], suffix: str) -> dict[str, Any]:
    board = copy.deepcopy(board)
    for var in (board.get("templating") or {}).get("list") or []:
        if var.get("name") in values:
            v = values[var["name"]]
            var["current"] = {"selected": True, "text": v, "value": v}
            if var.get("type") in ("custom", "textbox", "constant"):
                var["query"] = v
    if board.get("uid"):
        board["uid"] = f"{str(board['uid'])[:33]}-{suffix}"
    board["title"] = f"{board.get('title', 'Streamotion')} · {values['namespace']}/{values['pipeline']}"
    board.pop("id", None)
    return board

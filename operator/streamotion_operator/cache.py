"""What the operator's watches already delivered, so that a reconcile reads nothing from the API.

kopf indexes (``@kopf.index``) keep every StreamPipeline and every child the operator manages
(watched with the server-side label selector ``app.kubernetes.io/managed-by=streamotion-operator``,
so no other object of the cluster reaches the operator), and the CRDs that are installed. The
daemon of a pipeline takes a :class:`View` of them on the event loop and hands it to
``Controller.reconcile``: a resync then makes no request at all when nothing changed.

Children are kept slim (:func:`slim`): what the controller compares, reports and checks
ownership by, with large ConfigMap values replaced by their digest (dashboards) and managedFields
reduced to who applied the object; and packed (:func:`pack`: compressed JSON, about a tenth of the
memory of the parsed object), unpacked by the reconcile that reads them.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from dataclasses import dataclass, field
from typing import Any

from streamotion import naming

DIGEST_KEY = "sha256"
DIGEST_OVER = 2048
"""ConfigMap values longer than this are kept as ``{"sha256": digest}`` (a real value is a string:
slim is idempotent); shorter ones as they are (the job's report, which the status reads)."""
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={naming.MANAGED_BY}"
"""The server-side label selector of every watch on children (kopf ``settings.watching.label_selectors``)."""


def _digest(data: Any) -> Any:
    if not isinstance(data, dict):
        return data
    return {
        k: {DIGEST_KEY: hashlib.sha256(v.encode()).hexdigest()}
        if isinstance(v, str) and len(v) > DIGEST_OVER
        else v
        for k, v in data.items()
    }


def slim(obj: Any) -> dict[str, Any]:
    """The fields of a child the controller uses: identity, labels, annotations, ownership, spec,
    status; long ConfigMap ``data``/``binaryData`` values as digests. Applied alike to desired and live objects
    before they are compared, so comparing slim objects is comparing the full ones."""
    m = obj.get("metadata") or {}
    meta: dict[str, Any] = {
        k: m[k]
        for k in (
            "name",
            "namespace",
            "uid",
            "resourceVersion",
            "generation",
            "labels",
            "annotations",
            "ownerReferences",
            "deletionTimestamp",
            "finalizers",
            "creationTimestamp",
        )
        if k in m
    }
    if m.get("managedFields"):
        meta["managedFields"] = [
            {"manager": f.get("manager"), "operation": f.get("operation")} for f in m["managedFields"]
        ]
    out: dict[str, Any] = {"metadata": meta}
    for k, v in obj.items():
        if k == "metadata":
            continue
        out[k] = _digest(v) if obj.get("kind") == "ConfigMap" and k in ("data", "binaryData") else v
    return out


def pack(obj: dict[str, Any]) -> bytes:
    """An object as the index keeps it: compact JSON, compressed."""
    return zlib.compress(json.dumps(obj, separators=(",", ":")).encode(), 1)


def unpack(data: bytes) -> dict[str, Any]:
    return json.loads(zlib.decompress(data))


@dataclass
class View:
    """One pipeline as the watches delivered it: its body, its children and the installed CRDs.

    ``pipeline``: the StreamPipeline (None: gone); ``children``: by (kind, namespace, name), slim
    and packed (:func:`unpack` them);
    ``installed``: the (group, plural) pairs the API server serves (core kinds are always served)."""

    pipeline: dict[str, Any] | None
    children: dict[tuple[str, str, str], bytes] = field(default_factory=dict)
    installed: frozenset[tuple[str, str]] = frozenset()

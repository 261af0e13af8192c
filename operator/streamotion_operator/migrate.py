"""``streamotion migrate-storage``: rewrite every StreamPipeline in the CRD's storage version, then
drop the older versions from the CRD's ``status.storedVersions``.

Kubernetes keeps each object in etcd in the version that was the storage version when it was last
written, and lists in ``status.storedVersions`` every version that may still be stored; a version can
only be removed from the CRD once it is gone from that list, and the API server never removes it by
itself (Kubernetes docs, "Versions in CustomResourceDefinitions", upgrade existing objects to a new
stored version). Rewriting an object unchanged (a PUT of what a GET returned) stores it again in the
current storage version; a conflict means someone else wrote it in between, which did the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from streamotion.api import models as m
from streamotion_operator.kube import ApiError, Kube

CRD_PATH = f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{m.PLURAL}.{m.GROUP}"


@dataclass
class Migration:
    storage_version: str
    rewritten: list[str] = field(default_factory=list)
    gone: list[str] = field(default_factory=list)
    stored_before: list[str] = field(default_factory=list)
    stored_after: list[str] = field(default_factory=list)


def storage_version(crd: dict[str, Any]) -> str:
    (version,) = [v["name"] for v in crd["spec"]["versions"] if v.get("storage")]
    return version


def migrate_storage(kube: Kube, page: int = 200, log: Callable[[str], None] = lambda _: None) -> Migration:
    """Rewrite every StreamPipeline (all namespaces, ``page`` per LIST) in the storage version and
    set ``status.storedVersions`` to that version alone. Raises ``RuntimeError`` when the installed
    CRD's storage version is not the one this code is built for (install the new CRD first)."""
    crd = kube.request("GET", CRD_PATH)
    version = storage_version(crd)
    if version != m.VERSION:
        raise RuntimeError(
            f"the installed CRD stores {version}, this version of streamotion stores {m.VERSION}: "
            "apply the new CRD first (kubectl apply --server-side -f charts/streamotion/crds/)"
        )
    out = Migration(version, stored_before=list((crd.get("status") or {}).get("storedVersions") or []))
    base = f"/apis/{m.GROUP}/{version}/{m.PLURAL}"
    cont = None
    while True:
        query: dict[str, Any] = {"limit": page}
        if cont:
            query["continue"] = cont
        doc = kube.request("GET", base, query=query)
        for item in doc.get("items", []):
            meta = item["metadata"]
            key = f"{meta['namespace']}/{meta['name']}"
            path = f"/apis/{m.GROUP}/{version}/namespaces/{meta['namespace']}/{m.PLURAL}/{meta['name']}"
            item = {**item, "apiVersion": f"{m.GROUP}/{version}", "kind": m.KIND}
            try:
                kube.request("PUT", path, body=item, what=f"{m.KIND} {key}")
                out.rewritten.append(key)
            except ApiError as exc:
                if exc.status == 409:  # written by someone else since the list: stored anew already
                    out.rewritten.append(key)
                elif exc.status == 404:
                    out.gone.append(key)
                else:
                    raise
            log(f"rewrote {key}")
        cont = (doc.get("metadata") or {}).get("continue")
        if not cont:
            break
    kube.request(
        "PATCH",
        CRD_PATH + "/status",
        body={"status": {"storedVersions": [version]}},
        content_type="application/merge-patch+json",
    )
    after = kube.request("GET", CRD_PATH)
    out.stored_after = list((after.get("status") or {}).get("storedVersions") or [])
    return out

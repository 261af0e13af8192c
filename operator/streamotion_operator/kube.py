"""A thin, thread-safe REST layer over the kubernetes client: server-side apply, get, list, delete."""

from __future__ import annotations

import json
import threading
import time
from typing import Any
from urllib.parse import urlencode

from streamotion import naming
from streamotion_operator.builders import Kind


class ApiError(Exception):
    def __init__(self, status: int, body: dict[str, Any] | str, what: str = ""):
        self.status = status
        self.body = body if isinstance(body, dict) else {"message": str(body)}
        self.reason = self.body.get("reason", "")
        msg = self.body.get("message") or str(body)
        super().__init__(f"{what}: HTTP {status}: {msg}" if what else f"HTTP {status}: {msg}")

    @property
    def message(self) -> str:
        return self.body.get("message") or str(self)


class Kube:
    """Raw JSON requests through a ``kubernetes.client.ApiClient`` (auth, TLS, token refresh)."""

    def __init__(self, api_client, field_manager: str = naming.FIELD_MANAGER):
        self.api = api_client
        self.field_manager = field_manager
        self._discovery: dict[str, tuple[float, set[str] | None]] = {}
        self._lock = threading.Lock()
        self.requests = 0

    @classmethod
    def from_kubeconfig(cls, path: str | None = None, context: str | None = None) -> Kube:
        from kubernetes import client, config

        cfg = client.Configuration()
        try:
            if path:
                config.load_kube_config(config_file=str(path), context=context, client_configuration=cfg)
            else:
                config.load_incluster_config(client_configuration=cfg)
        except config.ConfigException:
            config.load_kube_config(context=context, client_configuration=cfg)
        cfg.connection_pool_maxsize = 32
        return cls(client.ApiClient(cfg))

    def close(self) -> None:
        self.api.close()

    # -- raw
    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        what: str = "",
    ) -> dict[str, Any]:
        if query:
            path = f"{path}?{urlencode(query)}"
        headers = {"Accept": "application/json", "Content-Type": content_type}
        if body is not None and "json" not in content_type:
            body = json.dumps(body)
        m, url, h, b, _ = self.api.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        self.requests += 1
        resp = self.api.call_api(m, url, header_params=h, body=b, _request_timeout=(10, 60))
        data = resp.read() if hasattr(resp, "read") else resp.data
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"message": data.decode(errors="replace") if isinstance(data, bytes) else str(data)}
        if resp.status >= 400:
            raise ApiError(resp.status, doc, what)
        return doc

    # -- typed helpers
    def get(self, kind: Kind, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", kind.path(namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def list(
        self, kind: Kind, namespace: str | None = None, selector: dict[str, str] | None = None
    ) -> list[dict[str, Any]]:
        query = {"labelSelector": ",".join(f"{k}={v}" for k, v in selector.items())} if selector else None
        return self.request("GET", kind.path(namespace), query=query).get("items", [])

    def apply(self, obj: dict[str, Any], force: bool = True) -> dict[str, Any]:
        kind_name = obj["kind"]
        from streamotion_operator.builders import KINDS

        kind = KINDS[kind_name]
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=obj,
            query={"fieldManager": self.field_manager, "force": "true" if force else "false"},
            content_type="application/apply-patch+yaml",
            what=f"{kind_name} {meta.get('namespace', '')}/{meta['name']}",
        )

    def dry_run_apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        from streamotion_operator.builders import KINDS

        kind = KINDS[obj["kind"]]
        meta = obj["metadata"]
        return self.request(
            "PATCH",
            kind.path(meta.get("namespace"), meta["name"]),
            body=obj,
            query={"fieldManager": self.field_manager, "force": "true", "dryRun": "All"},
            content_type="application/apply-patch+yaml",
            what=f"{obj['kind']} {meta.get('namespace', '')}/{meta['name']}",
        )

    def delete(self, kind: Kind, namespace: str | None, name: str) -> bool:
        try:
            self.request(
                "DELETE",
                kind.path(namespace, name),
                body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"},
            )
            return True
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise

    def patch_status(self, kind: Kind, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]:
        return self.request(
            "PATCH",
            kind.path(namespace, name) + "/status",
            body={"status": status},
            content_type="application/merge-patch+json",
        )

    def installed(self, kind: Kind, ttl: float = 5.0) -> bool:
        """Whether the API server serves ``kind`` (its CRD is installed), cached for ``ttl`` seconds."""
        if not kind.group:
            return True
        now = time.monotonic()
        with self._lock:
            hit = self._discovery.get(kind.api_version)
        if hit and now - hit[0] < ttl:
            plurals = hit[1]
        else:
            try:
                doc = self.request("GET", f"/apis/{kind.api_version}")
                plurals = {r["name"] for r in doc.get("resources", [])}
            except ApiError as exc:
                if exc.status != 404:
                    raise
                plurals = None
            with self._lock:
                self._discovery[kind.api_version] = (now, plurals)
        return bool(plurals) and kind.plural in plurals

"""The StreamPipeline conversion webhook: ConversionReview v1 at ``/convert``, over HTTPS, in the operator.

kopf serves admission webhooks only (``kopf.on.validate``/``kopf.on.mutate``; kopf 1.45.2
``kopf/_core/engines/admission.py`` answers ``AdmissionReview`` and nothing else), so the operator
runs this small aiohttp server next to it. The conversion itself is
``streamotion.api.conversion.convert``, driven by ``models.CHANGES``.

The contract (Kubernetes ``apiextensions.k8s.io/v1`` ``ConversionReview``): the response echoes the
request's ``uid``, carries ``result.status`` ``Success`` with ``convertedObjects`` in the request's
order, each in ``desiredAPIVersion``, metadata unchanged but for labels and annotations; or
``Failure`` with a message (the API server then fails the request with it).

:func:`ensure_crd_conversion` points the CRD's ``spec.conversion`` at this operator's Service with
the chart's CA bundle: the CRD comes from the chart's ``crds/`` directory, which Helm does not
template, so the operator fills in what only the release knows.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import threading
from pathlib import Path
from typing import Any

from aiohttp import web

from streamotion.api import models as m
from streamotion.api.conversion import ConversionError, convert, served_version
from streamotion.api.crd import WEBHOOK_PATH
from streamotion_operator.kube import Kube

CRD_NAME = f"{m.PLURAL}.{m.GROUP}"
REVIEW_API_VERSION = "apiextensions.k8s.io/v1"
log = logging.getLogger("streamotion.operator.webhook")


def review(body: Any) -> dict[str, Any]:
    """The ConversionReview response to a ConversionReview request (never raises)."""
    req = body.get("request") if isinstance(body, dict) else None
    req = req if isinstance(req, dict) else {}
    uid = req.get("uid", "")
    desired = req.get("desiredAPIVersion", "")
    try:
        if not isinstance(body, dict) or body.get("apiVersion") != REVIEW_API_VERSION:
            raise ConversionError(f"expected a {REVIEW_API_VERSION} ConversionReview")
        served_version(desired)
        converted = [convert(obj, desired) for obj in req.get("objects") or []]
        response: dict[str, Any] = {
            "uid": uid,
            "result": {"status": "Success"},
            "convertedObjects": converted,
        }
    except ConversionError as exc:
        log.warning("conversion to %s refused: %s", desired, exc)
        response = {"uid": uid, "result": {"status": "Failure", "message": str(exc)}}
    return {"apiVersion": REVIEW_API_VERSION, "kind": "ConversionReview", "response": response}


async def _convert(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        return web.json_response({"error": "the body is not JSON"}, status=400)
    return web.json_response(review(body))


def app() -> web.Application:
    out = web.Application(client_max_size=64 * 1024 * 1024)  # a ConversionReview carries whole lists
    out.router.add_post(WEBHOOK_PATH, _convert)
    return out


def tls_context(cert_dir: str | Path) -> ssl.SSLContext:
    """The server's TLS context from ``tls.crt`` and ``tls.key`` in ``cert_dir`` (a kubernetes.io/tls Secret)."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(Path(cert_dir) / "tls.crt"), str(Path(cert_dir) / "tls.key"))
    return ctx


class WebhookServer:
    """The HTTPS server on the operator's event loop (``start``/``stop`` from kopf startup/cleanup)."""

    def __init__(self, host: str, port: int, cert_dir: str | Path):
        self.host, self.port, self.cert_dir = host, port, cert_dir
        self._runner: web.AppRunner | None = None

    async def start(self) -> int:
        self._runner = web.AppRunner(app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, ssl_context=tls_context(self.cert_dir))
        await site.start()
        if self._runner.addresses:  # the port the system chose when 0 was asked
            self.port = self._runner.addresses[0][1]
        log.info("conversion webhook on https://%s:%d%s", self.host, self.port, WEBHOOK_PATH)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


class WebhookThread:
    """The webhook server in a thread of its own (tests, ``streamotion dev``)."""

    def __init__(self, cert_dir: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.server = WebhookServer(host, port, cert_dir)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="conversion-webhook", daemon=True)

    def start(self) -> WebhookThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(30)
        return self

    @property
    def url(self) -> str:
        return f"https://{self.server.host}:{self.server.port}{WEBHOOK_PATH}"

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> WebhookThread:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def client_config(service: str, port: int, ca_pem: bytes, url: str = "") -> dict[str, Any]:
    """The CRD's ``conversion.webhook.clientConfig`` for Service ``namespace/name`` (or, with no
    service, for ``url``), with ``ca_pem`` as its CA bundle."""
    ca = base64.b64encode(ca_pem).decode()
    if not service:
        if not url.startswith("https://"):
            raise ValueError(f"webhook url {url!r}: expected https://host:port/path")
        return {"url": url, "caBundle": ca}
    namespace, _, name = service.partition("/")
    if not namespace or not name:
        raise ValueError(f"webhook service {service!r}: expected namespace/name")
    return {
        "service": {"namespace": namespace, "name": name, "path": WEBHOOK_PATH, "port": port},
        "caBundle": ca,
    }


def ensure_crd_conversion(kube: Kube, config: dict[str, Any]) -> bool:
    """Point the StreamPipeline CRD's conversion webhook at ``config`` (a clientConfig); True when
    it changed. Only ``spec.conversion`` is written (a JSON merge patch)."""
    current = kube.request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}")
    conversion = (current.get("spec") or {}).get("conversion") or {}
    webhook = conversion.get("webhook") or {}
    if (
        conversion.get("strategy") == "Webhook"
        and webhook.get("clientConfig") == config
        and "v1" in (webhook.get("conversionReviewVersions") or [])
    ):
        return False
    patch = {
        "spec": {
            "conversion": {
                "strategy": "Webhook",
                "webhook": {
                    "conversionReviewVersions": ["v1"],
                    "clientConfig": {"url": None, "service": None, **config},
                },
            }
        }
    }
    kube.request(
        "PATCH",
        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{CRD_NAME}",
        body=patch,
        content_type="application/merge-patch+json",
    )
    log.info("CRD %s: conversion webhook set to %s", CRD_NAME, config.get("service") or config.get("url"))
    return True

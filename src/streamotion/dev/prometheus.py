"""A real Prometheus (Debian package ``prometheus``) on loopback, scraping targets from files.

    with PrometheusServer(scrape_interval="1s") as prom:
        prom.add_targets("producer", ["127.0.0.1:9108"], {"namespace": "dev", "pipeline": "demo"})
        prom.wait_for_targets("producer")
        prom.query('sum(rate(streamotion_producer_events_produced_total[1m]))')   # /api/v1/query

Targets are file-based service discovery (one JSON file per job, picked up within seconds), so
targets can come and go while it runs; their labels play the part of the operator's PodMonitor
relabelings (``namespace``, ``pipeline``), and ``honor_labels`` keeps the components' own labels
(``pipeline``, ``source``) as the PodMonitors do. Rule files (the operator's PrometheusRule
groups) are loaded with ``rules=[...]``: Prometheus refuses to start on an invalid expression.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from streamotion.dev.procs import Process, Server, free_port, wait_for_http
from streamotion.model_api import ray_metric_relabelings

PACKAGES = {"prometheus": "/usr/bin/prometheus"}


def ensure_prometheus() -> str:
    """Install Prometheus from Debian when missing (``make prepare`` step)."""
    from streamotion.dev.system import ensure_apt

    return ensure_apt(PACKAGES)


def binary() -> str:
    path = shutil.which("prometheus") or PACKAGES["prometheus"]
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise RuntimeError("Prometheus is not installed: run `make prepare` (apt-get install prometheus)")
    return path


class PrometheusError(RuntimeError):
    pass


class PrometheusServer(Server):
    """One Prometheus on 127.0.0.1 (free port) with a generated configuration, dying with its parent."""

    log_name = "prometheus.log"
    remove_workdir = True

    def __init__(
        self,
        scrape_interval: str = "1s",
        evaluation_interval: str = "1s",
        rules: list[dict[str, Any]] | None = None,
        workdir: Path | None = None,
    ) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="streamotion-prom-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.targets_dir = self.workdir / "targets"
        self.targets_dir.mkdir(exist_ok=True)
        self.scrape_interval = scrape_interval
        self.evaluation_interval = evaluation_interval
        self.rules = rules or []

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def config(self) -> dict[str, Any]:
        return {
            "global": {
                "scrape_interval": self.scrape_interval,
                "scrape_timeout": self.scrape_interval,
                "evaluation_interval": self.evaluation_interval,
            },
            "rule_files": [str(self.workdir / "rules" / "*.yaml")],
            "scrape_configs": [
                {
                    "job_name": "streamotion",
                    "honor_labels": True,
                    "file_sd_configs": [
                        {"files": [str(self.targets_dir / "*.json")], "refresh_interval": "1s"}
                    ],
                    "relabel_configs": [
                        {
                            "source_labels": ["__meta_filepath"],
                            "regex": r".*/([^/]+)\.json",
                            "target_label": "job",
                        },
                        {
                            "source_labels": ["__metrics_path"],
                            "regex": "(.+)",
                            "target_label": "__metrics_path__",
                        },
                    ],
                    # the model service's metrics, exported by Ray as ray_streamotion_model_*
                    "metric_relabel_configs": ray_metric_relabelings(),
                }
            ],
        }

    def add_targets(
        self, job: str, addresses: list[str], labels: dict[str, str] | None = None, path: str = "/metrics"
    ) -> None:
        """Scrape ``addresses`` (host:port) as ``job`` with extra target ``labels`` (atomic file swap)."""
        doc = [{"targets": addresses, "labels": {**(labels or {}), "__metrics_path": path}}]
        tmp = self.targets_dir / f".{job}.tmp"
        tmp.write_text(json.dumps(doc))
        tmp.replace(self.targets_dir / f"{job}.json")

    def remove_targets(self, job: str) -> None:
        (self.targets_dir / f"{job}.json").unlink(missing_ok=True)

    def _prepare(self) -> None:
        (self.workdir / "rules").mkdir(exist_ok=True)
        if self.rules:
            self._write_rules("initial", self.rules)
        (self.workdir / "prometheus.yml").write_text(yaml.safe_dump(self.config(), sort_keys=False))
        self.port = self.port or free_port()

    def _launch(self) -> Process:
        return Process.start(
            "prometheus",
            [
                binary(),
                f"--config.file={self.workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            log_path=self.log_path,
        )

    def _wait_ready(self, timeout: float) -> None:
        wait_for_http(f"{self.url}/-/ready", timeout, proc=self.process, what="Prometheus")

    def _write_rules(self, name: str, groups: list[dict[str, Any]]) -> Path:
        path = self.workdir / "rules" / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        return path

    def add_rules(self, name: str, groups: list[dict[str, Any]]) -> None:
        """Load rule groups (PrometheusRule ``spec.groups``) now; PrometheusError when Prometheus refuses them."""
        import httpx

        path = self._write_rules(name, groups)
        r = httpx.post(f"{self.url}/-/reload", timeout=30)
        if r.status_code != 200:
            path.unlink(missing_ok=True)
            httpx.post(f"{self.url}/-/reload", timeout=30)
            raise PrometheusError(f"rules {name} refused: {r.text.strip()}")

    # ------------------------------------------------------------------------ HTTP API
    def api(self, path: str, **params: Any) -> Any:
        """GET /api/v1/<path>; the ``data`` of a success, PrometheusError with Prometheus's message otherwise."""
        import httpx

        r = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=30)
        body = r.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str, time: float | None = None) -> list[dict[str, Any]]:
        """An instant query's result (vector or scalar), raising PrometheusError on an invalid expression."""
        params: dict[str, Any] = {"query": expr}
        if time is not None:
            params["time"] = time
        data = self.api("query", **params)
        if data["resultType"] == "scalar":
            return [{"metric": {}, "value": data["result"]}]
        return data["result"]

    def targets(self) -> list[dict[str, Any]]:
        return self.api("targets")["activeTargets"]

    def wait_for_targets(self, job: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Until every target of ``job`` was scraped successfully at least once."""
        deadline = time.monotonic() + timeout
        last: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            last = [t for t in self.targets() if t["labels"].get("job") == job]
            if last and all(t["health"] == "up" for t in last):
                return last
            time.sleep(0.3)
        raise TimeoutError(
            f"targets of {job} not up after {timeout}s: {[(t['scrapeUrl'], t['lastError']) for t in last]}"
        )

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Until ``expr`` returns at least one series."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if result or time.monotonic() > deadline:
                return result
            time.sleep(0.5)

    def rule_groups(self) -> list[dict[str, Any]]:
        return self.api("rules")["groups"]

"""The ground floor's door to the components above it (serving, ingest, jobs): each registers what
the ground floor may ask of it as an entry point of the group ``streamotion.components``
(``[project.entry-points]`` in pyproject.toml), and ``component(name)`` loads it through
importlib.metadata. So ``src/streamotion`` imports none of those packages (tests/test_layers.py),
and runs where one of them is not installed (an image without it): :class:`ComponentMissing`.

What each entry point must be is written down here: the protocols below (``model_service``), or the
signature in :data:`COMPONENTS`.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any, Protocol, runtime_checkable

GROUP = "streamotion.components"

# name -> (the package that provides it, what it is)
COMPONENTS: dict[str, tuple[str, str]] = {
    "model_service": ("serving", "ModelServiceFactory: a local model service (Ray Serve) for the local run"),
    "tiny_model": ("serving", "build_tiny_model(out: Path, labels: list[str], name: str) -> None"),
    "latest_model": ("serving", "latest_model(taxonomy: str | None) -> Path | None, a trained model"),
    "models_dir": ("serving", "models_dir() -> Path, where `streamotion model train` writes"),
    "kafka_bootstrap": ("ingest", "bootstrap_servers(pipeline, override: str | None) -> str"),
    "source_filters": ("ingest", "Filters: Filters.of(source).apply(event) -> (event | None, reason)"),
    "reconvert": ("ingest", "reconvert(source, payload: str) -> Event | Malformed | None"),
    "spark_kafka_connector": ("jobs", "ensure_kafka_connector() -> str, the Spark Kafka connector"),
    "spark_delta_jars": ("jobs", "ensure_delta_jars() -> str, Delta Lake for the lake sink"),
}


class ComponentMissing(RuntimeError):
    """The component providing ``name`` is not installed here; ``missing`` names the module."""

    def __init__(self, name: str, missing: str | None = None) -> None:
        package, _ = COMPONENTS.get(name, ("?", ""))
        self.name, self.package, self.missing = name, package, missing
        self.why = f"{missing} is missing" if missing else f"no entry point {name!r} in group {GROUP}"
        super().__init__(
            f"{name} needs the {package} component ({self.why}; pip install 'streamotion[{package}]')"
        )


def component(name: str) -> Any:
    """The object the installed component registers as ``name`` (see :data:`COMPONENTS`)."""
    found = entry_points(group=GROUP, name=name)
    if not found:
        raise ComponentMissing(name)
    try:
        return next(iter(found)).load()
    except ModuleNotFoundError as exc:  # its package, or one it needs, is not in this image
        raise ComponentMissing(name, exc.name) from None


@runtime_checkable
class ModelService(Protocol):
    """A running model service: the HTTP contract of :mod:`streamotion.model_api` at ``url``."""

    url: str
    metrics_port: int  # Ray's metrics agent: every replica's metrics (Prometheus text)
    proc: Any  # its streamotion.dev.procs.Process while it runs, else None

    def start(self) -> ModelService:
        """Start and return once ``GET /healthz`` answers 200."""
        ...

    def stop(self) -> None: ...


# component("model_service"): called as factory(app_args, port=None, num_cpus=2, log_path=None,
# startup_timeout=240), ``app_args`` as ``streamotion_serving.app.build_app`` takes them
ModelServiceFactory = Callable[..., ModelService]

"""One module per platform; each has ``events(ctx) -> Iterator[Event | Malformed]``."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator

STREAMING = ("replay", "reddit", "mastodon", "bluesky", "x")


def load(source_type: str) -> Callable[..., Iterator]:
    if source_type not in STREAMING:
        raise ValueError(f"no streaming source of type {source_type!r}")
    return importlib.import_module(f"streamotion_ingest.sources.{source_type}").events

"""One module per platform; each has ``events(ctx) -> Iterator[Event | Malformed]``."""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Iterator

STREAMING = ("replay", "reddit", "mastodon", "bluesky", "x")


def load(source_type: str) -> Callable[..., Iterator]:
    if source_type not in STREAMING:
        raise ValueError(f"no streaming source of type {source_type!r}")
    return importlib.import_module(f"streamotion_ingest.sources.{source_type}").events


def reconvert(source, payload: str):
    """A producer's dead letter (the platform payload) through the source's conversion again, for
    ``streamotion dlq republish`` once the cause is fixed: an Event, a Malformed (still invalid, with
    the reason) or None (nothing to publish, e.g. not a post)."""
    from streamotion_ingest.publisher import Malformed
    from streamotion_ingest.sources._common import convert

    def parsed() -> dict | Malformed:
        try:
            doc = json.loads(payload)
        except ValueError as exc:
            return Malformed(f"not JSON: {exc}", payload)
        return doc if isinstance(doc, dict) else Malformed("not a JSON object", payload)

    if source.type == "replay":
        from streamotion_ingest.sources import replay

        spec = source.replay
        parse = replay.parse_jsonl if replay._format(spec.dataset, payload) == "jsonl" else replay.parse_tsv
        return convert(parse, payload, payload, 0, source.name, replay._channel(spec.dataset), "")
    if source.type in ("bluesky", "x"):
        doc = parsed()
        if isinstance(doc, Malformed):
            return doc
        module = importlib.import_module(f"streamotion_ingest.sources.{source.type}")
        return convert(module.to_event, payload, doc, payload, source.name)
    if source.type == "mastodon":
        from streamotion_ingest.sources.mastodon import to_event

        doc = parsed()
        if isinstance(doc, Malformed):
            return doc
        spec = source.mastodon
        channel = spec.timeline
        if spec.timeline == "hashtag":
            tags = {str(t.get("name", "")).lower() for t in doc.get("tags") or [] if isinstance(t, dict)}
            channel = next((f"#{t}" for t in spec.hashtags if t.lower() in tags), None)
        return convert(to_event, payload, doc, source.name, channel)
    return Malformed(f"dead letters of {source.type} sources cannot be converted again", payload)

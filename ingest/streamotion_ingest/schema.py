"""Print the event JSON Schema: ``python -m streamotion_ingest.schema > docs/event.schema.json``."""

from __future__ import annotations

import json

from streamotion.events import json_schema


def render() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


if __name__ == "__main__":
    print(render(), end="")

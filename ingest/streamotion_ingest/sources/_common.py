"""Helpers shared by the platform sources."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from streamotion_ingest.publisher import Malformed


def obj(value: Any) -> dict:
    """The value when it is a JSON object, else an empty one (platforms change shapes too)."""
    return value if isinstance(value, dict) else {}


def objs(value: Any) -> list[dict]:
    """The JSON objects of a list (anything else: none)."""
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def text_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def convert(fn: Callable[..., Any], raw: Any, *args: Any) -> Any:
    """``fn(*args)``, or a Malformed with the error when a payload breaks it: one odd payload goes to
    the dead letters instead of crash-looping the producer."""
    try:
        return fn(*args)
    except Exception as exc:
        return Malformed(f"could not convert the payload: {type(exc).__name__}: {exc}"[:1000], raw)


class Seen:
    """A bounded set of recent ids (duplicates across reconnects, boosts, overlapping streams)."""

    def __init__(self, size: int = 50_000) -> None:
        self.size = size
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, key: str) -> bool:
        """True when new."""
        if key in self._ids:
            return False
        self._ids[key] = None
        if len(self._ids) > self.size:
            self._ids.popitem(last=False)
        return True


@lru_cache(maxsize=1)
def _quiet_bs4() -> None:
    """Statuses that look like a URL or a file name are statuses: no MarkupResemblesLocatorWarning."""
    import warnings

    from bs4 import MarkupResemblesLocatorWarning

    warnings.filterwarnings("ignore", category=MarkupResemblesLocatorWarning)


def html_to_text(html: Any) -> str:
    from bs4 import BeautifulSoup

    _quiet_bs4()

    if not isinstance(html, str):
        return ""
    # lone surrogates (JSON escapes such as "\\ud800") cannot be encoded: U+FFFD instead
    html = html.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    soup = BeautifulSoup(html, "html.parser")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for p in soup.find_all("p"):
        p.insert_after("\n\n")
    for span in soup.select("span.invisible"):  # Mastodon hides URL parts this way
        span.decompose()
    return soup.get_text().strip()

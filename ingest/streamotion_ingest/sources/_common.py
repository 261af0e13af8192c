"""Helpers shared by the platform sources."""

from __future__ import annotations

from collections import OrderedDict


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


def html_to_text(html: str) -> str:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html or "", "html.parser")
    for br in soup.find_all("br"):
        br.replace_with("\n")
    for p in soup.find_all("p"):
        p.insert_after("\n\n")
    for span in soup.select("span.invisible"):  # Mastodon hides URL parts this way
        span.decompose()
    return soup.get_text().strip()

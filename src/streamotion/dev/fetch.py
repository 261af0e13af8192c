"""Downloads from the package registries, said out loud: one line per file with its size, and a
progress bar for the big ones (on a terminal; plain percentages otherwise)."""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

BIG = 5 * 1024 * 1024  # bytes: files at least this big get a progress bar
USER_AGENT = "streamotion-dev (+https://github.com/streamotion)"


def human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def open_url(url: str, timeout: float = 60):
    return urllib.request.urlopen(
        urllib.request.Request(url, headers={"User-Agent": USER_AGENT}), timeout=timeout
    )


def read_url(url: str, timeout: float = 60) -> bytes:
    with open_url(url, timeout) as resp:
        return resp.read()


def _bar(done: int, total: int, width: int = 30) -> str:
    filled = int(width * done / total) if total else 0
    return "[" + "#" * filled + "-" * (width - filled) + f"] {100 * done / total:5.1f}%" if total else ""


def download(url: str, dest: Path, label: str | None = None, log: Callable[[str], None] = print) -> int:
    """Download ``url`` to ``dest`` (atomically: a partial file never takes its name); returns the size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(dest.name + f".part{os.getpid()}")
    label = label or dest.name
    with open_url(url, timeout=120) as resp, open(tmp, "wb") as out:
        total = int(resp.headers.get("Content-Length") or 0)
        log(f"    fetching {label} ({human(total) if total else 'size unknown'})")
        bar = total >= BIG
        tty = sys.stdout.isatty()
        done, last = 0, 0.0
        while chunk := resp.read(256 * 1024):
            out.write(chunk)
            done += len(chunk)
            if bar and time.monotonic() - last >= (0.2 if tty else 5):
                last = time.monotonic()
                line = f"      {_bar(done, total)} {human(done)}"
                if tty:
                    sys.stdout.write("\r" + line)
                    sys.stdout.flush()
                else:
                    log(line)
        if bar and tty:
            sys.stdout.write("\r" + f"      {_bar(done, total)} {human(done)}\n")
            sys.stdout.flush()
    if total and done != total:
        tmp.unlink(missing_ok=True)
        raise OSError(f"{url}: got {done} of {total} bytes")
    tmp.replace(dest)
    return done
